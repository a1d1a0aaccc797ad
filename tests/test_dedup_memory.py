"""The idempotency memory: the same answers as a plain model of it, in memory fixed at start."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from monitor.ingest.dedup import RecentIds


class _Model:
    """The behaviour RecentIds promises, written the obvious way: a ring of the last ``capacity``
    insertions; an id is remembered while its latest insertion is in the ring and not discarded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ring: list[str | None] = []
        self.live: OrderedDict[str, int] = OrderedDict()  # id -> ring position of its insertion
        self.written = 0

    def add(self, event_id: str) -> bool:
        if event_id in self.live:
            return False
        position = self.written % self.capacity
        if self.written >= self.capacity:
            old = self.ring[position]
            if old is not None and self.live.get(old) == position:
                del self.live[old]
            self.ring[position] = event_id
        else:
            self.ring.append(event_id)
        self.live[event_id] = position
        self.written += 1
        return True

    def discard(self, event_id: str) -> None:
        self.live.pop(event_id, None)


@pytest.mark.parametrize("capacity,ids,seed", [(1, 5, 0), (7, 20, 1), (64, 300, 2), (1000, 5000, 3)])
def test_answers_match_the_model_under_random_adds_and_discards(capacity, ids, seed):
    rng = random.Random(seed)
    memory, model = RecentIds(capacity), _Model(capacity)
    for step in range(20 * capacity + 200):
        event_id = f"id-{rng.randrange(ids)}"
        if rng.random() < 0.2:
            memory.discard(event_id)
            model.discard(event_id)
        else:
            assert memory.add(event_id) == model.add(event_id), (step, event_id)
        assert len(memory) == len(model.live)
    assert all(i in memory for i in model.live)
    assert sum(f"id-{i}" in memory for i in range(ids)) == len(model.live)


def test_a_snapshot_of_hashes_restores_the_same_memory_and_old_snapshots_of_ids_still_load():
    memory = RecentIds(100)
    for i in range(250):
        memory.add(f"e{i}")
    memory.discard("e200")
    restored = RecentIds(100)
    restored.extend(memory.hashes())
    assert [f"e{i}" in restored for i in range(250)] == [f"e{i}" in memory for i in range(250)]
    older = RecentIds(100)
    older.extend([f"e{i}" for i in range(150, 250)])  # snapshots before hashes kept the ids themselves
    assert "e249" in older and "e149" not in older


def test_memory_is_taken_whole_at_start_and_does_not_depend_on_id_length():
    small, long = RecentIds(10_000), RecentIds(10_000)
    before = small.nbytes
    for i in range(30_000):
        small.add(str(i))
        long.add("x" * 2000 + str(i))
    assert small.nbytes == before == long.nbytes <= 72 * 10_000
    assert len(small) == len(long) == 10_000
