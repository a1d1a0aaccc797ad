"""Turn a request body into per-event validation results.

Accepted shapes: one event object, a JSON array of events, ``{"events": [...]}``, or NDJSON
(``Content-Type: application/x-ndjson``). Body-level problems raise :class:`BodyError` with the
HTTP status to answer; per-event problems become :class:`Rejection` entries so one bad event
never sinks the batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from monitor.ingest import safejson
from monitor.ingest.safejson import JsonLimitError, JsonLimits, lone_surrogate
from monitor.ingest.schema import EventIn

Item = TypeVar("Item", bound=BaseModel)

JSON_TYPES = {"application/json", "text/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}


class BodyError(Exception):
    """The whole body is unusable; ``status`` is the HTTP status to answer (400/413/415/422; 408 when it arrived
    too slowly, 503 when the service holds too many bodies at once), with ``headers`` to send along (a 503's
    ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: str
    status: int = field(default=422, repr=False, compare=False)  # what a single-item body answers: 413 for an oversize event

    def as_json(self) -> dict[str, Any]:
        """As an answer lists it: the item's place in the body and what is wrong with it."""
        return {"index": self.index, "error": self.error}


@dataclass(frozen=True, slots=True)
class ParsedBody(Generic[Item]):
    events: list[tuple[int, Item]]
    rejected: list[Rejection]
    single: bool  # the body was one object (not a list): an invalid one is a 422, not a 202


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def unsupported_media(kind: str, send: str) -> BodyError:
    """The 415 for a body of media type ``kind`` (as :func:`media_type` gives it), saying what to ``send``."""
    return BodyError(415, f"Content-Type {kind or '(missing)'!r} not supported: send {send}")


def read_text(body: bytes, content_type: str | None, accepted: str, expected: str) -> tuple[str, str]:
    """``(media type, text)`` of a JSON or NDJSON body: 415 for another type, 400 for bytes that are
    not UTF-8 or for an empty body (``accepted``/``expected`` say what to send instead)."""
    kind = media_type(content_type)
    if kind not in JSON_TYPES | NDJSON_TYPES:
        raise unsupported_media(kind, accepted)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BodyError(400, f"body is empty: send {expected}")
    return kind, text


def json_error(exc: ValueError, where: str = "body") -> str:
    """What is wrong with JSON text that :func:`safejson.loads` refused, naming ``where`` it is."""
    if isinstance(exc, JsonLimitError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        if where == "body":
            return f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        return f"{where}: not valid JSON: {exc.msg}"
    return f"{where}: not usable JSON: {exc}" if where != "body" else f"body is not usable JSON: {exc}"


def ndjson_values(text: str, limits: JsonLimits) -> list[tuple[Any, str | None]]:
    r"""Each non-blank line's value, or why it is unusable: one bad line rejects only itself.

    Lines end at "\n" only (the "\r" of a "\r\n" is JSON whitespace), not wherever ``str.splitlines``
    would split: a JSON string may hold U+2028, U+2029 and U+0085 unescaped, and a line with a stray
    \x0b, \x0c or \x1c-\x1e is one bad record, not two. Splitting there would reject a good record as
    two bad ones and put every later index off from the sender's lines.
    """
    out: list[tuple[Any, str | None]] = []
    for number, line in enumerate((line for line in text.split("\n") if line.strip()), start=1):
        try:
            out.append((safejson.loads(line, limits, where=f"line {number}"), None))
        except ValueError as exc:
            out.append((None, json_error(exc, f"line {number}")))
    return out


def parse_body(
    body: bytes,
    content_type: str | None,
    max_events: int,
    model: type[Item] = EventIn,  # type: ignore[assignment]
    envelope: str = "events",
    limits: JsonLimits = JsonLimits(),
    item: str = "event",
) -> ParsedBody[Item]:
    """Parse and validate ``body`` into ``model`` items; ``envelope`` is the list key of the wrapped form
    and ``item`` what one item is called, for the 400/415 that say what to send.
    Nesting depth and number length are checked on the raw text first (``limits``): never a RecursionError."""
    kind, text = read_text(
        body, content_type,
        accepted=f"application/json (one {item}, an array, or {{\"{envelope}\": [...]}}) or application/x-ndjson",
        expected=f"one {item}, an array of {item}s, or NDJSON",
    )
    if kind in NDJSON_TYPES:
        lines = ndjson_values(text, limits)
        _check_count(len(lines), max_events)
        return _validate_items([(i, value, error) for i, (value, error) in enumerate(lines)], single=False, model=model)
    try:
        data = safejson.loads(text, limits)
    except ValueError as exc:  # JsonLimitError, JSONDecodeError, or an integer past Python's int-parsing limit
        raise BodyError(400, json_error(exc)) from None
    if isinstance(data, dict) and envelope in data:
        if set(data) != {envelope}:
            raise BodyError(422, f"envelope: only the key '{envelope}' is allowed next to the list")
        if not isinstance(data[envelope], list):
            raise BodyError(422, f"{envelope}: must be a JSON array of objects")
        items: list[Any] = data[envelope]
        single = False
    elif isinstance(data, list):
        items, single = data, False
    elif isinstance(data, dict):
        items, single = [data], True
    else:
        raise BodyError(422, f"body: must be an object, an array of objects, or {{\"{envelope}\": [...]}}")
    _check_count(len(items), max_events)
    return _validate_items([(i, item, None) for i, item in enumerate(items)], single=single, model=model)


def _check_count(n: int, max_events: int) -> None:
    if n == 0:
        raise BodyError(422, "body: the batch is empty")
    if n > max_events:
        raise BodyError(413, f"body: {n} items in one request exceeds the limit of {max_events}; split the batch")


def _validate_items(items: list[tuple[int, Any, str | None]], single: bool, model: type[Item]) -> ParsedBody[Item]:
    events: list[tuple[int, Item]] = []
    rejected: list[Rejection] = []
    for index, item, error in items:
        if error is not None:
            rejected.append(Rejection(index, error))
            continue
        if not isinstance(item, dict):
            rejected.append(Rejection(index, f"item: must be a JSON object, got {type(item).__name__}"))
            continue
        surrogate = lone_surrogate(item)
        if surrogate is not None:  # the tokenizer (and any UTF-8 encoder) would raise on it later
            rejected.append(Rejection(index, surrogate))
            continue
        try:
            events.append((index, model.model_validate(item)))
        except ValidationError as exc:
            rejected.append(Rejection(index, describe_validation_error(exc)))
    return ParsedBody(events=events, rejected=rejected, single=single)


def describe_validation_error(exc: ValidationError) -> str:
    """``field.path: message`` for each error, joined; the field names are what a sender needs."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def reject_future(parsed: ParsedBody[Item], not_after: float) -> ParsedBody[Item]:
    """Move items (events, feedback labels) stamped later than ``not_after`` to the rejections.

    One event from a badly set clock (or year 2999) would otherwise become the event-time clock
    for good: windows, rates and reports all run on the newest event time; a label's time is the
    time of its trial in the concept-shift detectors, and so of their alerts.

    >>> body = parse_body(b'[{"prompt": "a", "timestamp": 100}, {"prompt": "b", "timestamp": 900}]', "application/json", 10)
    >>> late = reject_future(body, not_after=500.0)
    >>> [e.prompt for _, e in late.events], late.rejected[0].error
    (['a'], 'timestamp: 400 s later than the arrival time allows (max_future_skew_seconds)')
    """
    kept: list[tuple[int, Item]] = []
    rejected = list(parsed.rejected)
    for index, item in parsed.events:
        stamp = getattr(item, "timestamp", None)
        if stamp is not None and stamp > not_after:
            rejected.append(Rejection(index, f"timestamp: {stamp - not_after:.0f} s later than the arrival time allows (max_future_skew_seconds)"))
        else:
            kept.append((index, item))
    return ParsedBody(kept, sorted(rejected, key=lambda r: r.index), parsed.single)
