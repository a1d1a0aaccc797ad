"""The recent judged events a reviewer's label can reach, and a background sample for the online layer.

Why: a cluster's exemplars and an alert's evidence name events by id; to learn from a label the
online layer needs those events' embeddings (the judge's input), and export needs their texts
and verdicts. The service does not keep judged events, so this batch listener does, bounded in
count and bytes (oldest out). Texts are kept raw here, in process memory only: they are redacted
when a label makes them durable (:mod:`monitor.triage.state`), never served from here.

It also keeps a seeded uniform reservoir of prompt embeddings over the whole stream with their
event times: traffic from before a cluster first appeared is the cluster-free background the
online layer calibrates its false-positive rate on.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from monitor.events import ScoredEvent

_OVERHEAD_BYTES = 256  # floats, flags, object headers per kept event (an estimate; the embedding, texts and id are counted exactly)


def str_bytes(text: str | None) -> int:
    """What ``text`` occupies in memory: CPython stores 1, 2 or 4 bytes a character by the widest
    one in the string (one emoji makes them all 4), plus a header, which ``sys.getsizeof`` counts.
    Counting 2 bytes a character would let emoji text hold twice ``max_bytes``.

    >>> str_bytes("a" * 1000) < 1100, str_bytes("\N{GRINNING FACE}" * 1000) > 4000, str_bytes(None)
    (True, True, 0)
    """
    return 0 if text is None else sys.getsizeof(text)


@dataclass(frozen=True, slots=True)
class Seen:
    """One judged event as triage remembers it (texts raw and cut; never stored or served as they are)."""

    event_id: str
    timestamp: float
    prompt: str
    response: str | None
    scopes: tuple[str, ...]
    embedding: np.ndarray
    category: str
    prompt_flagged: bool
    response_flagged: bool | None
    refused: bool | None

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes + str_bytes(self.prompt) + str_bytes(self.response) + str_bytes(self.event_id) + _OVERHEAD_BYTES


class RecentEvents:
    """Batch listener: the last ``max_events`` judged events (at most ``max_bytes``), by id, and a
    reservoir of ``reservoir_size`` prompt embeddings sampled uniformly over the stream (seeded)."""

    def __init__(self, max_events: int = 20_000, max_bytes: int = 64 << 20, reservoir_size: int = 4000,
                 text_chars: int = 2000, seed: int = 0) -> None:
        if min(max_events, max_bytes, reservoir_size, text_chars) < 1:
            raise ValueError("max_events, max_bytes, reservoir_size, text_chars: must be positive")
        self.max_events, self.max_bytes, self.reservoir_size, self.text_chars = max_events, max_bytes, reservoir_size, text_chars
        self._events: OrderedDict[str, Seen] = OrderedDict()
        self._bytes = 0
        self._rng = random.Random(seed)
        self._seen = 0
        self._reservoir: list[tuple[float, np.ndarray]] = []
        self._lock = threading.Lock()  # the worker thread writes, API threads read

    def __call__(self, batch: Sequence[ScoredEvent]) -> None:
        with self._lock:
            for s in batch:
                self._keep(s)
                self._sample(s)

    def _keep(self, s: ScoredEvent) -> None:
        v, e = s.verdict, s.event
        seen = Seen(e.event_id, e.timestamp, e.prompt[: self.text_chars], None if e.response is None else e.response[: self.text_chars],
                    tuple(s.scopes), np.asarray(s.prompt_embedding, dtype=np.float32), v.category,
                    v.prompt_flagged, v.response_flagged, v.refused)
        old = self._events.pop(e.event_id, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._events[e.event_id] = seen
        self._bytes += seen.nbytes
        while self._events and (len(self._events) > self.max_events or self._bytes > self.max_bytes):
            self._bytes -= self._events.popitem(last=False)[1].nbytes

    def _sample(self, s: ScoredEvent) -> None:
        """Algorithm R: every event of the stream has the same chance to be in the reservoir."""
        self._seen += 1
        item = (s.event.timestamp, np.asarray(s.prompt_embedding, dtype=np.float32))
        if len(self._reservoir) < self.reservoir_size:
            self._reservoir.append(item)
        else:
            j = self._rng.randrange(self._seen)
            if j < self.reservoir_size:
                self._reservoir[j] = item

    def get(self, event_id: str) -> Seen | None:
        with self._lock:
            return self._events.get(event_id)

    def background(self, before: float | None = None, minimum: int = 200) -> np.ndarray:
        """Reservoir embeddings from before event time ``before`` (all of them when fewer than ``minimum``)."""
        with self._lock:
            rows = [x for t, x in self._reservoir if before is None or t < before]
            if len(rows) < minimum:
                rows = [x for _, x in self._reservoir]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def shares(self, last: int = 5000) -> dict[str, tuple[int, dict[str, int]]]:
        """Per scope, over the ``last`` kept events: (events, flagged prompts per category, ``unsafe`` for all)."""
        with self._lock:
            tail = list(self._events.values())[-last:]
        out: dict[str, tuple[int, dict[str, int]]] = {}
        for seen in tail:
            for scope in seen.scopes:
                n, counts = out.get(scope, (0, {}))
                if seen.prompt_flagged:
                    counts["unsafe"] = counts.get("unsafe", 0) + 1
                    counts[seen.category] = counts.get(seen.category, 0) + 1
                out[scope] = (n + 1, counts)
        return out

    @property
    def nbytes(self) -> int:
        return self._bytes + sum(x.nbytes for _, x in self._reservoir)

    def __len__(self) -> int:
        return len(self._events)
