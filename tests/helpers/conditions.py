"""Drive a detector through a stream in batches and read the alerts its conditions would open."""

from __future__ import annotations

from typing import Any, Sequence

from monitor.signals import Condition


def feed(detector: Any, items: Sequence[Any], batch: int = 64) -> list[Condition]:
    """Every condition ``detector.update`` returns over ``items`` fed ``batch`` at a time, in order."""
    out: list[Condition] = []
    for i in range(0, len(items), batch):
        out.extend(detector.update(items[i : i + batch]))
    return out


def opened(conditions: list[Condition]) -> list[Condition]:
    """Conditions that open an alert (the key was not active before)."""
    active: dict[str, bool] = {}
    out = []
    for c in conditions:
        if c.active and not active.get(c.fingerprint):
            out.append(c)
        active[c.fingerprint] = c.active
    return out
