"""End to end over HTTP: a replayed stream with a known shift raises the expected alert with evidence,
replays are reproducible, and feedback and clusters have their endpoints."""

from __future__ import annotations

import pytest

from monitor.config import Settings
from monitor.demo import START, demo_stream
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

N_EVENTS, SHIFT_AT = 2400, 1500


def settings() -> Settings:
    return Settings(
        judge="prototype",
        sampling="off",  # replay exactly: every event judged
        queue_capacity=N_EVENTS,
        share_warmup_events=1000,
        embedding_reference_events=1000,
        emerging_reference_events=1000,
        emerging_calibration_events=500,
        concept_warmup_trials=200,
        models=["demo-model"],
    )


def replay(srv, events) -> None:
    for i in range(0, len(events), 500):
        assert srv.client.post("/v1/events", json=events[i : i + 500]).status_code == 202
    srv.wait_processed(timeout=300)


@pytest.fixture(scope="module")
def replayed(embedder):
    with running_server(settings(), lambda s: build_service(s, embedder=embedder)) as srv:
        replay(srv, demo_stream(N_EVENTS, shift_at=SHIFT_AT))
        yield srv, srv.client.get("/v1/alerts", params={"status": "all"}).json()["alerts"]


def test_self_harm_rise_raises_a_category_share_alert_with_evidence(replayed):
    srv, alerts = replayed
    share = [a for a in alerts if a["kind"] == "category_share" and a["key"] == "self_harm" and a["scope"] == "global"]
    assert share, [(a["kind"], a["key"]) for a in alerts]
    alert = share[0]
    # Event time, not wall time: the alert starts after the shift and within a few hundred events of it.
    assert START + SHIFT_AT <= alert["started_at"] <= START + SHIFT_AT + 600
    ev = alert["evidence"]
    assert ev["direction"] == "rise" and ev["current_share"] > ev["reference_share"]
    assert ev["current_ci95"][0] > ev["reference_share"]
    assert alert["category"] == "self_harm" and alert["severity"] in ("warning", "critical")
    one = srv.client.get(f"/v1/alerts/{alert['id']}").json()
    assert one["id"] == alert["id"] and one["links"]["alert"] == f"/v1/alerts/{alert['id']}"
    assert one["links"]["report"].startswith("/v1/reports?reference=")
    assert srv.client.get(one["links"]["report"].replace("format=html", "format=json")).status_code == 200
    metrics = srv.client.get("/metrics").text
    assert 'llmsafety_detector_active{detector="category_share",key="self_harm",scope="global"} 1.0' in metrics
    assert 'llmsafety_alerts_firing{kind="category_share"' in metrics


def test_alerts_are_scoped_by_configured_model(replayed):
    _, alerts = replayed
    assert any(a["scope"] == "model=demo-model" and a["kind"] == "category_share" for a in alerts)


def test_replaying_the_same_stream_gives_the_same_alerts(replayed, embedder):
    _, first = replayed
    with running_server(settings(), lambda s: build_service(s, embedder=embedder)) as srv:
        replay(srv, demo_stream(N_EVENTS, shift_at=SHIFT_AT))
        second = srv.client.get("/v1/alerts", params={"status": "all"}).json()["alerts"]
    key = lambda a: (a["id"], a["kind"], a["scope"], a["key"], a["status"], a["started_at"], a["resolved_at"])  # noqa: E731
    assert sorted(map(key, second)) == sorted(map(key, first))


def test_feedback_is_matched_against_judged_events(replayed):
    srv, _ = replayed
    labels = [
        {"event_id": "demo-0-000010", "unsafe": False},
        {"event_id": "demo-0-000011", "category": "self_harm"},
        {"event_id": "demo-0-000012", "category": "H", "label_set": "openai-moderation"},
        {"event_id": "never-seen", "unsafe": True},
        {"event_id": "demo-0-000013", "category": "not_a_category"},
    ]
    resp = srv.client.post("/v1/feedback", json=labels)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert (body["matched"], body["unknown_event"], body["duplicate"]) == (3, 1, 0)
    assert [r["index"] for r in body["rejected"]] == [4] and "category" in body["rejected"][0]["error"]
    again = srv.client.post("/v1/feedback", json=labels[:1]).json()
    assert again["duplicate"] == 1
    bad = srv.client.post("/v1/feedback", json={"event_id": "x"})
    assert bad.status_code == 422 and "unsafe" in bad.json()["error"]
    assert 'llmsafety_feedback_total{status="matched"} 3.0' in srv.client.get("/metrics").text


def test_clusters_endpoint_lists_and_404s(replayed):
    srv, _ = replayed
    body = srv.client.get("/v1/clusters").json()
    assert body["scope"] == "global" and isinstance(body["clusters"], list)
    for cluster in body["clusters"]:
        assert srv.client.get(f"/v1/clusters/{cluster['id']}").json()["id"] == cluster["id"]
    missing = srv.client.get("/v1/clusters/c-nope")
    assert missing.status_code == 404 and "cluster_id" in missing.json()["error"]
