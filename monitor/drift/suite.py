"""The detector stage: runs every configured detector on each judged batch, in a fixed order."""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence, TypeVar

from monitor.drift.base import ClusterQueries, Detector
from monitor.events import ScoredEvent
from monitor.signals import Condition, Reading

log = logging.getLogger(__name__)
C = TypeVar("C")


class DetectorSuite:
    def __init__(self, detectors: Sequence[Detector]) -> None:
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique: {names}")
        self.detectors = list(detectors)
        self.on_error: Callable[[str], None] = lambda name: None  # the service counts failures in a metric

    def alert_kinds(self) -> list[str]:
        """The ``kind`` of the alerts each detector raises."""
        return [d.alert_kind for d in self.detectors]

    def get(self, name: str) -> Detector | None:
        return next((d for d in self.detectors if d.name == name), None)

    def having(self, capability: type[C]) -> list[C]:
        """The detectors with ``capability`` (a runtime-checkable Protocol of :mod:`monitor.drift.base`)."""
        return [d for d in self.detectors if isinstance(d, capability)]  # type: ignore[misc]

    def cluster_queries(self) -> ClusterQueries | None:
        """The detector that answers cluster queries, if one runs."""
        return next(iter(self.having(ClusterQueries)), None)

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        """Conditions from every detector; one detector raising is logged and counted, the others still run."""
        out: list[Condition] = []
        for det in self.detectors:
            try:
                out.extend(det.update(batch))
            except Exception:
                self.on_error(det.name)
                log.exception("detector %s failed on a batch of %d events", det.name, len(batch))
        return out

    def readings(self) -> list[Reading]:
        return [r for d in self.detectors for r in d.readings()]

    def state_dict(self) -> dict[str, Any]:
        return {d.name: d.state_dict() for d in self.detectors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for det in self.detectors:
            if det.name in state:
                det.load_state_dict(state[det.name])
