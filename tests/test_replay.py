"""`monitor replay` against the real service: timestamps honoured, ids stable, resends deduplicated."""

from __future__ import annotations

import json

from monitor.config import Settings
from monitor.pipeline.builder import build_service
from monitor.replay import read_events, replay, wait_until_processed
from tests.helpers.server import running_server


def test_replay_file_twice_counts_each_event_once(tmp_path, embedder):
    path = tmp_path / "events.jsonl"
    lines = [{"timestamp": 1767225600 + i, "prompt": f"replayed question {i}"} for i in range(30)]
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n\n")
    assert [e["event_id"] for e in read_events(path)][:2] == ["events.jsonl:1", "events.jsonl:2"]
    with running_server(Settings(judge="prototype"), lambda s: build_service(s, embedder=embedder)) as srv:
        first = replay(read_events(path), srv.url, speed=1000.0, batch_size=7)
        second = replay(read_events(path), srv.url, batch_size=30)
        status = wait_until_processed(srv.url, timeout_s=60)
    assert (first.sent, first.accepted, first.duplicates) == (30, 30, 0)
    assert (second.accepted, second.duplicates) == (30, 30)
    assert status["accepted"] == 30 and status["event_time"] == 1767225600 + 29
