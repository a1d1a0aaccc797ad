"""LiteLLM's ``StandardLoggingPayload`` → :class:`EventIn`.

The same mapping serves both LiteLLM paths: the ``generic_api`` logging callback posting to
``/v1/ingest/litellm``, and :class:`~monitor.integrations.litellm_logger.MonitorLogger` (which sends
the payload, slimmed to the fields read here, to the same route).

Fields read (everything else is ignored):

- ``id`` (else ``litellm_call_id``) → ``event_id``: a callback fired twice for one call is deduplicated.
- ``messages`` → prompt (the last user message); ``response`` → response (``choices[].message.content``,
  ``choices[].text``, Responses-API ``output[]`` message texts, or a plain string). A call with no
  response text (a failure, an empty stream) is ingested with the prompt only.
- ``model_group`` (else ``model``) → ``model``; ``metadata.user_api_key_request_route`` → ``route``.
- ``startTime`` → ``timestamp`` (event time is when the call started).
- allow-listed labels (see :data:`LABEL_FIELDS`); ``end_user`` only as a salted hash.
- ``status``, ``error_str``, token counts, ``endTime - startTime`` and a few ids → ``metadata``.

When message logging is off LiteLLM replaces texts with ``redacted-by-litellm``: such a call is
:attr:`Skip.REDACTED` (counted, never judged). Calls that generate no text (embeddings, images,
files) are :attr:`Skip.IGNORED`, and so are the monitor's own canary probes (``end_user`` is the
keyed name :func:`~monitor.probe.client.probe_end_user` gives, when the settings name a key to skip):
the prober judges those itself.

>>> adapter = LiteLLMAdapter(labels=["team", "end_user"], end_user_salt="s")
>>> event = adapter.convert({
...     "id": "chatcmpl-1", "call_type": "acompletion", "model": "gpt-4o", "model_group": "chat-default",
...     "startTime": 1767225600.0, "endTime": 1767225601.5, "status": "success", "end_user": "alice",
...     "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
...     "response": {"choices": [{"message": {"role": "assistant", "content": "Hello."}}]},
...     "metadata": {"user_api_key_team_alias": "support"}, "prompt_tokens": 9, "completion_tokens": 2})
>>> event.event_id, event.prompt, event.response, event.model, event.labels["team"]
('chatcmpl-1', 'Hi!', 'Hello.', 'chat-default', 'support')
>>> event.labels["end_user"] != "alice", event.metadata["latency_s"]
(True, 1.5)
>>> adapter.convert({"id": "2", "messages": [{"role": "user", "content": "redacted-by-litellm"}], "response": {}})
<Skip.REDACTED: 'redacted'>
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

from monitor.ingest import safejson
from monitor.ingest.parsing import NDJSON_TYPES, BodyError, json_error, ndjson_values, read_text
from monitor.ingest.safejson import JsonLimits
from monitor.ingest.schema import EventIn
from monitor.integrations.adapted import Adapted, ItemError, Skip, adapt
from monitor.integrations.messages import completion_text, last_user_text
from monitor.integrations.privacy import hash_id
from monitor.integrations.probe_calls import ProbeCalls

REDACTED_MARKER = "redacted-by-litellm"
MAX_ERROR_CHARS = 500

#: Label name → where it comes from (``metadata.<key>`` tried in order). ``end_user`` is hashed.
LABEL_FIELDS: dict[str, tuple[str, ...]] = {
    "team": ("user_api_key_team_alias", "team_alias"),
    "key_alias": ("user_api_key_alias",),
    "org": ("user_api_key_org_alias",),
    "project": ("user_api_key_project_alias",),
    "end_user": ("user_api_key_end_user_id",),  # after the top-level ``end_user``
}
DEFAULT_LABELS = ("team", "key_alias", "end_user")

#: LiteLLM call types that carry a prompt and generate text; other call types are ignored.
TEXT_CALL_TYPES = frozenset(
    {
        "completion", "acompletion", "text_completion", "atext_completion",
        "responses", "aresponses", "anthropic_messages", "aanthropic_messages",
        "generate_content", "agenerate_content", "generate_content_stream", "agenerate_content_stream",
        "pass_through_endpoint",
    }
)  # fmt: skip

#: Top-level keys read by :meth:`LiteLLMAdapter.convert`; :func:`slim` keeps only these.
READ_FIELDS = (
    "id", "litellm_call_id", "trace_id", "call_type", "status", "error_str", "stream", "cache_hit",
    "model", "model_group", "custom_llm_provider", "startTime", "endTime",
    "prompt_tokens", "completion_tokens", "total_tokens", "end_user", "messages", "response", "metadata",
)  # fmt: skip
METADATA_FIELDS = tuple(dict.fromkeys(k for keys in LABEL_FIELDS.values() for k in keys)) + ("user_api_key_request_route",)


def looks_like_payload(item: Any) -> bool:
    """A StandardLoggingPayload has ``messages`` and an id or call type; anything else is another shape."""
    return isinstance(item, dict) and "messages" in item and any(k in item for k in ("id", "litellm_call_id", "call_type"))


EXPECTED = (
    "LiteLLM StandardLoggingPayload objects (keys id, call_type, messages, response) as the generic_api "
    "callback sends them: one object, a JSON array, or NDJSON"
)


def split_body(
    body: bytes, content_type: str | None, max_items: int, limits: JsonLimits = JsonLimits()
) -> tuple[list[tuple[int, Any]], bool]:
    """``(index, item)`` pairs of a ``generic_api`` body in any ``log_format``, and whether it was one object.

    LiteLLM posts NDJSON with ``Content-Type: application/json``, so a JSON body that has more
    after its first value is read as NDJSON. An unparsable NDJSON line becomes an :class:`ItemError`
    item (rejected alone); a body with no StandardLoggingPayload in it at all is a 400. Nesting depth
    and number lengths are checked on the raw text first (``limits``).
    """
    kind, text = read_text(body, content_type, accepted="application/json or application/x-ndjson", expected=EXPECTED)
    single = False
    if kind in NDJSON_TYPES:
        items = _ndjson(text, limits)
    else:
        try:
            data = safejson.loads(text, limits)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":
                raise BodyError(400, json_error(exc)) from None
            items = _ndjson(text, limits)
        except ValueError as exc:  # JsonLimitError, or an integer past Python's int-parsing limit
            raise BodyError(400, json_error(exc)) from None
        else:
            single = isinstance(data, dict)
            items = [data] if single else data if isinstance(data, list) else [data]
    if len(items) > max_items:
        raise BodyError(413, f"body: {len(items)} items in one request exceeds the limit of {max_items}; lower the callback's batch size")
    if not any(looks_like_payload(item) or isinstance(item, ItemError) for item in items):
        raise BodyError(400, f"body: expected {EXPECTED}")
    return list(enumerate(items)), single


def _ndjson(text: str, limits: JsonLimits) -> list[Any]:
    return [ItemError(error) if error is not None else value for value, error in ndjson_values(text, limits)]


def slim(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields the monitor reads: smaller bodies, and no tracebacks or keys leave the gateway."""
    out = {k: payload[k] for k in READ_FIELDS if k in payload}
    metadata = payload.get("metadata")
    if isinstance(metadata, Mapping):
        out["metadata"] = {k: metadata[k] for k in METADATA_FIELDS if metadata.get(k) is not None}
    return out


class LiteLLMAdapter:
    """Maps StandardLoggingPayload dicts to events; ``labels`` picks which of :data:`LABEL_FIELDS` are kept."""

    def __init__(self, labels: Sequence[str] = DEFAULT_LABELS, end_user_salt: str = "", probe_end_user: str | None = None) -> None:
        """``probe_end_user``: the end user the monitor's own canary probes name (None: skip no one)."""
        unknown = sorted(set(labels) - set(LABEL_FIELDS))
        if unknown:
            raise ValueError(f"litellm_labels: unknown label(s) {', '.join(unknown)}; choose from {', '.join(LABEL_FIELDS)}")
        self.labels = tuple(labels)
        self.end_user_salt = end_user_salt
        self.probes = ProbeCalls(probe_end_user)

    def adapt(self, items: Iterable[tuple[int, Any]], single: bool = False) -> Adapted:
        return adapt(items, self.convert, single=single)

    def convert(self, payload: Any) -> EventIn | Skip:
        if not looks_like_payload(payload):
            kind = type(payload).__name__ if not isinstance(payload, dict) else "object without 'messages' and 'id'"
            raise ItemError(f"item: expected a LiteLLM StandardLoggingPayload (keys id, call_type, messages, response), got {kind}")
        call_type = payload.get("call_type")
        if call_type is not None and not isinstance(call_type, str):
            raise ItemError(f"call_type: must be a string, got {type(call_type).__name__}")
        if call_type is not None and call_type not in TEXT_CALL_TYPES:
            return Skip.IGNORED
        if self.probes.named(payload.get("end_user")):  # the monitor's own canary probe: judged by the prober, not as traffic
            return Skip.IGNORED
        prompt = last_user_text(payload.get("messages"))
        response = completion_text(payload.get("response"))
        if REDACTED_MARKER in (_stripped(prompt), _stripped(response)):
            return Skip.REDACTED
        if prompt is None:
            raise ItemError("messages: no message with role 'user' (and not a plain string)")
        metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
        return EventIn.model_validate(
            {
                "event_id": _call_id(payload.get("id")) or _call_id(payload.get("litellm_call_id")),
                "timestamp": payload.get("startTime"),
                "prompt": prompt,
                "response": response,
                "model": _text(payload.get("model_group")) or _text(payload.get("model")),
                "route": _text(metadata.get("user_api_key_request_route")),
                "labels": self._labels(payload, metadata),
                "metadata": _call_metadata(payload),
            }
        )

    def _labels(self, payload: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, str]:
        out = {}
        for name in self.labels:
            candidates = [payload.get("end_user")] if name == "end_user" else []
            value = next((v for v in (*candidates, *(metadata.get(k) for k in LABEL_FIELDS[name])) if _text(v)), None)
            if value is not None:
                out[name] = hash_id(str(value), self.end_user_salt) if name == "end_user" else str(value)
        return out


def _latency(start: Any, end: Any) -> float | None:
    """``end - start`` in seconds, or None where either is not a number or the difference is not finite
    (a 400-digit integer minus a float overflows: the item's fault, and the rest of the event is usable).

    >>> _latency(10, 11.25), _latency(1.5, int("9" * 400)), _latency("1", 2)
    (1.25, None, None)
    """
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)):
        return None
    try:
        latency = float(end) - float(start)
    except OverflowError:
        return None
    return round(latency, 6) if math.isfinite(latency) else None


def _call_metadata(payload: Mapping[str, Any]) -> dict[str, Any]:
    latency = _latency(payload.get("startTime"), payload.get("endTime"))
    error = payload.get("error_str")
    out = {
        "source": "litellm",
        "call_id": payload.get("litellm_call_id"),
        "trace_id": payload.get("trace_id"),
        "call_type": payload.get("call_type"),
        "status": payload.get("status"),
        "error": error[:MAX_ERROR_CHARS] if isinstance(error, str) and error else None,
        "deployment_model": payload.get("model"),
        "provider": payload.get("custom_llm_provider"),
        "stream": payload.get("stream"),
        "cache_hit": payload.get("cache_hit"),
        "latency_s": latency,
        "tokens": {k: payload[f"{k}_tokens"] for k in ("prompt", "completion", "total") if isinstance(payload.get(f"{k}_tokens"), int)},
    }
    return {k: v for k, v in out.items() if v not in (None, {})}


def _call_id(value: Any) -> str | None:
    """A call's id as the event id: a string, or an integer a non-LiteLLM sender numbered its calls with (its
    decimal form). Anything else gets no id, and the event a fresh one: a resend is then not recognised.

    >>> _call_id("chatcmpl-1"), _call_id(7), _call_id(True), _call_id(1.5), _call_id("")
    ('chatcmpl-1', '7', None, None, None)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _stripped(text: str | None) -> str | None:
    return text.strip() if text is not None else None
