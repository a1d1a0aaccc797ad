"""Which detector partition runs the detectors of which scope.

Detectors are stateful and order-sensitive per scope, so each scope is run by exactly one owner
at a time. Scopes are grouped into a fixed number of partitions (``detector_partitions``), each
with its own lease, snapshot and streams, so several detector processes share the work and one
takes over a dead one's partitions. ``global`` has partition 0 to itself (every event counts in
it, so its owner also keeps the pipeline's event counts); ``model=…``/``route=…`` scopes are
spread over the others by a stable hash (CRC-32, the same in every process and release).

Changing ``detector_partitions`` moves scopes between partitions: snapshots record the count
they were taken with, and an owner does not restore one taken with another count.

>>> partition_of("global", 4), partition_of("model=gpt-4o", 1)
(0, 0)
>>> sorted({partition_of(f"model=m{i}", 4) for i in range(20)})
[1, 2, 3]
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

from monitor.events import ScoredEvent
from monitor.scopes import GLOBAL


def partition_of(scope: str, partitions: int) -> int:
    if partitions < 1:
        raise ValueError(f"detector_partitions: must be at least 1, got {partitions}")
    if partitions == 1 or scope == GLOBAL:
        return 0
    return 1 + zlib.crc32(scope.encode()) % (partitions - 1)


def split_by_partition(scored: Sequence[ScoredEvent], partitions: int) -> dict[int, list[ScoredEvent]]:
    """Each event once in every partition that holds one of its scopes, with its ``scopes`` narrowed
    to that partition's; partitions without events are absent. Order within a partition is kept."""
    out: dict[int, list[ScoredEvent]] = {}
    for s in scored:
        mine: dict[int, list[str]] = {}
        for scope in s.scopes:
            mine.setdefault(partition_of(scope, partitions), []).append(scope)
        for p, scopes in mine.items():
            out.setdefault(p, []).append(s if len(mine) == 1 else dataclasses.replace(s, scopes=tuple(scopes)))
    return out
