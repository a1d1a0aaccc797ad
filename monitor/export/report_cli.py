"""``monitor report``: fetch a drift report from a running monitor (the reservoir lives in its process)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from monitor.cli_http import fetch
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
    fmt = format or ("json" if out.suffix.lower() == ".json" else "html")
    if fmt not in ("html", "json"):
        raise typer.BadParameter(f"must be html or json, got {fmt!r}", param_hint="--format")
    params = {"reference": reference, "current": current, "format": fmt, "scope": scope}
    content = fetch(url, "/v1/reports", params, token, timeout, "report")
    out.write_bytes(content)
    typer.echo(f"wrote {out} ({len(content):,} bytes)")
