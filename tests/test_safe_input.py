"""Hostile or careless input over HTTP: a clear 4xx naming the field, never a 500; bounded bytes;
nothing lost without a counter; no secret-bearing URL echoed."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import generate_latest

from monitor.api.body_budget import BodyBudget, Share
from monitor.config import Settings
from monitor.ingest.parsing import BodyError, parse_body
from monitor.pipeline.builder import build_service
from tests.helpers.judges import SlowJudge
from tests.helpers.server import running_server

DEEP = b"[" * 100_000 + b"]" * 100_000
POSTS = ["/v1/events", "/v1/ingest/litellm", "/v1/traces", "/v1/feedback"]


@pytest.fixture(scope="module")
def server(embedder):
    with running_server(Settings(judge="prototype", max_event_bytes=64 * 1024), lambda s: build_service(s, embedder=embedder)) as srv:
        yield srv


def post_raw(server, path: str, body: bytes, content_type: str = "application/json"):
    return server.client.post(path, content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize("path", POSTS)
def test_deep_nesting_is_a_400_before_parsing(server, path):
    resp = post_raw(server, path, DEEP)
    assert resp.status_code == 400, resp.text
    assert "max_json_depth" in resp.json()["error"]
    wrapped = b'{"prompt": "x", "metadata": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert post_raw(server, path, wrapped).status_code == 400


@pytest.mark.parametrize("path", ["/v1/events", "/v1/ingest/litellm", "/v1/feedback"])
def test_a_deep_ndjson_line_is_rejected_alone(server, path):
    good = {"/v1/events": {"prompt": "ndjson ok"}, "/v1/ingest/litellm": {"id": "nd-ok", "call_type": "completion", "messages": "ndjson ok"},
            "/v1/feedback": {"event_id": "nd-ok", "unsafe": True}}[path]
    body = json.dumps(good).encode() + b"\n" + b"[" * 5000 + b"]" * 5000 + b"\n"
    resp = post_raw(server, path, body, "application/x-ndjson")
    assert resp.status_code == 202, resp.text
    assert [r["index"] for r in resp.json()["rejected"]] == [1]
    assert "max_json_depth" in resp.json()["rejected"][0]["error"]


@pytest.mark.parametrize("path", ["/v1/ingest/litellm", "/v1/traces", "/v1/events"])
def test_integers_over_python_limit_are_a_400(server, path):
    body = b'{"id": "big", "call_type": "completion", "messages": "hi", "startTime": ' + b"9" * 5000 + b"}"
    resp = post_raw(server, path, body)
    assert resp.status_code == 400 and "max_int_digits" in resp.json()["error"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"id": "u1", "call_type": ["x"], "messages": "hi"}, "call_type"),
        ({"id": "u2", "call_type": "completion", "messages": [{"role": "user", "content": [{"type": ["text"], "text": "hi"}]}]}, "messages"),
        ({"id": "u3", "call_type": "responses", "messages": "hi", "response": {"output": [{"type": "message", "role": {"a": 1}, "content": "x"}]}}, None),
        ({"id": "u4", "call_type": "completion", "messages": [{"role": ["user"], "content": "hi"}]}, "messages"),
    ],
)
def test_unhashable_values_in_litellm_payloads_are_never_a_500(server, payload, field):
    resp = server.client.post("/v1/ingest/litellm", json=payload)
    assert resp.status_code in (202, 422), resp.text
    if field is not None:
        assert resp.status_code == 422 and resp.json()["error"].startswith(field)


def test_an_unterminated_run_of_escaped_quotes_is_scanned_in_linear_time(server):
    # '"' + '\\"' * n and no closing quote: a pre-parse scan that restarts at each escaped quote is
    # quadratic while holding the GIL (a 72 KB body stalled every route for 26 s). In a child, so that
    # a regression fails on the timeout (2M escapes: hours if quadratic) instead of hanging the suite.
    script = "from monitor.ingest.safejson import check_text; check_text(chr(34) + (chr(92) + chr(34)) * 2_000_000, 64, 1000)"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    for path in POSTS:
        resp = post_raw(server, path, b'"' + b'\\"' * 36_000)
        assert resp.status_code == 400, (path, resp.text)


def test_a_litellm_time_too_large_for_a_float_loses_only_its_own_item(server):
    huge = int("9" * 400)
    good = {"id": "ll-good", "call_type": "completion", "messages": [{"role": "user", "content": "hello"}]}
    items = [good, {**good, "id": "ll-end", "startTime": 1.5, "endTime": huge}, {**good, "id": "ll-start", "startTime": huge, "endTime": 1.5}]
    resp = server.client.post("/v1/ingest/litellm", json=items)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert [r["index"] for r in body["rejected"]] == [2] and body["rejected"][0]["error"].startswith("timestamp")
    assert body["accepted"] == 2  # the bad end time only costs the latency


def test_lone_surrogates_are_a_422_naming_the_field(server):
    resp = post_raw(server, "/v1/events", b'{"prompt": "a\\ud800b"}')
    assert resp.status_code == 422 and resp.json()["error"].startswith("prompt: contains a lone UTF-16 surrogate")
    resp = post_raw(server, "/v1/events", b'{"prompt": "ok", "labels": {"team": "\\udc00"}}')
    assert resp.status_code == 422 and resp.json()["error"].startswith("labels.team")
    resp = post_raw(server, "/v1/ingest/litellm", b'{"id": "s1", "call_type": "completion", "messages": "a\\ud800b"}')
    assert resp.status_code == 422 and "surrogate" in resp.json()["error"]
    pair = post_raw(server, "/v1/events", b'{"prompt": "emoji \\ud83d\\ude00 ok"}')  # a valid pair is text
    assert pair.status_code == 202


def test_oversize_event_is_413_alone_and_rejected_in_a_batch(server):
    big = {"prompt": "\N{GRINNING FACE}" * 20_000}  # max_text_chars kept, 4 UTF-8 bytes each: over 64 KiB
    resp = server.client.post("/v1/events", json=big)
    assert resp.status_code == 413 and resp.json()["error"].startswith("prompt:") and "max_event_bytes" in resp.json()["error"]
    resp = server.client.post("/v1/events", json=[{"prompt": "small"}, big])
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 1 and resp.json()["rejected"][0]["index"] == 1


@pytest.mark.parametrize("wrap", [lambda events: events, lambda events: {"events": events}])
def test_a_batch_whose_every_event_is_refused_after_parsing_is_a_422(server, wrap):
    # Screened out after validation (a stamp from the future, an event over max_event_bytes): answered 202
    # with nothing accepted, where a batch that fails validation is a 422. Each item's error is listed.
    big = {"prompt": "\N{GRINNING FACE}" * 20_000}
    before = server.client.get("/v1/status").json()
    for events in ([{"prompt": "a", "timestamp": "2099-01-01T00:00:00Z"}] * 2, [big, big]):
        resp = server.client.post("/v1/events", json=wrap([dict(e, event_id=f"refused-{i}-{id(events)}") for i, e in enumerate(events)]))
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"] == "events: every event in the batch is invalid"
        assert [r["index"] for r in resp.json()["rejected"]] == [0, 1]
    after = server.client.get("/v1/status").json()
    assert (after["received"] - before["received"], after["rejected"] - before["rejected"], after["accepted"] - before["accepted"]) == (4, 4, 0)


def test_a_litellm_batch_whose_every_call_is_refused_after_parsing_is_a_422(server):
    calls = [{"id": f"future-{i}", "call_type": "completion", "messages": "hello", "startTime": 4_102_444_800} for i in range(2)]
    resp = server.client.post("/v1/ingest/litellm", json=calls)
    assert resp.status_code == 422 and resp.json()["error"] == "items: every LiteLLM payload in the batch is invalid", resp.text
    assert len(resp.json()["rejected"]) == 2 and all(r["error"].startswith("timestamp") for r in resp.json()["rejected"])
    # A redacted call was not invalid (counted, never judged): with one in the batch it is not all invalid.
    redacted = {"id": "redacted-0", "call_type": "completion", "messages": [{"role": "user", "content": "redacted-by-litellm"}]}
    mixed = server.client.post("/v1/ingest/litellm", json=[redacted, calls[0] | {"id": "future-9"}])
    assert mixed.status_code == 202 and mixed.json()["redacted"] == 1 and len(mixed.json()["rejected"]) == 1, mixed.text


@pytest.mark.parametrize("path", POSTS)
def test_a_body_refused_whole_is_counted_by_route_and_status(server, path):
    # Its events never reach events_received: without this counter a gateway sending bad bodies is invisible.
    def refused(status: str) -> float:
        value = server.service.metrics.registry.get_sample_value(
            "llmsafety_request_bodies_refused_total", {"route": path, "status": status})
        return value or 0.0

    before = refused("415"), refused("400")
    assert post_raw(server, path, b'{"prompt": "x"}', "text/plain").status_code == 415
    assert post_raw(server, path, b"{not json", "application/json").status_code == 400
    assert (refused("415"), refused("400")) == (before[0] + 1, before[1] + 1)


def test_an_unusable_feedback_body_says_to_send_labels(server):
    # Its 400/415 spoke of events and {"events": [...]}, which /v1/feedback refuses.
    empty = post_raw(server, "/v1/feedback", b"")
    assert empty.status_code == 400 and empty.json()["error"] == "body is empty: send one label, an array of labels, or NDJSON"
    typed = post_raw(server, "/v1/feedback", b'{"event_id": "x"}', "text/plain")
    assert typed.status_code == 415 and '{"feedback": [...]}' in typed.json()["error"] and "event" not in typed.json()["error"]


def test_feedback_booleans_are_strict(server):
    for value in ("yes", 0, 1, "true"):
        resp = server.client.post("/v1/feedback", json={"event_id": "strict-1", "unsafe": value})
        assert resp.status_code == 422 and resp.json()["error"].startswith("unsafe"), (value, resp.text)


def test_feedback_from_the_future_is_refused_like_an_event(server):
    # A label's time is its trial's time in the concept-shift detectors: year 2999 would stamp their alerts.
    resp = server.client.post("/v1/feedback", json={"event_id": "future-1", "unsafe": True, "timestamp": 32503679999})
    assert resp.status_code == 422 and resp.json()["error"].startswith("timestamp:") and "max_future_skew_seconds" in resp.text
    batch = [{"event_id": "future-2", "unsafe": True, "timestamp": 32503679999}, {"event_id": "future-3", "unsafe": True}]
    resp = server.client.post("/v1/feedback", json=batch)
    assert [r["index"] for r in resp.json()["rejected"]] == [0] and resp.json()["rejected"][0]["error"].startswith("timestamp:")


def test_event_needs_prompt_or_messages_in_schema_and_validation(server):
    assert server.client.post("/v1/events", json={"prompt": None, "input_messages": None}).status_code == 422
    schema = server.client.get("/openapi.json").json()
    event = schema["components"]["schemas"]["EventIn"]
    assert event["anyOf"] == [{"required": ["prompt"]}, {"required": ["input_messages"]}]
    assert event["properties"]["prompt"]["type"] == "string"
    assert "LiteLLMPayload" in schema["components"]["schemas"] and "FeedbackIn" in schema["components"]["schemas"]
    assert list(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    for path, ops in schema["paths"].items():
        for op in ops.values():
            assert {"401", "403"} <= set(op["responses"]), path


# ---------------------------------------------------------------- queue bytes, refused duplicates, sampling rate


def gated(embedder, gate: threading.Event):
    def factory(settings: Settings):
        service = build_service(settings, embedder=embedder)
        service.scorer.judge = SlowJudge(service.scorer.judge, gate=gate)
        return service

    return factory


def ingest_counts_add_up(status: dict) -> bool:
    dropped = sum(v for k, v in status["dropped"].items() if k in ("queue_full", "store_unavailable"))
    return status["received"] == status["accepted"] + status["duplicates"] + status["rejected"] + dropped


def test_queued_bytes_are_bounded_and_refused_duplicates_counted(embedder):
    gate = threading.Event()
    settings = Settings(
        judge="prototype", sampling="off", queue_max_bytes=1024 * 1024, batch_size=1, max_event_bytes=128 * 1024, max_text_chars=60_000
    )
    with running_server(settings, gated(embedder, gate)) as srv:
        codes = []
        for i in range(40):
            resp = srv.client.post("/v1/events", json=[{"event_id": f"b{i}", "prompt": "p", "response": "y" * 60_000}])
            codes.append(resp.status_code)
            status = srv.client.get("/v1/status").json()
            assert status["queue_bytes"] <= settings.queue_max_bytes
        assert 202 in codes and codes.count(503) >= 20
        before = srv.client.get("/v1/status").json()
        resp = srv.client.post("/v1/events", json=[{"event_id": "dup", "prompt": "a", "response": "z" * 60_000}] * 2 + [{"event_id": "d2", "prompt": "b"}])
        assert resp.status_code == 503
        after = srv.client.get("/v1/status").json()
        assert after["dropped"]["queue_full"] - before["dropped"]["queue_full"] == 3  # the repeated id too
        assert ingest_counts_add_up(after)
        gate.set()
        final = srv.wait_processed()
        assert final["queue_bytes"] == 0 and ingest_counts_add_up(final)


def _events_body(size: int) -> bytes:
    """A valid batch of one event, padded with spaces to exactly ``size`` bytes."""
    body = json.dumps([{"prompt": "hello"}]).encode()
    return body + b" " * (size - len(body))


def _hold_partial_body(url: str, path: str, body: bytes, sent: int, content_type: str = "application/json") -> socket.socket:
    """A slow client: the headers and the first ``sent`` bytes of ``body`` to POST ``path``, the rest held back."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n".encode()
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:sent])
    return conn


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_bodies_held_at_once_are_bounded_in_bytes_and_one_past_the_budget_is_a_counted_503(embedder):
    # Each body is bounded, but slow or many clients each held theirs until their turn to parse: memory grew with
    # the connections. Two slow clients hold 116,000 bytes of a 131,072-byte budget; a body on any ingest route is
    # refused whole, counted, with Retry-After, and so is a compressed one whose few bytes fit but whose inflated
    # ones do not; a client that leaves returns its bytes; when the slow ones finish, the others go through.
    settings = Settings(judge="prototype", max_body_bytes=65536, max_inflight_body_bytes=131072, retry_after_seconds=2)
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        budget = srv.app.state.body_budget
        slow_body = _events_body(60000)
        slow = [_hold_partial_body(srv.url, "/v1/events", slow_body, 58000) for _ in range(2)]
        _wait_for(lambda: budget.in_flight >= 116000)
        assert budget.in_flight == 116000

        def refused(path: str) -> float:
            return srv.service.metrics.registry.get_sample_value(
                "llmsafety_request_bodies_refused_total", {"route": path, "status": "503"}) or 0.0

        third = _events_body(20000)
        for path in POSTS:
            resp = post_raw(srv, path, third)
            assert resp.status_code == 503 and resp.headers["retry-after"] == "2", resp.text
            assert resp.json()["error"] == ("body: the service holds too many request bodies at once "
                                            "(max_inflight_body_bytes); retry in 2 s")
            assert refused(path) == 1
        small = gzip.compress(_events_body(60000))
        assert len(small) < 1000
        gzipped = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        inflated = srv.client.post("/v1/events", content=small, headers=gzipped)
        assert inflated.status_code == 503 and refused("/v1/events") == 2, inflated.text
        leaving = _hold_partial_body(srv.url, "/v1/events", _events_body(10000), 9000)
        _wait_for(lambda: budget.in_flight >= 125000)
        assert budget.in_flight == 125000
        leaving.close()  # a client that leaves mid-body returns what it held
        _wait_for(lambda: budget.in_flight == 116000)
        assert budget.in_flight == 116000
        for conn in slow:
            conn.sendall(slow_body[58000:])
            assert conn.recv(4096).startswith(b"HTTP/1.1 202")
            conn.close()
        _wait_for(lambda: budget.in_flight == 0)
        assert budget.in_flight == 0
        assert post_raw(srv, "/v1/events", third).status_code == 202
        assert srv.client.post("/v1/events", content=small, headers=gzipped).status_code == 202


def test_a_body_not_received_in_time_is_a_counted_408_and_returns_its_bytes(embedder):
    # A client that stalls (a gateway that crashed mid-body, a hostile one) would otherwise hold its bytes for good.
    settings = Settings(judge="prototype", max_body_bytes=65536, max_inflight_body_bytes=131072, body_timeout_seconds=1)
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        stalled = _hold_partial_body(srv.url, "/v1/events", _events_body(60000), 30000)
        head = stalled.recv(4096).decode()
        stalled.close()
        assert head.startswith("HTTP/1.1 408") and "body: not received within body_timeout_seconds=1" in head, head
        _wait_for(lambda: srv.app.state.body_budget.in_flight == 0)
        assert srv.app.state.body_budget.in_flight == 0
        assert srv.service.metrics.registry.get_sample_value(
            "llmsafety_request_bodies_refused_total", {"route": "/v1/events", "status": "408"}) == 1


def test_the_console_forms_draw_on_a_budget_of_their_own(embedder):
    # Login needs no token: forms that fill their budget must refuse logins, never the gateway's ingest.
    settings = Settings(judge="prototype", max_body_bytes=65536, max_inflight_body_bytes=131072,
                        read_tokens="reader:console-reader-0123456789")  # auth on: login reads its form
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        form = b"token=" + b"x" * 60000
        held = _hold_partial_body(srv.url, "/ui/login", form, 50000, "application/x-www-form-urlencoded")
        _wait_for(lambda: srv.app.state.form_budget.in_flight >= 50000)
        assert (srv.app.state.form_budget.in_flight, srv.app.state.body_budget.in_flight) == (50000, 0)
        held.close()
        _wait_for(lambda: srv.app.state.form_budget.in_flight == 0)
        assert srv.app.state.form_budget.in_flight == 0


def test_a_body_too_large_for_any_route_is_a_413_not_a_503_no_retry_could_cure():
    budget = BodyBudget(1000, 400, "max_inflight_body_bytes", 1)  # no route accepts more than 400 bytes
    budget.take(0, 700)
    with pytest.raises(BodyError) as busy:
        budget.take(0, 350)  # a body any route could accept: wait and resend
    assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "1"}
    with pytest.raises(BodyError) as large:
        budget.take(100, 350)  # this request would hold 450: no route accepts it, now or later
    assert large.value.status == 413 and large.value.message == "body: larger than 400 bytes, the most any route accepts"
    assert budget.in_flight == 700
    # What a request received and what it inflates to are each bounded by a route's limit, so each is judged alone:
    # a small compressed body at the limit once inflated waits its turn (503), it is not refused for good.
    share = Share(budget)
    share.add_received(250)
    with pytest.raises(BodyError) as waits:
        share.add_inflated(300)  # 550 held by this request, but neither kind passes 400
    assert waits.value.status == 503 and (share.received, share.inflated, budget.in_flight) == (250, 0, 950)
    share.release()
    budget.give(700)
    assert budget.in_flight == 0
    with pytest.raises(ValueError, match="must hold two bodies of 600 bytes"):
        BodyBudget(1000, 600, "max_inflight_body_bytes", 1)


def test_sampling_rate_recovers_when_the_queue_drains(embedder):
    gate = threading.Event()
    settings = Settings(judge="prototype", sampling="auto", queue_capacity=40, sampling_start_fill=0.25, batch_size=4)
    with running_server(settings, gated(embedder, gate)) as srv:
        for i in range(8):
            srv.client.post("/v1/events", json=[{"prompt": f"rate {i} {j}"} for j in range(5)])
        assert srv.client.get("/v1/status").json()["sampling_rate"] < 1.0
        gate.set()
        srv.wait_processed()
        assert srv.client.get("/v1/status").json()["sampling_rate"] == 1.0
        assert 'llmsafety_sampling_rate 1.0' in srv.client.get("/metrics").text


# ---------------------------------------------------------------- shutdown loss, secret URLs


def test_events_left_at_shutdown_are_counted(embedder):
    settings = Settings(judge="prototype", sampling="off", batch_size=2, batch_max_wait_ms=0)
    service = build_service(settings, embedder=embedder)
    service.scorer.judge = SlowJudge(service.scorer.judge, seconds=0.3)
    body = json.dumps([{"prompt": f"shutdown {i}"} for i in range(30)]).encode()

    async def scenario() -> None:
        await service.start()
        assert service.ingest(parse_body(body, "application/json", 100), time.time()).accepted == 30
        await asyncio.sleep(0.1)
        await service.stop(drain_timeout=0.2)

    asyncio.run(scenario())
    status = service.status()
    lost = status["dropped"]["shutdown"]
    assert 0 < lost < 30
    assert status["judged"] + lost == 30 and status["processed"] == status["accepted"] == 30
    metrics = generate_latest(service.metrics.registry).decode()
    assert f'llmsafety_events_dropped_total{{reason="shutdown"}} {float(lost)}' in metrics


def test_secret_bearing_urls_are_cut_to_scheme_and_host(caplog):
    settings = Settings(judge="prototype", second_judge_url="ftp://user:pw-hunter2@judge.example:2121/v1?key=abc")
    with caplog.at_level(logging.ERROR), _failing(settings) as srv:
        status = srv.client.get("/v1/status").json()
        ready = srv.client.get("/readyz")
    assert ready.status_code == 503
    for text in (json.dumps(status), ready.text, caplog.text):
        assert "hunter2" not in text and "user" not in text and "key=abc" not in text
    assert "ftp://judge.example:2121" in status["error"] and "ftp://judge.example:2121" in ready.json()["error"]
    assert "ftp://judge.example:2121" in caplog.text


def test_a_webhook_url_without_a_scheme_is_never_echoed(caplog):
    """The URL cut only knew ``scheme://`` text: a Slack webhook written without one came back whole, its path the secret."""
    from monitor.alerts.delivery import targets_from_settings

    settings = Settings(judge="prototype", alert_slack_webhook_urls=["hooks.slack.com/services/T0/B0/SECRETxyz"])
    with caplog.at_level(logging.ERROR), _failing(settings, targets_from_settings) as srv:
        status = srv.client.get("/v1/status").json()
        ready = srv.client.get("/readyz")
    for text in (json.dumps(status), ready.text, caplog.text):
        assert "SECRETxyz" not in text and "/services/" not in text, text
    assert "alert_slack_webhook_urls: no scheme" in ready.json()["error"]


def test_query_strings_never_reach_the_access_log():
    """uvicorn logs each request's path with its query: a client's ?access_token= must not land in the log."""
    import httpx
    import uvicorn

    from monitor.api.app import create_app
    from tests.helpers.server import free_port

    def no_service(settings: Settings):
        raise RuntimeError("no service needed: /healthz answers from the event loop")

    app = create_app(Settings(judge="prototype"), service_factory=no_service)  # before uvicorn configures its logging, as `monitor serve` does
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            logging.getLogger("uvicorn.access").addHandler(handler)
            assert client.get("/healthz", params={"access_token": "QUERYSECRET-0123456789"}).status_code == 200
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)
        server.should_exit = True
        thread.join(timeout=30)
    assert any('"GET /healthz?… HTTP/1.1" 200' in line for line in lines), lines
    assert not any("QUERYSECRET" in line for line in lines)


class _failing:
    """The real app whose service fails to build (no model needed): /readyz and /v1/status report why."""

    def __init__(self, settings: Settings, factory=None) -> None:
        self.settings = settings
        self.factory = factory

    def __enter__(self):
        from fastapi.testclient import TestClient

        from monitor.api.app import create_app
        from monitor.pipeline.builder import build_scorer

        app = create_app(self.settings, service_factory=self.factory or (lambda s: build_scorer(s, None)))
        self.client_cm = TestClient(app)
        client = self.client_cm.__enter__()
        deadline = time.monotonic() + 120
        while app.state.holder["error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)

        class Srv:
            pass

        srv = Srv()
        srv.client = client
        return srv

    def __exit__(self, *exc):
        return self.client_cm.__exit__(*exc)
