"""The Redis keys of the scale-out mode and what travels through them.

- ``<prefix>stream:events``: one entry per accepted event (JSON), appended by API replicas and
  read by the ``workers`` consumer group. Workers trim it (``XTRIM MINID``) below the oldest
  entry still unread or unacknowledged, so its length is the backlog; the API answers 503 when
  that backlog reaches ``queue_capacity``.
- ``<prefix>counts`` (hash): the API replicas' ingest counters (received, accepted, ...).
- ``<prefix>detector:members`` (sorted set): live detector processes, scored by when their
  heartbeat expires; they split the partitions evenly among themselves.
- ``<prefix>lease:fence``: the fencing counter every partition lease draws its tokens from.
- per detector partition ``p`` (:class:`PartitionKeys`, :mod:`monitor.scale.partitions` says which
  scopes a partition holds):

  - ``stream:scored:<p>``: one entry per worker batch: that batch's judged events with a scope in
    ``p`` (pickled, float32 embeddings included, so detectors see exactly what the embedded mode
    sees). Read by the ``detector`` group, which has one consumer at a time (the lease owner);
    trimmed by the owner after each snapshot.
  - ``stream:feedback:<p>``: labels from ``POST /v1/feedback`` on any replica (JSON, one per entry).
  - ``lease:detector:<p>``: the partition's lease; ``detector:status:<p>`` and
    ``detector:alerts:<p>``: its owner's counts and alert list (JSON), so ``/v1/status`` and
    ``/v1/alerts`` answer the same on every replica.
  - the owner's snapshot: ``snapshot:service`` for partition 0, the key the embedded mode's
    :class:`~monitor.state.redis_store.RedisStateStore` uses (a one-partition deployment can move
    between modes), ``snapshot:partition:<p>`` for the others.

>>> keys = StreamKeys("llmsafety:")
>>> keys.events, keys.partition(0).lease, keys.partition(2).snapshot
('llmsafety:stream:events', 'llmsafety:lease:detector:0', 'llmsafety:snapshot:partition:2')
>>> e = Event("id-1", 1.5, "hi", None, "gpt-4o", None, {"team": "a"}, {"k": [1]}, True)
>>> decode_event(encode_event(e)) == e
True
>>> decode_feedback(encode_feedback(Feedback("id-1", unsafe=True))) == Feedback("id-1", unsafe=True)
True
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
import redis

from monitor.drift.feedback_disagreement import Feedback
from monitor.events import Event, ScoredEvent

WORKERS_GROUP = "workers"
DETECTOR_GROUP = "detector"


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The keys of one detector partition."""

    prefix: str
    index: int

    @property
    def scored(self) -> str:
        return f"{self.prefix}stream:scored:{self.index}"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}stream:feedback:{self.index}"

    @property
    def lease(self) -> str:
        return f"{self.prefix}lease:detector:{self.index}"

    @property
    def status(self) -> str:
        return f"{self.prefix}detector:status:{self.index}"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}detector:alerts:{self.index}"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}snapshot:service" if self.index == 0 else f"{self.prefix}snapshot:partition:{self.index}"


@dataclass(frozen=True, slots=True)
class StreamKeys:
    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}stream:events"

    @property
    def counts(self) -> str:
        return f"{self.prefix}counts"

    @property
    def members(self) -> str:
        return f"{self.prefix}detector:members"

    @property
    def fence(self) -> str:
        return f"{self.prefix}lease:fence"

    def partition(self, index: int) -> PartitionKeys:
        return PartitionKeys(self.prefix, index)

    def event_id(self, event_id: str) -> str:
        """The dedup key; the same one :class:`~monitor.state.redis_store.RedisStateStore` uses."""
        return f"{self.prefix}id:{event_id}"


def _encode_without_empty_sender(record: Event | Feedback) -> bytes:
    """JSON of an event or label; ``sender`` only when set, so processes of the release before it
    (which knew no sender) still decode what a deployment without authentication sends during a
    rolling upgrade."""
    fields = asdict(record)
    if not fields["sender"]:
        del fields["sender"]
    return json.dumps(fields, separators=(",", ":")).encode()


def encode_event(event: Event) -> bytes:
    return _encode_without_empty_sender(event)


def decode_event(data: bytes) -> Event:
    return Event(**json.loads(data))


def encode_feedback(label: Feedback) -> bytes:
    return _encode_without_empty_sender(label)


def decode_feedback(data: bytes) -> Feedback:
    return Feedback(**json.loads(data))


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """What one worker publishes per batch: the judged events, and the ids of poison inputs (dropped)."""

    scored: list[ScoredEvent]
    poison_ids: tuple[str, ...] = ()


def encode_scored(batch: ScoredBatch) -> bytes:
    return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)


def decode_scored(data: bytes) -> ScoredBatch:
    return pickle.loads(data)


def entry_position(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a tuple that orders like Redis orders entries."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, seq = text.split("-")
    return int(ms), int(seq)


def next_entry_id(entry_id: bytes | str) -> str:
    """The smallest id after ``entry_id``: an exclusive ``MINID`` for XTRIM."""
    ms, seq = entry_position(entry_id)
    return f"{ms}-{seq + 1}"


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing; reading starts at the stream's beginning."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


CONSUMER_IDLE_MS = 3_600_000  # a consumer holding nothing and silent this long is forgotten
_FORGET_IDLE = """
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
"""


def forget_idle_consumers(client: redis.Redis, stream: str, group: str, idle_ms: int) -> int:
    """Delete the group's consumers idle for ``idle_ms`` that hold nothing pending; returns how many.

    Every process start adds a consumer name, so without this a group grows with every restart
    (a dead worker's pending entries are claimed by others first, and then it holds none). The
    check and the deletion are one script, so no entry a consumer has just read is dropped from
    the pending list; a live consumer deleted while idle comes back at its next read.
    """
    return int(client.eval(_FORGET_IDLE, 1, stream, group, idle_ms))


def group_missing(exc: redis.exceptions.ResponseError) -> bool:
    """The stream or its group is gone: Redis restarted without its data (or someone deleted them)."""
    return "NOGROUP" in str(exc) or "no such key" in str(exc)
