"""The CLI commands that fetch from a running monitor (``monitor status``, ``monitor report``, ``monitor export``).

They answer the same way: the body on 200; otherwise the monitor's own ``error`` message on stderr
and exit status 2 for a request the user can fix (``usage_statuses``), 1 for anything else
(unreachable monitor, server error). The token goes in the header and is never printed, nor is a password in the URL.
"""

from __future__ import annotations

from typing import Any, Iterable

import httpx
import typer

from monitor.client import bearer_headers
from monitor.redact_urls import redact_urls, safe_url


def fetch(url: str, path: str, params: dict[str, Any], token: str | None, timeout: float, action: str,
          usage_statuses: Iterable[int] = (422,)) -> bytes:
    """GET ``url + path`` for a command named ``action`` (in messages); exits on anything but 200."""
    try:
        resp = httpx.get(url.rstrip("/") + path, params=params, timeout=timeout, headers=bearer_headers(token))
    except httpx.HTTPError as exc:
        # Only scheme, host and port: a URL may carry a password (``http://user:pw@host``), as may the error's text.
        typer.echo(f"cannot reach the monitor at {safe_url(url)}: {type(exc).__name__}: {redact_urls(str(exc))}", err=True)
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        try:
            body = resp.json()
        except ValueError:  # not JSON: a proxy's page, say
            body = None
        message = body.get("error", resp.text) if isinstance(body, dict) else resp.text
        typer.echo(f"{action} failed ({resp.status_code}): {message}", err=True)
        raise typer.Exit(2 if resp.status_code in set(usage_statuses) else 1)
    return resp.content
