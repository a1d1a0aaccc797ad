"""Kept for imports from before :mod:`monitor.privacy.redact`, the one redaction step; use that module."""

from monitor.privacy.redact import redact

__all__ = ["redact"]
