"""Shared route helpers: error bodies and access to the running backend."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Query, Request
from fastapi.responses import JSONResponse

from monitor.backend import MonitorBackend, NotReady
from monitor.export.reservoir import scope_filter
from monitor.ingest.parsing import BodyError
from monitor.scopes import ScopeResolver

SCOPE_DOC = "global, model=NAME or route=NAME (names as in metric labels)."


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """Every error body is ``{"error": "<field>: <what is wrong>", ...}``."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def refuse_body(request: Request, service: MonitorBackend | None, exc: BodyError) -> JSONResponse:
    """The whole body refused: counted (:func:`count_refused_body`), then answered."""
    count_refused_body(request, service, exc.status)
    return error_response(exc.status, exc.message, exc.headers)


def count_refused_body(request: Request, service: MonitorBackend | None, status: int) -> None:
    """A body refused whole, counted by route and status: its events (or its action) are in no other counter.
    Nothing counts before the service is built."""
    if service is not None:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        service.metrics.bodies_refused.labels(route, str(status)).inc()


def checked_scope(request: Request, scope: str = Query("global", max_length=300, description=SCOPE_DOC)) -> str:
    """FastAPI dependency: the ``scope`` query parameter, checked alike on every route that takes one
    (a 422 naming it, never an empty answer for a scope that cannot exist: one whose dimension is not
    configured, or whose name is not on its allow-list, ``other`` or ``none``)."""
    try:
        scope_filter(scope)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    settings = request.app.state.settings
    if not ScopeResolver(settings.models, settings.routes).exists(scope):
        dimension = scope.partition("=")[0]
        listed = getattr(settings, f"{dimension}s")
        why = (f"the {dimension} scopes are {', '.join(f'{dimension}={n}' for n in [*sorted(listed), 'other', 'none'])}"
               if listed else f"MONITOR_{dimension.upper()}S is empty, so no {dimension} has a scope")
        raise HTTPException(422, f"scope: no scope {scope!r}: {why}")
    return scope


def get_service(request: Request) -> MonitorBackend:
    """FastAPI dependency: the running service, or 503 while it loads."""
    holder = request.app.state.holder
    service = holder["service"]
    if service is None:
        raise NotReady(holder["error"] or "the model is still loading", request.app.state.settings.retry_after_seconds)
    return service
