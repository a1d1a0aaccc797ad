"""LiteLLM integration: the StandardLoggingPayload mapping, POST /v1/ingest/litellm, and MonitorLogger.

Completions go through the real ``litellm`` package with ``mock_response`` (no model is called) and
reach the running monitor through both paths: LiteLLM's own ``generic_api`` callback, and our logger.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from typing import Any, Callable

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map
litellm = pytest.importorskip("litellm")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402
from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger  # noqa: E402

from monitor.config import Settings  # noqa: E402
from monitor.ingest.parsing import BodyError  # noqa: E402
from monitor.integrations.adapted import Skip  # noqa: E402
from monitor.integrations.litellm import LiteLLMAdapter, slim, split_body  # noqa: E402
from monitor.integrations.litellm_logger import MonitorLogger  # noqa: E402
from monitor.integrations.privacy import hash_id  # noqa: E402
from monitor.pipeline.builder import build_service  # noqa: E402
from tests.helpers.server import running_server  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")  # litellm's own types


@pytest.fixture(scope="module")
def server(embedder):
    settings = Settings(judge="prototype", models=["gpt-4o"], max_events_per_request=20, end_user_hash_salt="pepper")
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        srv.seen = []  # every event the worker processed
        srv.service.batch_listeners.append(lambda batch: srv.seen.extend(s.event for s in batch))
        yield srv


@pytest.fixture
def callbacks():
    """LiteLLM's callback lists are global: start and end every test with none."""
    litellm.logging_callback_manager._reset_all_callbacks()
    yield
    litellm.logging_callback_manager._reset_all_callbacks()


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Let the event loop run (LiteLLM fires callbacks as tasks) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def events_with(server, marker: str) -> list:
    return [e for e in server.seen if marker in e.prompt]


def metric(server, name: str, **labels: str) -> float:
    return server.service.metrics.registry.get_sample_value(name, labels) or 0.0


async def complete(marker: str, **kwargs: Any) -> None:
    await litellm.acompletion(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{marker} how do plants grow?"}],
        mock_response=kwargs.pop("mock_response", f"{marker} with light and water."),
        **kwargs,
    )


# ---------------------------------------------------------------- mapping (no server)


class Capture(CustomLogger):
    """Keeps the StandardLoggingPayloads LiteLLM builds, to feed the mapping real ones."""

    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[dict] = []

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.payloads.append(kwargs["standard_logging_object"])

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.payloads.append(kwargs["standard_logging_object"])


async def test_real_payloads_map_to_events(callbacks):
    capture = Capture()
    litellm.callbacks = [capture]
    await complete("MAP1", metadata={"user_api_key_team_alias": "support"})
    stream = await litellm.acompletion(
        model="gpt-4o", messages=[{"role": "user", "content": "MAP2 stream please"}], mock_response="streamed words", stream=True
    )
    async for _ in stream:
        pass
    with pytest.raises(Exception):
        await litellm.acompletion(model="gpt-4o", messages=[{"role": "user", "content": "MAP3 fail"}], mock_response=Exception("boom"))
    await until(lambda: len(capture.payloads) == 3)

    adapter = LiteLLMAdapter()
    by_marker = {p["messages"][-1]["content"][:4]: (p, adapter.convert(p)) for p in capture.payloads}
    payload, event = by_marker["MAP1"]
    assert event.event_id == payload["id"] and event.prompt == "MAP1 how do plants grow?"
    assert event.response == "MAP1 with light and water." and event.model == "gpt-4o"
    assert event.timestamp == payload["startTime"] and event.labels == {"team": "support"}
    assert event.metadata["status"] == "success" and event.metadata["tokens"]["total"] == payload["total_tokens"]
    _, streamed = by_marker["MAP2"]
    assert streamed.response == "streamed words" and streamed.metadata["stream"] is True
    _, failed = by_marker["MAP3"]
    assert failed.prompt == "MAP3 fail" and failed.response is None
    assert failed.metadata["status"] == "failure" and "boom" in failed.metadata["error"]


def test_labels_are_allow_listed_and_end_user_is_hashed():
    payload = {
        "id": "x1", "call_type": "acompletion", "end_user": "alice@example.com",
        "messages": [{"role": "user", "content": "hi"}], "response": "hello",
        "metadata": {"user_api_key_team_alias": "support", "user_api_key_alias": "prod-key",
                     "user_api_key_org_alias": "acme", "user_api_key_user_email": "alice@example.com"},
    }  # fmt: skip
    event = LiteLLMAdapter(labels=["team", "end_user"], end_user_salt="pepper").convert(payload)
    assert event.labels == {"team": "support", "end_user": hash_id("alice@example.com", "pepper")}
    assert "alice" not in json.dumps(event.model_dump())  # neither the raw id nor the email anywhere
    assert LiteLLMAdapter(labels=["org"]).convert(payload).labels == {"org": "acme"}
    with pytest.raises(ValueError, match="litellm_labels: unknown label"):
        LiteLLMAdapter(labels=["user_email"])


@pytest.mark.parametrize(
    "response, expected",
    [
        ({"choices": [{"message": {"content": [{"type": "text", "text": "parts"}]}}]}, "parts"),
        ({"choices": [{"text": "legacy completion"}]}, "legacy completion"),
        ({"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "responses api"}]},
                     {"type": "reasoning", "summary": []}]}, "responses api"),
        ({"content": [{"type": "text", "text": "anthropic"}]}, "anthropic"),
        ("plain", "plain"),
        ({}, None),
        ({"choices": [{"message": {"content": None, "tool_calls": [{"id": "t"}]}}]}, None),
    ],
)  # fmt: skip
def test_response_shapes(response, expected):
    payload = {"id": "r", "messages": [{"role": "user", "content": "q"}], "response": response}
    assert LiteLLMAdapter().convert(payload).response == expected


def test_redacted_ignored_and_invalid_payloads_are_set_aside_with_reasons():
    adapter = LiteLLMAdapter()
    redacted = {"id": "a", "messages": [{"role": "user", "content": "redacted-by-litellm"}], "response": {"text": "redacted-by-litellm"}}
    embedding = {"id": "b", "call_type": "aembedding", "messages": ["some text"], "response": {}}
    no_user = {"id": "c", "call_type": "acompletion", "messages": [{"role": "system", "content": "only system"}], "response": {}}
    not_slp = {"prompt": "an /v1/events event sent to the wrong route"}
    out = adapter.adapt(enumerate([redacted, embedding, no_user, not_slp]))
    assert (out.redacted, out.ignored, out.events) == (1, 1, [])
    assert [r.index for r in out.rejected] == [2, 3]
    assert out.rejected[0].error.startswith("messages:") and "StandardLoggingPayload" in out.rejected[1].error
    assert adapter.convert(redacted) is Skip.REDACTED


def test_body_in_every_log_format():
    one = {"id": "1", "messages": [{"role": "user", "content": "a"}]}
    two = {"id": "2", "messages": [{"role": "user", "content": "b"}]}
    assert split_body(json.dumps(one).encode(), "application/json", 10) == ([(0, one)], True)
    assert split_body(json.dumps([one, two]).encode(), "application/json", 10) == ([(0, one), (1, two)], False)
    ndjson = f"{json.dumps(one)}\n{json.dumps(two)}\n".encode()
    assert split_body(ndjson, "application/json", 10)[0] == [(0, one), (1, two)]  # LiteLLM's ndjson Content-Type
    assert split_body(ndjson, "application/x-ndjson", 10)[0] == [(0, one), (1, two)]
    items, _ = split_body(ndjson + b"{broken\n", "application/x-ndjson", 10)
    assert "line 3: not valid JSON" in str(items[2][1])
    for body, status, needle in [
        (b'{"prompt": "x"}', 400, "StandardLoggingPayload"),
        (b"[]", 400, "StandardLoggingPayload"),
        (b"{nope", 400, "not valid JSON"),
        (json.dumps([one] * 11).encode(), 413, "limit of 10"),
    ]:
        with pytest.raises(BodyError) as err:
            split_body(body, "application/json", 10)
        assert err.value.status == status and needle in err.value.message


def test_the_proxy_config_name_resolves_to_the_logger_instance():
    from litellm.proxy.types_utils.utils import get_instance_fn

    from monitor.integrations import litellm_logger

    instance = get_instance_fn("monitor.integrations.litellm_logger.monitor_logger")  # as config.yaml `callbacks:` loads it
    assert instance is litellm_logger.monitor_logger and isinstance(instance, CustomLogger)


def test_slim_keeps_only_fields_that_are_read():
    payload = {"id": "1", "messages": [], "error_information": {"traceback": "secret stack"}, "api_base": "https://internal",
               "metadata": {"user_api_key_team_alias": "t", "user_api_key_hash": "sk-hash", "requester_ip_address": "10.0.0.1"}}  # fmt: skip
    assert slim(payload) == {"id": "1", "messages": [], "metadata": {"user_api_key_team_alias": "t"}}


# ---------------------------------------------------------------- the running monitor


@pytest.mark.parametrize("log_format", ["json_array", "ndjson", "single"])
async def test_generic_api_callback_reaches_the_monitor(server, callbacks, log_format):
    marker = f"GEN-{log_format}"
    sender = GenericAPILogger(endpoint=f"{server.url}/v1/ingest/litellm", headers={}, log_format=log_format)
    litellm.callbacks = [sender]
    await complete(marker)
    await complete(marker, mock_response=f"{marker} second answer")
    await until(lambda: len(sender.log_queue) == 2)
    await sender.flush_queue()
    await asyncio.to_thread(server.wait_processed)
    events = events_with(server, marker)
    assert sorted(e.response for e in events) == [f"{marker} second answer", f"{marker} with light and water."]
    assert all(e.model == "gpt-4o" for e in events)


async def test_monitor_logger_reaches_the_monitor_once_per_call(server, callbacks):
    logger = MonitorLogger(server.url, flush_interval=0.05)
    litellm.callbacks = [logger]
    for i in range(3):
        await complete(f"LOG{i}")
    with pytest.raises(Exception):
        await litellm.acompletion(model="gpt-4o", messages=[{"role": "user", "content": "LOG-fail"}], mock_response=Exception("down"))
    await until(lambda: logger.stats()["sent"] + logger.stats()["pending"] >= 4)
    payload = {"standard_logging_object": {"id": "dup-1", "call_type": "acompletion", "messages": [{"role": "user", "content": "LOG-dup"}]}}
    logger.enqueue(payload)  # LiteLLM firing the success callback twice for one call
    logger.enqueue(payload)
    assert await asyncio.to_thread(logger.flush, 30)
    await asyncio.to_thread(server.wait_processed)
    assert len(events_with(server, "LOG")) == 5
    assert [e.response for e in events_with(server, "LOG-fail")] == [None]
    stats = logger.close()
    assert stats["sent"] == 5 and stats["duplicates"] >= 1 and stats["failed"] == stats["dropped"] == 0


async def test_litellm_otel_callback_reaches_the_monitor_as_traces(server, callbacks):
    from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig

    otel = OpenTelemetry(config=OpenTelemetryConfig(exporter="otlp_http", endpoint=f"{server.url}/v1/traces", skip_set_global=True))
    litellm.callbacks = [otel]
    await complete("OTELCB")
    await until(lambda: bool(events_with(server, "OTELCB")))  # spans leave in LiteLLM's batch (every few seconds)
    otel._tracer_provider.shutdown()  # LiteLLM offers no public shutdown; flush now, while the monitor still runs
    [event] = events_with(server, "OTELCB")
    assert (event.response, event.model) == ("OTELCB with light and water.", "gpt-4o")
    assert re.fullmatch(r"[0-9a-f]{32}-[0-9a-f]{16}", event.event_id)  # <trace id>-<span id>: it came as a span


async def test_redacted_calls_are_counted_not_judged(server, callbacks):
    logger = MonitorLogger(server.url, flush_interval=0.05, turn_off_message_logging=True)
    litellm.callbacks = [logger]
    before = metric(server, "llmsafety_events_redacted_total", source="litellm")
    judged_before = server.client.get("/v1/status").json()["judged"]
    await complete("SECRET")
    await until(lambda: logger.stats()["sent"] == 1)
    logger.close()
    status = await asyncio.to_thread(server.wait_processed)
    assert metric(server, "llmsafety_events_redacted_total", source="litellm") == before + 1
    assert status["judged"] == judged_before and not events_with(server, "SECRET")
    assert 'llmsafety_events_redacted_total{source="litellm"}' in server.client.get("/metrics").text


async def test_a_monitor_that_never_answers_does_not_block_the_gateway(callbacks):
    with socket.socket() as blackhole:  # accepts connections, never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        logger = MonitorLogger(f"http://127.0.0.1:{blackhole.getsockname()[1]}", max_buffer=3, batch_size=1, timeout=30)
        litellm.callbacks = [logger]
        for i in range(8):
            await complete(f"BLOCKED{i}")
        await until(lambda: logger.stats()["dropped"] + logger.stats()["pending"] == 8)
        stats = logger.close(timeout=0)
    assert stats["dropped"] >= 4 and stats["sent"] == 0  # the calls all completed while the sender was stuck


def test_the_logger_buffer_is_bounded_in_bytes():
    logger = MonitorLogger("http://127.0.0.1:9", max_buffer_bytes=2000, flush_interval=60)
    big = [{"role": "user", "content": "x" * 1500}]
    sent = [logger.enqueue({"standard_logging_object": {"id": f"big{i}", "messages": big}}) for i in range(2)]
    small = logger.enqueue({"standard_logging_object": {"id": "small", "messages": [{"role": "user", "content": "hi"}]}})
    assert (sent, small) == ([True, False], True)
    assert logger.close(timeout=0)["dropped"] == 1


def test_http_route_answers_with_counts_and_errors(server):
    good = {"id": "h1", "call_type": "acompletion", "messages": [{"role": "user", "content": "HTTP1 hi"}], "response": "hello"}
    redacted = {"id": "h2", "messages": [{"role": "user", "content": "redacted-by-litellm"}], "response": {}}
    embedding = {"id": "h3", "call_type": "embedding", "messages": ["x"]}
    resp = server.client.post("/v1/ingest/litellm", json=[good, redacted, embedding, {"id": "h4", "messages": []}])
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert (body["accepted"], body["redacted"], body["ignored"]) == (1, 1, 1)
    assert body["rejected"] == [{"index": 3, "error": "messages: no message with role 'user' (and not a plain string)"}]
    assert server.client.post("/v1/ingest/litellm", json=good).json()["duplicates"] == 1

    def post(content: bytes, content_type: str = "application/json", **headers: str):
        return server.client.post("/v1/ingest/litellm", content=content, headers={"Content-Type": content_type, **headers})

    assert post(b'{"prompt": "wrong route"}').status_code == 400
    single_invalid = post(json.dumps({"id": "h5", "messages": [{"role": "system", "content": "s"}]}).encode())
    assert single_invalid.status_code == 422 and single_invalid.json()["error"].startswith("messages:")
    assert post(b"{}", "text/plain").status_code == 415
    assert post(b"{}", "application/json", **{"Content-Encoding": "br"}).status_code == 415
    assert post(json.dumps([good] * 21).encode()).status_code == 413


def test_a_numbered_call_is_deduplicated_like_a_named_one(server):
    # An integer id got a fresh random id each time, so a sender's retry was ingested twice.
    payload = {"id": 424242, "call_type": "completion", "model": "gpt-4o", "messages": [{"role": "user", "content": "numbered call"}],
               "response": {"choices": [{"message": {"content": "ok"}}]}}
    first = server.client.post("/v1/ingest/litellm", json=payload).json()
    again = server.client.post("/v1/ingest/litellm", json=payload).json()
    assert (first["accepted"], first["duplicates"], again["accepted"], again["duplicates"]) == (1, 0, 1, 1)

