"""Steps shared by the ingest routes (``POST /v1/events``, LiteLLM, OTLP): a bounded body read, the 503
answer when nothing was taken, and the hand-off of adapted events to the same ``service.ingest`` path.

Bodies may be gzip, zlib or deflate compressed (the OpenTelemetry Collector compresses by default); the
limit ``max_body_bytes`` applies to the compressed and the decompressed size, so a small
compressed body cannot expand without bound.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any, Callable, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse

from monitor.api.deps import error_response
from monitor.ingest.parsing import BodyError
from monitor.integrations.adapted import Adapted
from monitor.ingest.request import IngestOutcome
from monitor.backend import MonitorBackend

_ENCODINGS = {"", "identity", "gzip", "x-gzip", "zlib", "deflate"}
#: Bodies larger than this are parsed in a worker thread: a multi-megabyte json.loads on the event
#: loop would hold up /healthz and every other request for its duration.
OFF_LOOP_BYTES = 64 * 1024

T = TypeVar("T")


async def parse_off_loop(body: bytes, parse: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``parse(*args, **kwargs)``: inline for a small ``body``, in a worker thread for a large one."""
    if len(body) <= OFF_LOOP_BYTES:
        return parse(*args, **kwargs)
    return await asyncio.to_thread(parse, *args, **kwargs)


def single_rejection(outcome: IngestOutcome, single: bool) -> JSONResponse | None:
    """A single-item body the service rejected (an event over ``max_event_bytes``: 413; a stamp from the
    future: 422), answered with the field named; None otherwise (a batch answers 202 with per-item errors)."""
    if not single or outcome.accepted or not outcome.rejected:
        return None
    first = outcome.rejected[0]
    return error_response(first.status, first.error, rejected=[{"index": first.index, "error": first.error}])


async def read_body(request: Request, max_bytes: int, limit: str | None = None) -> bytes:
    """The request body, decompressed; :class:`BodyError` 413 past ``max_bytes``, 415 for other encodings.

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
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyError(413, f"body: larger than {limit}")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding in ("", "identity"):
        return body
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
    inflater = zlib.decompressobj(wbits=wbits)
    out = inflater.decompress(body, max_bytes + 1)
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BodyError(413, f"body: decompresses to more than {limit}")
    if not inflater.eof:
        raise zlib.error("the compressed stream is truncated")
    return out


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
