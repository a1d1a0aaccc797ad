"""The detector role: exactly one process at a time feeds judged events to the detectors.

Detectors are stateful and order-sensitive, so they run in one owner, chosen by a
:class:`~monitor.scale.lease.Lease`. Standbys wait for the lease; the new owner restores the
last snapshot and resumes the scored stream where the snapshot ends.

Exactly-once, the way it is built: the owner acknowledges scored entries only *after* a snapshot
that includes their effect is saved (fenced by the lease). Every entry not acknowledged is still
in the group's pending list, so a new owner claims them all (``XAUTOCLAIM``) and applies them
again on top of the snapshot: nothing is lost and, since the snapshot records the last entry it
includes, nothing is applied twice. Events published twice by workers (a stalled worker whose
entries were taken over) are dropped by ``event_id``; the set of recent ids is part of the
snapshot. Counts then match what the API accepted, exactly.

A stalled owner that lost its lease finds out when a renewal or a fenced write fails, and
:meth:`DetectorOwner.run` returns ``"lost"``: the process exits and its supervisor starts it
again as a standby (its in-memory state may be ahead of the snapshot and must not be reused).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Literal, Sequence

import redis

from monitor.events import ScoredEvent
from monitor.ingest.dedup import RecentIds
from monitor.pipeline.service import MonitorService
from monitor.scale.lease import Lease
from monitor.scale.outages import step_through_outages
from monitor.scale.streams import DETECTOR_GROUP, StreamKeys, decode_scored, ensure_group
from monitor.state.redis_store import UNAVAILABLE_ERRORS
from monitor.state.snapshots import SnapshotError, decode, encode

log = logging.getLogger(__name__)

Outcome = Literal["stopped", "lost"]


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, seq = text.split("-")
    return int(ms), int(seq)


class LeaseLost(Exception):
    pass


class DetectorOwner:
    def __init__(
        self,
        service: MonitorService,
        client: redis.Redis,
        keys: StreamKeys,
        owner: str,
        lease_ttl_ms: int = 10_000,
        snapshot_every_events: int = 10_000,
        snapshot_every_seconds: float = 60.0,
        block_ms: int = 200,
        recent_ids: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.client = client
        self.keys = keys
        self.owner = owner
        self.lease = Lease(client, keys.lease, keys.fence, owner, lease_ttl_ms)
        self.snapshot_every_events = snapshot_every_events
        self.snapshot_every_seconds = snapshot_every_seconds
        self.block_ms = block_ms
        self._clock = clock
        self._recent = RecentIds(recent_ids)
        self._last_entry = (0, 0)
        self._unacked: list[bytes] = []
        self._events_since = 0
        self._last_save = self._alerts_published = clock()
        self.seq = 0
        self.redelivered = 0
        self.owning = threading.Event()
        ensure_group(client, keys.scored, DETECTOR_GROUP)

    # ------------------------------------------------------------ lifecycle
    def run(self, stop: threading.Event) -> Outcome:
        """Stand by until the lease is free, then own the detectors until ``stop`` or the lease is lost."""
        while not stop.is_set():
            try:
                if self.lease.acquire():
                    break
            except UNAVAILABLE_ERRORS as exc:
                log.warning("detector standby %s: redis unavailable: %s", self.owner, exc)
            stop.wait(self.lease.ttl_ms / 3000)
        else:
            return "stopped"
        lost, done = threading.Event(), threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(lost, done), name="detector-lease", daemon=True)
        heartbeat.start()
        try:
            self._take_over()
            while not stop.is_set():
                if lost.is_set():
                    raise LeaseLost("renewal refused")
                step_through_outages(
                    self.step, stop, self.client, [(self.keys.scored, DETECTOR_GROUP)], f"detector owner {self.owner}", 0.5, log
                )  # after a lost group, the lease check decides the rest
            done.set()
            heartbeat.join()
            self.save()
            self.lease.release()
            return "stopped"
        except (LeaseLost, *UNAVAILABLE_ERRORS) as exc:
            log.error("detector owner %s stepping down: %s", self.owner, exc)
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
                log.error("%s; owner %s starts fresh", exc, self.owner)
        claimed: list[tuple[bytes, dict]] = []
        cursor = "0-0"
        while True:
            cursor, entries, _deleted = self.client.xautoclaim(self.keys.scored, DETECTOR_GROUP, self.owner, 0, start_id=cursor, count=256)
            claimed += [(entry_id, fields) for entry_id, fields in entries if fields]
            if cursor in (b"0-0", "0-0"):
                break
        claimed.sort(key=lambda e: _id_tuple(e[0]))
        log.info("detector owner %s (token %s) took over at seq %d; replaying %d unacknowledged batches", self.owner, self.lease.token, self.seq, len(claimed))
        self._apply(claimed)
        self._publish(alerts=True)
        self.owning.set()

    def _restore(self, state: dict[str, Any]) -> None:
        self._in_worker(self.service.load_state_dict, state)
        self._recent = RecentIds(self._recent.capacity)
        for event_id in state.get("recent_ids", ()):
            self._recent.add(event_id)
        self._last_entry = tuple(state.get("last_entry", (0, 0)))  # type: ignore[assignment]
        self.redelivered = state.get("redelivered", 0)
        self.seq = state["seq"]

    # ------------------------------------------------------------ processing
    def step(self) -> int:
        """Apply the next scored batches (if any) and snapshot when due; returns events applied."""
        reply = self.client.xreadgroup(DETECTOR_GROUP, self.owner, {self.keys.scored: ">"}, count=16, block=self.block_ms)
        applied = self._apply(reply[0][1]) if reply else 0
        now = self._clock()
        if self._unacked and (self._events_since >= self.snapshot_every_events or now - self._last_save >= self.snapshot_every_seconds):
            self.save()
        return applied

    def _apply(self, entries: Sequence[tuple[bytes, dict]]) -> int:
        if not entries:
            return 0
        applied, transitions = self._in_worker(self._apply_in_worker, entries)
        self._publish(alerts=transitions > 0)
        return applied

    def _apply_in_worker(self, entries: Sequence[tuple[bytes, dict]]) -> tuple[int, int]:
        applied = transitions = 0
        for entry_id, fields in entries:
            self._unacked.append(entry_id)
            position = _id_tuple(entry_id)
            if position <= self._last_entry:
                continue  # already in the restored snapshot
            self._last_entry = position
            batch = decode_scored(fields[b"b"])
            fresh: list[ScoredEvent] = [s for s in batch.scored if self._recent.add(s.event.event_id)]
            poison = [event_id for event_id in batch.poison_ids if self._recent.add(event_id)]
            self.redelivered += len(batch.scored) + len(batch.poison_ids) - len(fresh) - len(poison)
            self.service.count_poison(len(poison))
            transitions += len(self.service.process_scored(fresh, len(fresh) + len(poison)))
            applied += len(fresh)
            self._events_since += len(fresh) + len(poison)
        return applied, transitions

    def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run in the service's worker thread (serialised with anything else it processes); directly once it has stopped."""
        try:
            future = self.service.call_in_worker(fn, *args)
        except RuntimeError:  # the executor is shut down: nothing else can run
            return fn(*args)
        return future.result()

    # ------------------------------------------------------------ snapshots and publishing
    def save(self) -> None:
        """Fenced snapshot, then acknowledge and trim what it covers."""
        state = self._in_worker(self._state)
        data = encode(state, self.seq + 1, time.time())
        if not self.lease.fenced_set(self.keys.snapshot, data):
            raise LeaseLost("fenced snapshot write refused")
        self.seq += 1
        pipe = self.client.pipeline(transaction=False)
        if self._unacked:
            pipe.xack(self.keys.scored, DETECTOR_GROUP, *self._unacked)
        ms, seq = self._last_entry
        pipe.xtrim(self.keys.scored, minid=f"{ms}-{seq + 1}")
        pipe.execute()
        self._unacked, self._events_since, self._last_save = [], 0, self._clock()
        self._publish(alerts=False)

    def _state(self) -> dict[str, Any]:
        return {
            **self.service.state_dict(),
            "recent_ids": list(self._recent),
            "last_entry": self._last_entry,
            "redelivered": self.redelivered,
        }

    def status(self) -> dict[str, Any]:
        c = self.service.counts
        return {
            "owner": self.owner,
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
        if not self.lease.fenced_set(self.keys.detector_status, json.dumps(self.status()).encode()):
            raise LeaseLost("fenced status write refused")
        now = self._clock()
        if alerts or now - self._alerts_published >= 1.0:
            body = json.dumps([a.to_dict() for a in self.service.alerts("all")]).encode()
            self.lease.fenced_set(self.keys.alerts, body)
            self._alerts_published = now
