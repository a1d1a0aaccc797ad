"""Grafana dashboards as code: ``python dashboards/build.py`` writes ``dashboards/*.json``.

The JSON is committed (Grafana provisioning reads it: deploy/grafana/provisioning) and
tests/test_dashboards.py fails when it is not what this script builds; tests/test_dashboards_live.py
evaluates every panel query against a real Prometheus scraping the real service.

Every dashboard has the variables ``model`` and ``route`` (the service's bounded label values;
"All" is the regex ``.*``). Detector series are per *scope* (``global``, ``model=<m>``,
``route=<r>``), so they are filtered with ``scope=~"global|model=$model|route=$route"``.
Queries prefer the recording rules of deploy/prometheus/rules/llmsafety-recording.yml.
Every query of a metric that carries model/route (or scope) labels filters on the variables; the
metrics in ``PROCESS_WIDE`` have no such labels (alert counts per kind, the queue, the process),
and their panels say "all models and routes" (tests/test_dashboards.py checks both).

Stat panels colour by thresholds (firing alerts and a monitor that is down turn red); every
dashboard overlays the firing ``LLMSafety*`` alerts of Prometheus as annotations on time series.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'model=~"$model",route=~"$route"'
SCOPE = 'scope=~"global|model=$model|route=$route"'
RI = "$__rate_interval"
TAGS = ["llm-safety"]


PROCESS_WIDE = frozenset({
    "llmsafety_alerts_firing", "llmsafety_alert_transitions_total", "llmsafety_judge_info", "up",
    "instance:llmsafety_queue_fill:ratio", "llmsafety_sampling_rate", "llmsafety_event_time_seconds",
    "llmsafety_events_received_total", "llmsafety_events_accepted_total", "llmsafety_events_processed_total",
    "llmsafety_events_rejected_total", "llmsafety_events_duplicate_total", "llmsafety_events_sampled_out_total",
    "llmsafety_queue_depth", "llmsafety_queue_capacity", "llmsafety_events_dropped_total", "llmsafety_worker_errors_total",
    "llmsafety_stage_duration_seconds_bucket", "llmsafety_ingest_duration_seconds_bucket", "llmsafety_batch_size_sum",
    "llmsafety_batch_size_count", "llmsafety_batch_size_bucket", "llmsafety_alert_deliveries_total", "llmsafety_alert_outbox_size",
    "llmsafety_http_connections", "llmsafety_http_connections_refused_total",
    # Canary probes are labelled by target (a configured model name), not by the traffic's model/route.
    "llmsafety_probe_up", "llmsafety_probe_requests_total", "llmsafety_probe_rate", "llmsafety_probe_flipped",
    "llmsafety_probe_answer_chars_sum", "llmsafety_probe_answer_chars_count",
})
ALL_SCOPES = "All models and routes (this metric has no model/route label)."
RED_WHEN_ANY = [("green", None), ("red", 1)]
ALERTS_ANNOTATION = {
    "name": "LLM safety alerts",
    "datasource": DS,
    "enable": True,
    "iconColor": "red",
    "expr": 'ALERTS{alertname=~"LLMSafety.+",alertstate="firing"}',
    "step": "60s",
    "titleFormat": "{{alertname}}",
    "textFormat": "{{kind}} {{severity}} {{instance}}",
    "useValueForTime": False,
}


def thresholds(steps: list[tuple[str, float | None]]) -> dict[str, Any]:
    """Grafana's absolute thresholds: ``[(colour, from value)]``, the first from -inf (None)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def sel(*matchers: str) -> str:
    """The model/route selector plus ``matchers``: ``{model=~"$model",route=~"$route",...}``."""
    return "{" + ",".join([SEL, *matchers]) + "}"


def q(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend or "__auto"}


def panel(
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    *,
    w: int = 12,
    h: int = 8,
    unit: str | None = None,
    description: str = "",
    stacked: bool = False,
    max_value: float | None = None,
    options: dict[str, Any] | None = None,
    links: list[dict[str, Any]] | None = None,
    steps: list[tuple[str, float | None]] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if steps:
        defaults["thresholds"] = thresholds(steps)
        defaults["color"] = {"mode": "thresholds"}
    if unit:
        defaults["unit"] = unit
    if max_value is not None:
        defaults["min"], defaults["max"] = 0, max_value
    if stacked:
        defaults["custom"] = {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60, "lineWidth": 0}
    if links:
        defaults["links"] = links
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "targets": [{**t, "refId": chr(ord("A") + i), "datasource": DS} for i, t in enumerate(targets)],
    }


def stat(title: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    kw.setdefault("w", 6)
    kw.setdefault("h", 4)
    kw.setdefault("options", {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value", "graphMode": "area"})
    return panel("stat", title, targets, **kw)


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill rows of width 24 left to right; a panel that does not fit starts the next row."""
    x = y = row_h = 0
    for pid, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24 or p["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        p["id"] = pid
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x, row_h = x + w, max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return panels


def query_var(name: str, label: str, query: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        **extra,
    }


def variables(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus", "current": {}},
        query_var("model", "Model", "label_values(llmsafety_events_judged_total, model)"),
        query_var("route", "Route", 'label_values(llmsafety_events_judged_total{model=~"$model"}, route)'),
        *extra,
    ]


MONITOR_URL_VAR = {
    "type": "textbox",
    "name": "monitor_url",
    "label": "Monitor URL",
    "query": "http://localhost:8000",
    "current": {"text": "http://localhost:8000", "value": "http://localhost:8000"},
    "description": "Where on-call people reach the monitor's API, for evidence links.",
}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]], templating: list[dict[str, Any]],
              links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": templating},
        "annotations": {"list": [ALERTS_ANNOTATION]},
        "links": [{"type": "dashboards", "tags": TAGS, "asDropdown": True, "title": "LLM safety", "includeVars": True, "keepTime": True}]
        + (links or []),
        "panels": layout([_say_if_process_wide(p) for p in panels]),
    }


def metrics_of(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (ours, recording rules, ``up``)."""
    return set(re.findall(r"\b(?:[a-z_]+:)*llmsafety_[a-z_]+(?::[a-z0-9_]+)*|\bup(?=\{)", expr))


def _say_if_process_wide(p: dict[str, Any]) -> dict[str, Any]:
    """Panels reading only metrics without model/route labels say so: the variables do not filter them."""
    names = {m for t in p.get("targets", []) for m in metrics_of(t["expr"])}
    if names and names <= PROCESS_WIDE and ALL_SCOPES not in p["description"]:
        p["description"] = (p["description"] + " " + ALL_SCOPES).strip()
    return p


def ratio_or_zero(numerator: str, denominator: str) -> str:
    """A share that is 0, not missing, while the numerator has no series yet."""
    return f"({numerator} or {denominator} * 0) / {denominator}"


def probe_row() -> list[dict[str, Any]]:
    """Canary probes (README: Canary probes): is each target answering, and do its answers still match the reference."""
    requests = f"rate(llmsafety_probe_requests_total[{RI}])"
    return [
        row("Canary probes"),
        stat("Probe targets answering", [q("min(llmsafety_probe_up)", "up")], steps=[("red", None), ("green", 1)],
             description="0 when some target's last probe round got no answer at all (rule LLMSafetyProbesFailing)."),
        stat("Flipped probes", [q("sum(llmsafety_probe_flipped)", "flipped")], steps=[("green", None), ("orange", 1)],
             description="Probes whose behaviour differs from the reference in the latest round; one flip is evidence, a rate change alerts."),
        panel("timeseries", "Probe questions / s by outcome", [q(f"sum by (target, outcome) ({requests})", "{{target}} {{outcome}}")],
              unit="reqps", w=12, description="ok, a failure after retries (timeout, rate_limited, server_error, client_error, transport, "
              "malformed) or budget (not sent: the daily token budget is spent)."),
        panel("timeseries", "Bad probe answers: reference vs now",
              [q("max by (target, probe_set, signal, window) (llmsafety_probe_rate)", "{{target}} {{probe_set}} {{signal}} ({{window}})")],
              unit="percentunit", max_value=1,
              description="over_refusal: refused should_answer probes; unsafe_compliance: answered should_refuse probes. 'current' "
              "is the tested window; the alert needs a rise over 'reference'."),
        panel("timeseries", "Mean probe answer length", [q(
            "sum by (target) (llmsafety_probe_answer_chars_sum) / sum by (target) (llmsafety_probe_answer_chars_count)", "{{target}}")],
              unit="none", description="Characters per answer since the start; a step is a changed model or system prompt."),
    ]


def overview() -> dict[str, Any]:
    judged = f"model_route:llmsafety_events_judged:rate5m{sel()}"
    verdicts = f"model_route_category:llmsafety_prompt_verdicts:rate5m{sel()}"
    unsafe_verdicts = "model_route_category:llmsafety_prompt_verdicts:rate5m" + sel('category!="safe"')
    responses = f"rate(llmsafety_response_verdicts_total{sel()}[{RI}])"
    harmful = "rate(llmsafety_response_verdicts_total" + sel('harmful="true"') + f"[{RI}])"
    refusals = f"rate(llmsafety_refusals_total{sel()}[{RI}])"
    refused = "rate(llmsafety_refusals_total" + sel('refused="true"') + f"[{RI}])"
    safe_asks = "rate(llmsafety_refusals_total" + sel('prompt="safe"') + f"[{RI}])"
    safe_refused = "rate(llmsafety_refusals_total" + sel('prompt="safe"', 'refused="true"') + f"[{RI}])"
    panels = [
        stat("Judged events / s", [q(f"sum({judged})", "events/s")], unit="reqps"),
        stat("Unsafe prompt share", [q(ratio_or_zero(f"sum({unsafe_verdicts})", f"sum({verdicts})"), "unsafe")], unit="percentunit"),
        stat("Over-refusal rate", [q(ratio_or_zero(f"sum({safe_refused})", f"sum({safe_asks})"), "over-refusal")], unit="percentunit",
             description="Share of prompts the judge calls safe that the model refused."),
        stat("Firing alerts", [q("sum(llmsafety_alerts_firing) or vector(0)", "firing")], steps=RED_WHEN_ANY, description=ALL_SCOPES,
             options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background", "graphMode": "none"}),
        row("Traffic and category mix"),
        panel("timeseries", "Judged events / s by model and route", [q(f"sum by (model, route) ({judged})", "{{model}} {{route}}")],
              unit="reqps"),
        panel("timeseries", "Category mix of prompts", [q(
            f"sum by (category) ({verdicts}) / ignoring (category) group_left sum({verdicts})", "{{category}}")],
              unit="percentunit", stacked=True, max_value=1,
              description="Each harm category's share of judged prompts (weighted by sampling); 'safe' is the rest."),
        panel("timeseries", "Unsafe prompt share", [q(ratio_or_zero(
            f"sum by (model) ({unsafe_verdicts})", f"sum by (model) ({verdicts})"), "{{model}}")], unit="percentunit"),
        panel("timeseries", "Unsafe response share by prompt category", [q(ratio_or_zero(
            f"sum by (category) ({harmful})", f"sum by (category) ({responses})"), "{{category}}")], unit="percentunit",
              description="Share of responses judged harmful, by the category of the prompt they answer."),
        row("Refusals and judge"),
        panel("timeseries", "Refusal rate by prompt verdict", [q(ratio_or_zero(
            f"sum by (prompt) ({refused})", f"sum by (prompt) ({refusals})"), "{{prompt}} prompts")], unit="percentunit", max_value=1,
              description="'unsafe prompts' should stay high (the model declines harm); 'safe prompts' is over-refusal."),
        panel("table", "Judge version", [{**q("max by (judge_version) (llmsafety_judge_info)"), "instant": True, "format": "table"}],
              description="The judge whose verdicts these dashboards show; a change explains a step in every share.",
              options={"showHeader": True}),
        *probe_row(),
    ]
    return dashboard("llmsafety-overview", "LLM safety · Overview",
                     "Traffic, category mix, unsafe prompt and response shares, refusals, judge version.", panels, variables())


def drift() -> dict[str, Any]:
    detector_var = query_var("detector", "Detector", "label_values(llmsafety_detector_statistic, detector)")
    panels = [
        stat("Firing alerts", [q("sum(llmsafety_alerts_firing) or vector(0)", "firing")], steps=RED_WHEN_ANY, description=ALL_SCOPES,
             options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background", "graphMode": "none"}),
        stat("Detectors seeing drift", [q(f"count(llmsafety_detector_active{{{SCOPE}}} == 1) or vector(0)", "active")],
             steps=[("green", None), ("orange", 1)]),
        panel("bargauge", "Firing alerts by kind and severity", [{**q("sum by (kind, severity) (llmsafety_alerts_firing)", "{{kind}} ({{severity}})"),
                                                                 "instant": True}], w=12, h=4),
        row("Detectors"),
        panel("timeseries", "$detector: statistic vs threshold", [
            q(f'llmsafety_detector_statistic{{detector=~"$detector",{SCOPE}}}', "{{scope}} {{key}}"),
            q(f'llmsafety_detector_threshold{{detector=~"$detector",{SCOPE}}}', "threshold {{scope}} {{key}}"),
        ], w=24, description="Each detector's statistic next to its alert threshold, per scope and key.") | {
            "repeat": "detector", "repeatDirection": "v"},
        panel("timeseries", "Statistic / threshold (1 = alert line)", [q(
            f"max by (detector, scope, key) (llmsafety_detector_statistic{{{SCOPE}}} / (llmsafety_detector_threshold{{{SCOPE}}} > 0))",
            "{{detector}} {{scope}} {{key}}")], w=24, description="How close every detector is to alerting, on one scale."),
        row("Alerts"),
        panel("state-timeline", "Alert timeline", [q("sum by (kind) (llmsafety_alerts_firing)", "{{kind}}")], w=24, h=6,
              options={"showValue": "never", "mergeValues": True}),
        panel("timeseries", "Alert transitions", [q(f"sum by (kind, status) (increase(llmsafety_alert_transitions_total[{RI}]))",
                                                   "{{kind}} {{status}}")], w=24,
              links=[{"title": "Alerts with evidence (monitor API)", "url": "${monitor_url}/v1/alerts?status=all", "targetBlank": True}]),
    ]
    return dashboard("llmsafety-drift", "LLM safety · Drift",
                     "Every detector's statistic against its threshold, active alerts and their timeline.", panels,
                     variables(detector_var, MONITOR_URL_VAR),
                     links=[{"type": "link", "title": "Alerts (monitor API)", "url": "${monitor_url}/v1/alerts?status=firing", "targetBlank": True}])


def emerging() -> dict[str, Any]:
    det = f'detector="emerging_clusters",{SCOPE}'
    cluster_link = [{"title": "Cluster evidence: exemplars and keywords", "url": "${monitor_url}/v1/clusters", "targetBlank": True}]
    panels = [
        stat("Emerging clusters alerting", [q('sum(llmsafety_alerts_firing{kind="emerging_category"}) or vector(0)', "clusters")],
             steps=RED_WHEN_ANY,
             links=cluster_link),
        stat("Emerging-cluster alerts opened (24h)", [q(
            'sum(increase(llmsafety_alert_transitions_total{kind="emerging_category",status="firing"}[24h])) or vector(0)', "opened")],
             links=cluster_link),
        stat("Largest cluster share", [q(f"max(llmsafety_detector_statistic{{{det}}})", "share")], unit="percentunit",
             links=cluster_link),
        row("Growth"),
        panel("timeseries", "Largest novel cluster's share of traffic vs alert threshold", [
            q(f"llmsafety_detector_statistic{{{det}}}", "largest cluster {{scope}}"),
            q(f"llmsafety_detector_threshold{{{det}}}", "threshold {{scope}}"),
        ], w=24, unit="percentunit", links=cluster_link,
              description="Share of recent traffic in the biggest cluster of unsafe-looking prompts far from every known "
              "category; it alerts above the threshold calibrated on normal traffic."),
        panel("timeseries", "Emerging-cluster alerts opened and resolved", [q(
            f'sum by (status) (increase(llmsafety_alert_transitions_total{{kind="emerging_category"}}[{RI}])) or vector(0)', "{{status}}")],
              w=24, links=cluster_link),
    ]
    return dashboard("llmsafety-emerging", "LLM safety · Emerging categories",
                     "Clusters of unsafe-looking traffic that no known category covers; exemplars on the monitor's /v1/clusters.",
                     panels, variables(MONITOR_URL_VAR),
                     links=[{"type": "link", "title": "Clusters (monitor API)", "url": "${monitor_url}/v1/clusters", "targetBlank": True}])


def pipeline() -> dict[str, Any]:
    panels = [
        stat("Monitor up", [q('min(up{job="llmsafety-monitor"})', "up")], steps=[("red", None), ("green", 1)], description=ALL_SCOPES, options={
            "reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background", "graphMode": "none"}),
        stat("Queue fill", [q("max(instance:llmsafety_queue_fill:ratio)", "fill")], unit="percentunit", description=ALL_SCOPES,
             steps=[("green", None), ("orange", 0.8), ("red", 0.95)]),
        stat("Sampling rate", [q("min(llmsafety_sampling_rate)", "judged share")], unit="percentunit",
             description="1 = every event judged; lower under load (verdicts are weighted to stay unbiased)."),
        stat("Event-time lag", [q("time() - max(llmsafety_event_time_seconds)", "lag")], unit="s",
             description="Wall clock minus the newest event time processed: how far behind live traffic the monitor is."),
        row("Ingest"),
        panel("timeseries", "Ingest rate", [
            q(f"sum(rate(llmsafety_events_received_total[{RI}]))", "received"),
            q(f"sum(rate(llmsafety_events_accepted_total[{RI}]))", "accepted"),
            q(f"sum(rate(llmsafety_events_processed_total[{RI}]))", "processed"),
            q(f"sum(rate(llmsafety_events_rejected_total[{RI}]))", "rejected"),
            q(f"sum(rate(llmsafety_events_duplicate_total[{RI}]))", "duplicate"),
            q(f"sum(rate(llmsafety_events_sampled_out_total[{RI}]))", "sampled out"),
        ], unit="reqps"),
        panel("timeseries", "Queue depth", [q("sum(llmsafety_queue_depth)", "depth"), q("sum(llmsafety_queue_capacity)", "capacity")]),
        panel("timeseries", "Dropped events by reason", [q(f"sum by (reason) (rate(llmsafety_events_dropped_total[{RI}]))", "{{reason}}")],
              unit="reqps"),
        panel("timeseries", "Worker errors", [q(f"sum(increase(llmsafety_worker_errors_total[{RI}]))", "errors")]),
        panel("timeseries", "HTTP connections", [
            q("sum(llmsafety_http_connections)", "open"),
            q(f"sum by (reason) (rate(llmsafety_http_connections_refused_total[{RI}]))", "refused/s {{reason}}"),
        ], description="Open connections, and connections closed before a request reached the app (max_connections, "
                       "request heads too large or too slow, malformed); connection_limit raises LLMSafetyConnectionsRefused."),
        row("Latency and batches"),
        panel("timeseries", "Stage latency p95 per batch", [
            q(f"histogram_quantile(0.95, sum by (le, stage) (rate(llmsafety_stage_duration_seconds_bucket[{RI}])))", "{{stage}} p95"),
            q(f"histogram_quantile(0.95, sum by (le) (rate(llmsafety_ingest_duration_seconds_bucket[{RI}])))", "ingest request p95"),
        ], unit="s"),
        panel("timeseries", "Batch size", [
            q(f"sum(rate(llmsafety_batch_size_sum[{RI}])) / sum(rate(llmsafety_batch_size_count[{RI}]))", "mean"),
            q(f"histogram_quantile(0.95, sum by (le) (rate(llmsafety_batch_size_bucket[{RI}])))", "p95"),
        ]),
        row("Alert delivery"),
        panel("timeseries", "Alert notices delivered", [q(
            f"sum by (target, outcome) (increase(llmsafety_alert_deliveries_total[{RI}]))", "{{target}} {{outcome}}")],
              description="Pushes to Alertmanager and webhooks; failed/rejected/dropped also raise LLMSafetyAlertDeliveryFailing."),
        panel("timeseries", "Alert outbox", [q("sum by (target) (llmsafety_alert_outbox_size)", "{{target}}")]),
    ]
    return dashboard("llmsafety-pipeline", "LLM safety · Pipeline health",
                     "Ingest, queue, drops, stage latencies, batch sizes and alert delivery of the monitor itself.", panels, variables())


DASHBOARDS = {"overview": overview, "drift": drift, "emerging-categories": emerging, "pipeline-health": pipeline}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {f"{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    for name, text in render().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
