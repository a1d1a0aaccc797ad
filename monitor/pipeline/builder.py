"""Assemble a :class:`MonitorService` from settings (loads the embedding model: seconds)."""

from __future__ import annotations

from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.embed.embedder import Embedder
from monitor.export.metrics import MonitorMetrics
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


def build_detectors(settings: Settings) -> DetectorSuite:
    return DetectorSuite([])


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


def build_service(
    settings: Settings, metrics: MonitorMetrics | None = None, embedder: Embedder | None = None, detectors: DetectorSuite | None = None
) -> MonitorService:
    """``embedder`` lets several services in one process (tests, benchmarks) share a loaded model;
    ``detectors`` replaces :func:`build_detectors` (tests that need a detector tuned to fire fast)."""
    taxonomy = load_taxonomy()
    embedder = embedder or Embedder(settings.embedding_model, settings.embedding_max_seq_length, settings.embedding_device)
    judge = build_judge(settings.judge, embedder, taxonomy)
    scorer = Scorer(
        embedder,
        judge,
        ScopeResolver(settings.models, settings.routes),
        settings.embed_responses,
        settings.batch_size,
        second_opinion=build_second_opinion(settings, taxonomy),
    )
    store = build_store(settings)
    service = MonitorService(settings, scorer, detectors or build_detectors(settings), metrics, store)
    Snapshotter(service, store, settings.snapshot_every_events, settings.snapshot_every_seconds).attach()
    service.stop_listeners.append(store.close)
    return service
