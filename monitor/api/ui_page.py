"""What the triage page shows, gathered from the service in one pass (off the event loop), and the
change-point chart each alert carries, drawn as inline SVG on the server (no script, no CDN).

Why server-side: the page must work where the monitor runs (often without internet), load fast
with a thousand alerts, and render the same for every browser; evidence numbers are already on
the alert, so drawing them costs microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from monitor.alerts.engine import Alert
from monitor.drift.base import CategoryReferences
from monitor.drift.suite import DetectorSuite
from monitor.pipeline.service import MonitorService
from monitor.triage.console import Triage

MAX_RESOLVED_SHOWN = 200  # the rest are one click away (/v1/alerts?status=resolved)
W, H, PAD = 220, 64, 4


@dataclass
class AlertRow:
    alert: Alert
    chart: str  # inline SVG markup (built from numbers only)
    mark: dict[str, Any]


@dataclass
class Page:
    status: dict[str, Any]
    open_alerts: list[AlertRow]
    resolved_alerts: list[AlertRow]
    resolved_total: int
    clusters: list[dict[str, Any]]
    shares: list[dict[str, Any]]
    categories: list[str]
    learned: dict[str, dict[str, Any]]
    revisions: list[int]
    audit: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def when(epoch: float | None) -> str:
    """An epoch as ISO-8601 UTC to the second (event times and wall times alike)."""
    if epoch is None or not math.isfinite(epoch):
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def chart(alert: Alert) -> str:
    """Reference level until the change point, current level after it (95% bands where the evidence
    has them), a dashed line at the change point: the shape of the alert at a glance."""
    ev = alert.evidence
    ref = ev.get("reference_share")
    cur = ev.get("current_share", ev.get("share_of_traffic"))
    if cur is None:
        return ""
    start = ev.get("reference_start") or ev.get("first_seen") or alert.started_at
    change = ev.get("change_point_at") or ev.get("first_seen") or alert.started_at
    end = max(alert.updated_at, change, start)
    threshold = ev.get("share_threshold")
    top = max([v for v in (ref, cur, threshold, *(ev.get("current_ci95") or []), *(ev.get("reference_ci95") or [])) if v is not None]
              + [1e-9]) * 1.15
    span = max(end - start, 1e-9)

    def x(t: float) -> float:
        return PAD + (W - 2 * PAD) * (min(max(t, start), end) - start) / span

    def y(v: float) -> float:
        return H - PAD - (H - 2 * PAD) * v / top

    parts = [f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="share {_pct(ref)} before the change point, {_pct(cur)} after">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fafafa" stroke="#ddd"/>']
    for lo_hi, a, b, colour in ((ev.get("reference_ci95"), start, change, "#9ecae1"), (ev.get("current_ci95"), change, end, "#fcae91")):
        if lo_hi and a < b:
            lo, hi = lo_hi
            parts.append(f'<rect x="{x(a):.1f}" y="{y(hi):.1f}" width="{x(b) - x(a):.1f}" height="{max(y(lo) - y(hi), 0.5):.1f}" '
                         f'fill="{colour}" opacity="0.6"/>')
    if ref is not None:
        parts.append(f'<line x1="{x(start):.1f}" x2="{x(change):.1f}" y1="{y(ref):.1f}" y2="{y(ref):.1f}" stroke="#3182bd" stroke-width="2"/>')
    parts.append(f'<line x1="{x(change):.1f}" x2="{x(end):.1f}" y1="{y(cur):.1f}" y2="{y(cur):.1f}" stroke="#de2d26" stroke-width="2"/>')
    if threshold is not None:
        parts.append(f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" stroke="#888" stroke-dasharray="2 2"/>')
    parts.append(f'<line x1="{x(change):.1f}" x2="{x(change):.1f}" y1="{PAD}" y2="{H - PAD}" stroke="#333" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return "".join(parts)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def gather(service: MonitorService, triage: Triage) -> Page:
    """Everything the page shows (worker state lock taken briefly per read; run in a thread)."""
    status = service.status()
    marks = triage.state.marks
    alerts = service.alerts("all")
    open_rows, resolved_rows, resolved_total = [], [], 0
    for a in alerts:
        mark = vars(marks[a.id]) if a.id in marks else {}
        if a.status != "resolved":
            open_rows.append(AlertRow(a, chart(a), mark))
        else:
            resolved_total += 1
            if len(resolved_rows) < MAX_RESOLVED_SHOWN:
                resolved_rows.append(AlertRow(a, chart(a), mark))
    clusters = []
    for scope in service.read_detectors(_cluster_scopes):
        for c in service.clusters(scope) or []:
            row = c.to_dict()
            row["exemplar_pairs"] = list(zip(c.exemplar_ids, c.exemplars))
            clusters.append(row)
    clusters.sort(key=lambda c: (c["status"] != "emerging", c["label"] is not None, -c["share_of_traffic"], c["scope"], c["id"]))
    return Page(status, open_rows, resolved_rows, resolved_total, clusters, shares(service, triage), triage.categories,
                dict(triage.state.categories), [m.revision for m in triage.state.models], triage.audit())


def _cluster_scopes(suite: DetectorSuite) -> list[str]:
    clustering = suite.cluster_queries()
    return clustering.scopes() if clustering is not None else []


def shares(service: MonitorService, triage: Triage) -> list[dict[str, Any]]:
    """Per scope and key: the reference share (category_share's warm-up) against the share among recent events."""
    def read(suite: DetectorSuite) -> dict[str, dict[str, float]]:
        found = suite.having(CategoryReferences)
        return found[0].references() if found else {}

    references = service.read_detectors(read)
    current = triage.recent.shares()
    rows = []
    for scope in sorted(set(references) | set(current)):
        n, counts = current.get(scope, (0, {}))
        keys = set(references.get(scope, {})) | set(counts)
        for key in sorted(keys, key=lambda k: (k != "unsafe", k)):
            ref = references.get(scope, {}).get(key)
            now = counts.get(key, 0) / n if n else None
            if (ref or 0) == 0 and not now:
                continue
            rows.append({"scope": scope, "key": key, "reference": ref, "current": now, "events": n,
                         "ratio": (now / ref) if ref and now is not None else None})
    return rows
