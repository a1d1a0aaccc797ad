"""One alert engine for every signal: lifecycle, deduplication, cooldown.

Detectors report :class:`Condition` objects; the engine keeps one alert per fingerprint
(``kind/scope/key``). Lifecycle: a condition turning active opens a ``pending`` alert, which
becomes ``firing`` once active for ``pending_seconds`` of event time; an inactive condition
resolves it. An alert that becomes active again within ``cooldown_seconds`` of event time of
its resolution is re-opened (same id) instead of creating a new alert, so a flapping detector
does not page twice. All times are event times.

>>> from monitor.signals import Condition
>>> engine = AlertEngine(pending_seconds=0, cooldown_seconds=60)
>>> _ = engine.observe([Condition("category_share", "global", "self_harm", True, at=100.0, summary="up")])
>>> [(a.status, a.started_at) for a in engine.alerts("firing")]
[('firing', 100.0)]
>>> _ = engine.observe([Condition("category_share", "global", "self_harm", False, at=130.0)])
>>> [(a.status, a.resolved_at) for a in engine.alerts("resolved")]
[('resolved', 130.0)]
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Literal

from monitor.signals import Condition, Severity
from monitor.privacy.redact import REDACT_ON, Redactor

Status = Literal["pending", "firing", "resolved"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(slots=True)
class Alert:
    id: str
    fingerprint: str
    kind: str
    scope: str
    key: str
    category: str | None
    severity: Severity
    status: Status
    started_at: float
    resolved_at: float | None
    updated_at: float
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changed status; delivery (Alertmanager, webhooks) and metrics consume these."""

    alert: Alert
    previous: Status | None


def _alert_id(fingerprint: str, started_at: float) -> str:
    digest = hashlib.sha1(f"{fingerprint}@{started_at:.3f}".encode()).hexdigest()
    return digest[:16]


class AlertEngine:
    def __init__(self, pending_seconds: float = 0.0, cooldown_seconds: float = 600.0, max_resolved: int = 1000,
                 redactor: Redactor = REDACT_ON) -> None:
        """``redactor`` masks every summary and evidence string as it enters an alert: alerts are served
        (``/v1/alerts``) and pushed (Alertmanager, webhooks, Slack), so no raw user text may reach them."""
        self.redactor = redactor
        self.pending_seconds = pending_seconds
        self.cooldown_seconds = cooldown_seconds
        self.max_resolved = max_resolved
        self._open: dict[str, Alert] = {}
        self._resolved: OrderedDict[str, Alert] = OrderedDict()  # fingerprint -> latest resolved alert
        self._history: OrderedDict[str, Alert] = OrderedDict()  # alert id -> resolved alert, bounded

    def observe(self, conditions: Iterable[Condition]) -> list[Transition]:
        transitions: list[Transition] = []
        for cond in conditions:
            transition = self._observe_one(self._redacted(cond))
            if transition is not None:
                transitions.append(transition)
        return transitions

    def _redacted(self, cond: Condition) -> Condition:
        if not self.redactor.enabled:
            return cond
        return replace(cond, summary=self.redactor.cached(cond.summary), evidence=self.redactor.value(cond.evidence, cached=True))

    def _observe_one(self, cond: Condition) -> Transition | None:
        fp = cond.fingerprint
        alert = self._open.get(fp)
        if alert is None:
            if not cond.active:
                return None
            return self._open_alert(cond)
        if not cond.active:
            return self._resolve(alert, cond.at)
        previous = alert.status
        alert.updated_at = cond.at
        alert.summary = cond.summary or alert.summary
        alert.evidence = cond.evidence or alert.evidence
        if SEVERITY_RANK[cond.severity] > SEVERITY_RANK[alert.severity]:
            alert.severity = cond.severity
        if alert.status == "pending" and cond.at - alert.started_at >= self.pending_seconds:
            alert.status = "firing"
        return Transition(alert, previous) if alert.status != previous else None

    def _open_alert(self, cond: Condition) -> Transition:
        fp = cond.fingerprint
        recent = self._resolved.get(fp)
        if recent is not None and recent.resolved_at is not None and cond.at - recent.resolved_at < self.cooldown_seconds:
            # Flapping: re-open the alert that just resolved rather than paging again.
            del self._resolved[fp]
            self._history.pop(recent.id, None)
            recent.status, recent.resolved_at, recent.updated_at = "firing", None, cond.at
            recent.summary, recent.evidence = cond.summary or recent.summary, cond.evidence or recent.evidence
            if SEVERITY_RANK[cond.severity] > SEVERITY_RANK[recent.severity]:
                recent.severity = cond.severity
            self._open[fp] = recent
            return Transition(recent, "resolved")
        alert = Alert(
            id=_alert_id(fp, cond.at),
            fingerprint=fp,
            kind=cond.kind,
            scope=cond.scope,
            key=cond.key,
            category=cond.evidence.get("category", cond.key or None),
            severity=cond.severity,
            status="firing" if self.pending_seconds <= 0 else "pending",
            started_at=cond.at,
            resolved_at=None,
            updated_at=cond.at,
            summary=cond.summary,
            evidence=dict(cond.evidence),
        )
        self._open[fp] = alert
        return Transition(alert, None)

    def _resolve(self, alert: Alert, at: float) -> Transition | None:
        del self._open[alert.fingerprint]
        previous = alert.status
        if previous == "pending":
            return None  # never fired: nothing to resolve, nobody was told
        alert.status, alert.resolved_at, alert.updated_at = "resolved", at, at
        self._resolved[alert.fingerprint] = alert
        self._resolved.move_to_end(alert.fingerprint)
        self._history[alert.id] = alert
        while len(self._history) > self.max_resolved:
            old_id, old = self._history.popitem(last=False)
            if self._resolved.get(old.fingerprint) is old:
                del self._resolved[old.fingerprint]
        return Transition(alert, previous)

    def alerts(self, status: Literal["firing", "pending", "resolved", "all"] = "all") -> list[Alert]:
        """Alerts newest first; ``firing`` excludes pending ones."""
        items = list(self._open.values()) + list(self._history.values())
        if status != "all":
            items = [a for a in items if a.status == status]
        return sorted(items, key=lambda a: (a.started_at, a.id), reverse=True)

    def get(self, alert_id: str) -> Alert | None:
        for alert in self._open.values():
            if alert.id == alert_id:
                return alert
        return self._history.get(alert_id)

    def state_dict(self) -> dict[str, Any]:
        return {
            "open": [a.to_dict() for a in self._open.values()],
            "history": [a.to_dict() for a in self._history.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._open = {d["fingerprint"]: Alert(**d) for d in state["open"]}
        self._history = OrderedDict((d["id"], Alert(**d)) for d in state["history"])
        self._resolved = OrderedDict((a.fingerprint, a) for a in self._history.values())
