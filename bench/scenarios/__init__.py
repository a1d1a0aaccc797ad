"""Scenario modules driven by ``bench/drift_scenarios.py``: each returns rows of one results table."""
