"""Shared route helpers: error bodies and access to the running service."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from monitor.pipeline.service import MonitorService


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """Every error body is ``{"error": "<field>: <what is wrong>", ...}``."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class NotReady(Exception):
    """Raised by :func:`get_service` before the model is loaded; the app answers 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def get_service(request: Request) -> MonitorService:
    """FastAPI dependency: the running service, or 503 while it loads."""
    holder = request.app.state.holder
    service = holder["service"]
    if service is None:
        raise NotReady(holder["error"] or "the model is still loading", request.app.state.settings.retry_after_seconds)
    return service
