"""Assemble a :class:`MonitorService` from settings (loads the embedding model: seconds)."""

from __future__ import annotations

from typing import Callable

from threadpoolctl import threadpool_limits

from monitor.alerts.delivery import attach_delivery
from monitor.config import ALL_DETECTORS, Settings
from monitor.drift.adwin_baseline import AdwinShareDetector
from monitor.drift.base import Detector
from monitor.drift.behaviour import OverRefusalDetector, UnsafeResponseRateDetector
from monitor.drift.embedding_mmd import EmbeddingMMDDetector
from monitor.drift.emerging import EmergingClusterDetector
from monitor.privacy.redact import Redactor
from monitor.drift.feedback import FeedbackDisagreementDetector
from monitor.drift.proportions import CategoryShareDetector
from monitor.drift.rate_change import RateChangeConfig
from monitor.drift.second_opinion_disagreement import SecondOpinionDisagreementDetector
from monitor.drift.suite import DetectorSuite
from monitor.embed.embedder import Embedder
from monitor.export.metrics import MonitorMetrics
from monitor.export.reservoir import attach_reservoir
from monitor.judge.factory import build_judge
from monitor.judge.llm_guard import LlmGuardJudge
from monitor.judge.second_opinion import SecondOpinion
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.service import MonitorService
from monitor.scopes import ScopeResolver
from monitor.state.memory import MemoryStateStore
from monitor.state.redis_store import RedisStateStore
from monitor.state.snapshots import Snapshotter
from monitor.state.store import StateStore
from monitor.taxonomy import Taxonomy, load_taxonomy
from monitor.triage.attach import attach_triage


def build_detectors(settings: Settings, taxonomy: Taxonomy | None = None) -> DetectorSuite:
    """The detectors named in ``settings.detectors``, in a fixed order (the order conditions reach the alert engine)."""
    taxonomy = taxonomy or load_taxonomy()
    harm = taxonomy.harm_ids
    rate = RateChangeConfig(
        warmup=settings.concept_warmup_trials, arl=settings.concept_arl_trials, ratio=settings.concept_shift_ratio
    )
    factories: dict[str, Callable[[], Detector]] = {
        "category_share": lambda: CategoryShareDetector(
            harm,
            warmup_events=settings.share_warmup_events,
            expected_run_time=settings.share_expected_run_time,
            ratio=settings.share_shift_ratio,
            share_weighting=settings.share_weighting,
        ),
        "category_share_adwin": lambda: AdwinShareDetector(harm, delta=settings.adwin_delta, warmup_events=settings.share_warmup_events),
        "embedding_drift": lambda: EmbeddingMMDDetector(
            reference_events=settings.embedding_reference_events,
            window_events=settings.embedding_window_events,
            expected_run_time=settings.embedding_expected_run_time,
            seed=settings.seed,
        ),
        "emerging_clusters": lambda: EmergingClusterDetector(
            reference_events=settings.emerging_reference_events,
            calibration_events=settings.emerging_calibration_events,
            min_share=settings.emerging_min_share,
            max_clusters=settings.emerging_max_clusters,
            redactor=Redactor(settings.redaction),
            store_raw_text=settings.store_raw_text,
        ),
        "feedback_disagreement": lambda: FeedbackDisagreementDetector(
            taxonomy.ids, memory=settings.feedback_memory, config=rate, max_source_share=settings.feedback_max_source_share
        ),
        "judge_disagreement": lambda: SecondOpinionDisagreementDetector(rate),
        "unsafe_response_rate": lambda: UnsafeResponseRateDetector(rate),
        "over_refusal": lambda: OverRefusalDetector(rate),
    }
    return DetectorSuite([factories[name]() for name in ALL_DETECTORS if name in settings.detectors])


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
    return SecondOpinion(judge, settings.second_judge_rate, seed=settings.seed)


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
    )


def build_scorer(settings: Settings, embedder: Embedder | None = None) -> Scorer:
    """The stateless embed-and-judge stage (the whole of a scale-out worker)."""
    if settings.blas_threads:  # process-wide: torch's threads keep the cores (see the setting)
        threadpool_limits(settings.blas_threads, user_api="blas")
    taxonomy = load_taxonomy()
    embedder = embedder or build_embedder(settings)
    judge = build_judge(settings.judge, embedder, taxonomy, settings.model_cache_dir, settings.embedding_threads)
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
    attach_reservoir(service)
    # Snapshots only where they outlive the process (Redis); the detector role's owner snapshots under its lease instead.
    if settings.role == "all" and settings.redis_url is not None:
        Snapshotter(service, store, settings.snapshot_every_events, settings.snapshot_every_seconds).attach()
    service.stop_listeners.append(store.close)
    attach_delivery(service, settings)
    attach_triage(service)
    return service
