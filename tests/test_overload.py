"""Far more offered load than the worker can judge: sampling sheds at ingest, before the queue, so
the queue stays within its delay bound (worker rate x max_queue_delay_seconds) and every event is
counted. Counts, not timings: the speed of /healthz under load is measured by bench/healthz_overload.py."""

from __future__ import annotations

import asyncio
import json
import time

from monitor.config import Settings
from monitor.ingest.parsing import parse_body
from monitor.pipeline.builder import build_service
from tests.helpers.judges import SlowJudge


def test_queue_never_exceeds_its_delay_bound_and_every_event_is_counted(embedder):
    settings = Settings(
        judge="prototype",
        sampling="auto",
        sampling_min_rate=0.01,
        queue_capacity=20_000,
        batch_size=8,
        batch_max_wait_ms=0,
        max_queue_delay_seconds=0.5,
        detectors=["category_share"],
    )
    service = build_service(settings, embedder=embedder)
    service.scorer.judge = SlowJudge(service.scorer.judge, seconds=0.05)  # a worker of at most ~160 events/s
    bounds, depths, before = [], [], []

    async def scenario() -> None:
        await service.start()
        for r in range(60):  # 6,000 events in ~0.6 s: far beyond what the worker judges
            body = json.dumps([{"prompt": f"overload {r} {i}"} for i in range(100)]).encode()
            before.append(service.status()["queue_depth"])
            outcome = service.ingest(parse_body(body, "application/json", 100), time.time())
            assert not outcome.queue_full and outcome.accepted == 100  # shed at ingest, never a 503
            bounds.append(service.gate.queue_bound())
            depths.append(service.status()["queue_depth"])
            await asyncio.sleep(0.01)
        await service.stop(drain_timeout=60)

    asyncio.run(scenario())
    status = service.status()
    # Ingest never grows the queue past the bound (the bound itself shrinks once the worker's rate is measured;
    # what was queued before that drains, and nothing new is queued meanwhile).
    assert all(depth <= max(bound, b) for depth, bound, b in zip(depths, bounds, before))
    measured = [b for b in bounds if b < settings.queue_capacity]
    assert measured, "the worker's rate was never measured"
    # the bound follows the measured rate: a queue of at most ~0.5 s of work, not 20,000 events
    assert max(measured) <= 2 * 160 * settings.max_queue_delay_seconds + 2 * settings.batch_size
    assert status["dropped"]["overload"] > 0 and status["sampled_out"] > 0
    assert status["accepted"] == 6000
    assert status["judged"] + status["sampled_out"] + status["dropped"]["overload"] + status["dropped"]["shutdown"] == 6000
    assert status["processed"] == status["accepted"]


def test_sampling_off_pushes_back_at_the_same_bound(embedder):
    settings = Settings(judge="prototype", sampling="off", queue_capacity=50, batch_size=4, batch_max_wait_ms=0, detectors=["category_share"])
    service = build_service(settings, embedder=embedder)
    service.scorer.judge = SlowJudge(service.scorer.judge, seconds=0.05)

    async def scenario() -> list[bool]:
        await service.start()
        full = []
        for r in range(20):
            body = json.dumps([{"prompt": f"push back {r} {i}"} for i in range(10)]).encode()
            full.append(service.ingest(parse_body(body, "application/json", 100), time.time()).queue_full)
            assert service.status()["queue_depth"] <= service.gate.queue_bound()
        await service.stop(drain_timeout=60)
        return full

    full = asyncio.run(scenario())
    status = service.status()
    assert any(full)
    assert status["dropped"]["queue_full"] == 10 * sum(full)
    assert status["dropped"]["overload"] == 0
