"""Scale-out over Redis Streams: api / worker / detector roles, and their faults (private redis-server).

Workers and detector owners killed with SIGKILL are real ``monitor serve --role ...`` processes;
their replacements run in this process with the session's embedding model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.embed.embedder import Embedder
from monitor.events import Event
from monitor.export.metrics import MonitorMetrics
from monitor.ingest.parsing import parse_body
from monitor.drift.registry import build_detectors
from monitor.pipeline.builder import build_service
from monitor.scale.detector import DetectorOwner
from monitor.scale.frontend import StreamFrontend
from monitor.scale.lease import Lease
from monitor.scale.partitions import partition_of
from monitor.scale.published import PublishedState
from monitor.scale.roles import build_detector_node, build_frontend, build_partition_service, build_worker, process_name
from monitor.scale.streams import DETECTOR_GROUP, WORKERS_GROUP, StreamKeys
from monitor.state.redis_store import connect
from tests.helpers.detectors import RecentRefusals
from tests.helpers.redis import private_redis
from tests.helpers.scored import scored, verdict
from tests.helpers.server import free_port, running_server
from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
T0 = 1767225600.0
PROMPT = "What is the capital of Peru?"
COMPLY = "Lima is the capital of Peru."
REFUSE = "Sorry, I cannot assist with that request."


def events(start: int, responses: list[str], prefix: str = "s") -> list[dict]:
    return [
        {"event_id": f"{prefix}-{start + i}", "timestamp": T0 + start + i, "prompt": PROMPT, "response": r}
        for i, r in enumerate(responses)
    ]


def body(evs: list[dict]):
    return parse_body(json.dumps(evs).encode(), "application/json", 10_000)


@pytest.fixture(scope="module")
def redis_server():
    with private_redis() as server:
        yield server


@pytest.fixture
def settings(redis_server) -> Settings:
    return Settings(
        judge="prototype", redis_url=redis_server.url, state_key_prefix=f"test:{uuid.uuid4().hex}:", batch_size=8,
        lease_ttl_seconds=2.0, claim_idle_seconds=1.0,
    )


class Background:
    """Runs ``target(stop)`` in a thread; ``close`` sets ``stop`` and joins."""

    def __init__(self, target: Callable[[threading.Event], Any]) -> None:
        self.stop = threading.Event()
        self.result: list[Any] = []
        self.thread = threading.Thread(target=lambda: self.result.append(target(self.stop)), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def spawn(role: str, settings: Settings, log: Path, **env: str) -> subprocess.Popen:
    variables = {
        **os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
        "MONITOR_JUDGE": "prototype", "MONITOR_REDIS_URL": settings.redis_url, "MONITOR_STATE_KEY_PREFIX": settings.state_key_prefix,
        "MONITOR_BATCH_SIZE": str(settings.batch_size), "MONITOR_LEASE_TTL_SECONDS": str(settings.lease_ttl_seconds), "MONITOR_CLAIM_IDLE_SECONDS": "1",
        # The same backend as the in-process workers (the session's torch embedder): one embedding space per detector.
        "MONITOR_EMBEDDING_BACKEND": "torch",
        **env,
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "serve", "--role", role, "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=variables, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return proc


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


# ---------------------------------------------------------------- lease


def test_lease_is_exclusive_and_a_stale_owner_is_fenced_off(redis_server):
    client, prefix = redis_server.client(), f"test:{uuid.uuid4().hex}:"
    a = Lease(client, prefix + "lease", prefix + "fence", "a", ttl_ms=60_000)
    b = Lease(client, prefix + "lease", prefix + "fence", "b", ttl_ms=60_000)
    assert a.acquire() and not b.acquire()
    assert a.fenced_set(prefix + "snap", b"from a") and a.renew()
    client.delete(prefix + "lease")  # a stalls past its lease...
    assert b.acquire() and b.token == a.token + 1  # ...and b takes over with a larger token
    assert not a.fenced_set(prefix + "snap", b"stale")  # a wakes up: its write is refused
    assert not a.renew() and a.token is None
    assert client.get(prefix + "snap") == b"from a"
    b.release()
    assert client.get(prefix + "lease") is None


# ---------------------------------------------------------------- api role


def test_frontend_appends_each_new_event_once_and_refuses_a_full_backlog_whole(settings, redis_server):
    client = redis_server.client()
    frontend = StreamFrontend(settings.model_copy(update={"queue_capacity": 4}), connect(settings.redis_url))
    keys = frontend.keys
    first = frontend.ingest(body(events(0, [COMPLY] * 3)), T0)
    assert (first.accepted, first.duplicates) == (3, 0) and client.xlen(keys.events) == 3
    again = frontend.ingest(body(events(0, [COMPLY] * 3) + events(0, [COMPLY])), T0)
    assert (again.accepted, again.duplicates, client.xlen(keys.events)) == (4, 4, 3)
    full = frontend.ingest(body(events(3, [COMPLY] * 2)), T0)
    assert full.queue_full and client.xlen(keys.events) == 3
    assert not client.exists(keys.event_id("s-3"))  # refused ids are not remembered: the resend is new
    status = frontend.status()
    assert {k: status[k] for k in ("received", "accepted", "duplicates", "queue_depth")} == {
        "received": 7, "accepted": 3, "duplicates": 4, "queue_depth": 3,
    }


def test_frontend_answers_unavailable_when_redis_is_down(settings):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout_seconds": 0.2})
    outcome = build_frontend(down).ingest(body(events(0, [COMPLY])), T0)
    assert outcome.accepted == 0 and outcome.unavailable.startswith("redis: appending events failed: ConnectionError")


# ---------------------------------------------------------------- all roles together


def test_api_worker_and_detector_roles_count_every_event_once_and_share_alerts(settings, embedder):
    api = settings.model_copy(update={"role": "api"})
    det = settings.model_copy(update={"role": "detector"})
    worker = build_worker(settings, embedder)
    with running_server(api, build_frontend) as front, running_server(
        det, lambda s: build_detector_node(s, detectors=lambda: DetectorSuite([RecentRefusals()]))
    ) as back:
        work = Background(worker.run)
        try:
            sent = events(0, [COMPLY] * 6 + [REFUSE] * 14) + events(20, [REFUSE] * 8 + [COMPLY] * 4)
            for i in range(0, len(sent), 10):
                assert front.client.post("/v1/events", json=sent[i : i + 10]).status_code == 202
            assert front.client.post("/v1/events", json=sent[:5]).json()["duplicates"] == 5
            status = front.wait_processed()
            assert (status["accepted"], status["processed"], status["judged"], status["duplicates"]) == (32, 32, 32, 5)
            assert status["detector_owners"] == [back.service.name]
            assert back.service.partition_service(0).detectors.get("recent_refusals").seen == 32
            firing = front.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"]
            assert [a["kind"] for a in firing] == ["recent_refusals"]
            same = lambda alerts: [(a["id"], a["status"], a["started_at"]) for a in alerts]  # noqa: E731
            assert same(firing) == same(back.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"])
            assert front.client.get(f"/v1/alerts/{firing[0]['id']}").json()["id"] == firing[0]["id"]
        finally:
            work.close()
    assert worker.client.xlen(worker.keys.events) == 0  # trimmed once every worker was done


# ---------------------------------------------------------------- faults


def detector_owner(settings: Settings, embedder, detectors: DetectorSuite, **kwargs) -> DetectorOwner:
    service = build_service(settings.model_copy(update={"role": "detector"}), embedder=embedder, detectors=detectors)
    return DetectorOwner(
        service, connect(settings.redis_url), StreamKeys(settings.state_key_prefix), process_name(),
        lease_ttl_ms=int(settings.lease_ttl_seconds * 1000), **kwargs,
    )


def test_killed_worker_loses_nothing_and_duplicates_nothing(settings, embedder, tmp_path):
    keys, client = StreamKeys(settings.state_key_prefix), connect(settings.redis_url)
    frontend = build_frontend(settings)
    sent = events(0, [COMPLY, REFUSE] * 100, prefix="w")
    for i in range(0, len(sent), 25):
        assert frontend.ingest(body(sent[i : i + 25]), T0).accepted == 25
    for attempt in range(3):
        doomed = spawn("worker", settings, tmp_path / f"worker-{attempt}.log")
        try:
            # Kill it mid-stream: it has published some batches and holds a batch it has not acknowledged.
            wait_for("the worker to start", lambda: client.xlen(keys.partition(0).scored) >= 2 and client.xpending(keys.events, WORKERS_GROUP)["pending"] > 0, 300, interval=0.05)
            kill9(doomed)
        finally:
            if doomed.poll() is None:
                kill9(doomed)
        stranded = client.xpending(keys.events, WORKERS_GROUP)["pending"]
        if stranded:  # else it acknowledged a batch between the check and the kill: kill the next one
            break
    assert 0 < stranded <= settings.batch_size

    owner = detector_owner(settings, embedder, DetectorSuite([RecentRefusals()]))
    det = Background(owner.run)
    survivor = build_worker(settings, embedder)
    work = Background(survivor.run)
    try:
        wait_for("every event to reach the detector", lambda: owner.service.counts.processed >= len(sent), 120, interval=0.05)
        time.sleep(0.5)  # anything processed twice would arrive now
        assert (owner.service.counts.processed, owner.service.counts.judged, owner.redelivered) == (200, 200, 0)
        assert owner.service.detectors.get("recent_refusals").seen == 200
        assert client.xpending(keys.events, WORKERS_GROUP)["pending"] == 0
    finally:
        work.close()
        det.close()
    assert det.result == ["stopped"]


def test_killed_detector_owner_is_replaced_within_the_lease_and_state_continues(settings, embedder, tmp_path):
    fast = {"MONITOR_DETECTORS": "over_refusal", "MONITOR_CONCEPT_WARMUP_TRIALS": "10", "MONITOR_CONCEPT_ARL_TRIALS": "100"}
    tuned = settings.model_copy(update={"detectors": ["over_refusal"], "concept_warmup_trials": 10, "concept_arl_trials": 100.0})
    keys, client = StreamKeys(settings.state_key_prefix), connect(settings.redis_url)
    part = keys.partition(0)
    frontend = build_frontend(settings)
    first = events(0, [COMPLY] * 12 + [REFUSE] * 48, prefix="d")
    second = events(60, [REFUSE] * 30 + [COMPLY] * 30, prefix="d")
    worker = build_worker(settings, embedder)
    work = Background(worker.run)
    doomed = spawn("detector", settings, tmp_path / "detector.log", MONITOR_SNAPSHOT_EVERY_EVENTS="16", MONITOR_SNAPSHOT_EVERY_SECONDS="600", **fast)
    try:
        wait_for("the detector owner to start", lambda: client.get(part.status), 300, interval=0.05)
        assert frontend.ingest(body(first), T0).accepted == 60
        status = lambda: json.loads(client.get(part.status))  # noqa: E731
        wait_for("the owner to apply the first events", lambda: status()["processed"] == 60, 120, interval=0.05)
        before = status()
        alerts_before = json.loads(client.get(part.alerts))
        kill9(doomed)
    finally:
        if doomed.poll() is None:
            kill9(doomed)
    assert before["snapshot_seq"] >= 1 and [a["kind"] for a in alerts_before] == ["over_refusal"]
    # Applied but not yet in a snapshot: the new owner must replay exactly these.
    assert client.xpending(part.scored, DETECTOR_GROUP)["pending"] > 0

    assert frontend.ingest(body(second), T0).accepted == 60
    killed_at = time.monotonic()
    standby = detector_owner(tuned, embedder, build_detectors(tuned))
    det = Background(standby.run)
    try:
        wait_for("the standby to take over", standby.owning.is_set, 30, interval=0.05)
        assert time.monotonic() - killed_at < 2 * settings.lease_ttl_seconds + 1
        wait_for("every event to be applied", lambda: standby.service.counts.processed == 120, 120, interval=0.05)
        time.sleep(0.5)
        assert (standby.service.counts.judged, standby.redelivered) == (120, 0)
        alerts = [a.to_dict() for a in standby.service.alerts("all")]
        assert [(a["id"], a["started_at"]) for a in alerts] == [(a["id"], a["started_at"]) for a in alerts_before]

        # The same events through one uninterrupted service give the same detector state.
        reference = build_service(tuned.model_copy(update={"redis_url": None}), embedder=embedder)
        reference.process_batch([(Event(**e), 1.0) for e in first + second])
        assert standby.service.detectors.state_dict() == reference.detectors.state_dict()
        assert [a.id for a in standby.service.alerts("all")] == [a.id for a in reference.alerts("all")]
    finally:
        det.close()
        work.close()
    assert det.result == ["stopped"]
    assert json.loads(client.get(part.status))["owner"] == standby.owner


def test_worker_and_api_ride_out_a_redis_restart(embedder):
    with private_redis() as server:
        settings = Settings(judge="prototype", redis_url=server.url, redis_timeout_seconds=0.2, batch_size=8)
        keys, frontend = StreamKeys(settings.state_key_prefix), build_frontend(settings)
        worker = build_worker(settings, embedder)
        work = Background(worker.run)
        try:
            assert frontend.ingest(body(events(0, [COMPLY] * 4, prefix="r")), T0).accepted == 4
            wait_for("the first events", lambda: worker.processed == 4, 60, interval=0.05)
            server.kill()
            assert frontend.ingest(body(events(4, [COMPLY] * 4, prefix="r")), T0).unavailable
            server.start()  # same port, empty: no stream, no consumer groups
            assert frontend.ingest(body(events(4, [COMPLY] * 4, prefix="r")), T0).accepted == 4
            wait_for("the worker to recreate its group and go on", lambda: worker.processed == 8, 60, interval=0.05)
            assert server.client().xlen(keys.partition(0).scored) == 1
        finally:
            work.close()
        assert work.thread.is_alive() is False


def test_api_replica_points_detector_only_routes_to_the_detector_role(settings):
    with running_server(settings.model_copy(update={"role": "api"}), build_frontend) as front:
        for path in ["/v1/clusters", "/v1/clusters/c1"]:
            resp = front.client.get(path)
            assert resp.status_code == 503, path
            assert "served by the detector role" in resp.json()["error"]
        assert front.client.get("/readyz").json()["judge_version"].startswith("unknown")


# ---------------------------------------------------------------- detector partitions

# With detector_partitions=3: global -> 0, model=alpha -> 1, model=beta -> 2 (CRC-32 of the scope).
MODELS = ["alpha", "beta"]


def two_model_events(start: int, responses: list[str], prefix: str) -> list[dict]:
    """Each response once for alpha and once for beta, interleaved, 1 s apart."""
    out = []
    for i, r in enumerate(responses):
        for j, model in enumerate(MODELS):
            n = 2 * (start + i) + j
            out.append({"event_id": f"{prefix}-{n}", "timestamp": T0 + n, "prompt": PROMPT, "response": r, "model": model})
    return out


def test_scopes_are_split_over_partitions_with_global_alone_in_partition_0():
    assert [partition_of(s, 3) for s in ("global", "model=alpha", "model=beta")] == [0, 1, 2]
    assert {partition_of(f"route=r{i}", 5) for i in range(50)} == {1, 2, 3, 4}
    assert {partition_of(s, 1) for s in ("global", "model=alpha", "route=x")} == {0}


def test_two_detector_processes_split_the_partitions_and_one_takes_over_a_killed_ones(settings, embedder, tmp_path):
    env = {
        "MONITOR_DETECTORS": "over_refusal", "MONITOR_CONCEPT_WARMUP_TRIALS": "10", "MONITOR_CONCEPT_ARL_TRIALS": "100",
        "MONITOR_MODELS": ",".join(MODELS), "MONITOR_DETECTOR_PARTITIONS": "3",
        "MONITOR_SNAPSHOT_EVERY_EVENTS": "16", "MONITOR_SNAPSHOT_EVERY_SECONDS": "600",
    }
    tuned = settings.model_copy(update={
        "detectors": ["over_refusal"], "concept_warmup_trials": 10, "concept_arl_trials": 100.0, "models": MODELS, "detector_partitions": 3,
    })
    client = connect(settings.redis_url)
    published = PublishedState(client, StreamKeys(settings.state_key_prefix), 3, tuned.queue_capacity)
    owners = lambda: [o.get("owner") for o in published.owners()]  # noqa: E731
    counts = lambda field: [o.get(field) for o in published.owners()]  # noqa: E731
    frontend = build_frontend(tuned)
    first = two_model_events(0, [COMPLY] * 12 + [REFUSE] * 48, prefix="p")
    second = two_model_events(60, [REFUSE] * 30 + [COMPLY] * 30, prefix="p")
    nodes = [spawn("detector", tuned, tmp_path / f"detector-{i}.log", **env) for i in range(2)]
    work = Background(build_worker(tuned, embedder).run)
    try:
        wait_for("two processes to split the three partitions", lambda: None not in owners() and len(set(owners())) == 2, 300, interval=0.1)
        assert frontend.ingest(body(first), T0).accepted == 120
        wait_for("the owners to apply the first events", lambda: counts("processed") == [120, 60, 60], 120, interval=0.05)
        split = owners()
        alerts_before = {a.id: a for a in published.alerts()}
        assert {a.scope for a in alerts_before.values()} == {"global", "model=alpha", "model=beta"}
        # Kill the owner of partition 0 (it also keeps the pipeline's counts); the other owns 1 or 2 of the rest.
        victim = next(n for n in nodes if f"-{n.pid}-" in split[0])
        survivor = next(name for name in split if f"-{victim.pid}-" not in name)
        # A cluster id does not name its partition: a process owning only some says whom to ask.
        resp = httpx.get(f"{victim.url}/v1/clusters/c0123", timeout=10)
        assert resp.status_code == 503 and "ask the owners of partitions" in resp.json()["error"], resp.text
        kill9(victim)
        killed_at = time.monotonic()
        assert frontend.ingest(body(second), T0).accepted == 120
        wait_for("the survivor to own every partition", lambda: owners() == [survivor] * 3, 30, interval=0.05)
        survivor_url = next(n.url for n in nodes if n is not victim)
        wait_for("the survivor to serve every partition", lambda: httpx.get(f"{survivor_url}/v1/clusters/c0123", timeout=10).status_code == 404, 30, interval=0.1)
        assert time.monotonic() - killed_at < 2 * settings.lease_ttl_seconds + 1
        wait_for("every event to be applied", lambda: counts("processed") == [240, 120, 120], 120, interval=0.05)
        time.sleep(0.5)  # anything applied twice would arrive now
        assert (counts("judged"), counts("redelivered")) == ([240, 120, 120], [0, 0, 0])
        status = frontend.status()
        assert (status["accepted"], status["processed"], status["detector_owners"]) == (240, 240, [survivor] * 3)

        alerts = published.alerts()
        assert len({a.fingerprint for a in alerts if a.status != "resolved"}) == len([a for a in alerts if a.status != "resolved"])
        for alert in alerts_before.values():  # alerts open before the kill continue under the same id, never opened twice
            assert any(a.id == alert.id and a.started_at == alert.started_at for a in alerts)
        # State continued: the partitions together end exactly where one uninterrupted service does.
        reference = build_service(tuned.model_copy(update={"redis_url": None}), embedder=embedder)
        reference.process_batch([(Event(**e), 1.0) for e in first + second])
        key = lambda a: (a.id, a.scope, a.status, a.started_at, a.resolved_at)  # noqa: E731
        assert sorted(map(key, alerts)) == sorted(map(key, reference.alerts("all")))
    finally:
        work.close()
        for node in nodes:
            if node.poll() is None:
                kill9(node)


def test_feedback_sent_to_an_api_replica_reaches_every_partition_owner(settings, embedder, monkeypatch):
    tuned = settings.model_copy(update={"models": MODELS, "detector_partitions": 3, "detectors": ["feedback_disagreement"]})
    worker = build_worker(tuned, embedder)
    # The detector role judges nothing: building it, owning partitions and matching labels must not load a model.
    monkeypatch.setattr(Embedder, "__init__", lambda *a, **k: pytest.fail("the detector role loaded the embedding model"))
    with running_server(tuned.model_copy(update={"role": "api"}), build_frontend) as front, running_server(
        tuned.model_copy(update={"role": "detector"}), build_detector_node
    ) as back:
        work = Background(worker.run)
        try:
            wait_for("the node to own every partition", lambda: back.service.owned() == [0, 1, 2], 30, interval=0.05)
            assert front.client.post("/v1/events", json=two_model_events(0, [COMPLY] * 4, prefix="f")).status_code == 202
            front.wait_processed()
            labels = [
                {"event_id": "f-0", "unsafe": True},  # alpha
                {"event_id": "f-3", "category": "self_harm"},  # beta
                {"event_id": "never-sent", "unsafe": False},
                {"event_id": "f-1", "category": "not_a_category"},
            ]
            resp = front.client.post("/v1/feedback", json=labels)
            assert resp.status_code == 202
            assert resp.json() == {"queued": 3, "rejected": [{"index": 3, "error": "category: 'not_a_category' is not a category of the taxonomy"}]}
            counts = lambda p: back.service.partition_service(p).detectors.get("feedback_disagreement").counts  # noqa: E731
            # Partition 0 (global) has every event; each model's partition only its own.
            # Each partition's owner applies the labels in its own thread: wait for all three.
            seen = lambda p: counts(p)["matched"] + counts(p)["unknown_event"]  # noqa: E731
            wait_for("every partition to see the labels", lambda: all(seen(p) == 3 for p in range(3)), 30, interval=0.05)
            assert [counts(p) for p in range(3)] == [
                {"matched": 2, "unknown_event": 1, "duplicate": 0, "corrected": 0, "capped": 0},
                {"matched": 1, "unknown_event": 2, "duplicate": 0, "corrected": 0, "capped": 0},
                {"matched": 1, "unknown_event": 2, "duplicate": 0, "corrected": 0, "capped": 0},
            ]
            # Sent again (a client retry) to the detector replica: counted as duplicates, not as new trials.
            assert back.client.post("/v1/feedback", json=labels[:2]).json()["queued"] == 2
            wait_for("the resent labels", lambda: counts(0)["duplicate"] == 2, 30, interval=0.05)
            metrics = back.client.get("/metrics").text  # counted once, by partition 0
            assert 'llmsafety_feedback_total{status="matched"} 2.0' in metrics
            assert 'llmsafety_feedback_total{status="duplicate"} 2.0' in metrics
        finally:
            work.close()


def test_feedback_without_the_feedback_detector_is_a_409(settings):
    with running_server(settings.model_copy(update={"role": "api", "detectors": ["over_refusal"]}), build_frontend) as front:
        resp = front.client.post("/v1/feedback", json={"event_id": "x", "unsafe": True})
        assert resp.status_code == 409 and "feedback_disagreement" in resp.json()["error"]


# ---------------------------------------------------------------- api replica: time, outages, a slow Redis


def test_frontend_rejects_events_stamped_too_far_in_the_future(settings, redis_server):
    frontend = build_frontend(settings.model_copy(update={"max_future_skew_seconds": 60}))
    sent = events(0, [COMPLY], prefix="t") + [{"event_id": "t-late", "timestamp": T0 + 3600, "prompt": PROMPT}]
    outcome = frontend.ingest(body(sent), T0)
    assert outcome.accepted == 1 and [r.index for r in outcome.rejected] == [1]
    assert outcome.rejected[0].error.startswith("timestamp: 3540 s later than the arrival time allows")
    assert redis_server.client().xlen(frontend.keys.events) == 1 and not redis_server.client().exists(frontend.keys.event_id("t-late"))
    assert frontend.status()["rejected"] == 1


def test_api_reads_answer_503_while_redis_is_down_and_recover_by_themselves():
    with private_redis() as server:
        api = Settings(judge="prototype", redis_url=server.url, redis_timeout_seconds=0.2, role="api")
        with running_server(api, build_frontend) as front:
            assert front.client.post("/v1/events", json=events(0, [COMPLY], prefix="o")).status_code == 202
            server.kill()
            for method, path in [("GET", "/v1/status"), ("GET", "/v1/alerts"), ("GET", "/v1/alerts/abc"), ("POST", "/v1/feedback")]:
                resp = front.client.request(method, path, json={"event_id": "o-0", "unsafe": True} if method == "POST" else None)
                assert resp.status_code == 503, path
                assert resp.json()["error"].startswith("state store unavailable: redis: ") and resp.headers["Retry-After"], path
            # Metrics still answer: this replica's own counters are what tell an outage apart.
            metrics = front.client.get("/metrics")
            assert metrics.status_code == 200 and "llmsafety_events_accepted_total 1.0" in metrics.text
            server.start()  # same port, empty
            wait_for("reads to recover", lambda: front.client.get("/v1/status").status_code == 200, 10, interval=0.1)
            assert front.client.get("/v1/status").json()["accepted"] == 0  # the shared counters restarted with Redis


@pytest.mark.parametrize("role", ["api", "all"])
def test_healthz_answers_at_once_while_ingest_waits_for_a_paused_redis(role, embedder):
    with private_redis() as server:
        s = Settings(judge="prototype", redis_url=server.url, redis_timeout_seconds=1.5, role=role)
        factory = build_frontend if role == "api" else (lambda s: build_service(s, embedder=embedder))
        with running_server(s, factory) as front:
            server.client().execute_command("CLIENT", "PAUSE", "1200", "ALL")
            answer: dict[str, Any] = {}

            def ingest() -> None:
                started = time.monotonic()
                with httpx.Client(base_url=front.url, timeout=30) as c:
                    answer["status"] = c.post("/v1/events", json=events(0, [COMPLY], prefix="h")).status_code
                answer["seconds"] = time.monotonic() - started

            sender = threading.Thread(target=ingest)
            sender.start()
            time.sleep(0.2)  # the request now waits on Redis
            slowest = 0.0
            while sender.is_alive() and slowest < 1.0:
                started = time.monotonic()
                assert front.client.get("/healthz").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.05)
            sender.join()
            assert answer["seconds"] >= 0.8  # ingest really did wait for Redis...
            assert slowest < 0.5  # ...while /healthz answered at once (it waited the whole pause, ~1 s, before)
            assert answer["status"] == 202


def test_a_partition_given_up_withdraws_its_share_of_the_processes_metrics(settings):
    tuned = settings.model_copy(update={"detectors": ["over_refusal"], "concept_warmup_trials": 10, "concept_arl_trials": 100.0})
    metrics = MonitorMetrics()
    services = [build_partition_service(tuned, p, metrics, "test-judge") for p in (0, 1)]
    for service, scope in zip(services, ("global", "model=alpha")):
        refusals = [False] * 12 + [True] * 48
        service.process_scored([
            dataclasses.replace(scored(T0 + i, scopes=(scope,)), verdict=verdict(refused=r)) for i, r in enumerate(refusals)
        ])
    firing = lambda: sum(s.value for m in metrics.alerts_firing.collect() for s in m.samples)  # noqa: E731
    scopes = lambda: {s.labels["scope"] for m in metrics.detectors.collect() if m.name.endswith("detector_statistic") for s in m.samples}  # noqa: E731
    assert firing() == 2 and scopes() == {"global", "model=alpha"}
    services[1].close()  # handed back: the partition's next owner, elsewhere, exports these now
    assert firing() == 1 and scopes() == {"global"}
