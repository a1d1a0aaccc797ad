"""The default backend: state in this process only (one replica; a restart starts empty).

Dedup remembers the ``dedup_capacity`` most recent ids in memory taken whole at start (40 to 72
bytes per id, whatever the ids' lengths; see :class:`~monitor.ingest.dedup.RecentIds`). Snapshots live in a dict, so a service rebuilt in the
same process (tests, benchmarks, the embedded demo) restores from them.

>>> store = MemoryStateStore(dedup_capacity=100)
>>> store.add_ids(["a", "b", "a"])
[True, True, False]
>>> store.discard_ids(["b"]); store.add_ids(["b"])
[True]
>>> store.save_snapshot("service", b"state"); store.load_snapshot("service"), store.load_snapshot("other")
(b'state', None)
"""

from __future__ import annotations

from typing import Sequence

from monitor.ingest.dedup import RecentIds


class MemoryStateStore:
    backend = "memory"

    def __init__(self, dedup_capacity: int = 500_000) -> None:
        self._ids = RecentIds(dedup_capacity)
        self._snapshots: dict[str, bytes] = {}

    def add_ids(self, event_ids: Sequence[str]) -> list[bool]:
        return [self._ids.add(event_id) for event_id in event_ids]

    def discard_ids(self, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            self._ids.discard(event_id)

    def save_snapshot(self, name: str, data: bytes) -> None:
        self._snapshots[name] = bytes(data)

    def load_snapshot(self, name: str) -> bytes | None:
        return self._snapshots.get(name)

    def close(self) -> None:
        pass
