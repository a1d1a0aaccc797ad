"""What an HTTP connection may hold before the app sees a request: a cap on open connections, on a
request head's bytes and on the time to send it.

Why here, below the app: everything the app bounds (tokens, bodies, queue) starts once a request's
headers are complete. Before that, uvicorn's httptools protocol keeps every header byte it is sent
(a client that never ends its headers grew the server by the bytes it sent, unauthenticated), and
keeps a connection that sends nothing for good (its keep-alive timer starts only after a response,
and any byte stops it). The guard is a subclass of that protocol which overrides the asyncio
protocol methods and the parser's callbacks only; ``tests/test_connection_guard.py`` runs it in a
real uvicorn, so a change of uvicorn's internals fails there, not in production.

A connection refused as it is accepted gets a 503 with Retry-After (the queue-full contract), a head
too large a 431, a head too slow is closed; each is counted in
``llmsafety_http_connections_refused_total{reason}`` (``connection_limit``, ``head_too_large``,
``head_timeout``), next to ``llmsafety_http_connections`` (open now).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from monitor.config import Settings

log = logging.getLogger(__name__)

REASONS = ("connection_limit", "head_too_large", "head_timeout")
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


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under a :class:`ConnectionGuard` (bound by :func:`guarded_protocol`).

    A request head is open from the connection's start, and again from the end of each request, until
    its headers are complete: the bytes of every read that ends with the head still open count toward
    ``max_head_bytes`` (a read that also finished a pipelined request does not: its bytes are mostly
    that request's), and the time from the connection's start or the head's first byte toward
    ``head_timeout_s``."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted = False
        self._head_open = True
        self._head_bytes = 0
        self._finished_in_read = False
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

    def handle_websocket_upgrade(self) -> None:
        """The transport goes to a WebSocket protocol, which gets its ``connection_lost``: release the slot now."""
        self._leave_guard()
        super().handle_websocket_upgrade()

    def _leave_guard(self) -> None:
        self._disarm_head_timer()
        if self._admitted:
            self._admitted = False
            self.guard.open -= 1

    def data_received(self, data: bytes) -> None:
        self._finished_in_read = False
        super().data_received(data)
        if self._head_open and not self._finished_in_read and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.max_head_bytes:
                self._refuse("head_too_large", HEAD_TOO_LARGE)

    # Parser callbacks (called inside data_received).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open, self._head_bytes, self._finished_in_read = True, 0, True

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.guard.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_open and not self.transport.is_closing():
            self._refuse("head_timeout", b"")

    def _refuse(self, reason: str, reply: bytes) -> None:
        self.guard.refused[reason] += 1
        self._disarm_head_timer()
        if reply:
            self.transport.write(reply)
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``guard``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})


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
            "max_connections), head_too_large (431, max_request_head_bytes), head_timeout (request_head_timeout_seconds).",
            labels=["reason"],
        )
        for reason in REASONS:
            refused.add_metric([reason], self.guard.refused[reason])
        yield refused
