"""Detector partitions under faults they must survive without losing events or leaking (real redis-server on 127.0.0.1:6379).

Fast, in-process tests of :class:`~monitor.scale.detector.DetectorOwner` and
:class:`~monitor.scale.node.DetectorNode`; the role processes and their SIGKILL faults are in
``tests/test_scaleout.py``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
import time
import uuid
from typing import Iterator

import pytest
import redis

from monitor.signals import Condition
from monitor.alerts.engine import AlertEngine
from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.export.metrics import MonitorMetrics
from monitor.pipeline.service import MonitorService
from monitor.scale.detector import DetectorOwner, LeaseLost
from monitor.scale.node import DetectorNode
from monitor.scale.published import PublishedState
from monitor.scale.roles import build_partition_service
from monitor.scale.streams import ScoredBatch, StreamKeys, encode_scored
from tests.helpers.detectors import RecentRefusals
from tests.helpers.scored import scored
from tests.helpers.server import free_port
from tests.helpers.waiting import wait_for

T0 = 1767225600.0


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no redis-server on 127.0.0.1:6379")
    yield client
    client.close()


@pytest.fixture
def keys(client: redis.Redis) -> Iterator[StreamKeys]:
    prefix = f"test:owner:{uuid.uuid4().hex}:"
    yield StreamKeys(prefix)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def partition_service(keys: StreamKeys, p: int, metrics: MonitorMetrics) -> MonitorService:
    settings = Settings(judge="prototype", state_key_prefix=keys.prefix)
    return build_partition_service(settings, p, metrics, "test-judge", detectors=lambda: DetectorSuite([RecentRefusals()]))


def owner(client: redis.Redis, keys: StreamKeys, name: str) -> DetectorOwner:
    service = partition_service(keys, 0, MonitorMetrics())
    return DetectorOwner(service, client, keys, name, lease_ttl_ms=60_000, block_ms=50)


def publish(client: redis.Redis, keys: StreamKeys, first: int, n: int) -> None:
    batch = ScoredBatch([scored(T0 + i, event_id=f"e-{i}") for i in range(first, first + n)])
    client.xadd(keys.partition(0).scored, {b"b": encode_scored(batch)})


def test_a_stale_owner_that_wakes_up_takes_no_entries_from_the_new_owner(client, keys):
    stale, new = owner(client, keys, "stale"), owner(client, keys, "new")
    assert stale.lease.acquire()
    stale._take_over()
    publish(client, keys, 0, 3)
    stale.step()
    client.delete(keys.partition(0).lease)  # the stale owner stalls past its lease...
    assert new.lease.acquire()
    new._take_over()  # ...the new one claims what it left unacknowledged
    publish(client, keys, 3, 4)
    with pytest.raises(LeaseLost):  # the stale owner wakes before its heartbeat notices, and tries to read on
        stale.step()
    for _ in range(3):
        new.step()
    assert new.service.counts.processed == 7  # none of the entries went to the stale consumer


def test_an_unreadable_entry_is_skipped_and_the_owner_carries_on(client, keys):
    only = owner(client, keys, "only")
    assert only.lease.acquire()
    stop = threading.Event()
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(only.own(stop)), daemon=True)
    thread.start()
    try:
        client.xadd(keys.partition(0).scored, {b"b": b"not a pickle"})
        client.xadd(keys.partition(0).feedback, {b"f": b'{"event_id": "e-0", "unknown_field": 1}'})
        publish(client, keys, 0, 5)
        wait_for("the events after the unreadable entries", lambda: only.service.counts.processed == 5, 10, interval=0.05)
        assert thread.is_alive() and only.owning.is_set()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert outcome == ["stopped"]  # its last snapshot acknowledged the unreadable entries with the rest: no one replays them
    assert client.xpending(keys.partition(0).scored, "detector")["pending"] == 0
    assert client.xpending(keys.partition(0).feedback, "detector")["pending"] == 0


def test_a_partition_not_taken_because_redis_failed_releases_its_service(client, keys):
    closed: list[int] = []

    def make_service(p: int, metrics: MonitorMetrics) -> MonitorService:
        service = partition_service(keys, p, metrics)
        service.stop_listeners.append(lambda: closed.append(p))
        return service

    node = DetectorNode(Settings(judge="prototype", state_key_prefix=keys.prefix), client, make_service, "test-judge", "node")
    node.client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)  # Redis gone between two calls
    with pytest.raises(redis.exceptions.ConnectionError):
        node._take(0)
    assert closed == [0] and node.owned() == []


def test_a_partition_other_than_0_restores_without_setting_the_processes_event_time(keys):
    metrics = MonitorMetrics()
    first = partition_service(keys, 1, metrics)
    first.process_scored([scored(T0 + i, scopes=("model=a",)) for i in range(3)])
    state = first.state_dict()
    assert state["event_time"] == T0 + 2
    metrics.event_time.set(T0 + 50)  # partition 0's owner in this process has seen later events
    partition_service(keys, 1, metrics).load_state_dict(state)  # partition 1 handed over to this process
    assert metrics.registry.get_sample_value("llmsafety_event_time_seconds") == T0 + 50


def test_published_alerts_with_fields_from_a_newer_release_are_still_served(client, keys):
    """Replicas of mixed versions during a rolling upgrade: an unknown field must not turn /v1/alerts into a 500."""
    [transition] = AlertEngine().observe([Condition("category_share", "global", "self_harm", True, T0, summary="up")])
    published = {**transition.alert.to_dict(), "runbook_url": "https://example.org/runbook"}
    client.set(keys.partition(0).alerts, json.dumps([published]))
    [alert] = PublishedState(client, keys, 1, 100).alerts("firing")
    assert (alert.id, alert.key, alert.status) == (transition.alert.id, "self_harm", "firing")


def test_idle_consumers_with_nothing_pending_are_forgotten_and_busy_ones_kept(client, keys):
    from monitor.scale.streams import ensure_group, forget_idle_consumers

    stream = keys.events
    ensure_group(client, stream, "g")
    client.xadd(stream, {b"e": b"1"})
    client.xadd(stream, {b"e": b"2"})
    client.xreadgroup("g", "holds-one", {stream: ">"}, count=1)  # read, never acknowledged
    [[_, [(entry_id, _)]]] = client.xreadgroup("g", "done", {stream: ">"}, count=1)
    client.xack(stream, "g", entry_id)  # read and acknowledged: holds nothing
    assert forget_idle_consumers(client, stream, "g", idle_ms=60_000) == 0  # neither idle long enough
    time.sleep(0.1)
    assert forget_idle_consumers(client, stream, "g", idle_ms=50) == 1
    assert [c["name"] for c in client.xinfo_consumers(stream, "g")] == [b"holds-one"]


def test_workers_on_another_judge_are_named_once(client, keys, caplog):
    """The detector role labels state with the judge its own settings name; verdicts from workers set up otherwise
    (another decision line, backend or artifact) are warned about, once per judge; its own judge's are not."""
    only = owner(client, keys, "only")  # labels its state "test-judge"; the helper's verdicts say "test"
    assert only.lease.acquire()
    only._take_over()
    own = [scored(T0 + i, event_id=f"own-{i}") for i in range(3)]
    own = [replace(s, verdict=replace(s.verdict, judge_version="test-judge")) for s in own]
    with caplog.at_level("WARNING", logger="monitor.scale.detector"):
        client.xadd(keys.partition(0).scored, {b"b": encode_scored(ScoredBatch(own))})
        only.step()
        assert only.service.counts.processed == 3
        assert not [r for r in caplog.records if "workers judge with" in r.getMessage()]
        publish(client, keys, 0, 3)
        publish(client, keys, 3, 3)
        for _ in range(3):
            only.step()
    assert only.service.counts.processed == 9
    [line] = [r.getMessage() for r in caplog.records if "workers judge with" in r.getMessage()]
    assert "workers judge with test," in line and "labels its state with test-judge" in line
