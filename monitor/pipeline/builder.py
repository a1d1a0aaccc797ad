"""Assemble a :class:`MonitorService` from settings (loads the embedding model: seconds)."""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from monitor.alerts.delivery import AlertDelivery, policy_from_settings, targets_from_settings
from monitor.alerts.silences import SilenceHold
from monitor.config import Settings
from monitor.privacy.redact import Redactor
from monitor.drift.registry import build_detectors
from monitor.drift.suite import DetectorSuite
from monitor.embed.backends import resolve_kind
from monitor.embed.embedder import Embedder
from monitor.export.metrics import MonitorMetrics
from monitor.export.reservoir import WindowReservoir
from monitor.judge.factory import build_judge, judge_version
from monitor.judge.thresholds import Thresholds
from monitor.judge.llm_guard import LlmGuardJudge
from monitor.judge.second_opinion import SecondOpinion
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.probing import attach_prober
from monitor.pipeline.service import MonitorService
from monitor.scopes import ScopeResolver
from monitor.state.memory import MemoryStateStore
from monitor.state.redis_store import RedisStateStore
from monitor.state.snapshots import Snapshotter
from monitor.state.store import StateStore
from monitor.taxonomy import Taxonomy, load_taxonomy
from monitor.pipeline.triaging import attach_triage


def build_second_opinion(settings: Settings, taxonomy: Taxonomy) -> SecondOpinion | None:
    if not settings.second_judge_url:
        return None
    judge = LlmGuardJudge(
        settings.second_judge_url,
        settings.second_judge_model,
        api_key=settings.second_judge_api_key,
        timeout_s=settings.second_judge_timeout_s,
        max_retries=settings.second_judge_max_retries,
        max_concurrency=settings.second_judge_max_concurrency,
        prompt_mode=settings.second_judge_prompt_mode,
        taxonomy=taxonomy,
    )
    return SecondOpinion(judge, settings.second_judge_rate, seed=settings.seed, uncertain_rate=settings.second_judge_uncertain_rate,
                         uncertain_above=settings.second_judge_uncertain_above)


def build_store(settings: Settings) -> StateStore:
    if settings.redis_url is None:
        return MemoryStateStore(settings.dedup_capacity)
    return RedisStateStore.from_url(settings.redis_url, settings.state_key_prefix, settings.dedup_ttl_seconds, settings.redis_timeout_seconds)


def build_embedder(settings: Settings) -> Embedder:
    """The configured model on the configured backend (an ONNX backend exports the model on first use)."""
    return Embedder(
        settings.embedding_model,
        settings.embedding_max_seq_length,
        settings.embedding_device,
        settings.embedding_batch_size,
        settings.embedding_pass_overhead_tokens,
        backend=settings.embedding_backend,
        cache_dir=settings.model_cache_dir,
        threads=settings.embedding_threads,
        pass_max_cells=settings.embedding_pass_max_cells,
    )


def judge_thresholds(settings: Settings) -> Thresholds:
    """The decision lines the operator moved (none by default)."""
    return Thresholds(prompt=settings.judge_prompt_threshold, response=settings.judge_response_threshold)


def workers_judge_version(settings: Settings) -> str:
    """The version the judge :func:`build_scorer` builds reports, without loading a model: the detector role
    labels its state and metrics with its workers' judge (an encoder judge's names the embedding backend it
    runs on, its pair length and any moved decision line)."""
    return judge_version(settings.judge, load_taxonomy(), resolve_kind(settings.embedding_backend, settings.embedding_device),
                         settings.judge_max_seq_length or settings.embedding_max_seq_length, judge_thresholds(settings),
                         settings.judge_prompt_skip_below)


def build_scorer(settings: Settings, embedder: Embedder | None = None) -> Scorer:
    """The stateless embed-and-judge stage (the whole of a scale-out worker)."""
    if settings.blas_threads:  # process-wide: torch's threads keep the cores (see the setting)
        threadpool_limits(settings.blas_threads, user_api="blas")
    taxonomy = load_taxonomy()
    embedder = embedder or build_embedder(settings)
    judge = build_judge(settings.judge, embedder, taxonomy, settings.model_cache_dir, settings.embedding_threads,
                        settings.judge_max_seq_length, judge_thresholds(settings), settings.judge_prompt_skip_below)
    return Scorer(
        embedder,
        judge,
        ScopeResolver(settings.models, settings.routes),
        settings.embed_responses,
        second_opinion=build_second_opinion(settings, taxonomy),
        second_opinion_deadline_s=settings.second_judge_batch_deadline_s,
    )


def build_service(
    settings: Settings, metrics: MonitorMetrics | None = None, embedder: Embedder | None = None, detectors: DetectorSuite | None = None
) -> MonitorService:
    """``embedder`` lets several services in one process (tests, benchmarks) share a loaded model;
    ``detectors`` replaces :func:`build_detectors` (tests that need a detector tuned to fire fast)."""
    scorer = build_scorer(settings, embedder)
    store = build_store(settings)
    service = MonitorService(settings, scorer, detectors or build_detectors(settings), metrics, store)
    service.metrics.watch_queue(service.gate.depth, service.gate.sampling_rate)
    attach_reservoir(service)
    attach_prober(service, settings)  # before the snapshotter: its state is restored with the rest
    hold = attach_silence_hold(service, settings)  # likewise
    # Snapshots only where they outlive the process (Redis); the detector role's owner snapshots under its lease instead.
    if settings.role == "all" and settings.redis_url is not None:
        attach_snapshots(service, store, settings)
    service.stop_listeners.append(store.close)
    attach_delivery(service, settings, hold)
    triage = attach_triage(service)
    if hold is not None:  # from here on: the resolves of triage's restore above went out as before
        hold.silenced = triage.silences
    return service


# Wiring: what listens to the service's judged batches, transitions and stop. Kept here, above the
# service and the features, so that no lower layer reaches into the service's listener lists.


def attach_reservoir(service: MonitorService) -> WindowReservoir:
    """Keep a sample of judged events per window for ``/v1/reports`` (``service.report_reservoir``);
    ``llmsafety_report_events_late_total`` reads its ``late_dropped`` (kept in its snapshot) while the service runs."""
    s = service.settings
    reservoir = WindowReservoir(
        window_seconds=s.report_window_seconds,
        per_window=s.report_samples_per_window,
        max_windows=s.report_windows_kept,
        texts=s.report_texts,
        text_chars=s.report_text_chars,
        labels=service.scorer.scopes.labels,
        seed=s.seed,
        redactor=Redactor(s.redaction),
    )
    service.batch_listeners.append(reservoir)
    service.stateful["report_reservoir"] = reservoir
    service.report_reservoir = reservoir
    service.stop_listeners.append(service.metrics.report_late.watch(lambda: reservoir.late_dropped))
    return reservoir


def attach_silence_hold(service: MonitorService, settings: Settings) -> SilenceHold | None:
    """Where webhook and Slack notices wait out a reviewer's silence, kept in ``service``'s snapshot; ``None``
    when no webhook or Slack target is configured (Alertmanager applies silences itself)."""
    if not any(not t.resends for t in targets_from_settings(settings)):
        return None
    hold = SilenceHold(capacity=policy_from_settings(settings).outbox_size)
    service.stateful["silence_hold"] = hold
    return hold


def attach_delivery(service: MonitorService, settings: Settings, hold: SilenceHold | None = None) -> AlertDelivery | None:
    """Deliver ``service``'s alerts to the configured targets (and flush them when it stops), webhooks and
    Slack through ``hold``. Firing alerts restored from saved state are announced again. ``None`` when no
    target is configured.
    """
    targets = targets_from_settings(settings)
    if not targets:
        return None
    delivery = AlertDelivery(targets, service.metrics, policy_from_settings(settings))
    if hold is not None:
        delivery.mute_with(hold)
    delivery.start(service.alerts("firing"))
    # Alerts the restore resolved (a refit) before delivery listened; none for a partition, which restores after this.
    delivery.on_transitions(service.refitted_on_restore)
    service.transition_listeners.append(delivery.on_transitions)
    service.stop_listeners.append(delivery.close)
    return delivery


def attach_snapshots(service: MonitorService, store: StateStore, settings: Settings) -> Snapshotter:
    """Restore the latest snapshot (waiting for the store), then save after batches and on stop."""
    snapshots = Snapshotter(service, store, settings.snapshot_every_events, settings.snapshot_every_seconds)
    snapshots.attach()
    return snapshots
