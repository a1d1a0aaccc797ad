"""Overload: the queue never grows past its capacity; sampling sheds load, or ingest pushes back with 503."""

from __future__ import annotations

import threading

from monitor.config import Settings
from monitor.pipeline.builder import build_service
from tests.helpers.judges import SlowJudge
from tests.helpers.server import running_server


def slowed(embedder, gate: threading.Event):
    def factory(settings: Settings):
        service = build_service(settings, embedder=embedder)
        service.scorer.judge = SlowJudge(service.scorer.judge, gate=gate)
        return service

    return factory


def test_queue_full_answers_503_counts_drops_and_stays_bounded(embedder):
    gate = threading.Event()
    settings = Settings(judge="prototype", sampling="off", queue_capacity=8, batch_size=2, retry_after_seconds=2)
    with running_server(settings, slowed(embedder, gate)) as srv:
        codes, depths = [], []
        for i in range(30):
            resp = srv.client.post("/v1/events", json=[{"event_id": f"q{i}-{j}", "prompt": f"question {i} {j}"} for j in range(2)])
            codes.append(resp.status_code)
            if resp.status_code == 503:
                assert resp.headers["Retry-After"] == "2"
                assert "queue full" in resp.json()["error"]
            depths.append(srv.client.get("/v1/status").json()["queue_depth"])
        assert codes.count(503) >= 20
        assert max(depths) <= 8
        status = srv.client.get("/v1/status").json()
        assert status["dropped"]["queue_full"] == 2 * codes.count(503)
        assert "llmsafety_events_dropped_total{reason=\"queue_full\"} %.1f" % (2 * codes.count(503)) in srv.client.get("/metrics").text
        # Rejected ids were not remembered: resending them after the worker catches up is accepted as new.
        gate.set()
        srv.wait_processed()
        first_rejected = codes.index(503)
        resp = srv.client.post("/v1/events", json=[{"event_id": f"q{first_rejected}-0", "prompt": "again"}])
        assert resp.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
        assert srv.wait_processed()["processed"] == status["accepted"] + 1


def test_sampling_sheds_load_with_weights_instead_of_rejecting(embedder):
    gate = threading.Event()
    settings = Settings(judge="prototype", sampling="auto", queue_capacity=40, sampling_start_fill=0.25, sampling_min_rate=0.01, batch_size=4)
    with running_server(settings, slowed(embedder, gate)) as srv:
        codes = []
        for i in range(16):
            resp = srv.client.post("/v1/events", json=[{"prompt": f"sampled question {i} {j}"} for j in range(5)])
            codes.append(resp.status_code)
        status = srv.client.get("/v1/status").json()
        assert codes.count(202) == 16  # nothing pushed back: sampling absorbed the overload
        assert status["accepted"] == 80
        assert status["sampled_out"] > 20
        assert status["sampling_rate"] < 0.5
        assert status["queue_depth"] <= 40
        gate.set()
        final = srv.wait_processed()
        assert final["processed"] == 80
        assert final["judged"] == 80 - final["sampled_out"]
        # Verdict counters are weighted: they estimate the full stream, not just the judged part.
        text = srv.client.get("/metrics").text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("llmsafety_prompt_verdicts_total{"))
        assert total > final["judged"] * 1.5
