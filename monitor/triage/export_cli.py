"""``monitor export``: fetch what was triaged from a running monitor (its labels live in its state store)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from monitor.cli_http import fetch
from monitor.client import DEFAULT_URL
from monitor.triage.export import FORMATS

def export(
    out: Path = typer.Option(..., dir_okay=False, help="File to write."),
    format: Optional[str] = typer.Option(None, help="jsonl (labelled events, shared-data record format), pairs (preference "
                                                    "pairs) or csv; default: csv for a .csv file, else jsonl."),
    raw: bool = typer.Option(False, help="Raw texts instead of redacted ones (admin token, and only with store_raw_text)."),
    url: str = typer.Option(DEFAULT_URL, help="Monitor base URL."),
    token: Optional[str] = typer.Option(None, envvar="MONITOR_TOKEN", show_default=False,
                                        help="Bearer token of scope read (admin for --raw), or set MONITOR_TOKEN; never printed."),
) -> None:
    """Write the labelled events, preference pairs or CSV of the triage console to a file."""
    fmt = format or ("csv" if out.suffix.lower() == ".csv" else "jsonl")
    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}, got {fmt!r}", param_hint="--format")
    content = fetch(url, "/v1/export", {"format": fmt, "raw": str(raw).lower()}, token, 120.0, "export", (403, 409, 422))
    out.write_bytes(content)
    lines = content.count(b"\n") - (1 if fmt == "csv" else 0)
    typer.echo(f"wrote {out} ({lines:,} {'pairs' if fmt == 'pairs' else 'labelled events'})")
