"""Exports: Prometheus metrics (and, later, reports)."""
