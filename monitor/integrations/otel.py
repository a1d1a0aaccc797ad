"""OTLP trace export requests → :class:`EventIn`, one per LLM span.

Reads OTLP/HTTP bodies in protobuf or JSON (the JSON encoding's hex ``traceId``/``spanId`` are
honoured, so the same span sent either way gets the same ``event_id`` and is deduplicated).

Which spans are LLM calls:

- OpenInference (Phoenix instrumentations, Envoy AI Gateway): ``openinference.span.kind`` = ``LLM``;
  its other kinds (CHAIN, AGENT, TOOL, ...) are ignored, so a chain wrapping an LLM call counts once.
- GenAI semantic conventions (and LiteLLM's ``otel`` callback): ``gen_ai.operation.name`` is a
  text-generating operation (``chat``, ``text_completion``, ``generate_content``, or a LiteLLM call
  type); ``embeddings``, ``execute_tool``, ``invoke_agent``... are ignored. Without an operation name,
  any ``gen_ai.*`` attribute or span event marks an LLM span.

Every other span is ignored (and counted). Texts, first found wins:

- prompt: ``gen_ai.input.messages`` · ``gen_ai.prompt.{i}.role|content`` or ``gen_ai.prompt`` · span events
  ``gen_ai.content.prompt`` (``gen_ai.prompt``) / ``gen_ai.user.message`` (``content``) ·
  ``llm.input_messages.{i}.message.role|content|contents`` · ``input.value`` (a request JSON with
  ``messages``/``input``/``prompt``, else the text itself). The prompt is the last user message.
- response: ``gen_ai.output.messages`` · ``gen_ai.completion.{i}.role|content`` or ``gen_ai.completion`` · span events
  ``gen_ai.content.completion`` (``gen_ai.completion``) / ``gen_ai.choice`` (``message``/``content``) ·
  ``llm.output_messages.{i}.message...`` · ``output.value`` (a response JSON with ``choices``, else text).

An LLM span whose end user (:data:`USER_ATTRIBUTES`, or ``user`` in OpenInference's
``llm.invocation_parameters``) is the name the monitor's own canary probes carry is ignored: the
prober judges those calls itself. An LLM span without prompt text (instrumentations record no message
content unless told to) is :attr:`Skip.REDACTED`: counted, never judged. A span without response text
(an error, a stream cut short) is ingested with the prompt only.

>>> span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
...         "name": "chat gpt-4o", "startTimeUnixNano": "1767225600000000000",
...         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
...                        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
...                        {"key": "gen_ai.input.messages", "value": {"stringValue":
...                            '[{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]'}}]}
>>> request = parse_request(
...     json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode(), "application/json")
>>> adapted = OtelAdapter().adapt(request)
>>> [(e.event_id, e.prompt, e.response, e.model, e.timestamp) for _, e in adapted.events]
[('5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174', 'Hi', None, 'gpt-4o', 1767225600.0)]
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Iterator

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ValidationError

from monitor.ingest.parsing import BodyError, describe_validation_error, media_type, unsupported_media
from monitor.ingest.schema import EventIn
from monitor.integrations.adapted import Adapted, ItemError, Skip, adapt
from monitor.integrations.litellm import REDACTED_MARKER, TEXT_CALL_TYPES
from monitor.integrations.messages import completion_text, content_text, last_user_text, reply_text
from monitor.ingest import safejson
from monitor.ingest.safejson import JsonLimitError, JsonLimits
from monitor.integrations.privacy import hash_id
from monitor.integrations.probe_calls import ProbeCalls

PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPE = "application/json"
GENERATION_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"}) | TEXT_CALL_TYPES
MAX_ERROR_CHARS = 500
_ATTRIBUTE_LIMITS = JsonLimits()
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def parse_request(body: bytes, content_type: str | None, limits: JsonLimits = JsonLimits()) -> ExportTraceServiceRequest:
    """An OTLP/HTTP trace body (protobuf or JSON) → the request message; :class:`BodyError` otherwise.
    A JSON body's nesting and number lengths are checked before parsing (``limits``)."""
    kind = media_type(content_type)
    request = ExportTraceServiceRequest()
    if kind in PROTOBUF_TYPES:
        try:
            request.ParseFromString(body)
        except DecodeError:
            raise BodyError(400, "body: not a protobuf OTLP ExportTraceServiceRequest") from None
        return request
    if kind != JSON_TYPE:
        raise unsupported_media(kind, "application/x-protobuf or application/json (OTLP/HTTP)")
    try:
        data = safejson.loads(body, limits)
    except JsonLimitError as exc:
        raise BodyError(400, str(exc)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(400, f"body is not valid JSON: {exc}") from None
    except ValueError as exc:  # e.g. a number json cannot convert
        raise BodyError(400, f"body is not usable JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceSpans", []), list):
        raise BodyError(400, 'body: expected an OTLP/JSON ExportTraceServiceRequest {"resourceSpans": [...]}')
    try:
        json_format.ParseDict(_ids_to_base64(data), request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:  # any shape protobuf refuses: a 400
        raise BodyError(400, f"body: not an OTLP/JSON ExportTraceServiceRequest: {str(exc)[:300]}") from None
    return request


def encode_response(rejected: list[str], as_json: bool) -> tuple[bytes, str]:
    """ExportTraceServiceResponse with ``partial_success`` when spans were rejected, in the request's encoding."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = len(rejected)
        response.partial_success.error_message = "; ".join(rejected[:3])[:MAX_ERROR_CHARS]
    if as_json:
        return json_format.MessageToJson(response, indent=None).encode(), JSON_TYPE
    return response.SerializeToString(), "application/x-protobuf"


def iter_spans(request: ExportTraceServiceRequest) -> Iterator[tuple[dict[str, Any], Span]]:
    """``(resource attributes, span)`` for every span, in body order."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield resource, span


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


# Where instrumentations put the end user: OpenTelemetry's and OpenInference's user.id, enduser.id, GenAI's
# gen_ai.user.id, and OpenLLMetry's (and LiteLLM's OpenTelemetry logger's) llm.user, OpenAI's `user` field.
USER_ATTRIBUTES = ("user.id", "enduser.id", "gen_ai.user.id", "llm.user")


class OtelAdapter:
    """Maps the spans of one OTLP request to events (``end_user_salt`` hashes the end user;
    ``probe_end_user``: the name this deployment's canary probes carry, whose spans are ignored)."""

    def __init__(self, end_user_salt: str = "", probe_end_user: str | None = None) -> None:
        self.end_user_salt = end_user_salt
        self.probes = ProbeCalls(probe_end_user)

    def adapt(self, request: ExportTraceServiceRequest) -> Adapted:
        return adapt(enumerate(iter_spans(request)), self.convert)

    def convert(self, item: tuple[dict[str, Any], Span]) -> EventIn | Skip:
        resource, span = item
        attrs = attributes(span.attributes)
        events = [(e.name, attributes(e.attributes)) for e in span.events]
        if not is_llm_span(attrs, events):
            return Skip.IGNORED
        if self._is_probe(attrs):  # the monitor's own canary probe: the prober judges it
            return Skip.IGNORED
        prompt, response = span_prompt(attrs, events), span_reply(attrs, events)
        if prompt is None or REDACTED_MARKER in (prompt.strip(), (response or "").strip()):
            return Skip.REDACTED
        span_ref = f"{span.trace_id.hex()}-{span.span_id.hex()}" if span.trace_id and span.span_id else None
        try:
            return EventIn.model_validate(
                {
                    "event_id": span_ref,
                    "timestamp": span.start_time_unix_nano / 1e9 if span.start_time_unix_nano else None,
                    "prompt": prompt,
                    "response": response,
                    "model": _first_text(attrs, "gen_ai.request.model", "gen_ai.response.model", "llm.model_name"),
                    "labels": self._labels(resource, attrs),
                    "metadata": _span_metadata(span, attrs),
                }
            )
        except ValidationError as exc:
            raise ItemError(f"span {span_ref or repr(span.name)}: {describe_validation_error(exc)}") from None

    def _is_probe(self, attrs: dict[str, Any]) -> bool:
        """OpenInference keeps the request's parameters, OpenAI's ``user`` among them, as one JSON attribute
        (parsed only where this deployment probes)."""
        if not self.probes.enabled:
            return False
        if any(self.probes.named(attrs.get(key)) for key in USER_ATTRIBUTES):
            return True
        parameters = _json(attrs.get("llm.invocation_parameters"))
        return isinstance(parameters, dict) and self.probes.named(parameters.get("user"))

    def _labels(self, resource: dict[str, Any], attrs: dict[str, Any]) -> dict[str, str]:
        labels = {}
        service = resource.get("service.name")
        if isinstance(service, str) and service:
            labels["service"] = service[:128]
        user = _first_text(attrs, *USER_ATTRIBUTES)
        if user is not None:
            labels["end_user"] = hash_id(user, self.end_user_salt)
        return labels


def is_llm_span(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> bool:
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        return kind.upper() == "LLM"
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str):
        return operation in GENERATION_OPERATIONS
    return any(k.startswith("gen_ai.") for k in attrs) or any(name.startswith("gen_ai.") for name, _ in events)


def span_prompt(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> str | None:
    candidates = (
        lambda: last_user_text(_json(attrs.get("gen_ai.input.messages"))),
        lambda: last_user_text(_indexed_messages(attrs, "gen_ai.prompt", "role", "content", default_role="user")),
        lambda: last_user_text(_json(attrs.get("gen_ai.prompt"))),
        lambda: _event_text(events, "gen_ai.content.prompt", "gen_ai.prompt", last_user_text),
        lambda: _event_text(events, "gen_ai.user.message", "content", last_user_text),
        lambda: last_user_text(_indexed_messages(attrs, "llm.input_messages", "message.role", "message.content")),
        lambda: _request_prompt(attrs.get("input.value")),
    )
    return _first(candidates)


def span_reply(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> str | None:
    candidates = (
        lambda: reply_text(_json(attrs.get("gen_ai.output.messages"))),
        lambda: reply_text(_indexed_messages(attrs, "gen_ai.completion", "role", "content", default_role="assistant")),
        lambda: _reply_or_text(_json(attrs.get("gen_ai.completion"))),
        lambda: _event_text(events, "gen_ai.content.completion", "gen_ai.completion", _reply_or_text),
        lambda: _event_text(events, "gen_ai.choice", "message", lambda v: content_text(v.get("content")) if isinstance(v, dict) else None),
        lambda: _event_text(events, "gen_ai.choice", "content", content_text),
        lambda: reply_text(_indexed_messages(attrs, "llm.output_messages", "message.role", "message.content")),
        lambda: _response_reply(attrs.get("output.value")),
    )
    return _first(candidates)


def _first(candidates: Any) -> str | None:
    for candidate in candidates:
        text = candidate()
        if text:
            return text
    return None


def _json(value: Any) -> Any:
    """Attribute values that hold JSON documents arrive as strings; other values pass through."""
    if isinstance(value, str) and value[:1] in ("[", "{", '"'):
        try:
            return safejson.loads(value, _ATTRIBUTE_LIMITS)  # a string attribute may nest 100,000 deep too
        except ValueError:  # not JSON, or over the limits: the text as it is
            return value
    return value


_INDEXED = re.compile(r"^(?P<prefix>.+?)\.(?P<i>\d+)\.(?P<rest>.+)$")
_CONTENTS = re.compile(r"^message\.contents\.(?P<j>\d+)\.message_content\.text$")


def _indexed_messages(attrs: dict[str, Any], prefix: str, role_key: str, content_key: str, default_role: str | None = None) -> list[dict[str, Any]]:
    """Flattened messages (``<prefix>.<i>.<role_key>`` ...) back into a list of ``{role, content}``.

    OpenInference multi-part contents (``message.contents.<j>.message_content.text``) are joined.
    """
    found: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        m = _INDEXED.match(key)
        if m is None or m["prefix"] != prefix:
            continue
        message = found.setdefault(int(m["i"]), {"role": default_role, "content": None, "parts": {}})
        rest = m["rest"]
        if rest == role_key:
            message["role"] = value
        elif rest == content_key:
            message["content"] = value
        elif (part := _CONTENTS.match(rest)) is not None:
            message["parts"][int(part["j"])] = value
    out = []
    for _, message in sorted(found.items()):
        parts = [message["parts"][j] for j in sorted(message["parts"]) if isinstance(message["parts"][j], str)]
        out.append({"role": message["role"], "content": message["content"] if message["content"] is not None else parts})
    return out


def _event_text(events: list[tuple[str, dict[str, Any]]], name: str, key: str, read: Any) -> str | None:
    texts = [text for event, attrs in events if event == name and key in attrs for text in [read(_json(attrs[key]))] if text]
    return texts[-1] if texts else None


def _reply_or_text(value: Any) -> str | None:
    return value if isinstance(value, str) else reply_text(value)


def _request_prompt(value: Any) -> str | None:
    """OpenInference ``input.value``: a request JSON (chat ``messages``, Responses ``input``, ``prompt``) or text."""
    data = _json(value)
    if isinstance(data, dict):
        for key in ("messages", "input", "prompt"):
            if key in data:
                return last_user_text(data[key])
        return None
    return data if isinstance(data, str) else None


def _response_reply(value: Any) -> str | None:
    data = _json(value)
    if isinstance(data, str):
        return data
    return completion_text(data)


def _first_text(attrs: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _span_metadata(span: Span, attrs: dict[str, Any]) -> dict[str, Any]:
    error = span.status.code == Status.STATUS_CODE_ERROR
    out = {
        "source": "otel",
        "trace_id": span.trace_id.hex() or None,
        "span_id": span.span_id.hex() or None,
        "span_name": span.name or None,
        "operation": _first_text(attrs, "gen_ai.operation.name"),
        "provider": _first_text(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
        "response_model": _first_text(attrs, "gen_ai.response.model"),
        "finish_reasons": _json(attrs.get("gen_ai.response.finish_reasons")),
        "status": "error" if error else None,
        "error": span.status.message[:MAX_ERROR_CHARS] if error and span.status.message else None,
        "latency_s": round((span.end_time_unix_nano - span.start_time_unix_nano) / 1e9, 6)
        if span.end_time_unix_nano >= span.start_time_unix_nano > 0
        else None,
        "tokens": _tokens(attrs),
    }
    return {k: v for k, v in out.items() if v not in (None, {}, [])}


def _tokens(attrs: dict[str, Any]) -> dict[str, int]:
    out = {}
    for name, keys in (("prompt", ("gen_ai.usage.input_tokens", "llm.token_count.prompt")), ("completion", ("gen_ai.usage.output_tokens", "llm.token_count.completion"))):
        value = next((attrs[k] for k in keys if isinstance(attrs.get(k), int)), None)
        if value is not None:
            out[name] = value
    return out


def _ids_to_base64(data: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64 for bytes."""
    for resource_spans in _dicts(data.get("resourceSpans")):
        for scope_spans in _dicts(resource_spans.get("scopeSpans")):
            for span in _dicts(scope_spans.get("spans")):
                for holder in [span, *_dicts(span.get("links"))]:
                    for key in _ID_FIELDS:
                        if key in holder:
                            holder[key] = _hex_to_base64(holder[key])
    return data


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _hex_to_base64(value: Any) -> Any:
    if not isinstance(value, str) or len(value) not in (16, 32):
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return value  # not hex: leave it for the protobuf parser (base64, or an error naming the field)

