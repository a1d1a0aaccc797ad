"""The detector role: a process that owns its share of the detector partitions.

Every detector process announces itself in ``<prefix>detector:members`` (a heartbeat that
expires after ``lease_ttl_seconds``, timed by Redis's clock) and, every third of the lease time,
balances: with ``n`` live members each should own ``ceil(partitions / n)`` partitions, so it
takes free partition leases up to that share and hands back (snapshot, release) the ones above
it. Two processes therefore split the partitions; when one dies, its heartbeat and leases expire
and the survivor takes over its partitions from their snapshots plus the unacknowledged entries
(:class:`~monitor.scale.detector.DetectorOwner`). A partition whose lease was lost (stalled
owner) is discarded: the next owner of it starts from the snapshot, never from memory.

Each owned partition runs its own :class:`~monitor.pipeline.service.MonitorService` (detectors,
alert engine, delivery) on one shared metrics registry, in a thread of its own. The process
loads no embedding model: workers embed and judge. Over HTTP it answers like an api replica
for status, alerts and feedback (:class:`~monitor.scale.published.PublishedState`, the forwarder),
and serves clusters and reports from the partitions it owns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import redis

from monitor.backend import NotReady
from monitor.config import Settings
from monitor.drift.emerging_clusters import ClusterSummary
from monitor.export.metrics import MonitorMetrics
from monitor.export.reservoir import WindowReservoir
from monitor.ingest.parsing import ParsedBody
from monitor.ingest.request import IngestOutcome
from monitor.pipeline.service import MonitorService
from monitor.scale.detector import DetectorOwner
from monitor.scale.frontend import forwarder
from monitor.scale.partitions import partition_of
from monitor.scale.published import PublishedReads, PublishedState
from monitor.scale.streams import StreamKeys
from monitor.state.redis_store import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

# KEYS[1] members zset; ARGV[1] this member, ARGV[2] ttl ms. Returns the number of live members.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""


class Membership:
    """Live detector processes: a heartbeat each, expiring on Redis's clock (hosts' clocks may differ)."""

    def __init__(self, client: redis.Redis, key: str, member: str, ttl_ms: int) -> None:
        self.client, self.key, self.member, self.ttl_ms = client, key, member, ttl_ms
        self._beat = client.register_script(_BEAT)

    def beat(self) -> int:
        """Renew this member; returns how many members are alive, this one included."""
        return int(self._beat(keys=[self.key], args=[self.member, self.ttl_ms]))

    def leave(self) -> None:
        self.client.zrem(self.key, self.member)


@dataclass
class _Held:
    owner: DetectorOwner
    stop: threading.Event
    thread: threading.Thread


class DetectorNode(PublishedReads):
    role = "detector"

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        make_service: Callable[[int, MonitorMetrics], MonitorService],
        judge_version: str,
        name: str,
    ) -> None:
        self.settings = settings
        self.client = client
        self.name = name
        self.keys = StreamKeys(settings.state_key_prefix)
        self.partitions = settings.detector_partitions
        self.metrics = MonitorMetrics()
        self.metrics.judge_info.labels(judge_version=judge_version).set(1)
        self.judge_version = judge_version
        self.published = PublishedState(client, self.keys, self.partitions, settings.queue_capacity)
        self.metrics.watch_queue(self.published.watched_backlog(), lambda: 1.0)
        self.feedback = forwarder(settings, client)
        self._make_service = make_service
        self._ttl_ms = int(settings.lease_ttl_seconds * 1000)
        self._membership = Membership(client, self.keys.members, name, self._ttl_ms)
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()  # _held: changed by the balancing thread, read by HTTP routes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="detector-balance", daemon=True)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._thread.start()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        """Hand every partition back (snapshot, release) and leave the membership."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for p in list(self._held):
            self._give_up(p)
        try:
            self._membership.leave()
        except UNAVAILABLE_ERRORS:
            pass  # the heartbeat expires by itself
        self.client.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def owned(self) -> list[int]:
        """Partitions this process owns now (lease held, state restored)."""
        with self._lock:
            return sorted(p for p, held in self._held.items() if held.owner.owning.is_set())

    # ---------------------------------------------------------------- balancing
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.balance()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("detector node %s: redis unavailable, retrying: %s", self.name, exc)
            except Exception:  # a bug must not stop balancing for good (no heartbeat, no takeovers)
                log.exception("detector node %s: balancing round failed; retrying", self.name)
            self._stop.wait(self._ttl_ms / 3000)

    def balance(self) -> None:
        """One round: drop finished owners, then take free partitions up to this process's share, or hand one back above it."""
        for p in [p for p, held in self._held.items() if not held.thread.is_alive()]:
            log.warning("detector node %s: partition %d ended (lease lost or stopped); its state is discarded", self.name, p)
            self._release(p)
        share = math.ceil(self.partitions / self._membership.beat())
        if len(self._held) > share:
            self._give_up(max(self._held))
            return
        for p in range(self.partitions):
            if len(self._held) >= share or self._stop.is_set():
                break
            if p not in self._held and not self.client.exists(self.keys.partition(p).lease):
                self._take(p)

    def _take(self, p: int) -> None:
        service = self._make_service(p, self.metrics)
        s = self.settings
        try:
            owner = DetectorOwner(
                service, self.client, self.keys, self.name, partition=p, partitions=self.partitions, lease_ttl_ms=self._ttl_ms,
                snapshot_every_events=s.snapshot_every_events, snapshot_every_seconds=s.snapshot_every_seconds,
            )
            acquired = owner.lease.acquire()
        except BaseException:  # Redis failed midway: the next round builds a new service, so release this one
            service.close()
            raise
        if not acquired:  # another process was faster
            service.close()
            return
        stop = threading.Event()
        thread = threading.Thread(target=owner.own, args=(stop,), name=f"detector-partition-{p}", daemon=True)
        with self._lock:
            self._held[p] = _Held(owner, stop, thread)
        thread.start()

    def _give_up(self, p: int) -> None:
        held = self._held[p]
        held.stop.set()
        held.thread.join(timeout=60)
        self._release(p)

    def _release(self, p: int) -> None:
        with self._lock:
            held = self._held.pop(p)
        held.owner.service.close()

    # ---------------------------------------------------------------- what the HTTP routes use
    def status(self) -> dict[str, Any]:
        return {"role": self.role, "node": self.name, "partitions_owned": self.owned(), **self.published.status()}

    def ingest(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        raise NotReady("ingest is served by the api role (monitor serve --role api), not by detector processes", self.settings.retry_after_seconds)

    async def ingest_async(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        return self.ingest(parsed, arrival_time, sender)

    def partition_service(self, p: int) -> MonitorService | None:
        """The service of partition ``p`` while this process owns it."""
        with self._lock:
            held = self._held.get(p)
        return held.owner.service if held is not None and held.owner.owning.is_set() else None

    def clusters(self, scope: str, raw: bool = False) -> list[ClusterSummary] | None:
        p = partition_of(scope, self.partitions)
        service = self.partition_service(p)
        if service is None:
            owner = self.published.owners()[p].get("owner")
            raise NotReady(f"scope {scope!r} is in detector partition {p}, owned by {owner or 'nobody yet'}, not by this process", self.settings.retry_after_seconds)
        return service.clusters(scope, raw)

    def find_cluster(self, cluster_id: str, raw: bool = False) -> ClusterSummary | None:
        """The cluster from this process's partitions; ``None`` (404) only when this process owns them
        all, else 503 naming the owners to ask (an id does not tell its scope's partition)."""
        owned = self.owned()
        for p in owned:
            service = self.partition_service(p)
            found = service.find_cluster(cluster_id, raw) if service is not None else None
            if found is not None:
                return found
        elsewhere = [p for p in range(self.partitions) if p not in owned]
        if not elsewhere:
            return None
        owners = self.published.owners()
        where = ", ".join(f"{p} ({owners[p].get('owner') or 'nobody yet'})" for p in elsewhere)
        raise NotReady(f"cluster_id: {cluster_id!r} is not in this process's partitions; ask the owners of partitions {where}", self.settings.retry_after_seconds)

    @property
    def report_reservoir(self) -> WindowReservoir | None:
        """Partition 0's (it sees every event, so reports come from there); none when another process owns it."""
        service = self.partition_service(0)
        return service.report_reservoir if service is not None else None
