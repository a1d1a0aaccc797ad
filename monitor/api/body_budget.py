"""Byte budgets for the request bodies the process holds at once, and a deadline for receiving each.

Why: each body is bounded (``max_body_bytes``), and large ones parse one at a time, but nothing bounded
how many bodies wait their turn: a burst of large posts (a gateway flushing a backlog, or a hostile
client) held each of them, raw and inflated, until its parse, so memory grew with the number of
connections. This middleware counts the bytes of every body as they arrive, and the routes' reader adds
what a compressed body inflates to (:func:`charge`); a body that would take the total past the budget
is refused with a 503 and ``Retry-After`` (a gateway resends it; the routes count it in
``request_bodies_refused_total`` like every refused body), and a request's bytes are returned when its
response has been sent, by which time its events are in the bounded queue or refused.

A budget held by clients that never finish their bodies would refuse everyone else, so a body must
arrive within ``timeout_s`` of the request's start (a 408 after that, its bytes returned), and the
unauthenticated console forms (``/ui/``) draw on a budget of their own: filling it refuses the console's
forms (login, logout, triage), never the gateway's ingest. A body larger than any route accepts is a 413
when the budget is full, not a 503 that no retry could cure.

A pure ASGI middleware (Starlette's model) rather than a route dependency, so that no route that reads a
body can forget it.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.ingest.parsing import BodyError

SCOPE_KEY = "monitor.body_budget"


class BodyBudget:
    """At most ``max_bytes`` of request bodies held at once; ``in_flight`` is what is held now. ``largest`` is the
    largest body any route drawing on it accepts (at most half of ``max_bytes``, so that one such body, received and
    inflated, always fits); ``setting`` names the budget in the 503; ``retry_after_s`` is the 503's ``Retry-After``."""

    def __init__(self, max_bytes: int, largest: int, setting: str, retry_after_s: int) -> None:
        if 2 * largest > max_bytes:
            raise ValueError(f"{setting}={max_bytes} must hold two bodies of {largest} bytes, the largest a route accepts")
        self.max_bytes = max_bytes
        self.largest = largest
        self.setting = setting
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def take(self, held: int, n: int) -> None:
        """Take ``n`` more bytes for a request already holding ``held`` of the same kind (received, or inflated);
        :class:`BodyError` (nothing taken) when they do not fit: 413 when that kind alone passes ``largest`` (no
        route accepts it, and no retry could help), else 503."""
        if self.in_flight + n <= self.max_bytes:
            self.in_flight += n
            return
        if held + n > self.largest:
            raise BodyError(413, f"body: larger than {self.largest} bytes, the most any route accepts")
        raise BodyError(503, f"body: the service holds too many request bodies at once ({self.setting}); "
                             f"retry in {self.retry_after_s} s", headers={"Retry-After": str(self.retry_after_s)})

    def give(self, n: int) -> None:
        self.in_flight -= n


class BodyBudgetMiddleware:
    """ASGI middleware: each request's body bytes taken from the first budget whose path prefix matches (else
    ``budget``) as they arrive, returned when it ends; a body not received within ``timeout_s`` of the request's
    start is a 408."""

    def __init__(self, app: ASGIApp, budget: BodyBudget, timeout_s: float,
                 by_prefix: tuple[tuple[str, BodyBudget], ...] = ()) -> None:
        self.app = app
        self.budget = budget
        self.timeout_s = timeout_s
        self.by_prefix = by_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        share = Share(next((b for prefix, b in self.by_prefix if path.startswith(prefix)), self.budget))
        scope[SCOPE_KEY] = share
        deadline = time.monotonic() + self.timeout_s
        responding = False

        async def counted() -> Message:
            if responding:  # a response listening for the client to leave (streaming): no body is read any more
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                raise BodyError(408, f"body: not received within body_timeout_seconds={self.timeout_s:g}") from None
            if message["type"] == "http.request":
                share.add_received(len(message.get("body", b"")))
            return message

        async def watched(message: Message) -> None:
            nonlocal responding
            responding = responding or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        finally:
            share.release()


class Share:
    """One request's bytes taken from a budget: those received, and what a compressed body inflates to, kept apart
    because each is bounded by the route's limit on its own (a body at the limit may inflate to the limit)."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.received = 0
        self.inflated = 0

    def add_received(self, n: int) -> None:
        self.budget.take(self.received, n)
        self.received += n

    def add_inflated(self, n: int) -> None:
        self.budget.take(self.inflated, n)
        self.inflated += n

    def release(self) -> None:
        self.budget.give(self.received + self.inflated)
        self.received = self.inflated = 0


def charge(request: Request, n: int) -> None:
    """Add ``n`` bytes (a body's inflated size) to ``request``'s share; a no-op for an app without budgets."""
    share = request.scope.get(SCOPE_KEY)
    if share is not None:
        share.add_inflated(n)
