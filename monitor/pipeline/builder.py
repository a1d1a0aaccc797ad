"""Assemble a :class:`MonitorService` from settings (loads the embedding model: seconds)."""

from __future__ import annotations

from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.embed.embedder import Embedder
from monitor.export.metrics import MonitorMetrics
from monitor.judge.factory import build_judge
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.service import MonitorService
from monitor.scopes import ScopeResolver
from monitor.taxonomy import load_taxonomy


def build_detectors(settings: Settings) -> DetectorSuite:
    return DetectorSuite([])


def build_service(settings: Settings, metrics: MonitorMetrics | None = None, embedder: Embedder | None = None) -> MonitorService:
    """``embedder`` lets several services in one process (tests, benchmarks) share a loaded model."""
    taxonomy = load_taxonomy()
    embedder = embedder or Embedder(settings.embedding_model, settings.embedding_max_seq_length, settings.embedding_device)
    judge = build_judge(settings.judge, embedder, taxonomy)
    scorer = Scorer(embedder, judge, ScopeResolver(settings.models, settings.routes), settings.embed_responses, settings.batch_size)
    return MonitorService(settings, scorer, build_detectors(settings), metrics)
