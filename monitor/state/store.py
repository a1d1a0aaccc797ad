"""The storage interface the service keeps its durable state behind.

Two kinds of state need to outlive one process or be shared by several: the set of event ids
already accepted (idempotency across restarts and replicas) and named snapshots (detector and
alert state, references, cluster summaries: opaque bytes written whole and read whole). Both
backends (:mod:`monitor.state.memory`, :mod:`monitor.state.redis_store`) implement exactly this,
so the service never knows which one it runs on.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from monitor.ingest.dedup import IdsUnavailable


class StoreUnavailable(IdsUnavailable):
    """The backend cannot be reached right now. Callers answer 503 and retry; nothing is half-done."""


@runtime_checkable
class StateStore(Protocol):
    backend: str
    """Short name for status and logs: "memory" or "redis"."""

    def add_ids(self, event_ids: Sequence[str]) -> list[bool]:
        """Remember each id; True where it was new. One call per ingest request (one round trip)."""
        ...

    def discard_ids(self, event_ids: Sequence[str]) -> None:
        """Forget ids whose events were not taken after all (the queue was full)."""
        ...

    def save_snapshot(self, name: str, data: bytes) -> None:
        """Replace the snapshot ``name`` atomically: readers see the old or the new bytes, never a mix."""
        ...

    def load_snapshot(self, name: str) -> bytes | None:
        """The latest bytes saved under ``name``, or None when there are none."""
        ...

    def close(self) -> None: ...
