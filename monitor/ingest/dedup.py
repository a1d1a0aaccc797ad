"""Idempotency by ``event_id``: a bounded memory of recently seen ids.

Gateways retry, and some (LiteLLM) fire a callback twice; re-sent ids are accepted and not
counted twice. Memory is bounded by ``capacity``: the oldest ids are forgotten first, so a
duplicate arriving after ``capacity`` newer events is counted again (documented trade-off).

>>> seen = RecentIds(capacity=2)
>>> seen.add("a"), seen.add("a"), seen.add("b"), seen.add("c"), seen.add("a")
(True, False, True, True, True)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Protocol, Sequence


class IdsUnavailable(Exception):
    """The id memory cannot be reached right now (a networked store is down): nothing was
    remembered, the request is answered 503 and the client resends."""


class IdMemory(Protocol):
    """What the ingest gate needs of a state store: remember ids (one round trip per request) and
    forget those whose events were not taken after all. Raises :class:`IdsUnavailable`."""

    backend: str

    def add_ids(self, event_ids: Sequence[str]) -> list[bool]: ...

    def discard_ids(self, event_ids: Sequence[str]) -> None: ...


class RecentIds:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        """Oldest first, so ``RecentIds(capacity)`` refilled from it forgets in the same order."""
        return iter(self._ids)

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; True if it was new."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def discard(self, event_id: str) -> None:
        """Forget an id whose event was not accepted after all (e.g. the queue was full)."""
        self._ids.pop(event_id, None)
