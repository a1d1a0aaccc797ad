"""``GET /v1/clusters``: emerging clusters of unsafe traffic that match no known category."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from monitor.api.auth import require
from monitor.api.deps import error_response, get_service
from monitor.api.responses import AUTH, errors
from monitor.pipeline.service import MonitorService

router = APIRouter()


_OBJECT = {200: {"content": {"application/json": {"schema": {"type": "object"}}}}}


@router.get(
    "/v1/clusters",
    summary="Emerging clusters with evidence (size, growth, share, keywords, exemplars)",
    dependencies=[Depends(require("read"))],
    responses={**_OBJECT, **errors(*AUTH, 409, 422, 503)},
)
async def clusters(scope: str = Query("global", max_length=300), service: MonitorService = Depends(get_service)) -> Response:
    found = await asyncio.to_thread(service.clusters, scope)  # waits for the worker's state lock: off the event loop
    if found is None:
        return error_response(409, "clusters: the emerging_clusters detector is not configured")
    return JSONResponse({"scope": scope, "clusters": [c.to_dict() for c in found]})


@router.get(
    "/v1/clusters/{cluster_id}",
    summary="One cluster (ids are stable across restarts)",
    dependencies=[Depends(require("read"))],
    responses={**_OBJECT, **errors(*AUTH, 404, 503)},
)
async def cluster(cluster_id: str, service: MonitorService = Depends(get_service)) -> Response:
    found = await asyncio.to_thread(service.find_cluster, cluster_id)
    if found is None:
        return error_response(404, f"cluster_id: no cluster {cluster_id!r}")
    return JSONResponse(found.to_dict())
