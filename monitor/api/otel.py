"""``POST /v1/traces``: an OTLP/HTTP trace receiver that keeps only LLM spans."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from monitor.api.adapter_ingest import busy_response, parse_off_loop, read_body, skipped_probe_name, submit
from monitor.api.auth import require, sender
from monitor.api.deps import get_service, refuse_body
from monitor.api.responses import AUTH, BODY, errors
from monitor.ingest.parsing import BodyError, media_type
from monitor.ingest.safejson import JsonLimits
from monitor.integrations.otel import JSON_TYPE, OtelAdapter, encode_response, parse_request
from monitor.backend import MonitorBackend

router = APIRouter()

DOC = """OTLP/HTTP trace export (`application/x-protobuf` or `application/json`, gzip allowed): point an
OpenTelemetry SDK or Collector `otlphttp` exporter here. LLM spans (GenAI semantic conventions,
OpenInference) become events; other spans are ignored and counted. Never waits for the model.

Answers **200** with an `ExportTraceServiceResponse` in the request's encoding, as OTLP requires;
`partial_success.rejected_spans` counts LLM spans that could not become events, with the first errors.
**400** for a body that is not an OTLP trace request, **413**/**415** as `/v1/events`,
**503** with `Retry-After` when the queue is full (OTLP exporters retry it).
"""


REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "OTLP/JSON ExportTraceServiceRequest",
                "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
            }
        },
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary", "description": "OTLP protobuf ExportTraceServiceRequest"}},
    },
}
RESPONSE = {
    "description": "ExportTraceServiceResponse (partial_success counts LLM spans that could not become events).",
    "content": {
        "application/json": {"schema": {"type": "object", "properties": {"partialSuccess": {"type": "object"}}}},
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
    },
}


@router.post(
    "/v1/traces",
    summary="Receive OTLP traces",
    description=DOC,
    dependencies=[Depends(require("ingest"))],
    response_class=Response,
    responses={200: RESPONSE, **errors(*BODY, *AUTH, 503)},
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def receive_traces(request: Request, service: MonitorBackend = Depends(get_service)) -> Response:
    arrival = time.time()
    settings = service.settings
    content_type = request.headers.get("content-type")
    try:
        body = await read_body(request, settings.max_body_bytes)
        traces = await parse_off_loop(body, parse_request, body, content_type, JsonLimits.of(settings))
    except BodyError as exc:
        return refuse_body(request, service, exc)
    adapted = OtelAdapter(settings.end_user_hash_salt, skipped_probe_name(settings)).adapt(traces)
    llm_spans = len(adapted.events) + len(adapted.rejected)
    if llm_spans > settings.max_events_per_request:  # refused whole, counted like a body over the limits
        message = f"spans: {llm_spans} LLM spans in one request exceed the limit of {settings.max_events_per_request}; lower the exporter's batch size"
        return refuse_body(request, service, BodyError(413, message))
    outcome = await submit(service, adapted, arrival, source="otel", sender=sender(request))
    busy = busy_response(outcome, settings.retry_after_seconds)
    if busy is not None:
        return busy
    content, kind = encode_response([r.error for r in outcome.rejected], as_json=media_type(content_type) == JSON_TYPE)  # adapter and service rejections
    return Response(content, media_type=kind)
