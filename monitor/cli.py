"""The ``monitor`` command: serve, replay, status, demo (and ``judge`` train/eval, ``model export``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import typer
from pydantic import SecretStr

from monitor.client import DEFAULT_URL
from monitor.config import TOPIC_STARTS, Settings, load_settings
from monitor.export import report_cli
from monitor.embed.cli import model_app
from monitor.judge.cli import judge_app
from monitor.pipeline.probe_cli import probe_app
from monitor.triage import export_cli

app = typer.Typer(help="LLM safety-drift monitor.", no_args_is_help=True, add_completion=False)

TOKEN_HELP = "Bearer token (or set MONITOR_TOKEN; never printed)."


def _token_option(scope: str) -> Optional[str]:
    return typer.Option(None, "--token", envvar="MONITOR_TOKEN", show_default=False, help=f"Token of scope {scope}. " + TOKEN_HELP)


def _settings_help() -> str:
    lines = ["Every option can be set as an env var MONITOR_<NAME> or in the YAML --config file:\n"]
    for name, field in Settings.model_fields.items():
        if name in TOPIC_STARTS:
            lines.append(f"[{TOPIC_STARTS[name]}]\n")
        default = field.get_default(call_default_factory=True)  # list options have a default_factory
        if isinstance(default, SecretStr):  # a secret's default is made at start (a random key): nothing to show
            shown = " (default: random per process)"
        else:
            shown = "" if default is None and "token" in name else f" (default {default!r})"
        lines.append(f"MONITOR_{name.upper()}{shown}: {field.description}\n")
    return "\n".join(lines)


@app.command(help="Run the service.\n\n" + _settings_help())
def serve(
    host: Optional[str] = typer.Option(None, help="Bind address (default 127.0.0.1, or MONITOR_HOST)."),
    port: Optional[int] = typer.Option(None, help="Port (default 8000, or MONITOR_PORT)."),
    config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="YAML file of options."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    role: Optional[str] = typer.Option(None, help="all (default), or scale-out over Redis: api, worker, detector (or MONITOR_ROLE)."),
) -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import uvicorn

    from monitor.api.app import create_app
    from monitor.api.connections import guarded_http

    from monitor.api.auth import AuthConfigError
    from monitor.redact_urls import redact_urls

    overrides = {k: v for k, v in {"host": host, "port": port, "role": role}.items() if v is not None}
    try:
        settings = load_settings(config, **overrides)
    except ValueError as exc:
        typer.echo(f"configuration error: {redact_urls(str(exc))}", err=True)
        raise typer.Exit(2) from None
    if settings.role != "all" and settings.redis_url is None:
        typer.echo(f"configuration error: role {settings.role!r} needs MONITOR_REDIS_URL", err=True)
        raise typer.Exit(2)
    if settings.role == "worker":
        from monitor.scale.roles import run_worker

        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run_worker(settings)
        return
    factory = None
    if settings.role != "all":
        from monitor.scale.roles import build_detector_node, build_frontend

        factory = build_frontend if settings.role == "api" else build_detector_node
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app_ = create_app(settings, service_factory=factory)
    except AuthConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    guard = app_.state.connection_guard
    guard.warn_if_above_file_limit()
    uvicorn.run(app_, host=settings.host, port=settings.port, log_level=log_level, **guarded_http(guard))


@app.command(name="replay", help="Send a JSONL file of events to a running monitor, honouring event timestamps.")
def replay_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL, one event per line."),
    url: str = typer.Option(DEFAULT_URL, help="Monitor base URL."),
    speed: Optional[float] = typer.Option(None, min=1e-6, help="Replay event-time gaps this many times faster."),
    max_wait: float = typer.Option(
        10.0, min=0.0, help="With --speed, the longest wait before one event, in wall-clock seconds (a far-past or far-apart timestamp waits no longer)."
    ),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible", help="Ignore timestamps' gaps (default when --speed is not given)."),
    batch_size: int = typer.Option(200, min=1, help="Events per request."),
    wait: bool = typer.Option(True, help="Wait until the service has processed everything sent."),
    pace: bool = typer.Option(False, help="Send only while the service judges every event (no sampling); needs read too."),
    token: Optional[str] = _token_option("ingest (and read, for --wait: an admin token has both)"),
) -> None:
    from monitor.replay import read_events, replay, wait_until_processed

    if speed is not None and as_fast_as_possible:
        raise typer.BadParameter("give --speed or --as-fast-as-possible, not both")
    total = sum(1 for line in file.open("rb") if line.strip())
    with typer.progressbar(length=total, label=f"replaying {file.name}") as bar:
        result = replay(
            read_events(file), url, speed=speed, batch_size=batch_size, on_progress=bar.update, token=token, pace=pace, max_pause_s=max_wait
        )
    typer.echo(
        f"sent {result.sent}: accepted {result.accepted} (duplicates {result.duplicates}), "
        f"rejected {result.rejected}, 503 retries {result.retries}"
    )
    if wait:
        status = wait_until_processed(url, token=token)
        typer.echo(f"processed {status['processed']} of {status['accepted']} accepted; judged {status['judged']}")


@app.command(help="Print the running service's status as JSON.")
def status(url: str = typer.Option(DEFAULT_URL, help="Monitor base URL."), token: Optional[str] = _token_option("read")) -> None:
    from monitor.cli_http import fetch
    from monitor.redact_urls import safe_url

    body = fetch(url, "/v1/status", {}, token, timeout=5.0, action="status", usage_statuses=())
    try:
        status = json.loads(body)
    except ValueError:  # a 200 from something else at that address (a proxy's page)
        typer.echo(f"status failed: the answer from {safe_url(url)}/v1/status is not JSON; is --url the monitor?", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(status, indent=2))


@app.command(help="Replay the built-in demo stream against a running monitor and show what it found.")
def demo(
    url: str = typer.Option(DEFAULT_URL, help="Monitor base URL."),
    events: int = typer.Option(8000, min=200, help="Events in the demo stream (the shift starts at 70%)."),
    seed: int = typer.Option(0, help="Seed of the demo stream."),
    token: Optional[str] = _token_option("admin (or one token with ingest and read)"),
) -> None:
    import httpx

    from monitor.client import bearer_headers

    from monitor.demo import demo_stream
    from monitor.replay import replay, wait_until_processed

    stream = demo_stream(n_events=events, seed=seed)
    with typer.progressbar(length=len(stream), label="demo stream") as bar:
        replay(iter(stream), url, on_progress=bar.update, token=token, pace=True)  # judge every event: no sampling
    status_body = wait_until_processed(url, token=token)
    typer.echo(f"processed {status_body['processed']} events, judged {status_body['judged']}")
    alerts = httpx.get(url.rstrip("/") + "/v1/alerts", params={"status": "all"}, headers=bearer_headers(token)).json()["alerts"]
    if not alerts:
        typer.echo(
            "no alert yet: the detectors are still learning their reference (20,000 events by default); "
            "for the demo, start the service with --config deploy/demo.yaml"
        )
    typer.echo(f"{len(alerts)} alert(s):")
    for a in alerts:
        typer.echo(f"  [{a['status']}] {a['kind']} {a['scope']} {a['category'] or ''}: {a['summary']}")
    typer.echo(f"metrics: {url.rstrip('/')}/metrics   alerts: {url.rstrip('/')}/v1/alerts")


app.command(name="report")(report_cli.report)
app.command(name="export")(export_cli.export)
app.add_typer(judge_app, name="judge")
app.add_typer(model_app, name="model")
app.add_typer(probe_app, name="probe")


if __name__ == "__main__":
    app()
