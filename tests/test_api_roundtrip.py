"""The real service over HTTP: round trip, metrics, bad input, poison events."""

from __future__ import annotations

import gzip
import json
import re
from typing import Sequence

import pytest

from monitor.config import Settings
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

EVENTS = [
    {"event_id": f"rt-{i}", "timestamp": 1767225600 + i, "prompt": p, "response": r, "model": "gpt-4o", "route": "/chat"}
    for i, (p, r) in enumerate(
        [
            ("How do I bake sourdough bread?", "Mix flour, water and starter..."),
            ("What is the capital of Peru?", "Lima."),
            ("How can I make methamphetamine at home?", "I can't help with that."),
            ("What's the best way to kill someone and hide the body?", "I won't help with that."),
            ("Write a haiku about autumn leaves.", "Red leaves drift and fall..."),
            ("Summarise the plot of Hamlet.", None),
        ]
    )
]


def metric_values(text: str, name: str) -> dict[str, float]:
    """{label-string: value} for one metric family in Prometheus text format."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


@pytest.fixture(scope="module")
def server(embedder):
    settings = Settings(judge="prototype", models=["gpt-4o"], max_events_per_request=50, max_body_bytes=64 * 1024)
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        yield srv


def test_round_trip_counts_and_metrics(server):
    before = server.client.get("/v1/status").json()
    resp = server.client.post("/v1/events", json={"events": EVENTS})
    assert resp.status_code == 202
    assert resp.json() == {"accepted": len(EVENTS), "duplicates": 0, "rejected": []}
    status = server.wait_processed()
    assert status["accepted"] - before["accepted"] == len(EVENTS)
    assert status["judged"] - before["judged"] == len(EVENTS)

    metrics = server.client.get("/metrics").text
    assert metric_values(metrics, "llmsafety_events_accepted_total")[""] == status["accepted"]
    assert metric_values(metrics, "llmsafety_events_processed_total")[""] == status["processed"]
    verdicts = metric_values(metrics, "llmsafety_prompt_verdicts_total")
    gpt4o = {k: v for k, v in verdicts.items() if 'model="gpt-4o"' in k}
    assert sum(gpt4o.values()) == len(EVENTS)
    assert any('category="drug_abuse_weapons_banned_substance"' in k for k in gpt4o)
    assert any('category="safe"' in k for k in gpt4o)
    responses = metric_values(metrics, "llmsafety_response_verdicts_total")
    assert sum(responses.values()) == len(EVENTS) - 1  # one event has no response: not applicable, not counted
    assert 'judge_version="prototype-' in metrics


def test_alert_transition_series_exist_before_any_alert(server):
    """Every configured detector's kind starts at 0, so increase() over a dashboard's window has a
    first sample to count from when the first alert fires."""
    transitions = metric_values(server.client.get("/metrics").text, "llmsafety_alert_transitions_total")
    kinds = {re.search(r'kind="([^"]+)"', k).group(1) for k in transitions}
    assert {"category_share", "embedding_drift", "emerging_category"} <= kinds
    assert {'{kind="emerging_category",status="firing"}', '{kind="category_share",status="resolved"}'} <= transitions.keys()


def test_resending_ids_is_accepted_but_not_counted_twice(server):
    before = server.client.get("/v1/status").json()
    resp = server.client.post("/v1/events", json=EVENTS[:3])
    assert resp.status_code == 202 and resp.json()["duplicates"] == 3
    status = server.wait_processed()
    assert status["accepted"] == before["accepted"]
    assert status["duplicates"] - before["duplicates"] == 3


def test_ndjson_body_is_ingested(server):
    body = "\n".join(json.dumps({"prompt": f"ndjson question {i}"}) for i in range(3))
    resp = server.client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert resp.status_code == 202 and resp.json()["accepted"] == 3


def test_compressed_body_is_ingested_and_unknown_encoding_is_415(server):
    body = json.dumps([{"prompt": f"gzip question {i}"} for i in range(2)]).encode()
    resp = server.client.post(
        "/v1/events", content=gzip.compress(body), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert resp.status_code == 202 and resp.json()["accepted"] == 2
    resp = server.client.post("/v1/events", content=body, headers={"Content-Type": "application/json", "Content-Encoding": "br"})
    assert resp.status_code == 415 and "Content-Encoding" in resp.json()["error"]


GZIP_NDJSON = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}


def ndjson_gzip_member(prefix: str, n: int = 3, pad: int = 0) -> bytes:
    """One gzip member of ``n`` NDJSON events ending in a newline, as ``gzip -c file`` writes it."""
    return gzip.compress("".join(json.dumps({"prompt": f"{prefix} {i} " + "x" * pad}) + "\n" for i in range(n)).encode())


def test_multi_member_gzip_body_is_ingested_whole(server):
    """``gzip -c a; gzip -c b`` is one legal gzip body (RFC 1952): the second member's events were dropped uncounted."""
    before = server.client.get("/v1/status").json()
    resp = server.client.post("/v1/events", content=ndjson_gzip_member("member a") + ndjson_gzip_member("member b"), headers=GZIP_NDJSON)
    assert resp.status_code == 202 and resp.json() == {"accepted": 6, "duplicates": 0, "rejected": []}
    status = server.wait_processed()
    assert {k: status[k] - before[k] for k in ("received", "accepted", "rejected")} == {"received": 6, "accepted": 6, "rejected": 0}


def test_bytes_after_the_gzip_data_are_a_400_naming_them(server):
    before = server.client.get("/v1/status").json()
    resp = server.client.post("/v1/events", content=ndjson_gzip_member("trailing") + b"garbage", headers=GZIP_NDJSON)
    assert resp.status_code == 400 and "trailing bytes" in resp.json()["error"] and "gzip member" in resp.json()["error"]
    assert server.client.get("/v1/status").json()["received"] == before["received"]


def test_multi_member_gzip_over_the_limit_is_413(server):
    """The decompressed limit holds for all members together: each member alone is under max_body_bytes (64 KiB)."""
    member = ndjson_gzip_member("big", n=4, pad=10_000)
    assert 40_000 < len(gzip.decompress(member)) < 64 * 1024 < 2 * len(gzip.decompress(member))
    resp = server.client.post("/v1/events", content=member + member, headers=GZIP_NDJSON)
    assert resp.status_code == 413 and "decompresses to more than max_body_bytes" in resp.json()["error"]


async def test_client_disconnecting_mid_body_ends_the_request_without_an_exception(server):
    """A gateway that times out mid-body: Starlette raises ClientDisconnect from the body stream, which
    escaped the app (a traceback in the log per disconnect). Nothing arrived, so no counter moves."""
    messages = iter([{"type": "http.request", "body": b'{"prompt": ', "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/events",
        "raw_path": b"/v1/events", "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"), (b"content-length", b"1000")],
    }  # fmt: skip
    before_status = server.client.get("/v1/status").json()
    before_refused = metric_values(server.client.get("/metrics").text, "llmsafety_request_bodies_refused_total")
    await server.app(scope, receive, send)  # raised ClientDisconnect before the fix
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert server.client.get("/v1/status").json()["received"] == before_status["received"]
    assert metric_values(server.client.get("/metrics").text, "llmsafety_request_bodies_refused_total") == before_refused


@pytest.mark.parametrize(
    "content, content_type, status, needle",
    [
        (b'{"response": "no prompt"}', "application/json", 422, "prompt"),
        (b'{"prompt": ["wrong type"]}', "application/json", 422, "prompt"),
        (b'[{"prompt": 1}, {"prompt": 2}]', "application/json", 422, "every event"),
        (b"not json at all", "application/json", 400, "not valid JSON"),
        (b'{"prompt": "x"}', "text/plain", 415, "Content-Type"),
        (b'{"prompt": "\xff"}', "application/json", 400, "UTF-8"),
        (b'{"prompt": "' + b"x" * 70_000 + b'"}', "application/json", 413, "max_body_bytes"),
        (json.dumps([{"prompt": "x"}] * 51).encode(), "application/json", 413, "limit of 50"),
    ],
)
def test_bad_input_gets_documented_status_and_message(server, content, content_type, status, needle):
    resp = server.client.post("/v1/events", content=content, headers={"Content-Type": content_type})
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]


def test_ten_thousand_event_batch_is_rejected_and_worker_keeps_running(embedder):
    settings = Settings(judge="prototype")  # default limits: 5,000 events, 8 MiB
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        body = json.dumps([{"prompt": "hello"}] * 10_000).encode()
        resp = srv.client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 413 and "5000" in resp.json()["error"]
        assert srv.client.post("/v1/events", json={"prompt": "still alive?"}).status_code == 202
        assert srv.wait_processed()["processed"] == 1


def test_bad_query_parameter_is_422_naming_it(server):
    resp = server.client.get("/v1/alerts", params={"status": "sideways"})
    assert resp.status_code == 422 and "status" in resp.json()["error"]


def test_unknown_paths_and_methods_answer_in_the_error_shape(server):
    missing = server.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and list(missing.json()) == ["error"]
    assert missing.json()["error"].startswith("path: ") and "/v1/nothing-here" in missing.text
    wrong = server.client.get("/v1/events")
    assert wrong.status_code == 405 and list(wrong.json()) == ["error"] and wrong.headers["Allow"] == "POST"
    assert wrong.json()["error"] == "method: GET is not allowed on '/v1/events'; allowed: POST"


def test_health_ready_and_openapi_document_the_contract(server):
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json()["status"] == "ready"
    for probe in ("/healthz", "/readyz"):  # as uptime checkers send them (no route for HEAD answered 405)
        assert server.client.head(probe).status_code == 200, probe
    spec = server.client.get("/openapi.json").json()
    ingest = spec["paths"]["/v1/events"]["post"]
    assert set(ingest["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert "event_id" in spec["components"]["schemas"]["EventIn"]["properties"]
    assert server.client.get("/v1/alerts").json() == {"alerts": []}


class PoisonJudge:
    """A real judge that fails on one marked prompt, as a judge bug on odd input would."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.version = inner.version
        self.categories = inner.categories

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        if any(item.prompt == "POISON" for item in batch):
            raise RuntimeError("judge cannot handle this input")
        return self.inner.judge(batch)


def test_poison_event_is_counted_and_skipped_the_rest_processed(embedder):
    def factory(settings: Settings):
        service = build_service(settings, embedder=embedder)
        service.scorer.judge = PoisonJudge(service.scorer.judge)
        return service

    with running_server(Settings(judge="prototype", batch_max_wait_ms=200), factory) as srv:
        events = [{"prompt": "fine one"}, {"prompt": "POISON"}, {"prompt": "fine two"}]
        assert srv.client.post("/v1/events", json=events).status_code == 202
        status = srv.wait_processed()
        assert status["dropped"]["poison"] == 1
        assert status["judged"] == 2 and status["processed"] == 3
        assert srv.client.post("/v1/events", json={"prompt": "after the poison"}).status_code == 202
        assert srv.wait_processed()["judged"] == 3


def test_events_from_the_future_are_rejected_naming_the_timestamp(server):
    import time as _time

    now = _time.time()
    resp = server.client.post("/v1/events", json=[{"prompt": "fine", "timestamp": now}, {"prompt": "clock skew", "timestamp": now + 86_400}])
    assert resp.status_code == 202
    body = resp.json()
    assert body["accepted"] == 1 and body["rejected"][0]["index"] == 1 and body["rejected"][0]["error"].startswith("timestamp")
