"""One ingest request between its steps, and what it did: shared by every ingest path (the embedded
service and the scale-out frontend), so both screen and answer the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.config import Settings
from monitor.events import Event
from monitor.ingest.normalize import oversize, to_event
from monitor.ingest.parsing import ParsedBody, Rejection, reject_future


@dataclass(slots=True)
class IngestOutcome:
    """What one request did. ``queue_full`` or ``unavailable`` (the state store's error) means
    nothing of it was taken: answer 503, client resends."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    queue_full: bool = False
    unavailable: str | None = None


@dataclass(slots=True)
class IngestRequest:
    """One ingest request between its steps: validated and deduplicated within itself."""

    n_received: int
    outcome: IngestOutcome
    candidates: dict[str, Event]  # by idempotency key (Event.key)
    sizes: dict[str, int] = field(default_factory=dict)  # key -> bytes (normalize.event_sizes)

    @classmethod
    def screen(cls, parsed: ParsedBody, arrival_time: float, settings: Settings, sender: str = "") -> IngestRequest:
        """The checks every ingest path makes before any state is touched: stamps too far in the
        future and events over ``max_event_bytes`` become rejections, repeats within the request
        become duplicates. ``sender``: the ingest token's name, which namespaces the ids."""
        n_received = len(parsed.events) + len(parsed.rejected)
        parsed = reject_future(parsed, arrival_time + settings.max_future_skew_seconds)
        outcome = IngestOutcome(rejected=list(parsed.rejected))
        candidates: dict[str, Event] = {}
        sizes: dict[str, int] = {}
        for index, item in parsed.events:
            event = to_event(item, arrival_time, settings.max_text_chars, sender)
            size, error = oversize(event, settings.max_event_bytes)
            if error is not None:
                outcome.rejected.append(Rejection(index, error, status=413))
            elif event.key in candidates:
                outcome.duplicates += 1
            else:
                candidates[event.key] = event
                sizes[event.key] = size
        outcome.rejected.sort(key=lambda r: r.index)
        return cls(n_received, outcome, candidates, sizes)

    @property
    def refused(self) -> int:
        """Items lost when the whole request is refused (503): everything not rejected, repeats included."""
        return self.n_received - len(self.outcome.rejected)
