"""Restoring one service's snapshot into another, for the tests of what a restore refits."""

from __future__ import annotations

from monitor.alerts.engine import Alert
from monitor.pipeline.service import MonitorService


def restore_resolves_the_alert(fired: MonitorService, after: MonitorService) -> Alert:
    """Restore ``fired``'s state (with one firing alert) into ``after``; the alert must come back resolved, with
    its id. Returns it, for its summary."""
    [alert] = fired.alerts("firing")
    after.load_state_dict(fired.state_dict())
    assert not after.alerts("firing")
    [resolved] = after.alerts("resolved")
    assert resolved.id == alert.id
    return resolved
