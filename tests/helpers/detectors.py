"""A small, deterministic detector for tests of the machinery around detectors (snapshots, restarts).

The real detectors are calibrated for production traffic and need thousands of events to fire;
this one fires on a handful, keeps history (the last ``window`` refusals) and reports its
opinion after every batch, as a real detector does while drift persists.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

from monitor.signals import Condition
from monitor.signals import Reading
from monitor.events import ScoredEvent


class RecentRefusals:
    """Active while at least ``threshold`` of the last ``window`` responses were refusals (scope "global")."""

    name = "recent_refusals"
    alert_kind = name

    def __init__(self, window: int = 10, threshold: int = 6) -> None:
        self.window, self.threshold = window, threshold
        self.recent: deque[bool] = deque(maxlen=window)
        self.seen = 0

    @property
    def active(self) -> bool:
        return sum(self.recent) >= self.threshold

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        responded = [s for s in batch if s.verdict.refused is not None]
        for s in responded:
            self.recent.append(bool(s.verdict.refused))
        self.seen += len(responded)
        if not responded:
            return []
        at = responded[-1].event.timestamp
        return [Condition(self.name, "global", "", self.active, at, summary=f"{sum(self.recent)} of the last {len(self.recent)} responses refused")]

    def readings(self) -> list[Reading]:
        return [Reading(self.name, "global", "", float(sum(self.recent)), float(self.threshold), self.active)]

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(state["recent"], maxlen=self.window)
        self.seen = state["seen"]
