"""``GET /v1/clusters``: emerging clusters of unsafe traffic that match no known category."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from monitor.api.auth import Principal, require
from monitor.api.deps import checked_scope, error_response, get_service
from monitor.api.responses import AUTH, errors
from monitor.backend import MonitorBackend

router = APIRouter()


RAW_HELP = "Exemplars as sent (admin token, and only when store_raw_text keeps them); default: redacted."


def _raw_refused(request: Request, raw: bool, who: Principal) -> Response | None:
    """Raw user text leaves the process only for an admin, and only where the operator chose to keep it."""
    if not raw:
        return None
    if "admin" not in who.scopes:
        return error_response(403, "raw: unredacted exemplars need a token of scope admin", required_scope="admin")
    if not request.app.state.settings.store_raw_text:
        return error_response(409, "raw: store_raw_text is off, so only redacted exemplars were kept")
    return None


_OBJECT = {200: {"content": {"application/json": {"schema": {"type": "object"}}}}}


@router.get(
    "/v1/clusters",
    summary="Emerging clusters with evidence (size, growth, share, keywords, exemplars)",
    responses={**_OBJECT, **errors(*AUTH, 409, 422, 503)},
)
async def clusters(request: Request, raw: bool = Query(False, description=RAW_HELP), who: Principal = Depends(require("read")),
                   scope: str = Depends(checked_scope), service: MonitorBackend = Depends(get_service)) -> Response:
    refused = _raw_refused(request, raw, who)
    if refused is not None:
        return refused
    found = await asyncio.to_thread(service.clusters, scope, raw)  # waits for the worker's state lock: off the event loop
    if found is None:
        return error_response(409, "clusters: the emerging_clusters detector is not configured")
    return JSONResponse({"scope": scope, "clusters": [c.to_dict() for c in found]})


@router.get(
    "/v1/clusters/{cluster_id}",
    summary="One cluster (ids are stable across restarts)",
    responses={**_OBJECT, **errors(*AUTH, 404, 409, 503)},
)
async def cluster(request: Request, cluster_id: str, raw: bool = Query(False, description=RAW_HELP),
                  who: Principal = Depends(require("read")), service: MonitorBackend = Depends(get_service)) -> Response:
    refused = _raw_refused(request, raw, who)
    if refused is not None:
        return refused
    found = await asyncio.to_thread(service.find_cluster, cluster_id, raw)
    if found is None:
        return error_response(404, f"cluster_id: no cluster {cluster_id!r}")
    return JSONResponse(found.to_dict())
