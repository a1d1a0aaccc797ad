"""OpenAPI documentation of every status a route can answer, and the bodies it answers with.

Why: clients (and schemathesis) read the schema to know what to expect; a route documenting only
its 202 hides the 401/413/503 a sender must handle.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RejectionOut(BaseModel):
    index: int = Field(description="Position of the item in the request.")
    error: str = Field(description="`field: what is wrong`.")


class ErrorOut(BaseModel):
    """Every error body: ``error`` names the field (or header) at fault."""

    error: str = Field(description="`field: what is wrong`.")
    rejected: list[RejectionOut] | None = Field(None, description="Per-item errors, when items were at fault.")
    required_scope: str | None = Field(None, description="401/403: the scope the endpoint needs.")


class IngestOut(BaseModel):
    accepted: int = Field(description="Events taken (re-sent ids included: they need no resend).")
    duplicates: int = Field(description="Of those, ids already seen.")
    rejected: list[RejectionOut]


class LiteLLMIngestOut(IngestOut):
    redacted: int = Field(description="Calls LiteLLM redacted: counted, not judged.")
    ignored: int = Field(description="Calls that generate no text (embeddings, images).")


class FeedbackOut(BaseModel):
    """Counts by status (embedded mode) or ``queued`` (scale-out: matched later by the detector owners)."""

    matched: int | None = Field(None, description="Labels matched to a judged event and tested.")
    unknown_event: int | None = Field(None, description="Labels for events not judged yet or forgotten.")
    duplicate: int | None = Field(None, description="Repeated labels from the same source.")
    corrected: int | None = Field(None, description="Labels from another source replacing an earlier label; tested.")
    capped: int | None = Field(None, description="Matched labels not tested: their source already supplies feedback_max_source_share of the category's trials.")
    queued: int | None = Field(None, description="Scale-out: labels queued for the detector owners.")
    rejected: list[RejectionOut]


_DESCRIPTIONS = {
    400: "Body unusable: not JSON/UTF-8, empty, nested deeper than max_json_depth, or an integer longer than max_int_digits.",
    401: "No bearer token, or an unknown one (`WWW-Authenticate` says which scope is needed).",
    403: "The token lacks the endpoint's scope.",
    404: "Not found (the body names what).",
    408: "The body did not arrive within body_timeout_seconds of the request's start.",
    409: "The feature is not configured.",
    413: "Body larger than max_body_bytes (or than any route accepts, while max_inflight_body_bytes is full), or more items than max_events_per_request.",
    415: "Content-Type or Content-Encoding not supported.",
    422: "Invalid: the body (or every item) fails validation; `error` names the field.",
    429: "Too many requests (feedback: this source's rate limit); see Retry-After.",
    503: "Not ready (model loading), queue full, too many request bodies held at once (max_inflight_body_bytes), state store "
         "unavailable or reports busy; see Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the error statuses ``codes``."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}


AUTH = (401, 403)
BODY = (400, 408, 413, 415, 422)
