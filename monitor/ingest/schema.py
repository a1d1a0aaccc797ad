"""The wire format of one event, as gateways send it to ``POST /v1/events``.

Validation errors name the field (``events[3].prompt: ...``) so a gateway operator can fix the sender.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.ingest.safejson import lone_surrogate

MAX_ID_CHARS = 256
MAX_LABELS = 16
MAX_LABEL_CHARS = 128


def parse_timestamp(value: Any) -> float | None:
    """RFC 3339 string or epoch seconds → epoch seconds; naive datetimes are taken as UTC. RFC 3339
    lets ``Z`` and the ``T`` separator be lower case; ``fromisoformat`` takes ``t`` but not ``z``.

    >>> parse_timestamp("2026-01-01t00:00:00z"), parse_timestamp("2026-01-01T01:00:00+01:00")
    (1767225600.0, 1767225600.0)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch seconds, not a boolean")
    if isinstance(value, (int, float)):
        try:
            ts = float(value)
        except OverflowError:
            raise ValueError("epoch seconds out of range") from None
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        try:
            ts = dt.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError("timestamp out of range") from None
    else:
        raise ValueError("must be an RFC 3339 string or epoch seconds")
    if not math.isfinite(ts) or ts < 0 or ts > 32503680000:  # year 3000
        raise ValueError("epoch seconds out of range")
    return ts


class Message(BaseModel):
    """An OpenAI-style chat message. ``content`` may be a string or a list of content parts."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type", "text") == "text")
        return ""


def _prompt_required(schema: dict[str, Any]) -> None:
    """The schema says what validation enforces: ``prompt`` (a string) or ``input_messages`` (a list) must be given."""
    props = schema["properties"]
    for name, kind in (("prompt", "string"), ("input_messages", "array")):
        options = [o for o in props[name].pop("anyOf", []) if o.get("type") != "null"]
        props[name].update(options[0] if options else {"type": kind})
        props[name].pop("default", None)
    schema["anyOf"] = [{"required": ["prompt"]}, {"required": ["input_messages"]}]
    schema["examples"] = _EXAMPLES


_EXAMPLES = [
    {
        "event_id": "req-0001",
        "timestamp": "2026-11-25T12:00:00Z",
        "prompt": "How do I reset my password?",
        "response": "Open Settings, then Security...",
        "model": "gpt-4o",
        "route": "/chat",
        "labels": {"team": "support"},
    }
]


class EventIn(BaseModel):
    """One prompt/response pair. Give ``prompt`` or ``input_messages`` (the last user message is the prompt)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_prompt_required,
    )

    event_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS, description="Idempotency key; generated when absent.")
    timestamp: float | str | None = Field(None, description="Event time: RFC 3339 string or epoch seconds; arrival time when absent.")
    prompt: str | None = Field(None, description="The user's text.")
    input_messages: list[Message] | None = Field(None, description="OpenAI-style messages; the last user message is the prompt.")
    response: str | None = Field(None, description="The model's reply, when there is one.")
    output_messages: list[Message] | None = Field(None, description="OpenAI-style reply messages; assistant contents are joined.")
    model: str | None = Field(None, max_length=MAX_ID_CHARS)
    route: str | None = Field(None, max_length=MAX_ID_CHARS)
    labels: dict[str, str] = Field(default_factory=dict, description=f"Small string map (≤ {MAX_LABELS} entries).")
    metadata: Any = Field(None, description="Free JSON: validated, then dropped (not stored, never a metric label).")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """A lone UTF-16 surrogate (``"\\ud800"`` in JSON) passes JSON parsing but makes the tokenizer raise."""
        found = lone_surrogate(data) if isinstance(data, dict) else None
        if found is not None:
            raise ValueError(found)
        return data

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: Any) -> float | None:
        return parse_timestamp(value)

    @field_validator("labels")
    @classmethod
    def _small_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if len(labels) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for k, v in labels.items():
            if len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS:
                raise ValueError(f"label {k[:40]!r}: keys and values are at most {MAX_LABEL_CHARS} characters")
        return labels

    @model_validator(mode="after")
    def _has_prompt(self) -> "EventIn":
        if self.prompt is None and not self.input_messages:
            raise ValueError("prompt: give 'prompt' (string) or 'input_messages' (list of {role, content})")
        if self.prompt is None and self.prompt_text() is None:
            raise ValueError("input_messages: no message with role 'user'")
        return self

    def prompt_text(self) -> str | None:
        if self.prompt is not None:
            return self.prompt
        for message in reversed(self.input_messages or []):
            if message.role == "user":
                return message.text()
        return None

    def response_text(self) -> str | None:
        if self.response is not None:
            return self.response
        if self.output_messages:
            parts = [m.text() for m in self.output_messages if m.role == "assistant"]
            return "\n".join(parts) if parts else None
        return None
