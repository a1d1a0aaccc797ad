"""Assemble each role of ``monitor serve --role`` from settings.

- ``all``: the embedded single process (:func:`~monitor.pipeline.builder.build_service`).
- ``api``: :class:`~monitor.scale.frontend.StreamFrontend` behind the usual HTTP app; no model.
- ``worker``: :class:`~monitor.scale.worker.StreamWorker`, no HTTP; as many as the traffic needs.
- ``detector``: :class:`~monitor.scale.node.DetectorNode` behind the usual HTTP app; no model. It
  owns its share of the ``detector_partitions``, each a service of its own
  (:func:`build_partition_service`); run two or more for failover.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from typing import Callable, Sequence

from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.embed.embedder import Embedder
from monitor.export.metrics import MonitorMetrics
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.drift.registry import build_detectors
from monitor.pipeline.builder import attach_delivery, attach_reservoir, build_scorer, workers_judge_version
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.service import MonitorService
from monitor.scale.frontend import StreamFrontend
from monitor.scale.node import DetectorNode
from monitor.scale.streams import StreamKeys
from monitor.scale.worker import StreamWorker
from monitor.scopes import ScopeResolver
from monitor.state.memory import MemoryStateStore
from monitor.state.redis_store import connect

log = logging.getLogger(__name__)


def _redis(settings: Settings):
    if settings.redis_url is None:
        raise ValueError(f"redis_url: role {settings.role!r} needs MONITOR_REDIS_URL")
    return connect(settings.redis_url, settings.redis_timeout_seconds)


def process_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_frontend(settings: Settings) -> StreamFrontend:
    return StreamFrontend(settings, _redis(settings))


def build_worker(settings: Settings, embedder: Embedder | None = None, consumer: str | None = None) -> StreamWorker:
    return StreamWorker(
        _redis(settings),
        StreamKeys(settings.state_key_prefix),
        build_scorer(settings, embedder),
        consumer or process_name(),
        batch_size=settings.batch_size,
        claim_idle_ms=int(settings.claim_idle_seconds * 1000),
        scored_lag_limit=max(16, settings.queue_capacity // settings.batch_size),
        partitions=settings.detector_partitions,
    )


def run_worker(settings: Settings) -> None:
    """The ``worker`` role's main loop; SIGTERM/SIGINT finish the current batch and exit."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = build_worker(settings)
    log.info("worker %s consuming %s", worker.consumer, worker.keys.events)
    worker.run(stop)


class WorkersJudge:
    """Stands for the judge the worker processes run: the detector role needs only its version."""

    categories: Sequence[str] = ()

    def __init__(self, version: str) -> None:
        self.version = version

    def judge(self, inputs: Sequence[JudgeInput]) -> list[Verdict]:
        raise RuntimeError("the detector role judges nothing: worker processes do")


def build_partition_service(
    settings: Settings, partition: int, metrics: MonitorMetrics, version: str, detectors: Callable[[], DetectorSuite] | None = None
) -> MonitorService:
    """One detector partition's service: its detectors, alert engine and delivery; no model
    (``version`` is the workers' judge's). Partition 0 (``global``, every event) also keeps the
    report reservoir and the per-event counters."""
    scorer = Scorer(None, WorkersJudge(version), ScopeResolver(settings.models, settings.routes))
    suite = detectors() if detectors is not None else build_detectors(settings)
    service = MonitorService(settings, scorer, suite, metrics, MemoryStateStore(1), counts_events=partition == 0)
    if partition == 0:
        attach_reservoir(service)
    attach_delivery(service, settings)
    return service


def build_detector_node(settings: Settings, detectors: Callable[[], DetectorSuite] | None = None, name: str | None = None) -> DetectorNode:
    """The ``detector`` role; ``detectors`` builds each partition's suite (tests use one that fires fast)."""
    version = workers_judge_version(settings)
    return DetectorNode(
        settings,
        _redis(settings),
        lambda p, metrics: build_partition_service(settings, p, metrics, version, detectors),
        version,
        name or process_name(),
    )
