"""`monitor replay` against the real service: timestamps honoured, ids stable, resends deduplicated."""

from __future__ import annotations

import json

import httpx
import pytest

from monitor import replay as replay_module
from monitor.config import Settings
from monitor.pipeline.builder import build_service
from monitor.replay import read_events, replay, wait_until_processed
from tests.helpers.server import running_server


def write_events(path, texts: list[str]):
    """A JSONL recording, one event a second, with a trailing blank line; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps({"timestamp": 1767225600 + i, "prompt": t}) for i, t in enumerate(texts)) + "\n\n")
    return path


def test_replay_file_twice_counts_each_event_once(tmp_path, embedder):
    """Resending a file is deduplicated; another recording with the same file name is not."""
    day1 = write_events(tmp_path / "day1" / "events.jsonl", [f"replayed question {i}" for i in range(30)])
    day2 = write_events(tmp_path / "day2" / "events.jsonl", [f"next day's question {i}" for i in range(30)])
    ids = [e["event_id"] for e in read_events(day1)]
    assert ids == [e["event_id"] for e in read_events(day1)] and ids[1].startswith("events.jsonl:2:")
    with running_server(Settings(judge="prototype"), lambda s: build_service(s, embedder=embedder)) as srv:
        first = replay(read_events(day1), srv.url, speed=1000.0, batch_size=7)
        second = replay(read_events(day1), srv.url, batch_size=30)
        other_day = replay(read_events(day2), srv.url, batch_size=30)
        status = wait_until_processed(srv.url, timeout_s=60)
    assert (first.sent, first.accepted, first.duplicates) == (30, 30, 0)
    assert (second.accepted, second.duplicates) == (30, 30)
    assert (other_day.accepted, other_day.duplicates) == (30, 0)
    assert status["accepted"] == 60 and status["event_time"] == 1767225600 + 29


class FakeClock:
    """Stands in for ``time`` in monitor.replay: sleeps are recorded and advance the clock at once."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_replay_speed_caps_each_wait_and_paces_from_the_newest_timestamp(monkeypatch):
    """A first timestamp of 0 before 2026 events, a day's gap, and an out-of-order event from
    the past: no wait is longer than max_pause_s, and the past event causes none."""
    clock = FakeClock()
    monkeypatch.setattr(replay_module, "time", clock)
    accept = httpx.MockTransport(lambda req: httpx.Response(202, json={"accepted": len(json.loads(req.content)["events"])}))
    day = 1767225600
    stamps = [0, day, day + 4, day - 3600, day + 6, day + 86400]
    events = iter([{"timestamp": t, "prompt": f"event {i}"} for i, t in enumerate(stamps)])
    with httpx.Client(transport=accept) as client:
        result = replay(events, "http://monitor", speed=2.0, client=client, max_pause_s=10.0)
    assert result.accepted == 6
    assert clock.sleeps == [10.0, 2.0, 1.0, 10.0]


def test_replay_resends_a_batch_the_monitor_was_busy_for_or_received_too_slowly(monkeypatch):
    """408 (the body arrived after body_timeout_seconds) and 503 (busy) are both resent after Retry-After; any
    other refusal stops the replay."""
    clock = FakeClock()
    monkeypatch.setattr(replay_module, "time", clock)
    answers = iter([httpx.Response(408, json={"error": "body: not received within body_timeout_seconds=30"}),
                    httpx.Response(503, headers={"Retry-After": "2"}, json={"error": "busy"}),
                    httpx.Response(202, json={"accepted": 2})])
    with httpx.Client(transport=httpx.MockTransport(lambda req: next(answers))) as client:
        result = replay(iter([{"prompt": "a"}, {"prompt": "b"}]), "http://monitor", client=client)
    assert (result.retries, result.accepted, clock.sleeps) == (2, 2, [1.0, 2.0])
    with httpx.Client(transport=httpx.MockTransport(lambda req: httpx.Response(413, json={"error": "too large"}))) as client:
        with pytest.raises(RuntimeError, match="ingest answered 413"):
            replay(iter([{"prompt": "a"}]), "http://monitor", client=client)
