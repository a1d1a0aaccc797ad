"""OTLP traces: GenAI / OpenInference span mapping, and the real OpenTelemetry SDK + OTLP HTTP exporter
sending spans to the running monitor's POST /v1/traces."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from monitor.config import Settings
from monitor.ingest.parsing import BodyError
from monitor.integrations.otel import OtelAdapter, parse_request
from monitor.integrations.privacy import hash_id
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

TRACE_ID = "5b8efff798038103d269b633813fc60c"


@pytest.fixture(scope="module")
def server(embedder):
    settings = Settings(judge="prototype", max_events_per_request=10, end_user_hash_salt="pepper")
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        srv.seen = []
        srv.service.batch_listeners.append(lambda batch: srv.seen.extend(s.event for s in batch))
        yield srv


def metric(server, name: str, **labels: str) -> float:
    return server.service.metrics.registry.get_sample_value(name, labels) or 0.0


def value(v):
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    return {"stringValue": v}


def otlp_json(*spans: dict, service: str = "gateway") -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": value(service)}]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
            }
        ]
    }


def span(span_id: str, attributes: dict, events: list[tuple[str, dict]] = (), name: str = "chat") -> dict:
    return {
        "traceId": TRACE_ID,
        "spanId": span_id,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601500000000",
        "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()],
        "events": [
            {"name": n, "timeUnixNano": "1767225600100000000", "attributes": [{"key": k, "value": value(v)} for k, v in a.items()]}
            for n, a in events
        ],
    }


def adapt(*spans: dict):
    return OtelAdapter(end_user_salt="pepper").adapt(parse_request(json.dumps(otlp_json(*spans)).encode(), "application/json"))


def only_event(*spans: dict):
    out = adapt(*spans)
    assert len(out.events) == 1, out
    return out.events[0][1]


# ---------------------------------------------------------------- mapping


def test_genai_semconv_attributes():
    event = only_event(
        span(
            "0000000000000001",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 3,
                "user.id": "alice",
                "gen_ai.input.messages": json.dumps(
                    [
                        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                        {"role": "user", "parts": [{"type": "text", "content": "How do magnets work?"}]},
                    ]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "Aligned electron spins."}], "finish_reason": "stop"}]
                ),
            },
        )
    )
    assert (event.prompt, event.response, event.model) == ("How do magnets work?", "Aligned electron spins.", "gpt-4o")
    assert event.event_id == f"{TRACE_ID}-0000000000000001" and event.timestamp == 1767225600.0
    assert event.labels == {"service": "gateway", "end_user": hash_id("alice", "pepper")}
    assert event.metadata["tokens"] == {"prompt": 12, "completion": 3} and event.metadata["latency_s"] == 1.5
    assert event.metadata["provider"] == "openai" and event.metadata["response_model"] == "gpt-4o-2024-08-06"


def test_older_genai_events_and_indexed_attributes():
    by_events = only_event(
        span(
            "0000000000000002",
            {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-3.5-turbo"},
            events=[
                ("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps([{"role": "user", "content": "old style prompt"}])}),
                ("gen_ai.content.completion", {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "old reply"}])}),
            ],
        )
    )
    assert (by_events.prompt, by_events.response) == ("old style prompt", "old reply")
    indexed = only_event(
        span(
            "0000000000000003",
            {
                "gen_ai.system": "anthropic",
                "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "sys",
                "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "indexed prompt",
                "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "indexed reply",
            },
        )
    )  # fmt: skip
    assert (indexed.prompt, indexed.response) == ("indexed prompt", "indexed reply")
    per_message = only_event(
        span("0000000000000004", {"gen_ai.request.model": "m"}, events=[("gen_ai.user.message", {"content": "event prompt"}),
                                                                        ("gen_ai.choice", {"message": json.dumps({"content": "choice reply"})})])
    )  # fmt: skip
    assert (per_message.prompt, per_message.response) == ("event prompt", "choice reply")


def test_openinference_attributes_and_values():
    messages = only_event(
        span(
            "0000000000000005",
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "llama-3-8b",
                "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "sys",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.contents.0.message_content.type": "text",
                "llm.input_messages.1.message.contents.0.message_content.text": "multi",
                "llm.input_messages.1.message.contents.1.message_content.text": "part",
                "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "oi reply",
                "llm.token_count.prompt": 7,
            },
        )
    )  # fmt: skip
    assert (messages.prompt, messages.response, messages.model) == ("multi\npart", "oi reply", "llama-3-8b")
    assert messages.metadata["tokens"] == {"prompt": 7}
    # Envoy AI Gateway style: the whole request and response JSON in input.value / output.value
    values = only_event(
        span(
            "0000000000000006",
            {
                "openinference.span.kind": "LLM",
                "input.mime_type": "application/json",
                "input.value": json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "envoy prompt"}]}),
                "output.value": json.dumps({"choices": [{"message": {"role": "assistant", "content": "envoy reply"}}]}),
            },
        )
    )
    assert (values.prompt, values.response) == ("envoy prompt", "envoy reply")
    text = only_event(span("0000000000000007", {"openinference.span.kind": "llm", "input.value": "plain", "output.value": "text"}))
    assert (text.prompt, text.response) == ("plain", "text")


@pytest.mark.parametrize("attribute", ["user.id", "enduser.id", "gen_ai.user.id", "llm.user", "llm.invocation_parameters"])
def test_the_monitors_own_probe_spans_are_ignored_by_their_keyed_end_user(attribute):
    """An OpenTelemetry-instrumented gateway traces a canary probe's call too: that copy is ignored, as the
    LiteLLM integration ignores its log line; any other end user, guessed names included, is traffic."""
    from monitor.probe.client import probe_end_user

    marker = probe_end_user("this deployment's key")

    def named(user: str) -> str:  # OpenInference records OpenAI's request parameters as one JSON document
        return json.dumps({"model": "gpt-4o", "user": user}) if attribute == "llm.invocation_parameters" else user

    probe_span = {"gen_ai.operation.name": "chat", "gen_ai.prompt": "How do I pick a lock?", "gen_ai.completion": "I can't help.",
                  attribute: named(marker)}
    request = parse_request(json.dumps(otlp_json(span("00000000000000a1", probe_span))).encode(), "application/json")
    out = OtelAdapter(probe_end_user=marker).adapt(request)
    assert (out.ignored, len(out.events)) == (1, 0)
    for other in ("alice", "llmsafety-canary-probe", probe_end_user("a guessed key"), marker + "x"):
        request = parse_request(json.dumps(otlp_json(span("00000000000000a2", {**probe_span, attribute: named(other)}))).encode(), "application/json")
        assert len(OtelAdapter(probe_end_user=marker).adapt(request).events) == 1, other
    assert len(OtelAdapter().adapt(request).events) == 1  # a monitor that does not probe skips no one
    if attribute != "llm.invocation_parameters":
        assert only_event(span("00000000000000a3", {**probe_span, attribute: "bob"})).labels["end_user"] == hash_id("bob", "pepper")


def test_non_llm_spans_are_ignored_and_content_free_llm_spans_are_redacted():
    out = adapt(
        span("0000000000000010", {"http.request.method": "GET"}, name="GET /health"),
        span("0000000000000011", {"openinference.span.kind": "CHAIN", "input.value": "wrapped"}),
        span("0000000000000012", {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5"}),
        span("0000000000000013", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}),  # content capture off
        span("0000000000000014", {"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps([{"role": "user", "content": "ok"}])}),
    )
    assert (out.ignored, out.redacted, len(out.events)) == (3, 1, 1)


def test_llm_span_without_reply_is_prompt_only_and_invalid_fields_are_rejected_by_span():
    out = adapt(
        span("0000000000000020", {"gen_ai.operation.name": "chat", "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "cut short"}),
        span("0000000000000021", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m" * 300, "gen_ai.prompt": "too long model"}),
    )
    assert [(e.prompt, e.response) for _, e in out.events] == [("cut short", None)]
    assert out.rejected[0].index == 1 and out.rejected[0].error.startswith(f"span {TRACE_ID}-0000000000000021: model")


@pytest.mark.parametrize(
    "body, content_type, status, needle",
    [
        (b"\xff\xff\xff", "application/x-protobuf", 400, "protobuf"),
        (b"[1, 2]", "application/json", 400, "resourceSpans"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', "application/json", 400, "OTLP/JSON"),
        (b"{}", "text/plain", 415, "application/x-protobuf"),
    ],
)
def test_unusable_bodies_name_what_was_expected(body, content_type, status, needle):
    with pytest.raises(BodyError) as err:
        parse_request(body, content_type)
    assert err.value.status == status and needle in err.value.message


# ---------------------------------------------------------------- the running monitor


def test_sdk_exporter_sends_spans_to_the_monitor(server):
    before_ignored = metric(server, "llmsafety_integration_items_ignored_total", source="otel")
    for compression in (Compression.NoCompression, Compression.Gzip):
        provider = TracerProvider(resource=Resource.create({"service.name": "chat-api"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", compression=compression)))
        tracer = provider.get_tracer("test")
        marker = f"SDK-{compression.value}"
        with tracer.start_as_current_span("POST /chat"):  # a plain HTTP span around the LLM call
            with tracer.start_as_current_span("chat gpt-4o") as llm:
                llm.set_attribute("gen_ai.operation.name", "chat")
                llm.set_attribute("gen_ai.request.model", "gpt-4o")
                llm.set_attribute("gen_ai.input.messages", json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"{marker} question"}]}]))
                llm.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": f"{marker} answer"}]}]))
            with tracer.start_as_current_span("llm") as oi:
                oi.set_attribute("openinference.span.kind", "LLM")
                oi.set_attribute("llm.input_messages.0.message.role", "user")
                oi.set_attribute("llm.input_messages.0.message.content", f"{marker} openinference")
                oi.set_status(Status(StatusCode.ERROR, "upstream timeout"))
        assert provider.force_flush()
        provider.shutdown()
    server.wait_processed()
    for compression in ("none", "gzip"):
        events = {e.prompt: e for e in server.seen if e.prompt.startswith(f"SDK-{compression}")}
        assert events[f"SDK-{compression} question"].response == f"SDK-{compression} answer"
        assert events[f"SDK-{compression} question"].labels["service"] == "chat-api"
        failed = events[f"SDK-{compression} openinference"]
        assert failed.response is None
    assert metric(server, "llmsafety_integration_items_ignored_total", source="otel") == before_ignored + 2  # the two HTTP spans


def test_json_and_protobuf_of_one_span_share_an_event_id(server):
    llm_span = span("00000000000000a1", {"gen_ai.operation.name": "chat", "gen_ai.prompt": "same span twice"})
    as_json = server.client.post("/v1/traces", json=otlp_json(llm_span))
    assert as_json.status_code == 200 and as_json.headers["content-type"].startswith("application/json") and as_json.json() == {}
    protobuf = parse_request(json.dumps(otlp_json(llm_span)).encode(), "application/json").SerializeToString()
    again = server.client.post("/v1/traces", content=gzip.compress(protobuf),
                               headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})  # fmt: skip
    assert again.status_code == 200 and again.headers["content-type"] == "application/x-protobuf"
    server.wait_processed()
    assert [e.event_id for e in server.seen if e.prompt == "same span twice"] == [f"{TRACE_ID}-00000000000000a1"]
    assert server.client.get("/v1/status").json()["duplicates"] >= 1


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    "span_id, encoding, pack",
    [
        ("00000000000000c1", "gzip", gzip.compress),
        ("00000000000000c2", "zlib", zlib.compress),
        ("00000000000000c3", "deflate", zlib.compress),  # as Python's exporter sends it
        ("00000000000000c4", "deflate", raw_deflate),  # as Go's compress/flate (the Collector) sends it
        ("00000000000000c5", "identity", bytes),
    ],
)
def test_every_supported_content_encoding(server, span_id, encoding, pack):
    marker = f"ENC {span_id}"
    body = parse_request(json.dumps(otlp_json(span(span_id, {"gen_ai.prompt": marker}))).encode(), "application/json")
    resp = server.client.post(
        "/v1/traces", content=pack(body.SerializeToString()), headers={"Content-Type": "application/x-protobuf", "Content-Encoding": encoding}
    )
    assert resp.status_code == 200, resp.text
    server.wait_processed()
    assert [e.prompt for e in server.seen if e.prompt == marker] == [marker]


def test_partial_success_reports_rejected_spans(server):
    bad = span("00000000000000b1", {"gen_ai.operation.name": "chat", "gen_ai.prompt": "x", "gen_ai.request.model": "m" * 300})
    good = span("00000000000000b2", {"gen_ai.operation.name": "chat", "gen_ai.prompt": "fine"})
    body = parse_request(json.dumps(otlp_json(bad, good)).encode(), "application/json").SerializeToString()
    resp = server.client.post("/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"})
    answer = ExportTraceServiceResponse.FromString(resp.content)
    assert resp.status_code == 200 and answer.partial_success.rejected_spans == 1
    assert "00000000000000b1: model" in answer.partial_success.error_message


def test_bad_requests_over_http(server):
    def post(content: bytes, content_type: str, **headers: str):
        return server.client.post("/v1/traces", content=content, headers={"Content-Type": content_type, **headers})

    assert post(b"garbage", "application/x-protobuf").status_code == 400
    assert post(b"{}", "application/x-protobuf", **{"Content-Encoding": "zstd"}).status_code == 415
    assert post(b"not gzip", "application/x-protobuf", **{"Content-Encoding": "gzip"}).status_code == 400
    assert post(gzip.compress(b"{}")[:-12], "application/json", **{"Content-Encoding": "gzip"}).status_code == 400  # truncated
    many = otlp_json(*[span(f"{i:016x}", {"gen_ai.prompt": "x"}) for i in range(11)])
    refused = metric(server, "llmsafety_request_bodies_refused_total", route="/v1/traces", status="413")
    too_many = server.client.post("/v1/traces", json=many)
    assert too_many.status_code == 413 and "11 LLM spans" in too_many.json()["error"]
    # Its spans reach no other counter: the refused body is counted, as every other refused body is.
    assert metric(server, "llmsafety_request_bodies_refused_total", route="/v1/traces", status="413") == refused + 1
    bomb = gzip.compress(b'{"resourceSpans": []}' + b" " * (9 * 1024 * 1024))
    assert post(bomb, "application/json", **{"Content-Encoding": "gzip"}).status_code == 413
