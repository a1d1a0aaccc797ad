"""The running monitor: ingest bookkeeping, the bounded queue, and the batching worker.

The API thread only validates, deduplicates and enqueues (``ingest``): it never waits for the
model. One worker task pulls batches (``batch_size`` or ``batch_max_wait_ms``, whichever first)
and runs embed → judge → detect → alert in a single worker thread, so the event loop stays free
for ``/healthz`` and ingest, and events are processed in arrival order (replays are
reproducible). A batch that raises is retried one event at a time; an event that still raises is
a poison event: counted as ``dropped{reason="poison"}`` and skipped, never retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter as CounterDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, TypeVar, get_args

from monitor.signals import Condition
from monitor.alerts.engine import Alert, AlertEngine, Status, Transition
from monitor.config import Settings
from monitor.drift.emerging_clusters import ClusterSummary
from monitor.drift.feedback_disagreement import STATUSES, Feedback, FeedbackDisagreementDetector
from monitor.drift.suite import DetectorSuite
from monitor.events import Event, ScoredEvent
from monitor.export.metrics import CLUSTER_STATUSES, DetectorView, MonitorMetrics
from monitor.export.reservoir import WindowReservoir
from monitor.ingest.parsing import ParsedBody, Rejection
from monitor.ingest.request import IngestOutcome, IngestRequest
from monitor.ingest.sampling import AdaptiveSampler
from monitor.pipeline.latency import LatencyWindow
from monitor.pipeline.scoring import Scorer, StageTimes
from monitor.privacy.redact import Redactor
from monitor.state.memory import MemoryStateStore
from monitor.state.store import StateStore, StoreUnavailable

log = logging.getLogger(__name__)

QueueItem = tuple[Event, float]
T = TypeVar("T")


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread ``nice`` (Linux: a thread id is a process id to setpriority).

    Runs first in the worker thread, before it calls torch, so the OpenMP threads torch starts from
    it inherit the niceness: when embedding saturates every core, the HTTP event loop still gets a
    CPU at once, and ingest latency does not grow with the embedding load.
    """
    if nice and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError as exc:
            log.warning("could not lower the worker thread's priority: %s", exc)


def embedding_identity(settings: Settings, scorer: Scorer) -> dict[str, str]:
    """The model and backend this service's embeddings come from (``{"model", "backend"}``).

    Embeddings of one text through two backends differ (int8 vs fp32: cosine 0.98-0.99), enough
    for a drift detector to see drift that is not there, so detector state records it. A service
    without an embedder (the detector role) takes it from the settings its workers share.
    """
    if scorer.embedder is not None:
        return dict(scorer.embedder.info.identity)
    return {"model": settings.embedding_model, "backend": settings.embedding_backend}


# Snapshots written before embeddings were labelled came from the torch path (the only one then).
LEGACY_EMBEDDING_BACKEND = "torch"


@dataclass(slots=True)
class Counts:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    processed: int = 0
    judged: int = 0
    sampled_out: int = 0
    truncated: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "poison": 0, "overload": 0, "shutdown": 0})


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
        self.counts = Counts()
        self.latency = {stage: LatencyWindow() for stage in ("ingest", "embed", "judge", "detect", "batch")}
        self.event_time: float | None = None
        # Extension points, called in the worker thread after each batch (keep them fast; never raise).
        self.report_reservoir: WindowReservoir | None = None  # set by builder.attach_reservoir; reports are off without one
        self.batch_listeners: list[Callable[[list[ScoredEvent]], None]] = []
        self.transition_listeners: list[Callable[[list[Transition]], None]] = []
        # Listeners with state of their own (e.g. the report reservoir) register here to be snapshotted with the rest.
        self.stateful: dict[str, Any] = {}
        # Called after stop() has drained and stopped the worker (final snapshot).
        self.stop_listeners: list[Callable[[], None]] = []
        self.store: StateStore = store or MemoryStateStore(settings.dedup_capacity)
        self._sampler = AdaptiveSampler(
            settings.sampling_start_fill, settings.sampling_min_rate, seed=settings.seed, enabled=settings.sampling == "auto"
        )
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=settings.queue_capacity)
        self._sizes: deque[int] = deque()  # bytes of each queued event, in queue order (one consumer: FIFO)
        self._queued_bytes = 0
        self._throughput: float | None = None  # events/s the worker processes while busy (EWMA); None until measured
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="monitor-worker", initializer=lower_thread_priority, initargs=(settings.worker_nice,)
        )
        # Detectors and alerts: mutated by the worker thread, read by the API and changed by reviewers (triage).
        # Reentrant: exports that read alert state run both inside and outside a locked section.
        self._state_lock = threading.RLock()
        self._task: asyncio.Task[None] | None = None
        self._holding = False  # the worker has taken a batch off the queue and not finished it
        self._label_children: dict[tuple[Any, ...], Any] = {}
        self._firing: CounterDict[tuple[str, str]] = CounterDict()
        self._second_judge_seen: dict[str, int] = {}
        self.detectors.on_error = lambda name: self.metrics.detector_errors.labels(detector=name).inc()
        self.metrics.queue_capacity.set(settings.queue_capacity)
        self.metrics.sampling_rate.set(1.0)
        self.metrics.judge_info.labels(judge_version=scorer.judge.version).set(1)
        self.metrics.set_build_info(scorer.judge.version, settings.embedding_model)
        self.metrics.declare_alert_kinds(self.detectors.alert_kinds())
        self._shown = DetectorView()  # what a scrape shows of the detectors: replaced after each batch
        self._unwatch_detectors = self.metrics.detectors.watch(lambda: self._shown)
        self.embedding = embedding_identity(settings, scorer)
        self.metrics.embedding_info.labels(**self.embedding).set(1)

    # ---------------------------------------------------------------- ingest (event loop)
    def ingest(self, parsed: ParsedBody, arrival_time: float) -> IngestOutcome:
        """Validate, deduplicate and enqueue (event loop). With an in-memory store nothing here blocks;
        routes call :meth:`ingest_async`, which keeps a networked store's round trips off the loop."""
        started = time.perf_counter()
        request = IngestRequest.screen(parsed, arrival_time, self.settings)
        discard = self._admit(request, self._remember(request), started)
        if discard:
            self._forget(discard)
        return request.outcome

    async def ingest_async(self, parsed: ParsedBody, arrival_time: float) -> IngestOutcome:
        """:meth:`ingest` with the state store's calls in a worker thread (Redis: a slow or paused
        server must not hold up ``/healthz`` and other requests); the queue and counts stay on the loop."""
        if self.store.backend == "memory":
            return self.ingest(parsed, arrival_time)
        started = time.perf_counter()
        request = IngestRequest.screen(parsed, arrival_time, self.settings)
        discard = self._admit(request, await asyncio.to_thread(self._remember, request), started)
        if discard:
            await asyncio.to_thread(self._forget, discard)
        return request.outcome

    def _remember(self, request: IngestRequest) -> list[bool] | StoreUnavailable:
        """Which candidates are new (the store's one round trip), or why the store cannot say."""
        try:
            return self.store.add_ids(list(request.candidates))
        except StoreUnavailable as exc:
            return exc

    def _forget(self, event_ids: list[str]) -> None:
        try:
            self.store.discard_ids(event_ids)
        except StoreUnavailable:  # a resend then counts as a duplicate: logged, not fatal
            log.warning("could not forget %d event ids after a full queue", len(event_ids))

    def queue_bound(self) -> int:
        """Most events the queue may hold now: ``queue_capacity``, or fewer once the worker's rate is
        measured, so that no event waits longer than ``max_queue_delay_seconds`` (at that rate)."""
        rate = self._throughput
        if rate is None:
            return self.settings.queue_capacity
        by_delay = int(rate * self.settings.max_queue_delay_seconds)
        return max(1, min(self.settings.queue_capacity, max(2 * self.settings.batch_size, by_delay)))

    def _fill(self, extra_events: int = 0, extra_bytes: int = 0) -> float:
        by_count = (self._queue.qsize() + extra_events) / self.queue_bound()
        by_bytes = (self._queued_bytes + extra_bytes) / self.settings.queue_max_bytes
        return max(by_count, by_bytes)

    def _admit(self, request: IngestRequest, new: list[bool] | StoreUnavailable, started: float) -> list[str]:
        """Sample, enqueue and count (event loop); returns the ids to forget when the request is refused.

        Sampling sheds before the queue: the admission rate falls from 1 to ``sampling_min_rate`` as
        the queue fills towards its bound, and events that would overfill it are accepted but not
        judged (``dropped{reason="overload"}``); only ``sampling: off`` answers a full queue with 503.
        """
        n_received, outcome = request.n_received, request.outcome
        if isinstance(new, StoreUnavailable):
            outcome.unavailable, outcome.duplicates = str(new), 0
            self._count_ingest(n_received, outcome, new=0, dropped=request.refused, reason="store_unavailable")
            return []
        fresh = [event for event, is_new in zip(request.candidates.values(), new) if is_new]
        outcome.duplicates += len(request.candidates) - len(fresh)

        admitted: list[tuple[Event, float, int]] = []
        sampled_out = shed = 0
        admitted_bytes = 0
        sampling = self.settings.sampling == "auto"
        for event in fresh:
            size = request.sizes.get(event.event_id, 0)
            weight = self._sampler.admit(self._fill(len(admitted), admitted_bytes))
            if weight is None:
                sampled_out += 1
            elif sampling and self._fill(len(admitted) + 1, admitted_bytes + size) > 1.0:
                shed += 1  # past the bound even at the lowest rate: shed here, never queued
            else:
                admitted.append((event, weight, size))
                admitted_bytes += size
        if not sampling and admitted and self._fill(len(admitted), admitted_bytes) > 1.0:  # sampling off: push back, take nothing
            outcome.queue_full = True
            outcome.duplicates = 0
            self._count_ingest(n_received, outcome, new=0, dropped=request.refused)
            return [e.event_id for e in fresh]

        for event, weight, size in admitted:
            self._queue.put_nowait((event, weight))
            self._sizes.append(size)
        self._queued_bytes += admitted_bytes
        truncated = sum(1 for e in fresh if e.truncated)
        outcome.accepted = len(fresh) + outcome.duplicates
        c = self.counts
        c.sampled_out += sampled_out
        c.processed += sampled_out + shed
        self.metrics.sampled_out.inc(sampled_out)
        self.metrics.processed.inc(sampled_out + shed)
        if shed:
            c.dropped["overload"] += shed
            self.metrics.dropped.labels(reason="overload").inc(shed)
        self._count_ingest(n_received, outcome, new=len(fresh), truncated=truncated)
        self.latency["ingest"].add(time.perf_counter() - started)
        return []

    def _count_ingest(self, received: int, outcome: IngestOutcome, new: int, truncated: int = 0,
                      dropped: int = 0, reason: str = "queue_full") -> None:
        """The request's counts, in the service's own tallies (status, snapshots) and in Prometheus."""
        c = self.counts
        c.received += received
        c.accepted += new
        c.duplicates += outcome.duplicates
        c.rejected += len(outcome.rejected)
        c.truncated += truncated
        c.dropped[reason] = c.dropped.get(reason, 0) + dropped
        self.metrics.count_request(received, outcome, new, truncated, (reason, dropped))
        self.metrics.queue_depth.set(self._queue.qsize())
        self.metrics.sampling_rate.set(self.sampling_rate())

    def sampling_rate(self) -> float:
        """The admission rate at the queue's fill now (not at the last ingest: it recovers as the queue drains)."""
        return self._sampler.rate(self._fill())

    # ---------------------------------------------------------------- worker
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="monitor-worker")

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Process what is queued for up to ``drain_timeout`` seconds (``shutdown_drain_seconds``), then
        stop the worker. Events still queued then are lost with the process: counted as
        ``dropped{reason="shutdown"}`` (and as processed, so the counts add up), never only logged."""
        if self._task is None:
            return
        drain_timeout = self.settings.shutdown_drain_seconds if drain_timeout is None else drain_timeout
        deadline = time.monotonic() + drain_timeout
        # Wait until nothing is queued and the worker holds no batch (one taken off the queue but not yet processed).
        while (not self._queue.empty() or self._holding) and time.monotonic() < deadline and not self._task.done():
            await asyncio.sleep(0.05)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        self._executor.shutdown(wait=True)  # a batch in flight finishes: only queued events are lost
        lost = self._queue.qsize()
        while not self._queue.empty():
            self._take(self._queue.get_nowait())
        if lost:
            log.warning("stopping with %d events unprocessed after the %.0f s drain: counted dropped{reason=\"shutdown\"}", lost, drain_timeout)
            self.counts.dropped["shutdown"] = self.counts.dropped.get("shutdown", 0) + lost
            self.counts.processed += lost
            self.metrics.dropped.labels(reason="shutdown").inc(lost)
        self._notify(self.stop_listeners)

    def close(self) -> None:
        """Release a service that was never started (a detector partition given up): its worker
        thread ends, its stop listeners (alert delivery) run, and its share of a shared ``metrics``
        (firing alerts, detector readings) is withdrawn: the partition's next owner exports it."""
        self._executor.shutdown(wait=True)
        self._notify(self.stop_listeners)
        with self._state_lock:
            self._export_firing(CounterDict())
            self._unwatch_detectors()

    def call_in_worker(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn`` in the worker thread, between batches (the detector role feeds judged events this way)."""
        return self._executor.submit(fn, *args)

    @property
    def judge_version(self) -> str:
        return self.scorer.judge.version

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _take(self, item: QueueItem) -> QueueItem:
        self._queued_bytes -= self._sizes.popleft() if self._sizes else 0
        return item

    async def _next_batch(self) -> list[QueueItem]:
        batch = [self._take(await self._queue.get())]
        self._holding = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_max_wait_ms / 1000.0
        while len(batch) < self.settings.batch_size:
            if not self._queue.empty():
                batch.append(self._take(self._queue.get_nowait()))
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(self._take(await asyncio.wait_for(self._queue.get(), remaining)))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self.metrics.queue_depth.set(self._queue.qsize())
            busy_since = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, self.process_batch, batch)
                self._measure(len(batch), time.perf_counter() - busy_since)
            except Exception:  # process_batch isolates failures; this is a last line of defence
                log.exception("worker batch failed unexpectedly")
                self.metrics.worker_errors.inc()
            finally:
                self._holding = False

    def _measure(self, n: int, seconds: float) -> None:
        """Fold one batch into the worker's measured rate (events per busy second), which bounds the queue."""
        if seconds <= 0:
            return
        rate = n / seconds
        self._throughput = rate if self._throughput is None else 0.8 * self._throughput + 0.2 * rate

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
        self._export(scored, readings, transitions, detect_seconds)
        self.counts.processed += n_items
        if self.counts_events:
            self.metrics.processed.inc(n_items)
        self.latency["batch"].add(time.perf_counter() - started)
        self._notify(self.batch_listeners, scored)
        self._notify(self.transition_listeners, transitions)
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
            self.counts.dropped["poison"] += n
            self.metrics.dropped.labels(reason="poison").inc(n)

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
        self.counts.judged += len(scored)
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
                "counts": asdict(self.counts),
                "event_time": self.event_time,
                "judge_version": self.scorer.judge.version,
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
        open alerts resolve; comparing new vectors with old ones would be a false alarm.
        """
        if state["judge_version"] != self.scorer.judge.version:
            log.warning("restoring detector state built on judge %s into judge %s", state["judge_version"], self.scorer.judge.version)
        saved_embedding = state.get("embedding") or {"model": self.embedding["model"], "backend": LEGACY_EMBEDDING_BACKEND}
        refit: list[str] = []
        if saved_embedding != self.embedding:
            refit = [d.name for d in self.detectors.detectors if getattr(d, "uses_embeddings", False)]
            refit += [name for name, part in self.stateful.items() if getattr(part, "uses_embeddings", False)]
            if refit:
                log.warning(
                    "snapshot embeddings came from model %s via backend %s, this process embeds with model %s via backend %s: "
                    "refitting %s from new traffic instead of comparing the two (no drift alert from the change)",
                    saved_embedding.get("model"), saved_embedding.get("backend"), self.embedding["model"], self.embedding["backend"],
                    ", ".join(refit),
                )
        saved = {k: v for k, v in state["counts"].items() if k in Counts.__dataclass_fields__}
        counts = Counts(**{**saved, "dropped": {**Counts().dropped, **saved.get("dropped", {})}})
        lost = counts.accepted - counts.processed
        if lost > 0:
            counts.dropped["restart"] = counts.dropped.get("restart", 0) + lost
            counts.processed += lost
            self.metrics.dropped.labels(reason="restart").inc(lost)
        with self._state_lock:
            self.detectors.load_state_dict({k: v for k, v in state["detectors"].items() if k not in refit})
            self.alert_engine.load_state_dict(state["alerts"])
            refit_kinds = {d.alert_kind for d in self.detectors.detectors if d.name in refit}
            stale = [
                Condition(a.kind, a.scope, a.key, active=False, at=state["event_time"] or a.updated_at)
                for a in self.alert_engine.alerts("all") if a.kind in refit_kinds and a.status != "resolved"
            ]
            refitted = self.alert_engine.observe(stale)
            for t in refitted:
                t.alert.summary += f" (resolved: reference refitted, embeddings now come from backend {self.embedding['backend']})"
            self._export_transitions(refitted)
            self.counts = counts
            self.event_time = state["event_time"]
            for name, part_state in state.get("components", {}).items():
                if name in self.stateful and name not in refit:
                    self.stateful[name].load_state_dict(part_state)
            self._export_firing()
            restored = refitted + [Transition(a, "firing") for a in self.alert_engine.alerts("firing")]
        self._show_detectors()
        if self.event_time is not None and self.counts_events:
            self.metrics.event_time.set(self.event_time)
        # Listeners attached before the restore (alert delivery on a detector owner taking over) re-announce
        # what is still firing, so Alertmanager does not let those alerts expire.
        self._notify(self.transition_listeners, restored)

    # ---------------------------------------------------------------- feedback (API)
    def observe_feedback(self, labels: list[tuple[int, Feedback]]) -> tuple[dict[str, int], list[Rejection]]:
        """Match labels against judged events; returns counts by status and labels the detector refused."""
        detector = self.detectors.get(FeedbackDisagreementDetector.name)
        if not isinstance(detector, FeedbackDisagreementDetector):
            raise LookupError("feedback: the feedback_disagreement detector is not configured")
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
        if self.counts_events:
            for status, n in statuses.items():
                self.metrics.feedback.labels(status=status).inc(n)
        self._export_transitions(transitions)
        self._notify(self.transition_listeners, transitions)
        return statuses, invalid

    def apply(self, change: Callable[[], list[Condition]]) -> list[Transition]:
        """Run ``change`` on detector state under the state lock (a reviewer's decision, e.g. triage) and
        put the conditions it returns through the alert engine, as a batch would."""
        with self._state_lock:
            transitions = self.alert_engine.observe(change())
        self._export_transitions(transitions)
        self._show_detectors()
        self._notify(self.transition_listeners, transitions)
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
        c = self.counts
        return {
            "received": c.received,
            "accepted": c.accepted,
            "duplicates": c.duplicates,
            "rejected": c.rejected,
            "processed": c.processed,
            "judged": c.judged,
            "sampled_out": c.sampled_out,
            "truncated": c.truncated,
            "dropped": dict(c.dropped),
            "queue_depth": self._queue.qsize(),
            "queue_capacity": self.settings.queue_capacity,
            "queue_bound": self.queue_bound(),
            "queue_bytes": self._queued_bytes,
            "worker_events_per_second": round(self._throughput, 2) if self._throughput is not None else None,
            "sampling": self.settings.sampling,
            "sampling_rate": self.sampling_rate(),
            "event_time": self.event_time,
            "judge_version": self.scorer.judge.version,
            "embedding_backend": self.embedding["backend"],
            "worker_running": self.running,
            "latency": {stage: w.summary() for stage, w in self.latency.items()},
        }
