"""The worker role: embed and judge events from the stream, publish the results.

Workers hold no state, so any number run side by side (one consumer group, each entry delivered
to one worker). A batch's results are appended to the scored stream and its source entries
acknowledged in one ``MULTI``/``EXEC``: a worker killed at any point either published and
acknowledged the batch or did neither. Entries a dead (or stalled) worker had read but not
acknowledged are taken over by a live worker with ``XAUTOCLAIM`` once idle for
``claim_idle_ms``; a stalled worker that wakes up may then publish the same events twice, which
the detector owner drops by idempotency key (``Event.key``).

Each batch's results are split by detector partition (:func:`~monitor.scale.partitions.split_by_partition`):
every partition's scored stream gets the batch's events that have a scope in it, and partition 0
(``global``, which every event has) also gets the ids of poison events.

Backpressure: while any detector partition has more than ``scored_lag_limit`` unread batches,
workers stop reading, the events stream fills, and the API answers 503.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

import redis

from monitor.events import Event
from monitor.pipeline.scoring import Scorer
from monitor.scale.outages import step_through_outages
from monitor.scale.partitions import split_by_partition
from monitor.scale.streams import (
    CONSUMER_IDLE_MS,
    DETECTOR_GROUP,
    WORKERS_GROUP,
    ScoredBatch,
    StreamKeys,
    decode_event,
    encode_scored,
    ensure_group,
    forget_idle_consumers,
    next_entry_id,
)

log = logging.getLogger(__name__)


class StreamWorker:
    def __init__(
        self,
        client: redis.Redis,
        keys: StreamKeys,
        scorer: Scorer,
        consumer: str,
        batch_size: int = 64,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        scored_lag_limit: int = 512,
        partitions: int = 1,
    ) -> None:
        self.client = client
        self.keys = keys
        self.scorer = scorer
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.scored_lag_limit = scored_lag_limit
        self.partitions = partitions
        self._scored_streams = [keys.partition(p).scored for p in range(partitions)]
        self.processed = 0
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_forget = 0.0
        self._groups = [(keys.events, WORKERS_GROUP)] + [(stream, DETECTOR_GROUP) for stream in self._scored_streams]
        for stream, group in self._groups:
            ensure_group(client, stream, group)

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; Redis outages are waited out, not fatal."""
        groups = self._groups
        while not stop.is_set():
            step_through_outages(self.step, stop, self.client, groups, f"worker {self.consumer}", 1.0, log)

    def step(self) -> int:
        """Handle one batch; returns how many stream entries it consumed (0 when idle or held back)."""
        if self._detector_lag() > self.scored_lag_limit:
            time.sleep(self.block_ms / 1000)
            return 0
        entries = self._claim() or self._read()
        if not entries:
            return 0
        ids = [entry_id for entry_id, _ in entries]
        events: list[Event] = []
        unreadable = []
        for entry_id, fields in entries:
            try:
                events.append(decode_event(fields[b"e"]))
            except Exception:  # written by our own API, so this is a bug or tampering: skip, don't loop on it
                log.exception("unreadable stream entry %s skipped", entry_id)
                unreadable.append(entry_id)
        scored, poison, _ = self.scorer.score_isolating_poison([(e, 1.0) for e in events])
        parts = split_by_partition(scored, self.partitions)
        pipe = self.client.pipeline(transaction=True)
        for p, stream in enumerate(self._scored_streams):
            batch = ScoredBatch(parts.get(p, []), tuple(e.key for e in poison) if p == 0 else ())
            if batch.scored or batch.poison_ids:
                pipe.xadd(stream, {b"b": encode_scored(batch)})
        pipe.xack(self.keys.events, WORKERS_GROUP, *ids)
        if unreadable:
            pipe.hincrby(self.keys.counts, "unreadable", len(unreadable))
        pipe.execute()
        self.processed += len(ids)
        self._trim()
        return len(ids)

    def _read(self) -> Sequence[tuple[bytes, dict]]:
        reply = self.client.xreadgroup(
            WORKERS_GROUP, self.consumer, {self.keys.events: ">"}, count=self.batch_size, block=self.block_ms
        )
        return reply[0][1] if reply else []

    def _claim(self) -> Sequence[tuple[bytes, dict]]:
        """Entries idle past ``claim_idle_ms`` in other (dead) consumers; one pass every half idle time."""
        if time.monotonic() < self._next_claim:
            return []
        cursor, entries, _deleted = self.client.xautoclaim(
            self.keys.events, WORKERS_GROUP, self.consumer, self.claim_idle_ms, start_id=self._claim_cursor, count=self.batch_size
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        if self._claim_cursor == "0-0":
            self._next_claim = time.monotonic() + self.claim_idle_ms / 2000
        if entries:
            log.info("worker %s took over %d entries from a stalled or dead worker", self.consumer, len(entries))
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    def _detector_lag(self) -> int:
        """Unread batches of the partition furthest behind."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self._scored_streams:
            pipe.xinfo_groups(stream)
            pipe.xlen(stream)
        replies = pipe.execute()
        worst = 0
        for groups, length in zip(replies[::2], replies[1::2]):
            for group in groups:
                if group["name"] in (DETECTOR_GROUP, DETECTOR_GROUP.encode()):
                    lag = group.get("lag")
                    worst = max(worst, int(lag) if lag is not None else length)
        return worst

    def _trim(self) -> None:
        """Drop entries every worker is done with: below the oldest pending one, or all delivered ones.

        The group's last-delivered id is read *before* the pending list: an entry another worker
        reads in between is then above that id (kept), never trimmed while pending.
        """
        group = next(g for g in self.client.xinfo_groups(self.keys.events) if g["name"] in (WORKERS_GROUP, WORKERS_GROUP.encode()))
        last = group["last-delivered-id"]
        pending = self.client.xpending(self.keys.events, WORKERS_GROUP)
        if pending["pending"]:
            minid = pending["min"].decode() if isinstance(pending["min"], bytes) else pending["min"]
        else:
            minid = next_entry_id(last)
        self.client.xtrim(self.keys.events, minid=minid)
        if time.monotonic() >= self._next_forget:  # consumers of restarted workers, once they hold nothing
            forget_idle_consumers(self.client, self.keys.events, WORKERS_GROUP, CONSUMER_IDLE_MS)
            self._next_forget = time.monotonic() + 60.0
