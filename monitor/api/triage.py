"""Triage over JSON: label clusters, act on alerts, revert the online judge layer, read the audit log, export.

Reading needs scope ``read``; acting needs ``admin`` (the bearer header: no cookie reaches these
routes, so a cross-site form cannot post to them). Bad input is a 4xx whose ``error`` names the
field; the console's own checks (:class:`~monitor.triage.console.TriageError`) come back the same way.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, ValidationError

from monitor.api.adapter_ingest import read_body
from monitor.api.auth import Principal, require
from monitor.api.deps import error_response, get_service, refuse_body
from monitor.api.responses import AUTH, errors
from monitor.ingest.parsing import JSON_TYPES, BodyError, media_type, unsupported_media
from monitor.ingest.safejson import JsonLimitError, JsonLimits, loads
from monitor.pipeline.service import MonitorService
from monitor.pipeline.triaging import triage_of
from monitor.triage.console import MAX_REASON, SplitLabel, Triage, TriageError
from monitor.triage.export import FORMATS, render

router = APIRouter()
_OBJECT = {200: {"content": {"application/json": {"schema": {"type": "object"}}}}}
MEDIA = {"jsonl": "application/x-ndjson", "pairs": "application/x-ndjson", "csv": "text/csv"}
MAX_ACTION_BYTES = 64 * 1024
M = TypeVar("M", bound=BaseModel)


def get_triage(service: MonitorService = Depends(get_service)) -> Triage | None:
    """The service's triage; None in the scale-out roles, which do not run it (routes answer 409)."""
    return triage_of(service)


def unavailable() -> Response:
    return error_response(409, "triage: runs in the embedded service only (role all), not in the scale-out roles")


class SplitItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=1, max_length=256)
    category: str = Field(min_length=1, max_length=64, description="'safe' or a category id.")


class ClusterActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["new_category", "existing_category", "benign", "split"]
    name: str | None = Field(None, max_length=48, description="new_category: the new category's id ([a-z][a-z0-9_]{2,47}).")
    description: str | None = Field(None, max_length=MAX_REASON)
    category: str | None = Field(None, max_length=64, description="existing_category: a category id.")
    labels: list[SplitItem] = Field(default_factory=list, max_length=100, description="split: one label per exemplar.")
    reason: str = Field("", max_length=MAX_REASON, description="Why (kept, redacted, in the audit log).")


class AlertActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["acknowledge", "silence", "false_alarm"]
    duration_seconds: StrictFloat | None = Field(None, description="silence: 60 s to 30 days (a JSON number: not \"120\").")
    reason: str = Field("", max_length=MAX_REASON)


class RevertIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=MAX_REASON)


def inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined, for ``openapi_extra`` (no component to register)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return walk(defs[ref.rsplit("/", 1)[1]]) if ref.startswith("#/$defs/") else {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node
    return walk(schema)


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(model.model_json_schema())}}}}


async def parse_action(request: Request, model: type[M]) -> M | Response:
    """The body as ``model``, or the 4xx naming the field. Read here rather than by FastAPI, so that the
    token is checked first and a body that is not UTF-8 JSON gets this API's ``{"error": ...}`` 400."""
    try:
        kind = media_type(request.headers.get("content-type"))
        if kind not in JSON_TYPES:
            raise unsupported_media(kind, "application/json")
        body = await read_body(request, MAX_ACTION_BYTES, f"the triage action limit of {MAX_ACTION_BYTES} bytes")
        data = loads(body, JsonLimits.of(request.app.state.settings))
    except BodyError as exc:
        return refuse_body(request, request.app.state.holder["service"], exc)
    except (JsonLimitError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = str(exc) if isinstance(exc, JsonLimitError) else f"body: not UTF-8 JSON ({type(exc).__name__})"
        return refuse_body(request, request.app.state.holder["service"], BodyError(400, message))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        return error_response(422, f"{'.'.join(['body', *map(str, first['loc'])])}: {first['msg']}")


async def run_action(action: Callable[[], dict[str, Any]]) -> Response:
    """Run a triage action off the event loop (it refits and writes the store); its refusal as a 4xx."""
    try:
        return JSONResponse(await asyncio.to_thread(action))
    except TriageError as exc:
        return error_response(exc.status, exc.message)


def overview(triage: Triage) -> dict[str, Any]:
    state = triage.state
    return {
        "judge_version": triage.judge.version,
        "base_judge_version": triage.judge.base_version,
        "revision": state.model.revision,
        "revisions": [m.revision for m in state.models],
        "learned_categories": state.categories,
        "labels": len(state.labels),
        "cluster_labels": dict(state.clusters),
        "alert_marks": {k: vars(v) for k, v in state.marks.items()},
        "audit_dropped": state.audit_dropped,
    }


@router.get("/v1/triage", summary="Triage state: judge version and revisions, learned categories, marks",
            dependencies=[Depends(require("read"))], responses={**_OBJECT, **errors(*AUTH, 409, 503)})
async def triage_state(triage: Triage | None = Depends(get_triage)) -> Response:
    if triage is None:
        return unavailable()
    return JSONResponse(overview(triage))


@router.get("/v1/triage/audit", summary="The audit log of triage actions, newest first",
            dependencies=[Depends(require("read"))], responses={**_OBJECT, **errors(*AUTH, 409, 422, 503)})
async def audit(limit: int = Query(200, ge=1, le=5000), triage: Triage | None = Depends(get_triage)) -> Response:
    if triage is None:
        return unavailable()
    return JSONResponse({"entries": triage.audit(limit), "dropped": triage.state.audit_dropped})


@router.post("/v1/clusters/{cluster_id}/triage", summary="Label an emerging cluster (new category, existing, benign, split)",
             openapi_extra=body_of(ClusterActionIn), responses={**_OBJECT, **errors(*AUTH, 400, 404, 408, 409, 413, 415, 422, 503)})
async def label_cluster(request: Request, cluster_id: str, who: Principal = Depends(require("admin")),
                        triage: Triage | None = Depends(get_triage)) -> Response:
    if triage is None:
        return unavailable()
    body = await parse_action(request, ClusterActionIn)
    if isinstance(body, Response):
        return body
    labels = [SplitLabel(i.event_id, i.category) for i in body.labels]
    return await run_action(lambda: triage.label_cluster(who.name, cluster_id, body.action, name=body.name, category=body.category,
                                                         description=body.description, labels=labels, reason=body.reason))


@router.post("/v1/alerts/{alert_id}/triage", summary="Acknowledge, silence or resolve an alert as a false alarm",
             openapi_extra=body_of(AlertActionIn), responses={**_OBJECT, **errors(*AUTH, 400, 404, 408, 409, 413, 415, 422, 503)})
async def act_on_alert(request: Request, alert_id: str, who: Principal = Depends(require("admin")),
                       triage: Triage | None = Depends(get_triage)) -> Response:
    if triage is None:
        return unavailable()
    body = await parse_action(request, AlertActionIn)
    if isinstance(body, Response):
        return body
    return await run_action(lambda: triage.act_on_alert(who.name, alert_id, body.action, seconds=body.duration_seconds,
                                                        reason=body.reason))


@router.post("/v1/triage/revert", summary="Restore the judge of the previous triage revision",
             openapi_extra=body_of(RevertIn), responses={**_OBJECT, **errors(*AUTH, 400, 408, 409, 413, 415, 422, 503)})
async def revert(request: Request, who: Principal = Depends(require("admin")), triage: Triage | None = Depends(get_triage)) -> Response:
    if triage is None:
        return unavailable()
    body = await parse_action(request, RevertIn)
    if isinstance(body, Response):
        return body
    return await run_action(lambda: triage.revert(who.name, body.reason))


def export_response(request: Request, triage: Triage, fmt: str, raw: bool, who: Principal) -> Response:
    """The export as a download; raw texts only for an admin and only where they were kept."""
    if fmt not in FORMATS:
        return error_response(422, f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if raw and "admin" not in who.scopes:
        return error_response(403, "raw: unredacted texts need a token of scope admin", required_scope="admin")
    if raw and not request.app.state.settings.store_raw_text:
        return error_response(409, "raw: store_raw_text is off, so only redacted texts were kept")
    body = render(list(triage.state.labels.values()), fmt, raw)
    name = f"triage-{'pairs' if fmt == 'pairs' else 'labels'}.{'csv' if fmt == 'csv' else 'jsonl'}"
    return PlainTextResponse(body, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/v1/export", summary="Labelled events (jsonl, the shared-data record format), preference pairs, or CSV",
            response_class=Response,
            responses={200: {"content": {m: {"schema": {"type": "string"}} for m in sorted(set(MEDIA.values()))}},
                       **errors(*AUTH, 403, 409, 422, 503)})
async def export(request: Request, format: str = Query("jsonl", max_length=16, description="jsonl, pairs or csv"),
                 raw: bool = Query(False, description="Raw texts: admin only, and only with store_raw_text."),
                 who: Principal = Depends(require("read")), triage: Triage | None = Depends(get_triage)) -> Response:
    if triage is None:
        return unavailable()
    return export_response(request, triage, format, raw, who)
