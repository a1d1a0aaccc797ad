"""What an HTTP connection may hold before the app sees a request: a cap on open connections, on a
request head's bytes and lines, and on the time to send the head.

Why here, below the app: everything the app bounds (tokens, bodies, queue) starts once a request's
headers are complete. Before that, uvicorn's default protocol (httptools) kept every header byte it
was sent, a chunked body's trailers too (a client that never ended its headers grew the server by
what it sent, unauthenticated), and kept a connection that sent nothing for good (its keep-alive timer
starts only after a response, and any byte stops it). ``monitor serve`` runs uvicorn's h11 protocol
under the guard instead (:class:`GuardedH11Protocol`); ``tests/test_connection_guard.py`` runs it in a
real uvicorn, so a change of uvicorn's internals fails there, not in production.

A connection refused as it is accepted gets a 503 with Retry-After (the queue-full contract), a head
too large a 431, a head too slow is closed, and what h11 cannot parse (trailers past its bound among
it) gets uvicorn's 400; each is counted in ``llmsafety_http_connections_refused_total{reason}``
(``connection_limit``, ``head_too_large``, ``head_timeout``, ``malformed``), next to
``llmsafety_http_connections`` (open now).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any, Iterator

import h11
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from uvicorn.protocols.http.h11_impl import H11Protocol

from monitor.config import Settings

log = logging.getLogger(__name__)

REASONS = ("connection_limit", "head_too_large", "head_timeout", "malformed")
# Request line plus header lines a head may have (Apache's LimitRequestFields is 100 header lines).
MAX_HEAD_LINES = 101
# The most one read hands the protocol (asyncio's and uvloop's read size).
MAX_READ_BYTES = 256 * 1024
# How long a connection closed after an answer stays half-closed, and what it reads and drops meanwhile.
LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024
# Where a head ends: CRLF lines, LF lines (h11 takes both), and LF lines closed by a CRLF blank line.
HEAD_ENDS = (b"\r\n\r\n", b"\n\n", b"\n\r\n")
# File descriptors the process needs besides its client connections (Redis, the model files, logs, listeners).
SPARE_FILES = 64


def plain_reply(status: str, text: str, *headers: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, written before or instead of the app."""
    lines = [f"HTTP/1.1 {status}", "content-type: text/plain; charset=utf-8", *headers, "connection: close",
             f"content-length: {len(text)}", "", text]
    return "\r\n".join(lines).encode("ascii")


HEAD_TOO_LARGE = plain_reply("431 Request Header Fields Too Large", "request line and headers: too large")


class ConnectionGuard:
    """The limits and what they refused. Touched from the event loop only; a scrape reads plain ints."""

    def __init__(self, max_connections: int, max_head_bytes: int, head_timeout_s: float, retry_after_s: int) -> None:
        self.max_connections = max_connections
        self.max_head_bytes = max_head_bytes
        self.head_timeout_s = head_timeout_s
        self.busy_reply = plain_reply("503 Service Unavailable", "too many open connections", f"retry-after: {retry_after_s}")
        self.open = 0
        self.refused: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConnectionGuard":
        return cls(settings.max_connections, settings.max_request_head_bytes, settings.request_head_timeout_seconds,
                   settings.retry_after_seconds)

    def warn_if_above_file_limit(self) -> None:
        """The OS refuses connections past the open-file limit before the guard can answer them."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and self.max_connections + SPARE_FILES > soft:
            log.warning("max_connections %d is above what the open-file limit (%d) leaves for connections; raise the limit "
                        "(ulimit -n) or lower max_connections", self.max_connections, soft)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a :class:`ConnectionGuard` (bound by :func:`guarded_http`).

    Why h11 and not httptools (uvicorn's default when installed): h11 keeps an unfinished head, or a
    chunked body's trailers, as raw bytes in one buffer it bounds (``max_incomplete_event_size``),
    and says which state the client is in (``their_state``), so the guard reads public state instead
    of second-guessing parser callbacks. It costs roughly a tenth of a millisecond of CPU per request,
    which batched ingest does not notice.

    The head clock runs whenever no request is being answered: from the connection's opening and from
    the end of each response, until the next head is in. So a connection must always be either
    answering a request or about to send one; a slow answer, a pipelined request waiting its turn and a
    slow body the app is reading never trip it (bodies have ``body_timeout_seconds``), while a client
    that trickles its head, or keeps sending a body the app answered without reading (a 401), is cut.
    Heads are measured before h11 parses them, whenever the client's next bytes are a head: between
    requests, and when a pipelined head waits for the current answer. Not measured: a head that arrives
    in the same read as the end of a body the app answered without reading (h11 drains such a body, and
    uvicorn parses what follows at once); one read bounds it, and the connection stays on the head clock."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted = False
        self._lingering: int | None = None  # bytes still read and dropped before reading stops
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.guard.open >= self.guard.max_connections:
            self._refuse("connection_limit", self.guard.busy_reply)
            return
        self._admitted = True
        self.guard.open += 1
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave_guard()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """The transport goes to a WebSocket protocol, which gets its ``connection_lost``: release the slot now."""
        self._leave_guard()
        super().handle_websocket_upgrade(event)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._lingering -= len(data)
            if self._lingering <= 0:
                self.transport.pause_reading()
            return
        if self._head_next() and self._head_too_large(data):  # no 431 ahead of an answer still being prepared
            self._refuse("head_too_large", b"" if self._answering() else HEAD_TOO_LARGE)
            return
        super().data_received(data)
        self._follow_head()

    def on_response_complete(self) -> None:
        if self._head_next() and self.conn.trailing_data[0] and self._head_too_large(b""):  # a pipelined head, before h11 parses it
            self._refuse("head_too_large", HEAD_TOO_LARGE)
            return
        super().on_response_complete()  # may start the next, pipelined request
        self._follow_head()

    def send_400_response(self, msg: str) -> None:
        """h11 refused what it read: a malformed head, or trailers past its buffer bound. Once an answer
        has started there is no room for a 400: the connection just closes."""
        self.guard.refused["malformed"] += 1
        self._disarm_head_timer()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            super().send_400_response(msg)
        else:
            self.transport.close()

    def _head_next(self) -> bool:
        """Whether the client's next bytes are a request head: between requests, or pipelined behind one."""
        return self.conn.their_state in (h11.IDLE, h11.DONE) and not self.transport.is_closing()

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the head being received, up to its blank line or all of it while unfinished, is over
        the guard's bytes or ``MAX_HEAD_LINES``. Checked before h11 parses it: a head of many tiny header
        lines takes tens of times its bytes once parsed."""
        buffered = self.conn.trailing_data[0]
        pending = buffered + data if buffered else data
        ends = [at + len(blank) for blank in HEAD_ENDS if (at := pending.find(blank)) >= 0]
        head = min(ends) if ends else len(pending)
        return head > self.guard.max_head_bytes or pending.count(b"\n", 0, head) > MAX_HEAD_LINES

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _follow_head(self) -> None:
        """The head clock runs while no request is being answered (see the class)."""
        if self._answering() or self.transport.is_closing():
            self._disarm_head_timer()
        else:
            self._arm_head_timer()

    def _leave_guard(self) -> None:
        self._disarm_head_timer()
        if self._admitted:
            self._admitted = False
            self.guard.open -= 1

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.guard.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._answering() and not self.transport.is_closing():
            self._refuse("head_timeout", b"")

    def _refuse(self, reason: str, reply: bytes) -> None:
        """Count, answer (when there is something to say) and close."""
        self.guard.refused[reason] += 1
        self._leave_guard()
        if not reply:
            self.transport.close()
            return
        self.transport.write(reply)
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close ``LINGER_S`` after shutting the write side, reading and dropping up to ``LINGER_BYTES``
        meanwhile: closing at once with unread bytes would send a reset, which can reach the client
        before the answer does (Apache's lingering close; the byte bound keeps a flood from costing CPU)."""
        self._lingering = LINGER_BYTES
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def guarded_http(guard: ConnectionGuard) -> dict[str, Any]:
    """uvicorn's options for the guarded protocol (``uvicorn.run(app, **guarded_http(guard))``): the class,
    bound to ``guard``, and h11's buffer bound, which bounds a chunked body's trailers (heads meet the
    guard's own check first, one read earlier, and get a 431)."""
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})
    return {"http": protocol, "h11_max_incomplete_event_size": guard.max_head_bytes + MAX_READ_BYTES}


class ConnectionCollector(Collector):
    """Open and refused connections, read from the guard at scrape time."""

    def __init__(self, guard: ConnectionGuard, prefix: str) -> None:
        self.guard, self.prefix = guard, prefix

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(f"{self.prefix}http_connections", "HTTP connections open now (monitor serve).",
                                value=self.guard.open)
        refused = CounterMetricFamily(
            f"{self.prefix}http_connections_refused",
            "HTTP connections closed before a request reached the app: connection_limit (503 as accepted, "
            "max_connections), head_too_large (431, max_request_head_bytes or more than 100 header lines), head_timeout "
            "(request_head_timeout_seconds), malformed (400: not HTTP/1.1 h11 can parse, or trailers past its bound).",
            labels=["reason"],
        )
        for reason in REASONS:
            refused.add_metric([reason], self.guard.refused[reason])
        yield refused
