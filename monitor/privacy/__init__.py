"""Privacy: the one redaction step every text leaving the process passes (see :mod:`monitor.privacy.redact`).

Imports nothing of the service, so drift, alerts and export may all depend on it.
"""
