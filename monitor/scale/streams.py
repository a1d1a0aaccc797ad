"""The Redis keys of the scale-out mode and what travels through them.

- ``<prefix>stream:events``: one entry per accepted event (JSON), appended by API replicas and
  read by the ``workers`` consumer group. Workers trim it (``XTRIM MINID``) below the oldest
  entry still unread or unacknowledged, so its length is the backlog; the API answers 503 when
  that backlog reaches ``queue_capacity``.
- ``<prefix>stream:scored``: one entry per worker batch: the judged events (pickled, float32
  embeddings included, so detectors see exactly what the embedded mode sees) and the ids of the
  source entries. Read by the ``detector`` group, which has one consumer at a time (the lease
  owner); trimmed by the owner after each snapshot.
- ``<prefix>counts`` (hash): the API replicas' ingest counters (received, accepted, ...).
- ``<prefix>detector:status`` and ``<prefix>detector:alerts``: the owner's counts and alert list
  (JSON), so ``/v1/status`` and ``/v1/alerts`` answer the same on every replica.
- ``<prefix>snapshot:service``: the owner's snapshot, the same key the embedded mode's
  :class:`~monitor.state.redis_store.RedisStateStore` uses, so a deployment can move between modes.
- ``<prefix>lease:detector`` and ``<prefix>lease:fence``: the detector lease and its fencing counter.

>>> keys = StreamKeys("llmsafety:")
>>> keys.events, keys.lease
('llmsafety:stream:events', 'llmsafety:lease:detector')
>>> e = Event("id-1", 1.5, "hi", None, "gpt-4o", None, {"team": "a"}, {"k": [1]}, True)
>>> decode_event(encode_event(e)) == e
True
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
import redis

from monitor.events import Event, ScoredEvent

WORKERS_GROUP = "workers"
DETECTOR_GROUP = "detector"


@dataclass(frozen=True, slots=True)
class StreamKeys:
    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}stream:events"

    @property
    def scored(self) -> str:
        return f"{self.prefix}stream:scored"

    @property
    def counts(self) -> str:
        return f"{self.prefix}counts"

    @property
    def detector_status(self) -> str:
        return f"{self.prefix}detector:status"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}detector:alerts"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}snapshot:service"

    @property
    def lease(self) -> str:
        return f"{self.prefix}lease:detector"

    @property
    def fence(self) -> str:
        return f"{self.prefix}lease:fence"

    def event_id(self, event_id: str) -> str:
        """The dedup key; the same one :class:`~monitor.state.redis_store.RedisStateStore` uses."""
        return f"{self.prefix}id:{event_id}"


def encode_event(event: Event) -> bytes:
    return json.dumps(asdict(event), separators=(",", ":")).encode()


def decode_event(data: bytes) -> Event:
    return Event(**json.loads(data))


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """What one worker publishes per batch: the judged events, and the ids of poison inputs (dropped)."""

    scored: list[ScoredEvent]
    poison_ids: tuple[str, ...] = ()


def encode_scored(batch: ScoredBatch) -> bytes:
    return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)


def decode_scored(data: bytes) -> ScoredBatch:
    return pickle.loads(data)


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing; reading starts at the stream's beginning."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def group_missing(exc: redis.exceptions.ResponseError) -> bool:
    """The stream or its group is gone: Redis restarted without its data (or someone deleted them)."""
    return "NOGROUP" in str(exc) or "no such key" in str(exc)
