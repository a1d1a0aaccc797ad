"""Alerts: detectors report conditions; the engine turns them into deduplicated alerts with a lifecycle."""
