"""MonitorClient / AsyncMonitorClient against the running monitor: batching, splitting on 413,
rejections, retry on a real 503 (full queue) with Retry-After, drops when the buffer is full,
and flushing at interpreter exit."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from monitor.client import AsyncMonitorClient, MonitorClient, RetryPolicy, retry_after_seconds
from monitor.config import Settings
from monitor.ingest.schema import EventIn
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

QUEUE = 40
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(embedder):
    settings = Settings(judge="prototype", queue_capacity=QUEUE, sampling="off", max_events_per_request=30, retry_after_seconds=1)
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        srv.seen = []
        srv.service.batch_listeners.append(lambda batch: srv.seen.extend(s.event for s in batch))
        yield srv


def prompts(server, marker: str) -> list[str]:
    return sorted(e.prompt for e in server.seen if e.prompt.startswith(marker))


def until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def test_batches_reach_the_monitor_and_oversized_batches_are_split(server):
    # batch_size 60 > max_events_per_request 30: every full batch gets 413 and is sent in halves
    with MonitorClient(server.url, batch_size=60, flush_interval=0.05) as client:
        for i in range(100):
            client.send({"event_id": f"sync-{i}", "prompt": f"SYNC {i:03d}"})
        client.send(EventIn(prompt="SYNC model object"))
        assert client.flush(timeout=60)
    stats = client.stats()
    assert (stats.sent, stats.rejected, stats.dropped, stats.failed, stats.pending) == (101, 0, 0, 0, 0)
    server.wait_processed()
    assert len(prompts(server, "SYNC")) == 101


def test_invalid_items_are_rejected_not_retried(server):
    with MonitorClient(server.url, flush_interval=0.05) as client:
        client.send({"prompt": "REJ fine"})
        client.send({"response": "no prompt"})
    stats = client.stats()
    assert (stats.sent, stats.rejected, stats.retries) == (1, 1, 0)
    with MonitorClient(server.url, flush_interval=0.05) as client:
        client.send({"response": "alone and invalid"})  # the whole request is a 422
    assert (client.stats().rejected, client.stats().retries) == (1, 0)


def test_full_queue_503_is_retried_until_the_monitor_catches_up(server):
    gate, held = threading.Event(), threading.Event()

    def hold(batch):  # stalls the worker thread, as a slow model would
        held.set()
        gate.wait(60)

    server.service.batch_listeners.append(hold)
    try:
        assert server.client.post("/v1/events", json={"prompt": "GATE first"}).status_code == 202
        assert held.wait(60)  # the worker is stuck: nothing leaves the queue now
        client = MonitorClient(server.url, batch_size=20, flush_interval=0.05, backoff=0.05, max_retries=50)
        for i in range(QUEUE + 20):
            client.send({"prompt": f"GATE {i:03d}"})
        until(lambda: client.stats().retries >= 1)  # the queue is full: the monitor answered 503
        assert server.client.get("/v1/status").json()["dropped"]["queue_full"] >= 20
    finally:
        gate.set()
        server.service.batch_listeners.remove(hold)
    assert client.flush(timeout=60)
    stats = client.close()
    assert (stats.sent, stats.failed, stats.dropped) == (QUEUE + 20, 0, 0)
    server.wait_processed()
    assert len(prompts(server, "GATE ")) == QUEUE + 21


def unreachable_url() -> str:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"  # nothing listens here


def test_full_buffer_drops_and_counts_while_the_monitor_is_unreachable():
    client = MonitorClient(unreachable_url(), max_buffer=5, batch_size=100, flush_interval=60, max_retries=0)
    accepted = [client.send({"prompt": f"p{i}"}) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    stats = client.close(timeout=10)
    assert (stats.dropped, stats.failed, stats.sent, stats.pending) == (3, 5, 0, 0)
    assert client.send({"prompt": "after close"}) is False and client.stats().dropped == 4


BIG = {"prompt": "x" * 3000}  # 3,016 bytes of JSON


def test_buffer_bytes_are_bounded_by_the_items_json():
    client = MonitorClient(unreachable_url(), max_buffer_bytes=10_000, batch_size=100, flush_interval=60, max_retries=0)
    assert [client.send(BIG) for _ in range(4)] + [client.send({"prompt": "p"})] == [True, True, True, False, True]
    assert client.flush(timeout=10)  # the batch leaves the buffer (and fails): its bytes are free again
    assert client.send(BIG)
    stats = client.close(timeout=10)
    assert (stats.dropped, stats.failed, stats.pending) == (1, 5, 0)


async def test_async_buffer_bytes_are_bounded_by_the_items_json():
    client = AsyncMonitorClient(unreachable_url(), max_buffer_bytes=10_000, batch_size=100, flush_interval=60, max_retries=0)
    assert [client.send(BIG) for _ in range(4)] + [client.send({"prompt": "p"})] == [True, True, True, False, True]
    assert await client.flush(timeout=10)
    assert client.send(BIG)
    stats = await client.aclose(timeout=10)
    assert (stats.dropped, stats.failed, stats.pending) == (1, 5, 0)


def test_the_batch_in_flight_counts_against_the_buffer_bytes():
    with socket.socket() as blackhole:  # accepts connections, never answers: the first batch stays in flight
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        blackhole.settimeout(30)
        client = MonitorClient(f"http://127.0.0.1:{blackhole.getsockname()[1]}", max_buffer_bytes=10_000, batch_size=1, timeout=30)
        assert client.send(BIG)
        connection, _ = blackhole.accept()  # the first item is in flight now
        assert [client.send(BIG) for _ in range(3)] == [True, True, False]
        stats = client.close(timeout=0)
        connection.close()
    assert stats.dropped == 1


def test_buffered_events_are_flushed_at_interpreter_exit(server):
    script = textwrap.dedent(
        f"""
        from monitor.client import MonitorClient
        client = MonitorClient({server.url!r}, flush_interval=60)
        for i in range(5):
            client.send({{"prompt": f"EXIT {{i}}"}})
        """
    )  # no close(): the atexit hook must send the five events
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=60)
    server.wait_processed()
    assert prompts(server, "EXIT") == [f"EXIT {i}" for i in range(5)]


async def test_async_client_batches_and_closes(server):
    async with AsyncMonitorClient(server.url, batch_size=10, flush_interval=0.05) as client:
        for i in range(25):
            assert client.send({"event_id": f"async-{i}", "prompt": f"ASYNC {i:02d}"})
        client.send({"event_id": "async-0", "prompt": "ASYNC 00"})  # a resend: counted as a duplicate
        assert await client.flush(timeout=60)
    stats = client.stats()
    assert (stats.sent, stats.duplicates, stats.failed, stats.pending) == (26, 1, 0, 0)
    await asyncio.to_thread(server.wait_processed)
    assert len(prompts(server, "ASYNC")) == 25


def test_retry_delays_honour_retry_after_else_back_off_exponentially():
    policy = RetryPolicy(backoff=0.5, max_backoff=8.0)
    rng = random.Random(0)
    assert policy.delay(0, "3", rng) == 3.0 and policy.delay(0, "120", rng) == 8.0  # capped
    assert [0.25 <= policy.delay(0, None, rng) <= 0.5, 4.0 <= policy.delay(4, None, rng) <= 8.0] == [True, True]
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: retry now
