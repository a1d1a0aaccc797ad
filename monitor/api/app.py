"""The FastAPI application.

The model loads in the background after start-up: ``/healthz`` answers at once, ``/readyz`` and
ingest answer 503 until the embedder and judge are loaded and the worker runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from contextlib import asynccontextmanager, suppress
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitor import __version__
from monitor.api import clusters, feedback, litellm, otel, reports, triage, ui
from monitor.api.adapter_ingest import all_rejected, busy_response, parse_off_loop, read_body, refuse_all
from monitor.api.auth import AuthError, Authenticator, require, require_unless_open, sender
from monitor.api.body_budget import BodyBudget, BodyBudgetMiddleware
from monitor.api.connections import ConnectionCollector, ConnectionGuard
from monitor.api.deps import error_response, get_service, refuse_body
from monitor.backend import MonitorBackend, NotReady
from monitor.api.responses import AUTH, BODY, IngestOut, errors
from monitor.alerts.engine import Alert
from monitor.alerts.links import evidence_links
from monitor.config import Settings
from monitor.export.metrics import PREFIX
from monitor.ingest.parsing import BodyError, parse_body
from monitor.ingest.safejson import JsonLimits
from monitor.ingest.schema import EventIn
from monitor.pipeline.builder import build_service
from monitor.redact_urls import hide_access_log_queries, redact_urls
from monitor.state.store import StoreUnavailable

log = logging.getLogger(__name__)

EVERY_EVENT_INVALID = "events: every event in the batch is invalid"

# Feature routers (each module owns its routes and reaches the service through monitor.api.deps.get_service).
ROUTERS = [feedback.router, clusters.router, litellm.router, otel.router, reports.router, triage.router, ui.router]

INGEST_DOC = """Ingest prompt/response events from the gateway. Never waits for the model.

Body: one event, a JSON array of events, `{"events": [...]}`, or NDJSON (`Content-Type: application/x-ndjson`);
optionally gzip, zlib or deflate compressed (`Content-Encoding`).
Answers **202** `{"accepted": n, "duplicates": d, "rejected": [{"index": i, "error": "field: message"}]}`:
one bad event never sinks the batch (`accepted` counts re-sent ids too: they need no resend).
A body that is unusable as a whole gets 400 (not JSON/UTF-8, empty), 413 (too large, too many events),
415 (content type or encoding) or 422 (wrong shape, or a single/all events invalid), with `{"error": "..."}` naming the field.
**503** with `Retry-After` when the queue is full (nothing of the request was taken: resend it) or the model is still loading.
"""


async def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread. Why not ``asyncio.to_thread``: building the service may wait
    for the state store without end (it will not start without its history), and the event loop's
    executor threads are joined at exit, so SIGTERM during that wait would never end the process."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # cancelled by shutdown meanwhile
            setter(value)

    def run() -> None:
        try:
            outcome = (future.set_result, fn(*args))
        except BaseException as exc:  # handed to the awaiting task, which reports it
            outcome = (future.set_exception, exc)
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for it any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="monitor-start", daemon=True).start()
    return await future


def create_app(settings: Settings | None = None, service_factory: Callable[[Settings], MonitorBackend] | None = None) -> FastAPI:
    """The app; raises :class:`~monitor.api.auth.AuthConfigError` when it would serve the network without tokens."""
    settings = settings or Settings()
    factory = service_factory or build_service
    hide_access_log_queries(logging.getLogger("uvicorn.access"))  # kept when uvicorn configures its logging later
    holder: dict[str, Any] = {"service": None, "error": None}
    auth = Authenticator(settings)
    guard = ConnectionGuard.from_settings(settings)

    async def load() -> None:
        try:
            service = await in_daemon_thread(factory, settings)
            await service.start()
            service.metrics.registry.register(ConnectionCollector(guard, PREFIX))
            holder["service"] = service
        except Exception as exc:  # surfaced by /readyz; the process stays up for diagnosis
            # URLs in the message (a malformed second_judge_url with credentials) are cut to scheme://host.
            log.error("monitor failed to start:\n%s", redact_urls("".join(traceback.format_exception(exc))))
            holder["error"] = redact_urls(f"{type(exc).__name__}: {exc}")
            return
        try:  # an api replica reads the version from Redis, which may be down: that is no failure to start
            version = await asyncio.to_thread(lambda: service.judge_version)
        except Exception as exc:
            version = f"unknown ({type(exc).__name__})"
        log.info("monitor ready: judge %s", version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(load())
        yield
        if not loader.done():  # still loading, or waiting for the state store: nothing to save, stop now
            log.warning("stopping before the service finished starting")
            loader.cancel()
        with suppress(asyncio.CancelledError):
            await loader
        if holder["service"] is not None:
            await holder["service"].stop()

    app = FastAPI(
        title="LLM safety-drift monitor",
        version=__version__,
        description="Sidecar that watches an LLM gateway's prompt/response stream for safety drift.",
        lifespan=lifespan,
    )
    largest = max(settings.max_body_bytes, triage.MAX_ACTION_BYTES)
    app.state.body_budget = BodyBudget(settings.max_inflight_body_bytes, largest, "max_inflight_body_bytes", settings.retry_after_seconds)
    app.state.form_budget = BodyBudget(ui.FORMS_BUDGET_BYTES, ui.MAX_FORM_BYTES, "the console's form budget", settings.retry_after_seconds)
    app.add_middleware(BodyBudgetMiddleware, budget=app.state.body_budget, timeout_s=settings.body_timeout_seconds,
                       by_prefix=(("/ui/", app.state.form_budget),))
    app.state.connection_guard = guard  # monitor serve's protocol enforces it
    app.state.holder = holder
    app.state.settings = settings
    app.state.auth = auth

    @app.exception_handler(AuthError)
    async def _unauthorized(request: Request, exc: AuthError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers(), required_scope=exc.scope)

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, exc: NotReady) -> JSONResponse:
        return error_response(503, f"not ready: {exc.reason}", {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # Scale-out reads (status, alerts, feedback) while Redis is down: say so, never a 500.
        return error_response(
            503, redact_urls(f"state store unavailable: {exc}; retry later"), {"Retry-After": str(settings.retry_after_seconds)}
        )

    @app.exception_handler(BodyError)
    async def _body_error(request: Request, exc: BodyError) -> JSONResponse:
        # A backstop: the routes that read bodies catch it and count it; a body read elsewhere (a future streaming
        # response watching for the client to leave) still gets its 4xx/503, never a 500.
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unmatched paths and methods, answered in this API's error shape rather than FastAPI's {"detail": ...}.
        return error_response(exc.status_code, _http_error_message(request, exc), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validationerror_response(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return error_response(422, f"{where}: {first['msg']}")

    @app.post(
        "/v1/events",
        status_code=202,
        summary="Ingest events",
        description=INGEST_DOC,
        dependencies=[Depends(require("ingest"))],
        response_model=IngestOut,
        responses=errors(*BODY, *AUTH, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/EventIn"},
                                {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}},
                                {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}}}},
                            ]
                        }
                    },
                    "application/x-ndjson": {"schema": {"type": "string", "description": "one EventIn JSON object per line"}},
                },
            }
        },
    )
    async def ingest(request: Request, service: MonitorBackend = Depends(get_service)) -> Response:
        arrival = time.time()
        started = time.perf_counter()
        try:
            body = await read_body(request, settings.max_body_bytes)
            parsed = await parse_off_loop(
                body, parse_body, body, request.headers.get("content-type"), settings.max_events_per_request, limits=JsonLimits.of(settings)
            )
        except BodyError as exc:
            return refuse_body(request, service, exc)
        if not parsed.events:
            await service.ingest_async(parsed, arrival, sender(request))  # still counted as received/rejected
            return refuse_all(parsed.rejected, parsed.single, EVERY_EVENT_INVALID)
        outcome = await service.ingest_async(parsed, arrival, sender(request))
        service.metrics.ingest_seconds.observe(time.perf_counter() - started)
        busy = busy_response(outcome, settings.retry_after_seconds)
        if busy is not None:
            return busy
        refused = all_rejected(outcome, parsed.single, EVERY_EVENT_INVALID)
        if refused is not None:
            return refused
        rejected = [r.as_json() for r in outcome.rejected]
        return JSONResponse(
            {"accepted": outcome.accepted, "duplicates": outcome.duplicates, "rejected": rejected}, status_code=202
        )

    @app.get(
        "/v1/status",
        summary="Counters, queue, sampling and stage latencies",
        dependencies=[Depends(require("read"))],
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}, **errors(*AUTH)},
    )
    async def status() -> Response:
        service = holder["service"]
        if service is None:
            return JSONResponse({"ready": False, "error": holder["error"]}, status_code=200)
        return JSONResponse({"ready": True, **(await asyncio.to_thread(service.status))})

    @app.get(
        "/v1/alerts",
        summary="Alerts (firing, pending, resolved)",
        dependencies=[Depends(require("read"))],
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}, **errors(*AUTH, 422, 503)},
    )
    async def alerts(
        status: Literal["firing", "pending", "resolved", "all"] = Query("all"), service: MonitorBackend = Depends(get_service)
    ) -> Response:
        found = await asyncio.to_thread(service.alerts, status)  # the state lock, or Redis in scale-out: off the event loop
        return JSONResponse({"alerts": [_alert_json(a) for a in found]})

    @app.get(
        "/v1/alerts/{alert_id}",
        summary="One alert with its evidence",
        dependencies=[Depends(require("read"))],
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}, **errors(*AUTH, 404, 503)},
    )
    async def alert(alert_id: str, service: MonitorBackend = Depends(get_service)) -> Response:
        found = await asyncio.to_thread(service.alert, alert_id)
        if found is None:
            return error_response(404, f"alert_id: no alert {alert_id!r}")
        return JSONResponse(_alert_json(found))

    @app.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        dependencies=[Depends(require_unless_open("metrics"))],
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}, "description": "Prometheus text format."},
            **errors(*AUTH),
        },
    )
    async def metrics() -> Response:
        service = holder["service"]
        if service is None:
            return Response(b"", media_type=CONTENT_TYPE_LATEST)
        # Gauges read their state at scrape time (custom collectors, set_function); off the loop: the
        # scale-out queue depth is a Redis round trip.
        return Response(await asyncio.to_thread(generate_latest, service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/healthz",
        summary="Liveness: answers from the event loop alone (no worker, store or lock), so overload never fails it",
        dependencies=[Depends(require_unless_open("healthz"))],
        responses=errors(*AUTH),
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: model loaded and worker running",
        dependencies=[Depends(require_unless_open("readyz"))],
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}, **errors(*AUTH, 503)},
    )
    async def readyz() -> Response:
        service = holder["service"]
        if service is None or not service.running:
            reason = holder["error"] or ("the model is still loading" if service is None else "the worker is not running")
            return error_response(503, f"not ready: {reason}")
        version = await asyncio.to_thread(lambda: service.judge_version)  # scale-out api replicas read it from Redis
        return JSONResponse({"status": "ready", "judge_version": version})

    for probe, answer in (("healthz", healthz), ("readyz", readyz)):
        # Uptime checkers and some load balancers probe with HEAD; kept out of the schema, where a second
        # operation of the same function would repeat its operation id.
        app.add_api_route(f"/{probe}", answer, methods=["HEAD"], include_in_schema=False,
                          dependencies=[Depends(require_unless_open(probe))])

    for router in ROUTERS:
        app.include_router(router)
    _register_schema(app)
    return app


def _http_error_message(request: Request, exc: StarletteHTTPException) -> str:
    """``field: what is wrong`` for the router's own refusals; another HTTPException keeps its detail."""
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"path: no endpoint {request.url.path!r} (GET /docs lists them)"
    if exc.status_code == 405:
        return f"method: {request.method} is not allowed on {request.url.path!r}; allowed: {(exc.headers or {}).get('Allow', '')}"
    return str(exc.detail)


def _alert_json(alert: Alert) -> dict[str, Any]:
    """An alert with root-relative links to its evidence (the alert, its cluster, the covering drift report)."""
    return {**alert.to_dict(), "links": evidence_links(alert)}


def _register_schema(app: FastAPI) -> None:
    """Put the request bodies (``EventIn``, ``FeedbackIn``, LiteLLM payloads) into the OpenAPI components:
    the ingest routes read the raw body, so FastAPI cannot see them."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["EventIn"] = EventIn.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        defs = schema["components"]["schemas"]["EventIn"].pop("$defs", {})
        schema["components"]["schemas"].update(defs)
        schema["components"]["schemas"]["FeedbackIn"] = feedback.FeedbackIn.model_json_schema(ref_template="#/components/schemas/{model}")
        schema["components"]["schemas"]["LiteLLMPayload"] = litellm.PAYLOAD_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
