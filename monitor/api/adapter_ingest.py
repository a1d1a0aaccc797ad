"""Steps shared by the ingest routes (``POST /v1/events``, LiteLLM, OTLP): a bounded body read, the 503
answer when nothing was taken, and the hand-off of adapted events to the same ``service.ingest`` path.

Bodies may be gzip (one member or several, concatenated), zlib or deflate compressed (the OpenTelemetry
Collector compresses by default); the limit ``max_body_bytes`` applies to the compressed and the
decompressed size, so a small compressed body cannot expand without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
import zlib
from typing import Any, Callable, Sequence, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from monitor.api.body_budget import charge
from monitor.api.deps import error_response
from monitor.ingest.parsing import BodyError, Rejection
from monitor.integrations.adapted import Adapted
from monitor.ingest.request import IngestOutcome
from monitor.backend import MonitorBackend
from monitor.config import Settings
from monitor.probe.client import probe_end_user

log = logging.getLogger(__name__)

_ENCODINGS = {"", "identity", "gzip", "x-gzip", "zlib", "deflate"}
#: Bodies larger than this are inflated and parsed in a worker thread: a multi-megabyte json.loads (or
#: a body of many thousand tiny gzip members) on the event loop would hold up /healthz and every other
#: request for its duration.
OFF_LOOP_BYTES = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
#: Compressed input handed to zlib per call (see :func:`_inflate`).
_FEED_BYTES = 64 * 1024

T = TypeVar("T")
_LARGE_BODY_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def parse_off_loop(body: bytes, parse: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``parse(*args, **kwargs)``: inline for a small ``body``, in a worker thread for a large one, one large
    body at a time. Parsed JSON takes many times its text in memory (an 8 MiB body of empty objects is
    millions of dicts) and parsing holds the GIL, so concurrent parses multiply the memory and gain no speed."""
    if len(body) <= OFF_LOOP_BYTES:
        return parse(*args, **kwargs)
    async with _large_body_turn():
        return await asyncio.to_thread(parse, *args, **kwargs)


def _large_body_turn() -> asyncio.Semaphore:
    """The running loop's one turn for large bodies (a semaphore belongs to one loop; tests run several)."""
    loop = asyncio.get_running_loop()
    turn = _LARGE_BODY_TURNS.get(loop)
    if turn is None:
        turn = _LARGE_BODY_TURNS[loop] = asyncio.Semaphore(1)
    return turn


def all_rejected(outcome: IngestOutcome, single: bool, batch_error: str) -> JSONResponse | None:
    """The answer when the service took nothing because it rejected every item past parsing (an event over
    ``max_event_bytes``: 413; a stamp from the future: 422): a single item with its own status and field, a
    batch a 422 with ``batch_error`` and every item's error, as a batch that fails validation is answered.
    None when anything was taken: a batch then answers 202 with per-item errors."""
    if outcome.accepted or not outcome.rejected:
        return None
    return refuse_all(outcome.rejected, single, batch_error)


def refuse_all(rejected: Sequence[Rejection], single: bool, batch_error: str) -> JSONResponse:
    """The answer when every item was refused: a single item with its own status (422, or 413 for an event over
    ``max_event_bytes``) and error, a batch a 422 with ``batch_error`` and every item's error."""
    listed = [r.as_json() for r in rejected]
    if single:
        return error_response(rejected[0].status, rejected[0].error, rejected=listed[:1])
    return error_response(422, batch_error, rejected=listed)


async def read_body(request: Request, max_bytes: int, limit: str | None = None) -> bytes:
    """The request body, decompressed; :class:`BodyError` 413 past ``max_bytes``, 415 for other encodings,
    400 for compressed data that is broken or followed by other bytes; 503 when the bodies held at once
    would pass their budget, 408 when the body arrives too slowly (:mod:`monitor.api.body_budget`).

    ``limit`` names the limit in the 413 (default ``max_body_bytes=<max_bytes>``): a route with a
    fixed limit of its own must not send the client to a setting that does not apply to it.
    """
    limit = limit or f"max_body_bytes={max_bytes}"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyError(413, f"body: {declared} bytes exceeds {limit}")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        raise BodyError(415, f"Content-Encoding {encoding!r} not supported: send gzip, zlib, deflate or uncompressed")
    body = await _receive(request, max_bytes, limit)
    if encoding in ("", "identity"):
        return body
    inflated = await parse_off_loop(body, _decompress, body, encoding, max_bytes, limit)
    # Charged once inflated: inflation runs inline (small bodies) or one body at a time, so at most one inflated body
    # is ever held uncharged; it stays charged, with the compressed bytes, until the request ends.
    charge(request, len(inflated))
    return inflated


async def _receive(request: Request, max_bytes: int, limit: str) -> bytes:
    """The raw body, 413 past ``max_bytes``. A client that disconnects before the end (a gateway timing
    out) ends the request here, with one log line: uncaught, every such disconnect would log a traceback.
    Not a :class:`BodyError`: the routes count those as refused bodies, and nothing of this one arrived to
    be refused. The 400 answers a connection that is gone; nobody reads it."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BodyError(413, f"body: larger than {limit}")
            chunks.append(chunk)
    except ClientDisconnect:
        log.info("%s %s: the client disconnected after %d bytes of the body", request.method, request.url.path, size)
        raise HTTPException(400, "body: the client disconnected before the body ended") from None
    return b"".join(chunks)


def _decompress(body: bytes, encoding: str, max_bytes: int, limit: str) -> bytes:
    """``body`` decoded from ``encoding``; 400 naming the encoding for data that is not valid in it."""
    try:
        return _inflate(body, max_bytes, limit, wbits=47)  # 32 + 15: a gzip or zlib header, detected
    except zlib.error as exc:
        if encoding != "deflate":
            raise BodyError(400, f"body: not valid {encoding} data ({exc})") from None
    try:
        return _inflate(body, max_bytes, limit, wbits=-15)  # "deflate" without the zlib wrapper, as Go's compress/flate sends it
    except zlib.error as exc:
        raise BodyError(400, f"body: not valid deflate data ({exc})") from None


def _inflate(body: bytes, max_bytes: int, limit: str, wbits: int) -> bytes:
    """``body`` inflated, every gzip member of it: RFC 1952 lets members follow one another (``gzip -c a;
    gzip -c b`` writes such a body), and stopping after the first would drop the others' events uncounted.

    413 once the output of all members together passes ``max_bytes`` (a bomb split into members is still
    a bomb); 400 for bytes after the data that start no further gzip member: they would be dropped unread.
    The input goes to zlib in slices of ``_FEED_BYTES``: at a member's end zlib copies the input it was
    given and did not use, so feeding the whole body would copy it once per member.
    """
    out = bytearray()
    inflater = zlib.decompressobj(wbits=wbits)
    for start in range(0, len(body), _FEED_BYTES):
        chunk = data = body[start : start + _FEED_BYTES]
        while data:
            if inflater.eof:
                inflater = _next_member(body, data, offset=start + len(chunk) - len(data))
            out += inflater.decompress(data, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise BodyError(413, f"body: decompresses to more than {limit}")
            data = inflater.unused_data
    if not inflater.eof:
        raise zlib.error("the compressed stream is truncated")
    return bytes(out)


def _next_member(body: bytes, data: bytes, offset: int) -> zlib._Decompress:
    """An inflater for the gzip member that ``data``, at ``offset`` in ``body``, starts; 400 for trailing
    bytes of any other kind, or after a body that is not gzip (only gzip defines further members)."""
    if not (body.startswith(_GZIP_MAGIC) and _GZIP_MAGIC.startswith(data[:2])):
        trailing = f"{len(body) - offset} at byte {offset}"
        raise BodyError(400, f"body: trailing bytes after the end of the compressed data ({trailing}) are not another gzip member")
    return zlib.decompressobj(wbits=31)  # 16 + 15: a gzip header only


async def submit(service: MonitorBackend, adapted: Adapted, arrival: float, source: str, sender: str) -> IngestOutcome:
    """Ingest the adapted events (ids namespaced by ``sender``, the ingest token's name); count
    redacted and ignored items of integration ``source`` once the request is taken."""
    started = time.perf_counter()
    outcome = await service.ingest_async(adapted.parsed_body(), arrival, sender) if adapted.events or adapted.rejected else IngestOutcome()
    if busy(outcome) is None:
        service.metrics.events_redacted.labels(source=source).inc(adapted.redacted)
        service.metrics.items_ignored.labels(source=source).inc(adapted.ignored)
    service.metrics.ingest_seconds.observe(time.perf_counter() - started)
    return outcome


def busy(outcome: IngestOutcome) -> str | None:
    """Why nothing of the request was taken (the client should resend), or None."""
    if outcome.unavailable:
        return "state store unavailable"
    if outcome.queue_full:
        return "queue full"
    return None


def busy_response(outcome: IngestOutcome, retry_after: int) -> JSONResponse | None:
    """503 with ``Retry-After`` when nothing of the request was taken, else None."""
    reason = busy(outcome)
    if reason is None:
        return None
    detail = f" ({outcome.unavailable})" if outcome.unavailable else ""
    return error_response(
        503,
        f"{reason}: nothing from this request was accepted; retry after the Retry-After delay{detail}",
        {"Retry-After": str(retry_after)},
    )


def skipped_probe_name(settings: Settings) -> str | None:
    """The end-user name whose calls the gateway integrations ignore: this deployment's canary probes'
    (:attr:`~monitor.config.Settings.skipped_probe_end_user_key`), or none."""
    key = settings.skipped_probe_end_user_key
    return probe_end_user(key) if key is not None else None
