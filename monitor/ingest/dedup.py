"""Idempotency by ``event_id``: a bounded memory of recently seen ids.

Gateways retry, and some (LiteLLM) fire a callback twice; re-sent ids are accepted and not
counted twice. Memory is bounded by ``capacity`` and taken whole at start, so it is bounded in
bytes too and does not grow as traffic fills it: each id is kept as a 64-bit hash (BLAKE2b) in an
insertion-order ring and an open-addressing table (linear probing, at most half full): 40 to 72
bytes per id of ``capacity`` (the table's size is a power of two), whatever the ids' lengths. The oldest ids are forgotten first, so a
duplicate arriving after ``capacity`` newer events is counted again (documented trade-off). An id
forgotten on purpose (``discard``: its request was refused) keeps its ring slot until the ring
wraps, so after refusals the memory holds somewhat fewer than ``capacity`` live ids. Two
different ids share a hash with probability about ``capacity / 2**64`` per id: negligible.

>>> seen = RecentIds(capacity=2)
>>> seen.add("a"), seen.add("a"), seen.add("b"), seen.add("c"), seen.add("a")
(True, False, True, True, True)
>>> "c" in seen, "b" in seen, len(seen)
(True, False, 2)
"""

from __future__ import annotations

from array import array
from hashlib import blake2b
from typing import Iterable, Protocol, Sequence


class IdsUnavailable(Exception):
    """The id memory cannot be reached right now (a networked store is down): nothing was
    remembered, the request is answered 503 and the client resends."""


class IdMemory(Protocol):
    """What the ingest gate needs of a state store: remember ids (one round trip per request) and
    forget those whose events were not taken after all. Raises :class:`IdsUnavailable`."""

    backend: str

    def add_ids(self, event_ids: Sequence[str]) -> list[bool]: ...

    def discard_ids(self, event_ids: Sequence[str]) -> None: ...


def id_hash(event_id: str) -> int:
    """A nonzero 64-bit hash of an id (0 marks an empty slot)."""
    digest = blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class RecentIds:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: at least 1, got {capacity}")
        self.capacity = capacity
        size = 1 << max(3, (2 * capacity - 1).bit_length())
        self._mask = size - 1
        self._table = array("Q", bytes(8 * size))  # id hashes; 0 = empty
        self._where = array("q", bytes(8 * size))  # the ring position each table entry was written at
        self._ring = array("Q", bytes(8 * capacity))  # hashes in insertion order (a discarded one stays, stale)
        self._written = 0  # ring writes so far; the next goes to slot written % capacity
        self._live = 0

    @property
    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self._table, self._where, self._ring))

    def _slot(self, h: int) -> int:
        """The table slot holding ``h``, else the empty slot where it would go (as ``~slot``)."""
        i = h & self._mask
        table = self._table
        while True:
            found = table[i]
            if found == h:
                return i
            if found == 0:
                return ~i
            i = (i + 1) & self._mask

    def __contains__(self, event_id: str) -> bool:
        return self._slot(id_hash(event_id)) >= 0

    def __len__(self) -> int:
        return self._live

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; True if it was new."""
        return self.add_hash(id_hash(event_id))

    def add_hash(self, h: int) -> bool:
        if self._slot(h) >= 0:
            return False
        position = self._written % self.capacity
        if self._written >= self.capacity:  # the ring is full: forget its oldest entry (unless stale)
            old = self._slot(self._ring[position])
            if old >= 0 and self._where[old] == position:
                self._delete(old)
        free = ~self._slot(h)
        self._table[free], self._where[free] = h, position
        self._ring[position] = h
        self._written += 1
        self._live += 1
        return True

    def discard(self, event_id: str) -> None:
        """Forget an id whose event was not accepted after all (e.g. the queue was full)."""
        i = self._slot(id_hash(event_id))
        if i >= 0:
            self._delete(i)

    def _delete(self, i: int) -> None:
        """Empty slot ``i``, shifting later entries of its probe run back (no tombstones)."""
        table, where, mask = self._table, self._where, self._mask
        j = i
        while True:
            j = (j + 1) & mask
            h = table[j]
            if h == 0:
                break
            home = h & mask
            # Move the entry at j to i unless its home lies cyclically in (i, j].
            if (i < j and not (i < home <= j)) or (i > j and (j < home <= i)):
                table[i], where[i] = h, where[j]
                i = j
        table[i], where[i] = 0, 0
        self._live -= 1

    def hashes(self) -> list[int]:
        """The remembered ids' hashes, oldest first: what a snapshot keeps (:meth:`extend` restores them)."""
        n = min(self._written, self.capacity)
        start = self._written - n
        out = []
        for k in range(start, self._written):
            position = k % self.capacity
            h = self._ring[position]
            i = self._slot(h)
            if i >= 0 and self._where[i] == position:
                out.append(h)
        return out

    def extend(self, remembered: Iterable[int | str]) -> None:
        """Remember hashes from :meth:`hashes` (or ids, as older snapshots kept them), oldest first."""
        for item in remembered:
            self.add_hash(id_hash(item) if isinstance(item, str) else int(item))
