"""Wires the stages together: ingest → embed → judge → detect → alerts/metrics."""
