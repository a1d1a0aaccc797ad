"""What detectors say, in types both the detectors and the alert engine speak.

Neutral ground between ``drift`` (which produces readings and conditions) and ``alerts``/``export``
(which turn them into alerts and metrics), so neither imports the other.
"""

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


@dataclass(frozen=True, slots=True)
class Reading:
    """A detector's statistic next to its threshold, exported as metrics.

    Labels stay bounded: ``detector`` and ``scope`` come from code and configuration, ``key`` is a
    taxonomy category id (or "" for single-key detectors), never raw text or an unbounded id.
    """

    detector: str
    scope: str
    key: str
    statistic: float
    threshold: float
    active: bool
