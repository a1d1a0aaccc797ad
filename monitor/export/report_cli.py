"""``monitor report``: fetch a drift report from a running monitor (the reservoir lives in its process)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from monitor.client import DEFAULT_URL

WINDOW_HELP = "Event-time window: START/END (ISO-8601, epoch seconds, now, now-2h) or last:DURATION (last:1h)."


def report(
    reference: str = typer.Option(..., help="Reference window. " + WINDOW_HELP),
    current: str = typer.Option(..., help="Current window. " + WINDOW_HELP),
    out: Path = typer.Option(..., dir_okay=False, help="File to write; .json gives the JSON form unless --format says otherwise."),
    format: Optional[str] = typer.Option(None, help="html or json (default: from --out's extension, else html)."),
    scope: str = typer.Option("global", help="global, model=NAME or route=NAME."),
    url: str = typer.Option(DEFAULT_URL, help="Monitor base URL."),
    timeout: float = typer.Option(600.0, min=1.0, help="Seconds to wait for the report (building one takes seconds)."),
    token: Optional[str] = typer.Option(None, envvar="MONITOR_TOKEN", show_default=False, help="Bearer token of scope read (or set MONITOR_TOKEN)."),
) -> None:
    """Build an Evidently drift report comparing two windows and save it."""
    import httpx

    from monitor.client import bearer_headers

    fmt = format or ("json" if out.suffix.lower() == ".json" else "html")
    if fmt not in ("html", "json"):
        raise typer.BadParameter(f"must be html or json, got {fmt!r}", param_hint="--format")
    params = {"reference": reference, "current": current, "format": fmt, "scope": scope}
    try:
        resp = httpx.get(url.rstrip("/") + "/v1/reports", params=params, timeout=timeout, headers=bearer_headers(token))
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the monitor at {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text
        typer.echo(f"report failed ({resp.status_code}): {message}", err=True)
        raise typer.Exit(2 if resp.status_code == 422 else 1)
    out.write_bytes(resp.content)
    typer.echo(f"wrote {out} ({len(resp.content):,} bytes)")
