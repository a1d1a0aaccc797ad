"""Restart without loss: a restored service continues exactly like one that never stopped.

Alerts come from a small deterministic detector (tests/helpers/detectors.py) that fires on a
run of refusals: the prototype judge calls "Lima is ..." a compliance and "Sorry, I cannot
assist ..." a refusal.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.events import Event
from monitor.ingest.parsing import parse_body
from monitor.pipeline.builder import build_service
from monitor.pipeline.service import MonitorService
from monitor.state.memory import MemoryStateStore
from monitor.state.redis_store import RedisStateStore
from monitor.state.snapshots import Snapshotter, decode
from tests.helpers.detectors import RecentRefusals
from tests.helpers.redis import RedisServer, private_redis
from tests.helpers.server import running_server

T0 = 1767225600.0
PROMPT = "What is the capital of Peru?"
COMPLY = "Lima is the capital of Peru."
REFUSE = "Sorry, I cannot assist with that request."


def events(prefix: str, start: int, responses: list[str]) -> list[Event]:
    return [Event(f"{prefix}-{start + i}", T0 + start + i, PROMPT, r) for i, r in enumerate(responses)]


# The alert fires within E1 and stays firing through E2.
E1 = events("e", 0, [COMPLY] * 6 + [REFUSE] * 14)
E2 = events("e", 20, [REFUSE] * 8 + [COMPLY] * 4)


def as_json(evs: list[Event]) -> list[dict]:
    return [{"event_id": e.event_id, "timestamp": e.timestamp, "prompt": e.prompt, "response": e.response} for e in evs]


def detectors() -> DetectorSuite:
    return DetectorSuite([RecentRefusals()])


@pytest.fixture(scope="module")
def scorer(embedder):
    return build_service(Settings(judge="prototype"), embedder=embedder).scorer


@pytest.fixture(scope="module")
def redis_server():
    with private_redis() as server:
        yield server


def new_service(scorer, store) -> MonitorService:
    return MonitorService(Settings(judge="prototype"), scorer, detectors(), store=store)


def run(service: MonitorService, evs: list[Event], batch: int = 8) -> list[tuple[dict, str | None]]:
    out = []
    for i in range(0, len(evs), batch):
        out += [(t.alert.to_dict(), t.previous) for t in service.process_batch([(e, 1.0) for e in evs[i : i + batch]])]
    return out


def firing(service: MonitorService) -> list[dict]:
    return [a.to_dict() for a in service.alerts("firing")]


def test_restored_service_continues_exactly_like_an_uninterrupted_one(scorer):
    straight = new_service(scorer, MemoryStateStore())
    fired = run(straight, E1)
    assert [(a["kind"], prev) for a, prev in fired] == [("recent_refusals", None)]
    later = run(straight, E2)

    store = MemoryStateStore()
    first = new_service(scorer, store)
    snap = Snapshotter(first, store)
    assert snap.attach() is False  # nothing to restore yet
    run(first, E1)
    assert first.detectors.state_dict() != straight.detectors.state_dict()  # the comparison below is not vacuous
    assert snap.save()  # what stop() does

    second = new_service(scorer, store)
    assert Snapshotter(second, store).attach() is True
    assert firing(second) == firing(first) != []
    assert run(second, E2) == later  # same transitions: in particular the firing alert does not fire again
    assert second.detectors.state_dict() == straight.detectors.state_dict()
    assert [a.to_dict() for a in second.alerts()] == [a.to_dict() for a in straight.alerts()]
    assert (second.counts.processed, second.counts.judged, second.event_time) == (32, 32, T0 + 31)


def test_snapshots_are_taken_every_n_events_or_t_seconds(scorer):
    store, clock = MemoryStateStore(), [0.0]
    service = new_service(scorer, store)
    snap = Snapshotter(service, store, every_events=12, every_seconds=30.0, clock=lambda: clock[0])
    snap.attach()
    run(service, E1[:8])
    assert snap.seq == 0 and store.load_snapshot("service") is None
    run(service, E1[8:16])  # 16 events since start: due by count
    assert snap.seq == 1 and decode(store.load_snapshot("service"))["counts"]["processed"] == 16
    run(service, E1[16:])
    assert snap.seq == 1
    clock[0] = 31.0
    run(service, E2[:4])  # 8 events since the last snapshot, but 31 s: due by time
    saved = decode(store.load_snapshot("service"))
    assert (snap.seq, saved["seq"], saved["counts"]["processed"]) == (2, 2, 24)


def test_events_still_queued_at_the_snapshot_count_as_dropped_by_the_restart(scorer):
    store = MemoryStateStore()
    service = new_service(scorer, store)
    body = json.dumps(as_json(E1[:5])).encode()
    assert service.ingest(parse_body(body, "application/json", 100), T0).accepted == 5
    Snapshotter(service, store).save()  # the process dies with 5 events in its queue

    restored = new_service(scorer, store)
    Snapshotter(restored, store).attach()
    c = restored.counts
    assert (c.accepted, c.processed, c.dropped["restart"]) == (5, 5, 5)
    assert restored.metrics.registry.get_sample_value("llmsafety_events_dropped_total", {"reason": "restart"}) == 5


def test_a_failed_save_is_counted_and_retried_later_not_on_every_batch(scorer):
    dead = RedisStateStore.from_url(f"redis://127.0.0.1:{RedisServer().port}/0", timeout_seconds=0.2)
    clock = [0.0]
    service = new_service(scorer, MemoryStateStore())
    snap = Snapshotter(service, dead, every_events=1, retry_seconds=5.0, clock=lambda: clock[0])
    service.batch_listeners.append(snap.on_batch)
    failed = lambda: service.metrics.registry.get_sample_value("llmsafety_state_snapshots_total", {"result": "failed"})  # noqa: E731
    run(service, E1[:4])
    assert failed() == 1
    run(service, E1[4:8])
    assert failed() == 1  # within retry_seconds: not tried again
    clock[0] = 6.0
    run(service, E1[8:12])
    assert failed() == 2 and snap.seq == 0


def test_start_waits_for_redis_and_proceeds_when_it_answers(scorer):
    server = RedisServer()
    try:
        store = RedisStateStore.from_url(server.url, key_prefix=f"test:{uuid.uuid4().hex}:", timeout_seconds=0.2)
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:
                server.start()

        assert Snapshotter(new_service(scorer, store), store, sleep=sleep).attach() is False
        assert waits == [0.25, 0.5]
    finally:
        server.kill()


def test_restart_with_redis_keeps_firing_alerts_counts_dedup_and_detector_history(embedder, redis_server):
    settings = Settings(judge="prototype", redis_url=redis_server.url, state_key_prefix=f"test:{uuid.uuid4().hex}:")

    def factory(s: Settings) -> MonitorService:
        return build_service(s, embedder=embedder, detectors=detectors())

    with running_server(settings, factory) as srv:
        assert srv.client.post("/v1/events", json=as_json(E1)).status_code == 202
        before = srv.wait_processed()
        alerts_before = srv.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"]
        assert [a["kind"] for a in alerts_before] == ["recent_refusals"]
        detector_state = srv.service.detectors.state_dict()
    # The server has stopped; the final snapshot is in Redis.
    store = RedisStateStore(redis_server.client(), settings.state_key_prefix)
    assert decode(store.load_snapshot("service"))["counts"]["processed"] == len(E1)

    with running_server(settings, factory) as srv:
        status = srv.client.get("/v1/status").json()
        assert {k: status[k] for k in ("accepted", "processed", "judged", "event_time")} == {
            k: before[k] for k in ("accepted", "processed", "judged", "event_time")
        }
        assert "restart" not in status["dropped"]  # a clean shutdown drains the queue first
        assert srv.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"] == alerts_before
        assert srv.service.detectors.state_dict() == detector_state
        assert 'llmsafety_alerts_firing{kind="recent_refusals",severity="warning"} 1.0' in srv.client.get("/metrics").text

        resend = srv.client.post("/v1/events", json=as_json(E1[:10])).json()
        assert resend["duplicates"] == 10  # ids remembered across the restart
        assert srv.client.post("/v1/events", json=as_json(E2)).status_code == 202
        status = srv.wait_processed()
        assert status["processed"] == len(E1) + len(E2)
        after = srv.client.get("/v1/alerts", params={"status": "all"}).json()["alerts"]
        assert [(a["id"], a["status"], a["started_at"]) for a in after] == [(a["id"], "firing", a["started_at"]) for a in alerts_before]
        transitions = [
            sample.value
            for family in text_string_to_metric_families(srv.client.get("/metrics").text)
            for sample in family.samples
            if sample.name == "llmsafety_alert_transitions_total"
        ]
        assert transitions and not any(transitions)  # nothing re-fired


def test_redis_outage_answers_503_and_recovers_by_itself(embedder):
    with private_redis() as server:
        settings = Settings(judge="prototype", redis_url=server.url, redis_timeout_seconds=0.2, retry_after_seconds=3)
        with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
            assert srv.client.post("/v1/events", json=as_json(E1[:4])).status_code == 202
            server.kill()
            resp = srv.client.post("/v1/events", json=as_json(E1[4:8]))
            assert resp.status_code == 503 and resp.headers["Retry-After"] == "3"
            assert resp.json()["error"].startswith("state store unavailable: nothing from this request was accepted")
            assert "redis: remembering event ids failed" in resp.json()["error"]
            assert srv.client.get("/healthz").status_code == 200
            server.start()  # same port, empty data
            resp = srv.client.post("/v1/events", json=as_json(E1[4:8]))
            assert resp.status_code == 202 and resp.json()["accepted"] == 4
            status = srv.wait_processed()
            assert (status["accepted"], status["dropped"]["store_unavailable"]) == (8, 4)


def test_a_service_waiting_for_its_state_store_still_stops_on_shutdown(embedder, caplog):
    # It will not start without its history, so it waits for Redis without end; SIGTERM (the lifespan's
    # shutdown) must still end the process instead of waiting with it.
    from fastapi.testclient import TestClient

    from monitor.api.app import create_app

    settings = Settings(judge="prototype", redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    app = create_app(settings, service_factory=lambda s: build_service(s, embedder=embedder))
    client = TestClient(app).__enter__()
    deadline = time.monotonic() + 60
    while "waiting for the state store" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "waiting for the state store" in caplog.text
    assert client.get("/readyz").status_code == 503
    stopper = threading.Thread(target=client.__exit__, args=(None, None, None), daemon=True)
    stopper.start()
    stopper.join(timeout=30)
    assert not stopper.is_alive(), "shutdown waited for the state store"
    assert "stopping before the service finished starting" in caplog.text
