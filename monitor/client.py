"""A client that never slows the caller down: ``send()`` only appends to a bounded buffer.

A background thread (:class:`MonitorClient`) or task (:class:`AsyncMonitorClient`) posts the
buffer in batches (``batch_size`` items, or whatever arrived within ``flush_interval`` seconds) as a
JSON array to the monitor (``POST /v1/events`` by default; ``path`` picks another ingest route).

- Full buffer (``max_buffer`` items, or ``max_buffer_bytes`` of their JSON counting the batch in
  flight): the new item is dropped and counted (``stats().dropped``); ``send`` returns False. ``send`` encodes the item to JSON at
  once, so the buffer holds the bytes it counts (and later changes to the caller's dict do not leak
  into what is sent); an item JSON cannot encode raises there, in the caller.
- 503/429/5xx/timeouts: retried with exponential backoff and jitter, honouring ``Retry-After``, up to
  ``max_retries`` times; then the batch is counted as ``failed``.
- 413: the batch is split in halves and each half sent. 400/415/422 (the monitor says the items are
  invalid): counted as ``rejected``, never retried; so are per-item rejections inside a 202.
- Exit: ``close()`` (or the ``with`` block, or interpreter exit for the sync client) flushes what is
  buffered, waiting at most ``close_timeout`` seconds.

Authentication: ``token`` (default ``$MONITOR_TOKEN``) is sent as ``Authorization: Bearer <token>``; the
monitor's ingest routes need a token of scope ``ingest`` (or ``admin``) when its authentication is on.
401/403 are counted as ``failed`` and never retried (a wrong token does not fix itself).

Usage::

    with MonitorClient("http://monitor:8000", token=os.environ["MONITOR_TOKEN"]) as monitor:       # or AsyncMonitorClient in async code
        monitor.send({"event_id": request_id, "prompt": prompt, "response": reply, "model": "gpt-4o"})
    print(monitor.stats())  # sent, duplicates, rejected, dropped, failed, retries, pending
"""

from __future__ import annotations

import asyncio
import atexit
import email.utils
import functools
import json
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

import httpx
from pydantic import BaseModel

log = logging.getLogger(__name__)

Item = Mapping[str, Any] | BaseModel

# Where a monitor listens by default (`monitor serve`): the CLI, the report command and the LiteLLM logger.
DEFAULT_URL = "http://127.0.0.1:8000"
_REJECTED = frozenset({400, 415, 422})
_DENIED = frozenset({401, 403})


def bearer_headers(token: str | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` for ``token`` (default ``$MONITOR_TOKEN``), or ``{}`` without one."""
    token = token if token is not None else os.environ.get("MONITOR_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}
_RETRIED = frozenset({408, 429})


@dataclass(slots=True)
class ClientStats:
    sent: int = 0  # items the monitor took (duplicates included)
    duplicates: int = 0  # of those, ids the monitor had already seen
    rejected: int = 0  # items the monitor refused as invalid
    dropped: int = 0  # items never sent: the buffer was full (max_buffer or max_buffer_bytes), or the client closed
    failed: int = 0  # items given up on: the monitor stayed unreachable or busy, or refused the request
    retries: int = 0  # retried requests
    pending: int = 0  # items buffered or in flight now


def retry_after_seconds(header: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or unreadable.

    >>> retry_after_seconds("3"), retry_after_seconds(None), retry_after_seconds("soon")
    (3.0, None, None)
    """
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt ``n`` waits up to ``backoff * 2**n`` (at most ``max_backoff``).

    >>> policy = RetryPolicy(backoff=1.0, max_backoff=4.0)
    >>> [0.5 <= policy.delay(0, None, random.Random(0)) <= 1.0, policy.delay(5, "2", random.Random(0))]
    [True, 2.0]
    """

    max_retries: int = 5
    backoff: float = 0.2
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: str | None, rng: random.Random) -> float:
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return min(asked, self.max_backoff)
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int | None  # None: no answer (connection error, timeout)
    retry_after: str | None = None
    body: Any = None


class _Core:
    """Buffer, counters and the decision after each request; shared by the sync and async clients."""

    DONE, SPLIT, RETRY = "done", "split", "retry"

    def __init__(self, max_buffer: int, max_buffer_bytes: int, batch_size: int, policy: RetryPolicy, seed: int | None) -> None:
        if max_buffer < 1 or max_buffer_bytes < 1 or batch_size < 1:
            raise ValueError("max_buffer, max_buffer_bytes and batch_size: must be at least 1")
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self.batch_size = batch_size
        self.policy = policy
        self.rng = random.Random(seed)
        self.buffer: deque[bytes] = deque()  # each item's JSON
        self.held_bytes = 0  # of the items buffered and in flight
        self.in_flight = 0
        self.in_flight_bytes = 0
        self.stats = ClientStats()
        self.lock = threading.Lock()

    def offer(self, item: Item, closed: bool) -> int:
        """Buffer ``item`` as JSON; the new buffer length, or 0 when it was dropped (buffer full in
        items, or in bytes with the batch in flight, which is held while it is retried; client
        closed). A count alone would let 300 items of 1 MB hold 300 MB."""
        encoded = _encode_item(item)
        with self.lock:
            if closed or len(self.buffer) >= self.max_buffer or self.held_bytes + len(encoded) > self.max_buffer_bytes:
                self.stats.dropped += 1
                return 0
            self.buffer.append(encoded)
            self.held_bytes += len(encoded)
            return len(self.buffer)

    def take(self) -> list[bytes]:
        with self.lock:
            batch = [self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))]
            self.in_flight, self.in_flight_bytes = len(batch), sum(map(len, batch))
            return batch

    def settle(self) -> None:
        """The batch in flight is done with (sent, rejected or given up): its bytes are free. Called
        under ``lock`` (the async client's one thread needs none), like ``clear``."""
        self.held_bytes -= self.in_flight_bytes
        self.in_flight, self.in_flight_bytes = 0, 0

    def clear(self) -> int:
        """Empty the buffer (the client is closing); how many items it held."""
        n = len(self.buffer)
        self.held_bytes -= sum(map(len, self.buffer))
        self.buffer.clear()
        return n

    def idle(self) -> bool:
        return not self.buffer and self.in_flight == 0

    def snapshot(self) -> ClientStats:
        with self.lock:
            s = self.stats
            return ClientStats(s.sent, s.duplicates, s.rejected, s.dropped, s.failed, s.retries, len(self.buffer) + self.in_flight)

    def decide(self, reply: _Reply, n: int, attempt: int) -> tuple[str, float]:
        """What to do after one request for ``n`` items: ``(DONE|SPLIT|RETRY, delay)``; counts terminal outcomes."""
        status = reply.status
        with self.lock:
            s = self.stats
            if status is not None and 200 <= status < 300:
                body = reply.body if isinstance(reply.body, dict) else {}
                rejected = len(body.get("rejected") or [])
                s.rejected += rejected
                s.sent += n - rejected
                s.duplicates += int(body.get("duplicates") or 0)
                return self.DONE, 0.0
            if status == 413 and n > 1:
                return self.SPLIT, 0.0
            if status in _DENIED:
                s.failed += n
                log.warning("monitor refused the token for %d items (HTTP %s): %s", n, status, _error_of(reply.body))
                return self.DONE, 0.0
            if status in _REJECTED or status == 413:
                s.rejected += n
                log.warning("monitor rejected %d items (HTTP %s): %s", n, status, _error_of(reply.body))
                return self.DONE, 0.0
            if status is None or status in _RETRIED or status >= 500:
                if attempt < self.policy.max_retries:
                    s.retries += 1
                    return self.RETRY, self.policy.delay(attempt, reply.retry_after, self.rng)
            s.failed += n
            log.warning("monitor did not take %d items (HTTP %s): %s", n, status or "no answer", _error_of(reply.body))
            return self.DONE, 0.0

    def give_up(self, n: int) -> None:
        with self.lock:
            self.stats.failed += n


def _encode_item(item: Item) -> bytes:
    """One item's JSON, as the request will carry it.

    >>> _encode_item({"prompt": "hi", "labels": {"team": "a"}})
    b'{"prompt": "hi", "labels": {"team": "a"}}'
    """
    plain = item.model_dump(mode="json", exclude_none=True) if isinstance(item, BaseModel) else item
    return json.dumps(plain, default=str).encode()


def _encode(batch: list[bytes]) -> bytes:
    """The request body: a JSON array of the items' JSON."""
    return b"[" + b", ".join(batch) + b"]"


def _reply(response: httpx.Response) -> _Reply:
    try:
        body = response.json()
    except ValueError:
        body = response.text[:200]
    return _Reply(response.status_code, response.headers.get("retry-after"), body)


def _error_of(body: Any) -> Any:
    return body.get("error", body) if isinstance(body, dict) else body


def _close_at_exit(ref: "weakref.ref[MonitorClient]") -> None:
    client = ref()
    if client is not None:
        client.close()


class _Client:
    """Options, buffer and counters of both clients; each adds its own sender in ``_init_sender``."""

    def __init__(
        self,
        url: str,
        *,
        path: str = "/v1/events",
        batch_size: int = 100,
        max_buffer: int = 10_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        flush_interval: float = 0.5,
        timeout: float = 5.0,
        max_retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 30.0,
        close_timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        seed: int | None = None,
    ) -> None:
        """``token``: bearer token (default ``$MONITOR_TOKEN``); ``headers`` add to or override the defaults.
        At most ``max_buffer`` items wait, and ``max_buffer_bytes`` of their JSON are held, waiting or in flight."""
        self.endpoint = url.rstrip("/") + path
        self.flush_interval = flush_interval
        self.close_timeout = close_timeout
        self._core = _Core(max_buffer, max_buffer_bytes, batch_size, RetryPolicy(max_retries, backoff, max_backoff), seed)
        self._headers = {"Content-Type": "application/json", **bearer_headers(token), **(headers or {})}
        self._timeout = timeout
        self._flush_now = False
        self._closing = False
        self._init_sender()

    def _init_sender(self) -> None:
        raise NotImplementedError

    def stats(self) -> ClientStats:
        return self._core.snapshot()


class MonitorClient(_Client):
    """Thread-backed client; safe to call ``send`` from any thread, including inside an event loop."""

    def _init_sender(self) -> None:
        self._wake = threading.Condition(self._core.lock)
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)

    def send(self, event: Item) -> bool:
        """Buffer one item (an event dict or :class:`~monitor.ingest.schema.EventIn`); False if dropped."""
        size = self._core.offer(event, self._closing)
        if not size:
            return False
        if self._thread is None:
            self._start()
        if size == 1 or size >= self._core.batch_size:
            with self._wake:
                self._wake.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything buffered now; True when the buffer emptied within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wake:
            self._flush_now = True
            self._wake.notify_all()
            while not self._core.idle() and self._thread is not None and self._thread.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.wait(remaining)
            return self._core.idle()

    def close(self, timeout: float | None = None) -> ClientStats:
        """Flush for at most ``timeout`` (default ``close_timeout``) seconds, then stop.

        What is still buffered then counts as failed; a request still in flight settles on its own.
        """
        atexit.unregister(self._exit_hook)
        if not self._closing:
            limit = self.close_timeout if timeout is None else timeout
            deadline = time.monotonic() + limit
            self._closing = True
            self.flush(limit)
            self._abort.set()
            with self._wake:
                self._core.stats.failed += self._core.clear()
                self._wake.notify_all()
            if self._thread is not None:
                self._thread.join(max(0.0, deadline - time.monotonic()))
        return self.stats()

    def __enter__(self) -> "MonitorClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="monitor-client", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout, headers=self._headers) as http:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._deliver(http, batch)
                with self._wake:
                    self._core.settle()
                    self._wake.notify_all()

    def _next_batch(self) -> list[bytes] | None:
        core = self._core
        with self._wake:
            while not core.buffer and not self._closing:
                self._wake.wait()
            deadline = time.monotonic() + self.flush_interval
            while len(core.buffer) < core.batch_size and not (self._flush_now or self._closing):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            if not core.buffer:
                return None  # closed, and close() counted what was left
            if len(core.buffer) <= core.batch_size:
                self._flush_now = False
        return core.take()

    def _deliver(self, http: httpx.Client, batch: list[bytes]) -> None:
        attempt = 0
        while True:
            try:
                reply = _reply(http.post(self.endpoint, content=_encode(batch)))
            except httpx.HTTPError as exc:
                reply = _Reply(None, body=f"{type(exc).__name__}: {exc}")
            action, delay = self._core.decide(reply, len(batch), attempt)
            if action == _Core.DONE:
                return
            if action == _Core.SPLIT:
                half = len(batch) // 2
                self._deliver(http, batch[:half])
                self._deliver(http, batch[half:])
                return
            if self._abort.wait(delay):
                self._core.give_up(len(batch))
                return
            attempt += 1


class AsyncMonitorClient(_Client):
    """The asyncio flavour: ``send`` is a plain (non-async) call; use ``async with`` or ``await aclose()``."""

    def _init_sender(self) -> None:
        self._wake = asyncio.Event()  # new items, a flush, or closing
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def send(self, event: Item) -> bool:
        """Buffer one item; False if dropped. Must be called from the event loop's thread."""
        size = self._core.offer(event, self._closing)
        if not size:
            return False
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="monitor-client")
        if size == 1 or size >= self._core.batch_size:
            self._wake.set()
        return True

    async def flush(self, timeout: float | None = None) -> bool:
        if self._task is None or self._core.idle():
            return self._core.idle()
        self._flush_now = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float | None = None) -> ClientStats:
        """Flush for at most ``timeout`` (default ``close_timeout``) seconds, then stop; what is left counts as failed."""
        if not self._closing:
            self._closing = True
            await self.flush(self.close_timeout if timeout is None else timeout)
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._core.give_up(self._core.in_flight + self._core.clear())
            self._core.settle()
        return self.stats()

    async def __aenter__(self) -> "AsyncMonitorClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout, headers=self._headers) as http:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    self._idle.set()
                    return
                await self._deliver(http, batch)
                self._core.settle()
                if self._core.idle():
                    self._idle.set()

    async def _next_batch(self) -> list[bytes] | None:
        core = self._core
        while not core.buffer and not self._closing:
            self._wake.clear()
            await self._wake.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flush_interval
        while len(core.buffer) < core.batch_size and not (self._flush_now or self._closing):
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
        if not core.buffer:
            return None
        if len(core.buffer) <= core.batch_size:
            self._flush_now = False
        return core.take()

    async def _deliver(self, http: httpx.AsyncClient, batch: list[bytes]) -> None:
        attempt = 0
        while True:
            try:
                reply = _reply(await http.post(self.endpoint, content=_encode(batch)))
            except httpx.HTTPError as exc:
                reply = _Reply(None, body=f"{type(exc).__name__}: {exc}")
            action, delay = self._core.decide(reply, len(batch), attempt)
            if action == _Core.DONE:
                return
            if action == _Core.SPLIT:
                half = len(batch) // 2
                await self._deliver(http, batch[:half])
                await self._deliver(http, batch[half:])
                return
            await asyncio.sleep(delay)  # aclose() cancels this when its time is up
            attempt += 1
