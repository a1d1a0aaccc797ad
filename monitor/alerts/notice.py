"""What alert delivery sends: an immutable snapshot of an alert at one status change.

The alert engine mutates its :class:`~monitor.alerts.engine.Alert` objects in the worker thread;
delivery runs in threads of its own, so it takes a snapshot at the transition (no evidence: it
can be large, and receivers follow the evidence link instead).

>>> notice = Notice("3f2a", "category_share/global/self_harm", "category_share", "global", "self_harm",
...                 "self_harm", "warning", "firing", 1767225600.0, None, "self_harm share 12% (baseline 1%)",
...                 {"alert": "/v1/alerts/3f2a"})
>>> notice.alertname
'LLMSafetyCategoryShare'
>>> notice.links("http://monitor:8000/")
{'alert': 'http://monitor:8000/v1/alerts/3f2a'}
>>> notice.description
'category_share drift in scope global, key self_harm, since 2026-01-01T00:00:00Z (event time).'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from monitor.alerts.engine import Alert
from monitor.alerts.links import evidence_links

SOURCE = "llmsafety-monitor"  # the `source` label of every alert this service pushes


def iso_utc(epoch_seconds: float) -> str:
    """RFC 3339 in UTC, as Alertmanager and most webhook receivers expect.

    >>> iso_utc(0.25)
    '1970-01-01T00:00:00.250Z'
    """
    moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    fingerprint: str
    kind: str
    scope: str
    key: str
    category: str | None
    severity: str
    status: str
    started_at: float
    resolved_at: float | None
    summary: str
    paths: dict[str, str] = field(default_factory=dict)  # root-relative evidence links, from evidence_links

    @classmethod
    def from_alert(cls, alert: Alert) -> Notice:
        return cls(
            alert.id, alert.fingerprint, alert.kind, alert.scope, alert.key, alert.category,
            alert.severity, alert.status, alert.started_at, alert.resolved_at, alert.summary, evidence_links(alert),
        )

    @property
    def alertname(self) -> str:
        """``LLMSafety`` + the kind in CamelCase: one alert name per kind, for routing and silences."""
        return "LLMSafety" + "".join(part.capitalize() for part in self.kind.split("_"))

    @property
    def description(self) -> str:
        where = f"scope {self.scope}" + (f", key {self.key}" if self.key else "")
        text = f"{self.kind} drift in {where}, since {iso_utc(self.started_at)} (event time)."
        if self.resolved_at is not None:
            text += f" Resolved at {iso_utc(self.resolved_at)} (event time)."
        return text

    def links(self, base_url: str) -> dict[str, str]:
        """Evidence pages on this service; ``base_url`` "" gives root-relative links."""
        base = base_url.rstrip("/")
        return {name: base + path for name, path in self.paths.items()}
