"""``GET /v1/reports``: an Evidently drift report comparing two windows of event time."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from monitor.api.auth import require
from monitor.api.deps import checked_scope, error_response, get_service
from monitor.api.report_gate import Busy, gate_for
from monitor.api.responses import AUTH, errors
from monitor.export.report import DriftReport, ReportError, build_report
from monitor.export.windows import TimeWindow, WindowError, parse_window
from monitor.backend import MonitorBackend

router = APIRouter()

WINDOW_DOC = (
    "Event-time window: `START/END` (ISO-8601 like `2026-01-01T00:00Z`, epoch seconds, `now`, `now-2h`) "
    "or `last:DURATION` (`last:1h`); `now` is the newest event seen, never the wall clock."
)

REPORTS_DOC = """Compare two windows of the judged stream with Evidently: category distribution and per-category
shares, unsafe and refusal shares, text lengths, model/route mix, and prompt/response embedding drift.

Built from the service's reservoir sample of each window (windows with more events than `report_max_rows`
are sampled again; the report says so). Takes seconds: the embedding-drift check fits a classifier and a t-SNE plot.
**422** names the parameter that cannot be parsed; **503** while `report_max_concurrent` reports are being built
(a report for the same windows, scope and format is served from a cache for `report_cache_seconds`); **404** when a window holds too few sampled events
(the body's `kept` gives the event-time span the reservoir still holds).
"""


@router.get(
    "/v1/reports",
    summary="Drift report: reference window vs current window",
    description=REPORTS_DOC,
    dependencies=[Depends(require("read"))],
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}},
        **errors(*AUTH, 404, 422, 503),
    },
)
async def report(
    request: Request,
    reference: str = Query(..., description=WINDOW_DOC, examples=["now-2h/now-1h"]),
    current: str = Query(..., description=WINDOW_DOC, examples=["last:1h"]),
    format: Literal["html", "json"] = Query("html", description="html (for people) or json (summary + Evidently's results)."),
    scope: str = Depends(checked_scope),
    service: MonitorBackend = Depends(get_service),
) -> Response:
    reservoir = service.report_reservoir
    if reservoir is None:
        return error_response(404, "reports: this service keeps no event reservoir, so it has no windows to report on")
    windows: dict[str, TimeWindow] = {}
    for name, spec in (("reference", reference), ("current", current)):
        try:
            windows[name] = parse_window(spec, reservoir.newest_event_time)
        except WindowError as exc:
            return error_response(422, f"{name}: {exc}")
    s = service.settings

    def build() -> DriftReport:  # sampling copies up to report_windows_kept windows: off the event loop too
        samples = {name: reservoir.sample(window, scope) for name, window in windows.items()}
        return build_report(
            samples["reference"],
            samples["current"],
            max_rows=s.report_max_rows,
            embedding_method=s.report_embedding_method,
            tsne_points=s.report_tsne_points,
            scope=scope,
            seed=s.seed,
        )

    key = (windows["reference"].spec(), windows["current"].spec(), scope, format)
    gate = gate_for(request.app.state, s)

    async def make() -> Response:
        built = await run_in_threadpool(build)
        return JSONResponse(built.to_json()) if format == "json" else HTMLResponse(built.to_html())

    try:
        return await gate.build(key, make)
    except Busy as exc:
        return error_response(503, str(exc), {"Retry-After": str(max(5, s.retry_after_seconds))})
    except ReportError as exc:
        kept = reservoir.windows()
        span = TimeWindow(kept[0].start, kept[-1].end).spec() if kept else None
        return error_response(404 if exc.parameter in windows else 422, str(exc), kept=span)
