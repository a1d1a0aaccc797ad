"""Stopping the worker while it is still collecting a batch loses nothing uncounted."""

from __future__ import annotations

import asyncio
import json
import time

from monitor.config import Settings
from monitor.ingest.parsing import parse_body
from monitor.pipeline.builder import build_service


def test_a_batch_still_being_collected_is_processed_before_the_stop(embedder):
    async def run():
        service = build_service(Settings(judge="prototype", batch_max_wait_ms=1500, batch_size=64), embedder=embedder)
        await service.start()
        body = json.dumps([{"event_id": "only-one", "prompt": "hello there"}]).encode()
        assert service.ingest(parse_body(body, "application/json", 10), time.time()).accepted == 1
        await asyncio.sleep(0.2)  # the worker has taken the event and waits for more
        await service.stop(drain_timeout=10)
        return service.status()

    status = asyncio.run(run())
    assert (status["accepted"], status["processed"], status["judged"]) == (1, 1, 1)
    assert status["dropped"]["shutdown"] == 0
