"""One detector partition's owner: exactly one process at a time feeds it judged events and labels.

Detectors are stateful and order-sensitive, so each partition (a fixed group of scopes, see
:mod:`monitor.scale.partitions`) runs in one owner, chosen by a :class:`~monitor.scale.lease.Lease`.
The new owner restores the partition's last snapshot and resumes its streams (scored batches
from workers, labels from ``POST /v1/feedback``) where the snapshot ends.

Exactly-once, the way it is built: the owner acknowledges entries only *after* a snapshot that
includes their effect is saved (fenced by the lease). Every entry not acknowledged is still in
the group's pending list, so a new owner claims them all (``XAUTOCLAIM``) and applies them again
on top of the snapshot: nothing is lost and, since the snapshot records the last entry of each
stream it includes, nothing is applied twice. Events published twice by workers (a stalled
worker whose entries were taken over) are dropped by idempotency key (``Event.key``); the set of recent ids is part
of the snapshot. Counts then match what the API accepted, exactly.

Reads are fenced too: the owner takes new entries with ``XREADGROUP`` inside a script that first
checks the lease, so a stalled owner that wakes up (or reconnects after a network split) cannot
take entries the new owner will never see (they would sit pending under the stale consumer, below
the new owner's position, and be trimmed). It finds out when a renewal, a fenced read or a
fenced write fails, and :meth:`DetectorOwner.own` returns ``"lost"``: its in-memory state may be
ahead of the snapshot and must not be reused, so :class:`~monitor.scale.node.DetectorNode`
discards that service.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Literal, Sequence

import redis

from monitor.drift.feedback_disagreement import Feedback
from monitor.events import ScoredEvent
from monitor.ingest.dedup import RecentIds
from monitor.pipeline.service import MonitorService
from monitor.scale.lease import Lease
from monitor.scale.outages import step_through_outages
from monitor.scale.streams import (
    CONSUMER_IDLE_MS,
    DETECTOR_GROUP,
    StreamKeys,
    decode_feedback,
    decode_scored,
    ensure_group,
    entry_position,
    forget_idle_consumers,
)
from monitor.state.redis_store import UNAVAILABLE_ERRORS
from monitor.state.snapshots import SnapshotError, decode, encode

log = logging.getLogger(__name__)

Outcome = Literal["stopped", "lost"]

# KEYS[1] lease, KEYS[2] scored stream, KEYS[3] feedback stream; ARGV[1] lease value, ARGV[2] group,
# ARGV[3] consumer, ARGV[4] count. -1: the lease is not this owner's (nothing read); else XREADGROUP's reply.
_FENCED_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[2], KEYS[3], '>', '>')
"""


class LeaseLost(Exception):
    pass


class DetectorOwner:
    def __init__(
        self,
        service: MonitorService,
        client: redis.Redis,
        keys: StreamKeys,
        owner: str,
        partition: int = 0,
        partitions: int = 1,
        lease_ttl_ms: int = 10_000,
        snapshot_every_events: int = 10_000,
        snapshot_every_seconds: float = 60.0,
        block_ms: int = 200,
        recent_ids: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.client = client
        self.keys = keys.partition(partition)
        self.partition, self.partitions = partition, partitions
        self.owner = owner
        self.lease = Lease(client, self.keys.lease, keys.fence, owner, lease_ttl_ms)
        self.snapshot_every_events = snapshot_every_events
        self.snapshot_every_seconds = snapshot_every_seconds
        self.block_ms = block_ms
        self._clock = clock
        self._recent = RecentIds(recent_ids)
        self._last_entry = self._last_feedback = (0, 0)
        self._unacked: dict[str, list[bytes]] = {self.keys.scored: [], self.keys.feedback: []}
        self._events_since = 0
        self._last_save = self._alerts_published = clock()
        self.seq = 0
        self.redelivered = 0
        self._judges_seen: set[str] = set()  # judge versions the workers' verdicts carried (a handful: one per worker setup)
        self.owning = threading.Event()
        self._groups = [(self.keys.scored, DETECTOR_GROUP), (self.keys.feedback, DETECTOR_GROUP)]
        self._fenced_read = client.register_script(_FENCED_READ)
        for stream, group in self._groups:
            ensure_group(client, stream, group)

    # ------------------------------------------------------------ lifecycle
    def run(self, stop: threading.Event) -> Outcome:
        """Stand by until the lease is free, then own the partition until ``stop`` or the lease is lost."""
        while not stop.is_set():
            try:
                if self.lease.acquire():
                    return self.own(stop)
            except UNAVAILABLE_ERRORS as exc:
                log.warning("detector standby %s: redis unavailable: %s", self.owner, exc)
            stop.wait(self.lease.ttl_ms / 3000)
        return "stopped"

    def own(self, stop: threading.Event) -> Outcome:
        """Own the partition (the lease is held) until ``stop`` (snapshot, release) or the lease is lost."""
        lost, done = threading.Event(), threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(lost, done), name="detector-lease", daemon=True)
        heartbeat.start()
        try:
            self._take_over()
            while not stop.is_set():
                if lost.is_set():
                    raise LeaseLost("renewal refused")
                step_through_outages(
                    self.step, stop, self.client, self._groups, f"detector owner {self.owner} of partition {self.partition}", 0.5, log
                )  # after a lost group, the lease check decides the rest
            done.set()
            heartbeat.join()
            self.save()
            self.lease.release()
            return "stopped"
        except (LeaseLost, *UNAVAILABLE_ERRORS) as exc:
            log.error("detector owner %s of partition %d stepping down: %s", self.owner, self.partition, exc)
            return "lost"
        finally:
            done.set()
            self.owning.clear()

    def _heartbeat(self, lost: threading.Event, done: threading.Event) -> None:
        """Renew every third of the lease in its own thread, so a long batch cannot starve it."""
        while not done.wait(self.lease.ttl_ms / 3000):
            try:
                if not self.lease.renew():
                    lost.set()
                    return
            except UNAVAILABLE_ERRORS as exc:  # keep trying: the lease may still be ours when Redis is back
                log.warning("detector owner %s: cannot renew the lease: %s", self.owner, exc)

    def _take_over(self) -> None:
        data = self.client.get(self.keys.snapshot)
        if data is not None:
            try:
                self._restore(decode(data))
            except SnapshotError as exc:
                log.error("%s; owner %s starts partition %d fresh", exc, self.owner, self.partition)
        claimed = {stream: self._claim_all(stream) for stream, _ in self._groups}
        log.info(
            "detector owner %s (token %s) took over partition %d at seq %d; replaying %d unacknowledged batches",
            self.owner, self.lease.token, self.partition, self.seq, len(claimed[self.keys.scored]),
        )
        self._apply(claimed[self.keys.scored], claimed[self.keys.feedback])
        self._publish(alerts=True)
        self.owning.set()

    def _claim_all(self, stream: str) -> list[tuple[bytes, dict]]:
        """Every entry pending in the group (the previous owner's), oldest first."""
        claimed: list[tuple[bytes, dict]] = []
        cursor = "0-0"
        while True:
            cursor, entries, _deleted = self.client.xautoclaim(stream, DETECTOR_GROUP, self.owner, 0, start_id=cursor, count=256)
            claimed += [(entry_id, fields) for entry_id, fields in entries if fields]
            if cursor in (b"0-0", "0-0"):
                break
        return sorted(claimed, key=lambda e: entry_position(e[0]))

    def _restore(self, state: dict[str, Any]) -> None:
        taken = (state.get("partition", 0), state.get("partitions", 1))
        if taken != (self.partition, self.partitions):
            raise SnapshotError(f"snapshot: taken for partition {taken[0]} of {taken[1]}, this is partition {self.partition} of {self.partitions}")
        self.service.load_state_dict(state)
        self._recent = RecentIds(self._recent.capacity)
        self._recent.extend(state.get("recent_ids", ()))
        self._last_entry = tuple(state.get("last_entry", (0, 0)))  # type: ignore[assignment]
        self._last_feedback = tuple(state.get("last_feedback", (0, 0)))  # type: ignore[assignment]
        self.redelivered = state.get("redelivered", 0)
        self.seq = state["seq"]

    # ------------------------------------------------------------ processing
    def step(self) -> int:
        """Apply the next scored batches and labels (if any) and snapshot when due; returns events applied."""
        got = self._read()
        applied = self._apply(got.get(self.keys.scored, []), got.get(self.keys.feedback, []))
        now = self._clock()
        due = self._events_since >= self.snapshot_every_events or now - self._last_save >= self.snapshot_every_seconds
        if any(self._unacked.values()) and due:
            self.save()
        return applied

    def _read(self) -> dict[str, list[tuple[bytes, dict]]]:
        """New entries by stream, read only while the lease is this owner's (else ``LeaseLost``).
        With nothing new, wait up to ``block_ms`` for an append (a plain ``XREAD``: it takes nothing)."""
        if self.lease.value is None:
            raise LeaseLost("lease released")
        streams = [self.keys.lease, self.keys.scored, self.keys.feedback]
        reply = self._fenced_read(keys=streams, args=[self.lease.value, DETECTOR_GROUP, self.owner, 16])
        if reply == -1:
            raise LeaseLost("fenced read refused")
        if not reply:
            self.client.xread({self.keys.scored: "$", self.keys.feedback: "$"}, count=1, block=self.block_ms)
            return {}
        return {
            (name.decode() if isinstance(name, bytes) else name): [(entry_id, dict(zip(f[::2], f[1::2]))) for entry_id, f in entries]
            for name, entries in reply
        }

    def _apply(self, scored: Sequence[tuple[bytes, dict]], feedback: Sequence[tuple[bytes, dict]]) -> int:
        """Scored batches first, then labels (a label can only match an event already applied)."""
        if not scored and not feedback:
            return 0
        applied, transitions = self._apply_scored(scored)
        labelled = self._apply_feedback(feedback)
        self._publish(alerts=transitions > 0 or labelled > 0)
        return applied

    def _apply_scored(self, entries: Sequence[tuple[bytes, dict]]) -> tuple[int, int]:
        applied = transitions = 0
        for entry_id, fields in entries:
            self._unacked[self.keys.scored].append(entry_id)
            position = entry_position(entry_id)
            if position <= self._last_entry:
                continue  # already in the restored snapshot
            self._last_entry = position
            try:
                batch = decode_scored(fields[b"b"])
            except Exception:  # a bug, tampering or another release's format: skip it, never crash-loop the partition on it
                log.exception("partition %d: unreadable scored entry %r skipped", self.partition, entry_id)
                self.service.metrics.worker_errors.inc()
                continue
            self._check_judges(batch.scored)
            fresh: list[ScoredEvent] = [s for s in batch.scored if self._recent.add(s.event.key)]
            poison = [key for key in batch.poison_ids if self._recent.add(key)]
            self.redelivered += len(batch.scored) + len(batch.poison_ids) - len(fresh) - len(poison)
            self.service.count_poison(len(poison))
            transitions += len(self.service.process_scored(fresh, len(fresh) + len(poison)))
            applied += len(fresh)
            self._events_since += len(fresh) + len(poison)
        return applied, transitions

    def _check_judges(self, scored: Sequence[ScoredEvent]) -> None:
        """Warn once per judge the workers' verdicts name that is not the one this role labels its state with
        (computed from its own settings): the roles' judge settings differ, and state, metrics and the refit
        check on restore would name the wrong judge."""
        for version in {s.verdict.judge_version for s in scored} - self._judges_seen:
            if len(self._judges_seen) < 64:
                self._judges_seen.add(version)
            if version != self.service.verdicts_from:
                log.warning("partition %d: workers judge with %s, but this detector role labels its state with %s: set "
                            "the judge's settings (judge, judge_max_seq_length, judge_*_threshold, judge_prompt_skip_below, embedding_backend) "
                            "alike on every role", self.partition, version, self.service.verdicts_from)

    def _apply_feedback(self, entries: Sequence[tuple[bytes, dict]]) -> int:
        """Labels not yet in the snapshot; returns how many were applied."""
        labels: list[tuple[int, Feedback]] = []
        for entry_id, fields in entries:
            self._unacked[self.keys.feedback].append(entry_id)
            position = entry_position(entry_id)
            if position <= self._last_feedback:
                continue
            self._last_feedback = position
            try:
                labels.append((len(labels), decode_feedback(fields[b"f"])))
            except Exception:  # as for scored entries: skipped, not retried forever
                log.exception("partition %d: unreadable feedback entry %r skipped", self.partition, entry_id)
                self.service.metrics.worker_errors.inc()
        if not labels:
            return 0
        self._events_since += len(labels)
        try:
            _statuses, invalid = self.service.observe_feedback(labels)
        except LookupError as exc:  # the forwarders check this too; labels sent before a reconfiguration end here
            log.warning("partition %d: %d labels ignored: %s", self.partition, len(labels), exc)
            return 0
        for rejection in invalid:
            log.warning("partition %d: label ignored: %s", self.partition, rejection.error)
        return len(labels)

    # ------------------------------------------------------------ snapshots and publishing
    def save(self) -> None:
        """Fenced snapshot, then acknowledge and trim what it covers."""
        data = encode(self._state(), self.seq + 1, time.time())
        if not self.lease.fenced_set(self.keys.snapshot, data):
            raise LeaseLost("fenced snapshot write refused")
        self.seq += 1
        pipe = self.client.pipeline(transaction=False)
        for stream, last in ((self.keys.scored, self._last_entry), (self.keys.feedback, self._last_feedback)):
            if self._unacked[stream]:
                pipe.xack(stream, DETECTOR_GROUP, *self._unacked[stream])
            pipe.xtrim(stream, minid=f"{last[0]}-{last[1] + 1}")
        pipe.execute()
        for stream in self._unacked:  # names of earlier owners, once they hold nothing
            forget_idle_consumers(self.client, stream, DETECTOR_GROUP, CONSUMER_IDLE_MS)
        self._unacked = {stream: [] for stream in self._unacked}
        self._events_since, self._last_save = 0, self._clock()
        self._publish(alerts=False)

    def _state(self) -> dict[str, Any]:
        return {
            **self.service.state_dict(),
            "recent_ids": self._recent.hashes(),
            "last_entry": self._last_entry,
            "last_feedback": self._last_feedback,
            "partition": self.partition,
            "partitions": self.partitions,
            "redelivered": self.redelivered,
        }

    def status(self) -> dict[str, Any]:
        c = self.service.counts
        return {
            "owner": self.owner,
            "partition": self.partition,
            "token": self.lease.token,
            "processed": c.processed,
            "judged": c.judged,
            "dropped": dict(c.dropped),
            "redelivered": self.redelivered,
            "event_time": self.service.event_time,
            "judge_version": self.service.judge_version,
            "snapshot_seq": self.seq,
        }

    def _publish(self, alerts: bool) -> None:
        """Counts after every batch; alerts at once on a transition, else (summaries, ``updated_at``) at most every second."""
        if not self.lease.fenced_set(self.keys.status, json.dumps(self.status()).encode()):
            raise LeaseLost("fenced status write refused")
        now = self._clock()
        if alerts or now - self._alerts_published >= 1.0:
            body = json.dumps([a.to_dict() for a in self.service.alerts("all")]).encode()
            self.lease.fenced_set(self.keys.alerts, body)
            self._alerts_published = now
