"""``monitor probe run``: probe one model now, from the command line, and say what it did.

Why a command next to the schedule: before turning probing on (or after a model update) an
operator wants to see, once, which probes a model refuses or answers, with the same judge the
service uses. The target is given on the command line; nothing else is ever contacted.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Optional

import typer
from prometheus_client import CollectorRegistry

from monitor.redact_urls import redact_urls

probe_app = typer.Typer(help="Canary probes: ask a model known questions and judge its answers.", no_args_is_help=True)


@probe_app.command(name="run", help="Ask --target the configured probe sets for --rounds rounds and print what it refused and answered. "
                   "The API key comes from MONITOR_PROBE_API_KEY or MONITOR_PROBE_API_KEY_FILE (never printed).")
def run(
    target: str = typer.Option(..., help="The model's OpenAI-compatible base URL including /v1 (or MODEL@URL)."),
    model: Optional[str] = typer.Option(None, help="Model name to request (needed when --target is a bare URL)."),
    probe_set: Optional[list[str]] = typer.Option(None, "--set", help="Probe set name or YAML/JSONL path (repeatable; default: probe_sets)."),
    rounds: int = typer.Option(1, min=1, max=10_000, help="Rounds to run."),
    interval: float = typer.Option(0.0, min=0, help="Seconds between rounds."),
    config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="YAML file of options (probe_*, judge, redaction)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per round instead of text."),
) -> None:
    from monitor.config import load_settings
    from monitor.pipeline.builder import build_scorer
    from monitor.pipeline.probing import build_prober, scorer_judge
    from monitor.probe.client import Target

    try:
        parsed = Target.parse(target if "@" in target or model is None else f"{model}@{target}")
        overrides = {"probe_sets": probe_set} if probe_set else {}
        settings = load_settings(config, **overrides)
        prober = build_prober(settings, scorer_judge(build_scorer(settings)), CollectorRegistry(), targets=[parsed])
    except ValueError as exc:  # pydantic's ValidationError is one too: the message names the option
        typer.echo(f"error: {redact_urls(str(exc))}", err=True)
        raise typer.Exit(2) from None
    answered_any = False
    for i in range(rounds):
        if i:
            time.sleep(interval)
        result = asyncio.run(prober.run_round(time.time()))
        answered_any = bool(result.observations)
        report = {
            "round": result.index,
            "at": result.at,
            "answered": len(result.observations),
            "failed": dict(result.failures),
            "rates": {
                f"{o.probe_set} {o.signal}": f"{sum(x.bad for x in group)}/{len(group)}"
                for o, group in _groups(result.observations)
            },
            "bad": [f"{o.probe_set}/{o.probe_id} ({o.signal})" for o in result.observations if o.bad],
            "alerts": [
                {"kind": c.kind, "probe_set": c.key, "summary": c.summary, "flipped": [f["probe_id"] for f in c.evidence["flipped"]]}
                for c in result.conditions if c.active
            ],
        }
        typer.echo(json.dumps(report) if as_json else _text(report))
    if not answered_any:
        raise typer.Exit(1)


def _groups(observations: list) -> list[tuple]:
    keys: dict[tuple[str, str], list] = {}
    for o in observations:
        keys.setdefault((o.probe_set, o.signal), []).append(o)
    return [(group[0], group) for group in keys.values()]


def _text(report: dict) -> str:
    lines = [f"round {report['round']}: {report['answered']} answered"
             + (f", failed {report['failed']}" if report["failed"] else "")]
    lines += [f"  {key}: {rate} bad" for key, rate in report["rates"].items()]
    lines += [f"  bad answer: {item}" for item in report["bad"]]
    lines += [f"  ALERT {a['kind']} {a['probe_set']}: {a['summary']}; flipped: {', '.join(a['flipped'])}" for a in report["alerts"]]
    return "\n".join(lines)
