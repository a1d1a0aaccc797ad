"""The running monitor: the ingest gate, the batch worker and the detectors, wired together.

An event goes API → :class:`~monitor.ingest.gate.IngestGate` (screen, deduplicate, sample, queue,
count) → :class:`~monitor.pipeline.worker.BatchWorker` (batches, one worker thread) →
:meth:`MonitorService.process_batch` (embed and judge through the scorer, then detect and alert
under the state lock, where the transition listeners, alert delivery, hear of alert changes in
order) → metrics and the batch listeners (reservoir, snapshots, wired by
:mod:`monitor.pipeline.builder`). A batch that raises is retried one event at a time; an event
that still raises is a poison event: counted as ``dropped{reason="poison"}`` and skipped, never
retried forever. This class holds what the API reads and a reviewer changes: detector and alert state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as CounterDict
from concurrent.futures import Future
from typing import Any, Callable, TypeVar, get_args

from monitor.signals import Condition
from monitor.alerts.engine import Alert, AlertEngine, Status, Transition
from monitor.config import Settings
from monitor.drift.emerging_clusters import ClusterSummary
from monitor.drift.base import FeedbackSink, Resettable
from monitor.drift.feedback_disagreement import STATUSES, Feedback
from monitor.drift.suite import DetectorSuite
from monitor.embed.backends import resolve_kind
from monitor.embed.embedder import embedding_identity as identity_of
from monitor.embed.onnx_export import export_revision
from monitor.events import ScoredEvent
from monitor.export.metrics import CLUSTER_STATUSES, DetectorView, MonitorMetrics
from monitor.export.reservoir import WindowReservoir
from monitor.ingest.counts import IngestCounter, IngestCounts, Tally
from monitor.ingest.gate import IngestGate, QueueItem
from monitor.ingest.parsing import ParsedBody, Rejection
from monitor.ingest.request import IngestOutcome
from monitor.pipeline.latency import LatencyWindow
from monitor.pipeline.scoring import Scorer, StageTimes
from monitor.pipeline.worker import BatchWorker
from monitor.privacy.redact import Redactor
from monitor.state.memory import MemoryStateStore
from monitor.state.store import StateStore
from monitor.triage.online import shipped_version

log = logging.getLogger(__name__)

T = TypeVar("T")


def embedding_identity(settings: Settings, scorer: Scorer) -> dict[str, str]:
    """The model and backend this service's embeddings come from (``{"model", "backend"}``, and the
    ONNX export's ``revision``).

    Embeddings of one text through two backends differ (int8 vs fp32: cosine 0.98-0.99), enough
    for a drift detector to see drift that is not there, so detector state records it. A service
    without an embedder (the detector role) takes it from the settings its workers share.
    """
    if scorer.embedder is not None:
        return dict(scorer.embedder.info.identity)
    kind = resolve_kind(settings.embedding_backend, settings.embedding_device)
    return identity_of(settings.embedding_model, kind, export_revision(kind))


def _via(identity: dict[str, str]) -> str:
    """A backend as a log line names it: with its export revision, where there is one."""
    revision = identity.get("revision")
    return f"{identity.get('backend')} ({revision})" if revision else str(identity.get("backend"))


# Snapshots written before embeddings were labelled came from the torch path (the only one then).
LEGACY_EMBEDDING_BACKEND = "torch"


class MonitorService:
    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        detectors: DetectorSuite,
        metrics: MonitorMetrics | None = None,
        store: StateStore | None = None,
        counts_events: bool = True,
    ) -> None:
        """``counts_events=False``: leave the per-event counters (judged, verdicts, refusals, processed,
        feedback) of a shared ``metrics`` to another service that sees the same events (the detector
        role's partitions: only partition 0, which has every event, counts them)."""
        self.settings = settings
        self.counts_events = counts_events
        self.scorer = scorer
        self.detectors = detectors
        self.metrics = metrics or MonitorMetrics()
        for kind in detectors.alert_kinds():  # series from the start, so increase() has a zero to start from
            for status in get_args(Status):
                self.metrics.alert_transitions.labels(kind=kind, status=status)
        self.alert_engine = AlertEngine(settings.alert_pending_seconds, settings.alert_cooldown_seconds, settings.max_alerts_kept,
                                        redactor=Redactor(settings.redaction))
        self.counts = IngestCounts()
        # A partition that leaves per-event counting to another leaves the shared metrics alone altogether.
        self.counter = IngestCounter(self.counts, self.metrics) if counts_events else IngestCounter(self.counts)
        self.latency = {stage: LatencyWindow() for stage in ("ingest", "embed", "judge", "detect", "batch")}
        self.event_time: float | None = None
        # Extension points, called in the worker thread after each batch (keep them fast; never raise).
        self.report_reservoir: WindowReservoir | None = None  # set by builder.attach_reservoir; reports are off without one
        self.batch_listeners: list[Callable[[list[ScoredEvent]], None]] = []
        # Called under the state lock, in the order the alert engine made the transitions (the worker and a
        # reviewer's action both make some): a webhook must never hear an alert resolve before it fired.
        self.transition_listeners: list[Callable[[list[Transition]], None]] = []
        # Listeners with state of their own (e.g. the report reservoir) register here to be snapshotted with the rest.
        self.stateful: dict[str, Any] = {}
        # Tests a reviewer's false alarm restarts beyond the suite's own detectors (the canary prober's).
        self.resettables: list[Resettable] = []
        # Called after stop() has drained and stopped the worker (final snapshot).
        self.stop_listeners: list[Callable[[], None]] = []
        self.store: StateStore = store or MemoryStateStore(settings.dedup_capacity)
        self.gate = IngestGate(settings, self.store, self.counter)
        self.worker = BatchWorker(self.gate, self.process_batch, self.counter, on_error=self.metrics.worker_errors.inc, nice=settings.worker_nice)
        # Detectors and alerts: mutated by the worker thread, read by the API and changed by reviewers (triage).
        # Reentrant: exports that read alert state run both inside and outside a locked section.
        self._state_lock = threading.RLock()
        self._label_children: dict[tuple[Any, ...], Any] = {}
        self._firing: CounterDict[tuple[str, str]] = CounterDict()
        self._second_judge_seen: dict[str, int] = {}
        self.detectors.on_error = lambda name: self.metrics.detector_errors.labels(detector=name).inc()
        self.metrics.queue_capacity.set(settings.queue_capacity)
        self.metrics.judge_info.labels(judge_version=scorer.judge.version).set(1)
        self.metrics.set_build_info(scorer.judge.version, settings.embedding_model)
        self.metrics.declare_alert_kinds(self.detectors.alert_kinds())
        self._shown = DetectorView()  # what a scrape shows of the detectors: replaced after each batch
        self._unwatch_detectors = self.metrics.detectors.watch(lambda: self._shown)
        self.embedding = embedding_identity(settings, scorer)
        # The judge whose decisions the detectors count, before any online layer (triage) wraps it: triage
        # revisions are learned on top and restored with its own state, so they do not make a snapshot foreign.
        self.verdicts_from = scorer.judge.version
        # Alerts a restore resolved because their detector refitted: delivery attached after the restore sends them.
        self.refitted_on_restore: list[Transition] = []
        self.metrics.embedding_info.labels(model=self.embedding["model"], backend=self.embedding["backend"]).set(1)

    # ---------------------------------------------------------------- ingest (event loop) and the worker
    def ingest(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        """Screen, deduplicate and enqueue (event loop). With an in-memory store nothing here blocks;
        routes call :meth:`ingest_async`, which keeps a networked store's round trips off the loop."""
        started = time.perf_counter()
        return self._timed(self.gate.ingest(parsed, arrival_time, sender), started)

    async def ingest_async(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        started = time.perf_counter()
        return self._timed(await self.gate.ingest_async(parsed, arrival_time, sender), started)

    def _timed(self, outcome: IngestOutcome, started: float) -> IngestOutcome:
        if not (outcome.queue_full or outcome.unavailable):
            self.latency["ingest"].add(time.perf_counter() - started)
        return outcome

    async def start(self) -> None:
        await self.worker.start()

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Process what is queued for up to ``drain_timeout`` seconds (``shutdown_drain_seconds``), then
        stop the worker; events still queued are counted as ``dropped{reason="shutdown"}``. The stop
        listeners (final snapshot, alert delivery) run after."""
        if not self.worker.running:
            return
        await self.worker.stop(self.settings.shutdown_drain_seconds if drain_timeout is None else drain_timeout)
        self._notify(self.stop_listeners)

    def close(self) -> None:
        """Release a service that was never started (a detector partition given up): its worker
        thread ends, its stop listeners (alert delivery) run, and its share of a shared ``metrics``
        (firing alerts, detector readings) is withdrawn: the partition's next owner exports it."""
        self.worker.close()
        self._notify(self.stop_listeners)
        with self._state_lock:
            self._export_firing(CounterDict())
            self._unwatch_detectors()

    def call_in_worker(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn`` in the worker thread, between batches (the detector role feeds judged events this way)."""
        return self.worker.submit(fn, *args)

    @property
    def judge_version(self) -> str:
        return self.scorer.judge.version

    @property
    def running(self) -> bool:
        return self.worker.running

    def process_batch(self, batch: list[QueueItem]) -> list[Transition]:
        """Score, detect and alert on one batch (worker thread). Public so benchmarks can drive it."""
        started = time.perf_counter()
        scored = self._score_isolating_poison(batch)
        return self.process_scored(scored, len(batch), started)

    def process_scored(self, scored: list[ScoredEvent], n_items: int | None = None, started: float | None = None) -> list[Transition]:
        """Detect and alert on judged events (worker thread). The detector role of the scale-out
        mode calls it with events judged by worker processes. ``n_items`` (default ``len(scored)``)
        counts as processed: queue items, poison ones included."""
        started = time.perf_counter() if started is None else started
        n_items = len(scored) if n_items is None else n_items
        t0 = time.perf_counter()
        with self._state_lock:
            conditions = self.detectors.update(scored)
            transitions = self.alert_engine.observe(conditions)
            readings = self.detectors.readings()
            detect_seconds = time.perf_counter() - t0
            self._notify(self.transition_listeners, transitions)
        self._export(scored, readings, transitions, detect_seconds)
        self.counter.record(Tally(processed=n_items, judged=len(scored)))
        self.latency["batch"].add(time.perf_counter() - started)
        self._notify(self.batch_listeners, scored)
        return transitions

    def _notify(self, listeners: list[Callable[..., None]], *payload: Any) -> None:
        for listener in listeners:
            try:
                listener(*payload)
            except Exception:
                self.metrics.worker_errors.inc()
                log.exception("listener %r failed", listener)

    def _score_isolating_poison(self, batch: list[QueueItem]) -> list[ScoredEvent]:
        scored, poison, times = self.scorer.score_isolating_poison(batch)
        if times is None:
            self.metrics.worker_errors.inc()
        else:
            self._observe_stage_times(times, len(batch))
        self.count_poison(len(poison))
        return scored

    def count_poison(self, n: int) -> None:
        if n:
            self.counter.record(Tally(dropped={"poison": n}))

    def _observe_stage_times(self, times: StageTimes, n: int) -> None:
        self.latency["embed"].add(times.embed)
        self.latency["judge"].add(times.judge)
        self.metrics.stage_seconds.labels(stage="embed").observe(times.embed)
        self.metrics.stage_seconds.labels(stage="judge").observe(times.judge)
        self.metrics.batch_size.observe(n)
        if self.scorer.second_opinion is not None:
            self.metrics.stage_seconds.labels(stage="second_judge").observe(times.second_judge)
            self._sync_second_judge_counters()

    def _sync_second_judge_counters(self) -> None:
        """The LLM judge counts its own failures; mirror the increments into Prometheus."""
        judge = self.scorer.second_opinion.judge  # type: ignore[union-attr]
        for reason, total in getattr(judge, "errors_by_reason", {}).items():
            seen = self._second_judge_seen.get(reason, 0)
            if total > seen:
                self.metrics.second_judge_errors.labels(reason=reason).inc(total - seen)
                self._second_judge_seen[reason] = total
        timeouts = self.scorer.second_opinion_timeouts
        if timeouts > self._second_judge_seen.get("_batch_timeout", 0):
            self.metrics.second_judge_errors.labels(reason="batch_deadline").inc(timeouts - self._second_judge_seen.get("_batch_timeout", 0))
            self._second_judge_seen["_batch_timeout"] = timeouts
        retries = getattr(judge, "retries", 0)
        if retries > self._second_judge_seen.get("_retries", 0):
            self.metrics.second_judge_retries.inc(retries - self._second_judge_seen.get("_retries", 0))
            self._second_judge_seen["_retries"] = retries

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._label_children.get(key)
        if child is None:
            child = self._label_children[key] = metric.labels(*labels)
        return child

    def _export(self, scored: list[ScoredEvent], readings: list, transitions: list[Transition], detect_seconds: float) -> None:
        m = self.metrics
        resolve = self.scorer.scopes.labels
        for s in scored:
            v, e = s.verdict, s.event
            if self.event_time is None or e.timestamp > self.event_time:
                self.event_time = e.timestamp
            if not self.counts_events:
                continue
            model, route = resolve(e.model, e.route)
            self._child(m.judged, model, route).inc()
            self._child(m.prompt_verdicts, model, route, v.category, v.judge_version).inc(s.weight)
            if v.response_flagged is not None:
                self._child(m.response_verdicts, model, route, v.category, str(v.response_flagged).lower()).inc(s.weight)
            if s.second_opinion is not None:
                m.second_opinions.inc()
            if v.refused is not None:
                prompt = "unsafe" if v.prompt_flagged else "safe"
                self._child(m.refusals, model, route, prompt, str(v.refused).lower()).inc(s.weight)
        if self.event_time is not None and self.counts_events:
            m.event_time.set(self.event_time)
        m.stage_seconds.labels(stage="detect").observe(detect_seconds)
        self.latency["detect"].add(detect_seconds)
        self._show_detectors(readings)
        self._export_transitions(transitions)

    def _show_detectors(self, readings: list | None = None) -> None:
        """Publish what a scrape shows of the detectors (after a batch, a restore or a reviewer's change)."""
        if readings is None:
            with self._state_lock:
                readings = self.detectors.readings()
        self._shown = DetectorView(tuple(readings), self._cluster_counts())

    def _cluster_counts(self) -> dict[tuple[str, str], int]:
        detector = self.detectors.cluster_queries()
        if detector is None:
            return {}
        with self._state_lock:
            counts = detector.status_counts()
            scopes = detector.scopes()
        return {(scope, status): counts.get((scope, status), 0) for scope in scopes for status in CLUSTER_STATUSES}

    def _export_transitions(self, transitions: list[Transition]) -> None:
        m = self.metrics
        for t in transitions:
            m.alert_transitions.labels(kind=t.alert.kind, status=t.alert.status).inc()
        if transitions:
            self._export_firing()

    def _export_firing(self, firing: CounterDict[tuple[str, str]] | None = None) -> None:
        """Move the firing gauges by this service's change, so services sharing ``metrics`` (the
        detector role's partitions) add up; ``firing`` given: set this service's share to it."""
        with self._state_lock:  # snapshot and delta together: the worker and a reviewer's change may both export
            if firing is None:
                firing = CounterDict((a.kind, a.severity) for a in self.alert_engine.alerts("firing"))
            for kind, severity in firing.keys() | self._firing.keys():
                delta = firing[(kind, severity)] - self._firing[(kind, severity)]
                if delta:
                    self.metrics.alerts_firing.labels(kind=kind, severity=severity).inc(delta)
            self._firing = firing

    # ---------------------------------------------------------------- state (snapshots)
    def state_dict(self) -> dict[str, Any]:
        """Detector and alert state, counts and event time: what a restart must not lose.

        Consistent when taken between batches (from a batch listener, or after ``stop``).
        """
        with self._state_lock:
            return {
                "detectors": self.detectors.state_dict(),
                "alerts": self.alert_engine.state_dict(),
                "counts": self.counts.to_dict(),
                "event_time": self.event_time,
                "judge_version": self.scorer.judge.version,
                "verdicts_from": self.verdicts_from,
                "embedding": dict(self.embedding),
                "components": {name: part.state_dict() for name, part in self.stateful.items()},
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (before ``start``).

        Events accepted but still queued when the state was taken died with the old process:
        they are counted as ``dropped{reason="restart"}`` (and as processed, so ``processed``
        catches up with ``accepted`` instead of waiting for events that will never come).

        State taken with embeddings from another model or backend: detectors and components that
        compare embeddings (``uses_embeddings``: embedding drift, emerging clusters, the report
        reservoir) start afresh and refit their reference from new traffic, and those detectors'
        open alerts resolve; comparing new vectors with old ones would be a false alarm. Likewise
        state counted from another judge's decisions (another artifact, backend or decision line):
        those that count verdicts (``uses_verdicts``: category shares, the rate detectors, feedback
        disagreement, the canary prober, the report reservoir) refit, or a moved line would read as drift.
        """
        refit: dict[str, str] = {}  # part -> why its state is not restored
        saved_embedding = state.get("embedding") or {"model": self.embedding["model"], "backend": LEGACY_EMBEDDING_BACKEND}
        if saved_embedding != self.embedding:
            # Verdicts too: a judge that reads the embeddings (the heads) decides differently on other vectors.
            parts = self._parts_that("uses_embeddings") + self._parts_that("uses_verdicts")
            refit |= dict.fromkeys(parts, f"embeddings now come from backend {self.embedding['backend']}")
            if refit:
                log.warning(
                    "snapshot embeddings came from model %s via backend %s, this process embeds with model %s via backend %s: "
                    "refitting %s from new traffic instead of comparing the two (no drift alert from the change)",
                    saved_embedding.get("model"), _via(saved_embedding), self.embedding["model"], _via(self.embedding),
                    ", ".join(refit),
                )
        # Snapshots older than the record name the judge with its triage revision, if any.
        saved_judge = state.get("verdicts_from") or shipped_version(state["judge_version"])
        if saved_judge != self.verdicts_from:
            counted = [name for name in self._parts_that("uses_verdicts") if name not in refit]
            refit |= dict.fromkeys(counted, f"verdicts now come from judge {self.verdicts_from}")
            if counted:
                log.warning("snapshot verdicts came from judge %s, this process judges with %s: refitting %s from new "
                            "traffic instead of comparing the two (no drift alert from the change)", saved_judge,
                            self.verdicts_from, ", ".join(counted))
        with self._state_lock:
            self.detectors.load_state_dict({k: v for k, v in state["detectors"].items() if k not in refit})
            self.alert_engine.load_state_dict(state["alerts"])
            why_by_kind = {d.alert_kind: refit[d.name] for d in self.detectors.detectors if d.name in refit}
            why_by_kind |= {kind: refit[name] for name, part in self.stateful.items() if name in refit
                            for kind in getattr(part, "alert_kinds", ())}
            stale = [
                Condition(a.kind, a.scope, a.key, active=False, at=state["event_time"] or a.updated_at)
                for a in self.alert_engine.alerts("all") if a.kind in why_by_kind and a.status != "resolved"
            ]
            refitted = self.alert_engine.observe(stale)
            for t in refitted:
                t.alert.summary += f" (resolved: reference refitted, {why_by_kind[t.alert.kind]})"
            self._export_transitions(refitted)
            self.refitted_on_restore = refitted
            self.counts.load_dict(state["counts"])
            lost = self.counts.accepted - self.counts.processed
            if lost > 0:
                self.counts.record(Tally(processed=lost, dropped={"restart": lost}))
                if self.counts_events:  # this process's Prometheus counters never saw them accepted: only the loss
                    self.metrics.record(Tally(dropped={"restart": lost}))
            self.event_time = state["event_time"]
            for name, part_state in state.get("components", {}).items():
                part = self.stateful.get(name)
                if part is None:
                    continue
                if name not in refit:
                    part.load_state_dict(part_state)
                elif hasattr(part, "refit_from"):  # keeps what does not depend on the embeddings or the judge
                    part.refit_from(part_state)
            self._export_firing()
            restored = refitted + [Transition(a, "firing") for a in self.alert_engine.alerts("firing")]
            # Listeners attached before the restore (alert delivery on a detector owner taking over) re-announce
            # what is still firing, so Alertmanager does not let those alerts expire.
            self._notify(self.transition_listeners, restored)
        self._show_detectors()
        if self.event_time is not None and self.counts_events:
            self.metrics.event_time.set(self.event_time)

    def _parts_that(self, marker: str) -> list[str]:
        """Names of the detectors and stateful components that declare ``marker`` (``uses_embeddings``, ``uses_verdicts``)."""
        return ([d.name for d in self.detectors.detectors if getattr(d, marker, False)]
                + [name for name, part in self.stateful.items() if getattr(part, marker, False)])

    # ---------------------------------------------------------------- feedback (API)
    def observe_feedback(self, labels: list[tuple[int, Feedback]]) -> tuple[dict[str, int], list[Rejection]]:
        """Match labels against judged events; returns counts by status and labels the detector refused."""
        sinks = self.detectors.having(FeedbackSink)
        if not sinks:
            raise LookupError("feedback: the feedback_disagreement detector is not configured")
        detector = sinks[0]
        statuses = dict.fromkeys(STATUSES, 0)
        invalid: list[Rejection] = []
        conditions = []
        with self._state_lock:
            for index, label in labels:
                try:
                    status, conds = detector.observe(label)
                except ValueError as exc:
                    invalid.append(Rejection(index, str(exc)))
                    continue
                statuses[status] += 1
                conditions.extend(conds)
            transitions = self.alert_engine.observe(conditions)
            self._notify(self.transition_listeners, transitions)
        if self.counts_events:
            for status, n in statuses.items():
                self.metrics.feedback.labels(status=status).inc(n)
        self._export_transitions(transitions)
        return statuses, invalid

    def apply(self, change: Callable[[], list[Condition]]) -> list[Transition]:
        """Run ``change`` on detector state under the state lock (a reviewer's decision, e.g. triage) and
        put the conditions it returns through the alert engine, as a batch would."""
        with self._state_lock:
            transitions = self.alert_engine.observe(change())
            self._notify(self.transition_listeners, transitions)
        self._export_transitions(transitions)
        self._show_detectors()
        return transitions

    def read_detectors(self, read: Callable[[DetectorSuite], T]) -> T:
        """``read(detectors)`` under the state lock: a consistent view for the API (the worker mutates them)."""
        with self._state_lock:
            return read(self.detectors)

    # ---------------------------------------------------------------- reads (API)
    def alerts(self, status: str = "all") -> list[Alert]:
        with self._state_lock:
            return self.alert_engine.alerts(status)  # type: ignore[arg-type]

    def alert(self, alert_id: str) -> Alert | None:
        with self._state_lock:
            return self.alert_engine.get(alert_id)

    def clusters(self, scope: str, raw: bool = False) -> list[ClusterSummary] | None:
        """Clusters of one scope; None when the emerging-cluster detector is not configured.

        ``raw=True`` returns raw exemplars where ``store_raw_text`` kept them: the API layer
        passes it only for an admin's request."""
        detector = self.detectors.cluster_queries()
        if detector is None:
            return None
        with self._state_lock:
            return detector.clusters(scope, raw)

    def find_cluster(self, cluster_id: str, raw: bool = False) -> ClusterSummary | None:
        detector = self.detectors.cluster_queries()
        if detector is None:
            return None
        with self._state_lock:
            for scope in detector.scopes():
                found = detector.cluster(cluster_id, scope, raw)
                if found is not None:
                    return found
        return None

    def status(self) -> dict[str, Any]:
        gate = self.gate
        return {
            **self.counts.to_dict(),
            "queue_depth": gate.depth(),
            "queue_capacity": self.settings.queue_capacity,
            "queue_bound": gate.queue_bound(),
            "queue_bytes": gate.queued_bytes,
            "worker_events_per_second": round(gate.drain_rate, 2) if gate.drain_rate is not None else None,
            "sampling": self.settings.sampling,
            "sampling_rate": gate.sampling_rate(),
            "event_time": self.event_time,
            "judge_version": self.scorer.judge.version,
            "embedding_backend": self.embedding["backend"],
            "worker_running": self.running,
            "latency": {stage: w.summary() for stage, w in self.latency.items()},
        }
