"""What a detector tells the alert engine about one alert key at one moment of event time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True, slots=True)
class Condition:
    """A detector's current opinion on one (kind, scope, key).

    ``active`` True means "the drift this kind watches is present now"; the engine opens, keeps
    or resolves the alert with fingerprint ``kind/scope/key`` from the sequence of conditions.
    ``at`` is event time (epoch seconds), so replays give the same ``started_at``/``resolved_at``.
    ``key`` is the category id, cluster id, or "" when the kind has a single key per scope.
    """

    kind: str
    scope: str
    key: str
    active: bool
    at: float
    severity: Severity = "warning"
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return f"{self.kind}/{self.scope}/{self.key}"
