"""``POST /v1/feedback``: labels for judged events (human review, downstream systems).

A label says whether an event's prompt was unsafe and/or its taxonomy category; the concept-shift
detector compares it with what the judge said. Labels in another label set (for example
``openai-moderation`` codes) are mapped into the taxonomy with ``label_set``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from monitor.api.adapter_ingest import parse_off_loop, read_body, refuse_all
from monitor.api.auth import Principal, require
from monitor.api.deps import error_response, get_service, refuse_body
from monitor.api.rate_limit import SourceLimiter
from monitor.api.responses import AUTH, BODY, FeedbackOut, errors
from monitor.drift.feedback_disagreement import Feedback
from monitor.ingest.parsing import BodyError, Rejection, parse_body, reject_future
from monitor.ingest.safejson import JsonLimits
from monitor.ingest.schema import parse_timestamp
from monitor.backend import MonitorBackend
from monitor.taxonomy.mapping import get_mapping

router = APIRouter()


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=256, description="The judged event this label is for.")
    unsafe: StrictBool | None = Field(None, description="Whether the prompt is unsafe (true or false: not \"yes\", not 0).")
    category: str | None = Field(None, max_length=128, description="Taxonomy category id (or a label of `label_set`).")
    label_set: str | None = Field(None, max_length=128, description="Map `category` from this label set into the taxonomy.")
    source: str | None = Field(
        None,
        max_length=128,
        description="Who labelled it (free text, kept as a note after the token's name: the token decides the source).",
    )
    timestamp: float | str | None = Field(None, description="When it was labelled (RFC 3339 or epoch s); the event's time when absent.")
    sender: str | None = Field(
        None, max_length=64, description="Name of the ingest token that sent the event (event ids are unique per sender); "
        "absent: the event judged last under this id.",
    )

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> float | None:
        return parse_timestamp(value)

    def to_feedback(self, source: str = "") -> Feedback:
        """The label, its source the sending token's name (``source`` as given is only a note after it)."""
        category = self.category
        if self.label_set is not None and category is not None:
            try:
                mapping = get_mapping(self.label_set)
            except ValueError as exc:
                raise ValueError(f"label_set: {exc}") from None
            if category not in mapping:
                raise ValueError(f"category: label {category!r} of label set {self.label_set!r} has no mapping")
            category = mapping[category]
        return Feedback(self.event_id, self.unsafe, category, source or self.source, self.timestamp, self.sender)  # type: ignore[arg-type]


REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/FeedbackIn"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/FeedbackIn"}},
                    {"type": "object", "properties": {"feedback": {"type": "array", "items": {"$ref": "#/components/schemas/FeedbackIn"}}}, "required": ["feedback"]},
                ]
            }
        },
        "application/x-ndjson": {"schema": {"type": "string", "description": "one FeedbackIn JSON object per line"}},
    },
}


def _limiter(request: Request) -> SourceLimiter:
    state = request.app.state
    limiter = getattr(state, "feedback_limiter", None)
    if limiter is None:
        s = state.settings
        limiter = state.feedback_limiter = SourceLimiter(s.feedback_rate_per_source, s.feedback_burst_per_source)
    return limiter


def _count_refused(service: MonitorBackend, status: str, labels: int) -> None:
    """Labels refused here never reach the detector, which counts the others by status: without this
    a flood of refused labels (a client ignoring 429s, a broken label mapping) would be invisible."""
    service.metrics.feedback.labels(status=status).inc(labels)


@router.post(
    "/v1/feedback",
    status_code=202,
    summary="Labels for judged events (admin tokens only)",
    description="One label, an array, `{\"feedback\": [...]}` or NDJSON. Answers 202 with counts by status "
    "(`matched`, `unknown_event`: not judged yet or forgotten, `duplicate`: already labelled by this source, "
    "`corrected`: relabelled by another source, `capped`: this source already supplies `feedback_max_source_share` "
    "of the category's trials) and per-item rejections. Each label's source is the sending token's name. "
    "**429** with `Retry-After` past `feedback_rate_per_source` labels per second per source (nothing taken).",
    response_model=FeedbackOut,
    responses=errors(*BODY, *AUTH, 409, 429, 503),
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def feedback(
    request: Request, principal: Principal = Depends(require("admin")), service: MonitorBackend = Depends(get_service)
) -> Response:
    settings = request.app.state.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
        parsed = await parse_off_loop(
            body,
            parse_body,
            body,
            request.headers.get("content-type"),
            settings.max_events_per_request,
            FeedbackIn,
            "feedback",
            JsonLimits.of(settings),
            item="label",
        )
    except BodyError as exc:
        return refuse_body(request, service, exc)
    parsed = reject_future(parsed, time.time() + settings.max_future_skew_seconds)
    offered = len(parsed.events) + len(parsed.rejected)
    if len(parsed.events) > settings.feedback_burst_per_source:
        _count_refused(service, "too_many", offered)
        return error_response(
            413, f"feedback: {len(parsed.events)} labels in one request exceed feedback_burst_per_source={settings.feedback_burst_per_source}; split the batch"
        )
    wait = _limiter(request).take(principal.name, len(parsed.events))
    if wait is not None:
        _count_refused(service, "rate_limited", offered)
        return error_response(
            429,
            f"feedback: source {principal.name!r} sent more than feedback_rate_per_source={settings.feedback_rate_per_source:g} "
            f"labels/s (burst {settings.feedback_burst_per_source}); nothing from this request was taken",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    source = principal.name if request.app.state.auth.enabled else ""
    rejected = list(parsed.rejected)
    labels: list[tuple[int, Feedback]] = []
    for index, item in parsed.events:
        try:
            labels.append((index, item.to_feedback(source)))
        except ValueError as exc:
            rejected.append(Rejection(index, str(exc)))
    try:
        statuses, invalid = await asyncio.to_thread(service.observe_feedback, labels)  # takes the worker's state lock
    except LookupError as exc:
        return error_response(409, str(exc))
    rejected += invalid
    _count_refused(service, "invalid", len(rejected))
    rejected.sort(key=lambda r: r.index)
    if not labels or len(invalid) == len(labels):
        return refuse_all(rejected, parsed.single, "feedback: every label in the batch is invalid")
    return JSONResponse({**statuses, "rejected": [r.as_json() for r in rejected]}, status_code=202)
