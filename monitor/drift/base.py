"""The detector interface every drift signal implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

from monitor.alerts.condition import Condition
from monitor.events import ScoredEvent


@dataclass(frozen=True, slots=True)
class Reading:
    """A detector's statistic next to its threshold, exported as metrics.

    Labels stay bounded: ``detector`` and ``scope`` come from code and configuration, ``key`` is a
    taxonomy category id (or "" for single-key detectors), never raw text or an unbounded id.
    """

    detector: str
    scope: str
    key: str
    statistic: float
    threshold: float
    active: bool


@runtime_checkable
class Detector(Protocol):
    """An online detector driven by event time.

    ``update`` sees each judged event exactly once, in pipeline order, and returns the conditions
    whose state it has an opinion on after this batch (typically only keys that changed or are
    active). State must round-trip through ``state_dict``/``load_state_dict`` (picklable values)
    so a restored detector continues exactly as an uninterrupted one.
    """

    name: str

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]: ...

    def readings(self) -> list[Reading]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
