"""Ingest counts: every change is one :class:`Tally`, recorded once into every sink.

Every path that takes events (the embedded service's gate, the scale-out frontend) and every
way an accepted event leaves the pipeline (judged, sampled out, shed, poison, shutdown, restart)
describes what it did as a ``Tally`` and hands it to one :class:`IngestCounter`. The counter
fans it out to its sinks: the running totals of ``/v1/status`` and snapshots
(:class:`IngestCounts`), the Prometheus counters, Redis's shared counters in scale-out. One
record per change is what keeps ``received = accepted + duplicates + rejected + dropped`` true
in every sink, instead of several hand-kept copies that drift apart.

>>> totals = IngestCounts()
>>> counter = IngestCounter(totals)
>>> counter.record(Tally(received=3, accepted=2, rejected=1))
>>> counter.record(Tally(processed=2, dropped={"poison": 1}))
>>> totals.received, totals.accepted, totals.processed, totals.dropped["poison"]
(3, 2, 2, 1)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from monitor.ingest.request import IngestOutcome

DROP_REASONS = ("queue_full", "poison", "overload", "shutdown")


@dataclass(slots=True)
class Tally:
    """Changes to the ingest counts (each field a delta, never negative).

    ``dropped`` counts events lost by reason. A request refused whole (queue full, store down)
    carries its events under that reason and nothing else but ``received``/``rejected``; such a
    tally is ``refused``.
    """

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    truncated: int = 0
    sampled_out: int = 0
    processed: int = 0
    judged: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    refused: bool = False

    @classmethod
    def of_request(cls, received: int, outcome: IngestOutcome, accepted: int, truncated: int = 0,
                   refused: tuple[str, int] | None = None) -> Tally:
        """One ingest request: items ``received``, events new to the pipeline (``accepted``), the
        outcome's repeats and rejections, and ``refused`` (reason, events) when it was refused whole."""
        return cls(
            received=received, accepted=accepted, duplicates=outcome.duplicates, rejected=len(outcome.rejected),
            truncated=truncated, dropped=dict([refused]) if refused else {}, refused=refused is not None,
        )


class IngestSink(Protocol):
    """Anything that keeps ingest counts: it records each tally once."""

    def record(self, tally: Tally) -> None: ...


@dataclass(slots=True)
class IngestCounts:
    """The running totals (``/v1/status``, snapshots): a sink that adds every tally up.

    Thread-safe: the event loop records requests while the worker thread records what it processed.
    """

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    processed: int = 0
    judged: int = 0
    sampled_out: int = 0
    truncated: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, tally: Tally) -> None:
        with self._lock:
            for name in _TOTALS:
                delta = getattr(tally, name)
                if delta:
                    setattr(self, name, getattr(self, name) + delta)
            for reason, n in tally.dropped.items():
                self.dropped[reason] = self.dropped.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {**{name: getattr(self, name) for name in _TOTALS}, "dropped": dict(self.dropped)}

    def load_dict(self, state: dict[str, Any]) -> None:
        """Replace the totals with :meth:`to_dict`'s (in place: counters hold this object); names a
        newer release added are ignored, missing ones start at 0."""
        with self._lock:
            for name in _TOTALS:
                setattr(self, name, int(state.get(name, 0)))
            self.dropped = {**dict.fromkeys(DROP_REASONS, 0), **state.get("dropped", {})}


_TOTALS = tuple(f.name for f in fields(IngestCounts) if f.name not in ("dropped", "_lock"))


class IngestCounter:
    """The one object every ingest path counts through: each tally goes to every sink."""

    def __init__(self, *sinks: IngestSink) -> None:
        self.sinks = sinks

    def record(self, tally: Tally) -> None:
        for sink in self.sinks:
            sink.record(tally)
