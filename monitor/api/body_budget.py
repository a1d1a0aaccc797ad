"""One byte budget for every request body the process holds at once.

Why: each body is bounded (``max_body_bytes``), and large ones parse one at a time, but nothing bounded
how many bodies wait their turn: a burst of large posts (a gateway flushing a backlog, or a hostile
client) held each of them, raw and inflated, until its parse, so memory grew with the number of
connections. This middleware counts the bytes of every body as they arrive, and the routes' reader adds
what a compressed body inflates to (:func:`charge`); a body that would take the total past
``max_inflight_body_bytes`` is refused with a 503 and ``Retry-After`` (a gateway retries it; counted in
``request_bodies_refused_total`` like every refused body), and a request's bytes are returned when its
response has been sent, by which time its events are in the bounded queue or refused.

A pure ASGI middleware (Starlette's model) rather than a route dependency, so that no route that reads a
body can forget it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.ingest.parsing import BodyError

SCOPE_KEY = "monitor.body_budget"
RETRY_AFTER_S = 1


class BodyBudget:
    """At most ``max_bytes`` of request bodies held at once, over every request; ``in_flight`` is what is held now."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_flight = 0


class BodyBudgetMiddleware:
    """ASGI middleware: every request's body bytes charged to ``budget`` as they arrive, returned when it ends."""

    def __init__(self, app: ASGIApp, budget: BodyBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        charge = Charge(self.budget)
        scope[SCOPE_KEY] = charge

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                charge.add(len(message.get("body", b"")))
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            charge.release()


class Charge:
    """One request's share of the budget."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.bytes = 0

    def add(self, n: int) -> None:
        """Take ``n`` more bytes; :class:`BodyError` 503 when the budget cannot hold them (nothing taken)."""
        budget = self.budget
        if budget.in_flight + n > budget.max_bytes:
            raise BodyError(503, f"body: the service already holds {budget.in_flight} bytes of request bodies and this one "
                                 f"would pass max_inflight_body_bytes={budget.max_bytes}; retry in {RETRY_AFTER_S} s",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
        budget.in_flight += n
        self.bytes += n

    def release(self) -> None:
        self.budget.in_flight -= self.bytes
        self.bytes = 0


def charge(request: Request, n: int) -> None:
    """Add ``n`` bytes (a body's inflated size) to ``request``'s share; a no-op for an app without the budget."""
    share = request.scope.get(SCOPE_KEY)
    if share is not None:
        share.add(n)
