"""``POST /v1/ingest/litellm``: LiteLLM's ``generic_api`` logging callback (and :class:`MonitorLogger`)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from monitor.api.adapter_ingest import all_rejected, busy_response, parse_off_loop, read_body, refuse_all, skipped_probe_name, submit
from monitor.api.auth import require, sender
from monitor.api.deps import get_service, refuse_body
from monitor.api.responses import AUTH, BODY, LiteLLMIngestOut, errors
from monitor.ingest.parsing import BodyError
from monitor.ingest.safejson import JsonLimits
from monitor.integrations.litellm import LiteLLMAdapter, split_body
from monitor.backend import MonitorBackend

router = APIRouter()
EVERY_PAYLOAD_INVALID = "items: every LiteLLM payload in the batch is invalid"

DOC = """Ingest LiteLLM `StandardLoggingPayload` logs, as LiteLLM's `generic_api` callback posts them
in any `log_format` (one object, a JSON array, or NDJSON; gzip allowed). Never waits for the model.

Answers **202** `{"accepted", "duplicates", "rejected": [{"index", "error"}], "redacted", "ignored"}`:
`redacted` calls (LiteLLM's `redacted-by-litellm`) are counted, not judged; `ignored` items are calls
that generate no text (embeddings, images). **400** when the body holds no StandardLoggingPayload,
**413**/**415** as `/v1/events`, **422** when a single payload (or every one) is invalid,
**503** with `Retry-After` when the queue is full (resend).
"""


REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/LiteLLMPayload"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/LiteLLMPayload"}},
                ]
            }
        },
        "application/x-ndjson": {"schema": {"type": "string", "description": "one LiteLLMPayload JSON object per line"}},
    },
}

#: The StandardLoggingPayload fields the monitor reads (others are allowed and ignored).
PAYLOAD_SCHEMA = {
    "type": "object",
    "description": "LiteLLM StandardLoggingPayload (only the fields read are listed; others are ignored).",
    "required": ["messages"],
    "anyOf": [{"required": ["id"]}, {"required": ["litellm_call_id"]}, {"required": ["call_type"]}],
    "properties": {
        "id": {"type": ["string", "integer"], "description": "the event id (an integer as its decimal form); a resend with it is a duplicate"},
        "litellm_call_id": {"type": ["string", "integer"]},
        "call_type": {"type": "string"},
        "messages": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "response": {"oneOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]},
        "model": {"type": "string"},
        "model_group": {"type": "string"},
        "startTime": {"type": "number"},
        "endTime": {"type": "number"},
        "metadata": {"type": "object"},
        "end_user": {"type": "string"},
    },
    "additionalProperties": True,
}


@router.post(
    "/v1/ingest/litellm",
    status_code=202,
    summary="Ingest LiteLLM logs",
    description=DOC,
    dependencies=[Depends(require("ingest"))],
    response_model=LiteLLMIngestOut,
    responses=errors(*BODY, *AUTH, 503),
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def ingest_litellm(request: Request, service: MonitorBackend = Depends(get_service)) -> Response:
    arrival = time.time()
    settings = service.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
        items, single = await parse_off_loop(
            body, split_body, body, request.headers.get("content-type"), settings.max_events_per_request, JsonLimits.of(settings)
        )
    except BodyError as exc:
        return refuse_body(request, service, exc)
    adapted = LiteLLMAdapter(settings.litellm_labels, settings.end_user_hash_salt, skipped_probe_name(settings)).adapt(items, single=single)
    outcome = await submit(service, adapted, arrival, source="litellm", sender=sender(request))
    if not adapted.events and adapted.rejected:
        return refuse_all(adapted.rejected, single, EVERY_PAYLOAD_INVALID)
    busy = busy_response(outcome, settings.retry_after_seconds)
    if busy is not None:
        return busy
    # An ignored call (a canary probe's) or a redacted one was not invalid: a batch that held one was not all invalid.
    refused = None if adapted.ignored or adapted.redacted else all_rejected(outcome, single, EVERY_PAYLOAD_INVALID)
    if refused is not None:
        return refused
    rejected = [r.as_json() for r in outcome.rejected]  # the adapter's and the service's
    return JSONResponse(
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "rejected": rejected,
            "redacted": adapted.redacted,
            "ignored": adapted.ignored,
        },
        status_code=202,
    )
