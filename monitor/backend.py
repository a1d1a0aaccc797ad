"""What the HTTP API needs from whatever runs the monitor behind it.

Three classes serve the API: the embedded :class:`~monitor.pipeline.service.MonitorService`
(``role=all``), the scale-out :class:`~monitor.scale.frontend.StreamFrontend` (``role=api``) and
the :class:`~monitor.scale.node.DetectorNode` (``role=detector``). The API is written against this
Protocol only, so a fourth backend is one class, and a test can check that each one keeps the
contract (``isinstance(x, MonitorBackend)`` checks the names; mypy checks the signatures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from monitor.alerts.engine import Alert
    from monitor.config import Settings
    from monitor.drift.emerging_clusters import ClusterSummary
    from monitor.drift.feedback_disagreement import Feedback
    from monitor.export.metrics import MonitorMetrics
    from monitor.export.reservoir import WindowReservoir
    from monitor.ingest.parsing import ParsedBody, Rejection
    from monitor.ingest.request import IngestOutcome


class NotReady(Exception):
    """The backend cannot answer yet (model loading) or at all in this role; the API answers 503
    with ``Retry-After``."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@runtime_checkable
class MonitorBackend(Protocol):
    """Ingest, readiness, status, alerts, clusters, feedback and metrics, as the API calls them.

    Methods that may block (a state lock, a Redis round trip) are called off the event loop.
    ``clusters``/``find_cluster`` return ``None`` when no emerging-cluster detector runs.
    """

    settings: Settings
    metrics: MonitorMetrics
    report_reservoir: WindowReservoir | None  # the judged-event sample /v1/reports reads; None: no reports here

    @property
    def running(self) -> bool: ...

    @property
    def judge_version(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self, drain_timeout: float = 0.0) -> None: ...

    def ingest(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome: ...

    async def ingest_async(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome: ...

    def status(self) -> dict[str, Any]: ...

    def alerts(self, status: str = "all") -> list[Alert]: ...

    def alert(self, alert_id: str) -> Alert | None: ...

    def clusters(self, scope: str, raw: bool = False) -> list[ClusterSummary] | None: ...

    def find_cluster(self, cluster_id: str, raw: bool = False) -> ClusterSummary | None: ...

    def observe_feedback(self, labels: list[tuple[int, Feedback]]) -> tuple[dict[str, int], list[Rejection]]: ...
