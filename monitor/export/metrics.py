"""Prometheus metrics of the service, on a registry of its own.

Naming: prefix ``llmsafety_``, base units (seconds), ``_total`` for counters. Labels are bounded:
``model``/``route`` come from the configured allow-lists (else ``other``/``none``), ``category``
from the taxonomy, ``detector``/``kind``/``stage``/``reason`` from code. Verdict counters are
incremented by each judged event's sampling weight, so they estimate the full stream's counts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, Iterator, Mapping, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.ingest.counts import Tally
from monitor.signals import Reading, Severity

# `_created` series double the exposition size and no dashboard or rule of ours reads them.
disable_created_metrics()

PREFIX = "llmsafety_"
CLUSTER_STATUSES = ("tracking", "emerging", "dormant")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """A fresh registry gets ``process_*`` (CPU, memory, open fds) and ``python_info`` too: the
        app serves this registry, not the global one, so without them the sidecar's own resource
        use would not be scraped."""
        self.registry = registry or CollectorRegistry()
        r, p = self.registry, PREFIX
        if registry is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.build_info = Gauge(
            f"{p}build_info", "The running build (value 1): monitor version, judge version and embedding model.",
            ["version", "judge_version", "embedding_model"], registry=r,
        )
        self.received = Counter(f"{p}events_received", "Events in request bodies, valid or not.", registry=r)
        self.accepted = Counter(f"{p}events_accepted", "Events accepted (valid, new, queued or sampled out).", registry=r)
        self.duplicates = Counter(f"{p}events_duplicate", "Events whose event_id was already seen (accepted, not counted again).", registry=r)
        self.rejected = Counter(f"{p}events_rejected", "Events rejected as invalid.", registry=r)
        self.bodies_refused = Counter(
            f"{p}request_bodies_refused",
            "Request bodies (ingest, feedback, triage actions, console forms) refused whole before any item was read "
            "(400 not JSON, 413 too large or too many items, "
            "415 content type, 408 body too slow, 503 too many bodies held at once): their events reach no other counter.",
            ["route", "status"],
            registry=r,
        )
        self.dropped = Counter(f"{p}events_dropped", "Events not processed, by reason.", ["reason"], registry=r)
        self.processed = Counter(f"{p}events_processed", "Accepted events that have left the pipeline (judged, sampled out or failed).", registry=r)
        self.judged = Counter(f"{p}events_judged", "Events embedded and judged.", ["model", "route"], registry=r)
        self.sampled_out = Counter(f"{p}events_sampled_out", "Accepted events counted but not judged (load shedding).", registry=r)
        self.truncated = Counter(f"{p}texts_truncated", "Events whose prompt or response was truncated to max_text_chars.", registry=r)
        # --- integrations (source: litellm|otel) ---
        self.events_redacted = Counter(
            f"{p}events_redacted",
            "LLM calls whose texts the sender withheld (LiteLLM 'redacted-by-litellm', spans without message content): counted, never judged.",
            ["source"],
            registry=r,
        )
        self.items_ignored = Counter(
            f"{p}integration_items_ignored", "Items an integration received that are no LLM call (non-LLM spans, embedding calls).", ["source"], registry=r
        )
        for source in ("litellm", "otel"):
            self.events_redacted.labels(source=source)
            self.items_ignored.labels(source=source)
        self.queue_depth = Gauge(f"{p}queue_depth", "Events waiting for the worker.", registry=r)
        self.queue_capacity = Gauge(f"{p}queue_capacity", "Queue capacity.", registry=r)
        self.sampling_rate = Gauge(f"{p}sampling_rate", "Fraction of accepted events admitted for judging (1 = all).", registry=r)
        self.batch_size = Histogram(f"{p}batch_size", "Events per worker batch.", buckets=BATCH_BUCKETS, registry=r)
        self.stage_seconds = Histogram(
            f"{p}stage_duration_seconds", "Time per worker batch in each stage.", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ingest_seconds = Histogram(
            f"{p}ingest_duration_seconds", "Time to validate and enqueue one request.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.prompt_verdicts = Counter(
            f"{p}prompt_verdicts",
            "Judged prompts by top category (weighted by sampling).",
            ["model", "route", "category", "judge_version"],
            registry=r,
        )
        self.response_verdicts = Counter(
            f"{p}response_verdicts",
            "Judged responses by prompt category and whether the response is harmful (weighted).",
            ["model", "route", "category", "harmful"],
            registry=r,
        )
        self.refusals = Counter(
            f"{p}refusals",
            "Judged responses by whether the prompt was unsafe and whether the model refused (weighted).",
            ["model", "route", "prompt", "refused"],
            registry=r,
        )
        self.judge_info = Gauge(f"{p}judge_info", "The judge in use (value 1).", ["judge_version"], registry=r)
        self.embedding_info = Gauge(
            f"{p}embedding_info", "The embedding model and backend in use (value 1); a change refits embedding-drift references.",
            ["model", "backend"], registry=r,
        )
        self.event_time = Gauge(f"{p}event_time_seconds", "Latest event timestamp processed (the event-time clock).", registry=r)
        self.worker_errors = Counter(f"{p}worker_errors", "Batches whose processing raised (events retried one by one).", registry=r)
        self.second_opinions = Counter(f"{p}second_opinions", "Events that received a second-opinion verdict.", registry=r)
        self.second_judge_errors = Counter(
            f"{p}second_judge_errors", "Second-judge calls that failed after retries, by reason.", ["reason"], registry=r
        )
        self.second_judge_retries = Counter(f"{p}second_judge_retries", "Second-judge attempts that were retried.", registry=r)
        self.detector_errors = Counter(
            f"{p}detector_errors", "Batches a detector raised on (logged; the other detectors still ran).", ["detector"], registry=r
        )
        self.feedback = Counter(
            f"{p}feedback", "Labels received on /v1/feedback by status: matched, unknown_event, duplicate, corrected, capped; "
            "refused: invalid, rate_limited (429), too_many (413).", ["status"], registry=r
        )
        self.detectors = DetectorCollector(registry=r)
        self.report_late = ScrapedCounter(
            f"{p}report_events_late",
            "Judged events older than every window the report reservoir keeps, once all are in use: in no report sample.",
            registry=r,
        )
        self.alerts_firing = Gauge(f"{p}alerts_firing", "Firing alerts by kind and severity.", ["kind", "severity"], registry=r)
        self.alert_transitions = Counter(f"{p}alert_transitions", "Alert status changes.", ["kind", "status"], registry=r)
        # --- alert delivery (target: alertmanager|webhook|slack; outcome: sent|failed|rejected|dropped) ---
        self.alert_deliveries = Counter(
            f"{p}alert_deliveries", "Alert notices by delivery target and outcome.", ["target", "outcome"], registry=r
        )
        self.alert_delivery_retries = Counter(f"{p}alert_delivery_retries", "Delivery attempts that were retried.", ["target"], registry=r)
        self.alert_outbox_size = Gauge(f"{p}alert_outbox_size", "Alert notices waiting for delivery.", ["target"], registry=r)
        # A detector node runs one delivery per owned partition on this registry: the gauge sums them.
        self._outboxes: dict[str, list[Callable[[], int]]] = {}
        self._outbox_lock = threading.Lock()
        self.dropped.labels(reason="queue_full")
        self.dropped.labels(reason="poison")

    def set_build_info(self, judge_version: str, embedding_model: str) -> None:
        """One ``llmsafety_build_info`` series; a changed judge or model replaces it."""
        self.build_info.clear()
        self.build_info.labels(version=__version__, judge_version=judge_version, embedding_model=embedding_model).set(1)

    def declare_alert_kinds(self, kinds: Iterable[str]) -> None:
        """``llmsafety_alerts_firing`` at 0 for every kind and severity before the first alert: a rule
        or panel on the series sees 0, not "no data" (which Grafana shows as blank and ``> 0`` ignores)."""
        for kind in kinds:
            for severity in get_args(Severity):
                self.alerts_firing.labels(kind=kind, severity=severity)

    def record(self, tally: Tally) -> None:
        """Ingest counts (the :class:`~monitor.ingest.counts.IngestSink` of every ingest path). ``judged``
        is left out: it is counted per event with its model and route labels."""
        for counter, n in ((self.received, tally.received), (self.accepted, tally.accepted), (self.duplicates, tally.duplicates),
                           (self.rejected, tally.rejected), (self.truncated, tally.truncated), (self.sampled_out, tally.sampled_out),
                           (self.processed, tally.processed)):
            if n:
                counter.inc(n)
        for reason, n in tally.dropped.items():
            self.dropped.labels(reason=reason).inc(n)

    def watch_queue(self, depth: Callable[[], float], sampling_rate: Callable[[], float] | None = None) -> None:
        """Read the queue's depth (and the admission rate) at scrape time: a scrape sees the queue as
        it is, not as the last request or batch left it."""
        self.queue_depth.set_function(depth)
        if sampling_rate is not None:
            self.sampling_rate.set_function(sampling_rate)

    def watch_outbox(self, target: str, size: Callable[[], int]) -> Callable[[], None]:
        """Count ``size()`` into ``alert_outbox_size{target}`` (summed with every other watched outbox
        of that target) until the returned function is called."""
        with self._outbox_lock:
            sources = self._outboxes.setdefault(target, [])
            sources.append(size)
            self.alert_outbox_size.labels(target).set_function(lambda: float(sum(f() for f in list(sources))))

        def forget() -> None:
            with self._outbox_lock:
                if size in sources:  # forgetting twice is harmless
                    sources.remove(size)

        return forget


@dataclass(frozen=True, slots=True)
class DetectorView:
    """What one detector suite shows on a scrape: its readings, and its clusters per (scope, status)
    (every scope with all three statuses, zeros included; empty without a clustering detector)."""

    readings: tuple[Reading, ...] = ()
    clusters: Mapping[tuple[str, str], int] = field(default_factory=dict)


T = TypeVar("T")


class _Watched(Generic[T]):
    """Readers of state that lives elsewhere, each called on every scrape until the function
    ``watch`` returned is called (a partition handed to another process, a stopped service)."""

    def __init__(self) -> None:
        self._readers: dict[int, Callable[[], T]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def watch(self, read: Callable[[], T]) -> Callable[[], None]:
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._readers[key] = read

        def forget() -> None:
            with self._lock:
                self._readers.pop(key, None)  # forgetting twice is harmless

        return forget

    def read(self) -> list[T]:
        with self._lock:
            readers = list(self._readers.values())
        return [read() for read in readers]


class ScrapedCounter(Collector):
    """A counter kept in a component's own state (and snapshot, so it survives a restart), read
    at scrape time: the sum of the watched counts, 0 while none is watched.

    >>> from prometheus_client import generate_latest
    >>> registry = CollectorRegistry()
    >>> late = ScrapedCounter("late", "Late events.", registry=registry)
    >>> forget = late.watch(lambda: 3)
    >>> [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]
    ['late_total 3.0']
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry | None = None) -> None:
        self.name, self.documentation = name, documentation
        self._counts: _Watched[int] = _Watched()
        if registry is not None:
            registry.register(self)

    def watch(self, count: Callable[[], int]) -> Callable[[], None]:
        """Add ``count()`` to every scrape until the returned function is called."""
        return self._counts.watch(count)

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=sum(self._counts.read()))


class DetectorCollector(Collector):
    """``detector_statistic``/``_threshold``/``_active`` and ``emerging_clusters``, read at scrape time.

    Why a collector: gauges the worker set after each batch had to be removed by hand whenever a
    key, scope or whole detector partition went away (a partition handed to another process).
    Here each running detector suite registers a view of its latest state and withdraws it when it
    stops, so a scrape shows exactly what the running suites hold. Views are snapshots the worker
    publishes after each batch, so a scrape never waits for the worker's state lock.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._views: _Watched[DetectorView] = _Watched()
        if registry is not None:
            registry.register(self)

    def watch(self, view: Callable[[], DetectorView]) -> Callable[[], None]:
        """Show ``view()`` on every scrape until the returned function is called."""
        return self._views.watch(view)

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        views = self._views.read()
        statistic, threshold, active, clusters = self._families()
        for view in views:
            for rd in view.readings:
                labels = [rd.detector, rd.scope, rd.key]
                statistic.add_metric(labels, rd.statistic)
                threshold.add_metric(labels, rd.threshold)
                active.add_metric(labels, 1.0 if rd.active else 0.0)
            for (scope, status), count in view.clusters.items():
                clusters.add_metric([scope, status], count)
        yield from (statistic, threshold, active, clusters)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        labels = ["detector", "scope", "key"]
        return (
            GaugeMetricFamily(f"{PREFIX}detector_statistic", "Detector statistic.", labels=labels),
            GaugeMetricFamily(f"{PREFIX}detector_threshold", "Detector threshold.", labels=labels),
            GaugeMetricFamily(f"{PREFIX}detector_active", "1 while the detector sees drift.", labels=labels),
            GaugeMetricFamily(
                f"{PREFIX}emerging_clusters", "Clusters of novel unsafe traffic by scope and status (tracking, emerging, dormant).",
                labels=["scope", "status"],
            ),
        )
