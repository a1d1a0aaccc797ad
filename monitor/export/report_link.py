"""The drift report that covers an alert, as a link for its evidence or annotations.

Current window: ``span_seconds`` of event time either side of ``alert.started_at`` (the change
happened before the alert opened, its effect goes on after). Reference: the detector's own
reference when its evidence names one (``reference_start`` and ``reference_end``, epoch seconds of
event time), else the ``reference_seconds`` just before the current window. Windows are written
out as absolute times, so the link shows the same report however late it is opened (as long as
the reservoir still keeps those windows).

>>> from monitor.alerts.engine import Alert
>>> alert = Alert("a1", "category_share/model=gpt-4o/self_harm", "category_share", "model=gpt-4o", "self_harm",
...               "self_harm", "warning", "firing", 1767232800.0, None, 1767232800.0, "up", {})
>>> print(report_link(alert, base_url="http://monitor:8000"))
http://monitor:8000/v1/reports?reference=2025-12-31T19%3A00%3A00Z%2F2026-01-01T01%3A00%3A00Z&current=2026-01-01T01%3A00%3A00Z%2F2026-01-01T03%3A00%3A00Z&scope=model%3Dgpt-4o&format=html
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol
from urllib.parse import urlencode

from monitor.export.windows import TimeWindow
from monitor.scopes import GLOBAL

REPORT_PATH = "/v1/reports"


class CoveredAlert(Protocol):
    """What a report link needs of an alert (:class:`monitor.alerts.engine.Alert` has it)."""

    @property
    def started_at(self) -> float: ...

    @property
    def scope(self) -> str: ...

    @property
    def evidence(self) -> Mapping[str, Any]: ...


def report_windows(alert: CoveredAlert, span_seconds: float = 3600.0, reference_seconds: float = 6 * 3600.0) -> tuple[TimeWindow, TimeWindow]:
    """(reference, current) windows of the report that covers ``alert``."""
    current = TimeWindow(alert.started_at - span_seconds, alert.started_at + span_seconds)
    start, end = alert.evidence.get("reference_start"), alert.evidence.get("reference_end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start < end:
        return TimeWindow(float(start), float(end)), current
    return TimeWindow(current.start - reference_seconds, current.start), current


def report_link(
    alert: CoveredAlert,
    base_url: str = "",
    span_seconds: float = 3600.0,
    reference_seconds: float = 6 * 3600.0,
    format: str = "html",
) -> str:
    """URL of ``GET /v1/reports`` for ``alert`` (root-relative when ``base_url`` is empty)."""
    reference, current = report_windows(alert, span_seconds, reference_seconds)
    params = {"reference": reference.spec(), "current": current.spec()}
    if alert.scope != GLOBAL:
        params["scope"] = alert.scope
    params["format"] = format
    return f"{base_url.rstrip('/')}{REPORT_PATH}?{urlencode(params)}"
