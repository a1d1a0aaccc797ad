"""Assemble each role of ``monitor serve --role`` from settings.

- ``all``: the embedded single process (:func:`~monitor.pipeline.builder.build_service`).
- ``api``: :class:`~monitor.scale.frontend.StreamFrontend` behind the usual HTTP app; no model.
- ``worker``: :class:`~monitor.scale.worker.StreamWorker`, no HTTP; as many as the traffic needs.
- ``detector``: the usual service and HTTP app (alerts, reports, metrics of the detectors), fed by
  :class:`~monitor.scale.detector.DetectorOwner` once it holds the lease; run two for failover.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from typing import Callable

from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.embed.embedder import Embedder
from monitor.pipeline.builder import build_scorer, build_service
from monitor.pipeline.service import MonitorService
from monitor.scale.detector import DetectorOwner, Outcome
from monitor.scale.frontend import StreamFrontend
from monitor.scale.streams import StreamKeys
from monitor.scale.worker import StreamWorker
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
    )


def run_worker(settings: Settings) -> None:
    """The ``worker`` role's main loop; SIGTERM/SIGINT finish the current batch and exit."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = build_worker(settings)
    log.info("worker %s consuming %s", worker.consumer, worker.keys.events)
    worker.run(stop)


def _exit_process(outcome: Outcome) -> None:
    if outcome == "lost":  # a supervisor restarts the process as a fresh standby
        os.kill(os.getpid(), signal.SIGTERM)


def build_detector_service(
    settings: Settings,
    embedder: Embedder | None = None,
    detectors: DetectorSuite | None = None,
    on_exit: Callable[[Outcome], None] = _exit_process,
) -> MonitorService:
    """The service of the ``detector`` role, with its lease owner running in a thread until the service stops."""
    service = build_service(settings, embedder=embedder, detectors=detectors)
    owner = DetectorOwner(
        service,
        _redis(settings),
        StreamKeys(settings.state_key_prefix),
        process_name(),
        lease_ttl_ms=int(settings.lease_ttl_seconds * 1000),
        snapshot_every_events=settings.snapshot_every_events,
        snapshot_every_seconds=settings.snapshot_every_seconds,
    )
    stop = threading.Event()
    thread = threading.Thread(target=lambda: on_exit(owner.run(stop)), name="detector-owner", daemon=True)
    thread.start()

    def stop_owner() -> None:
        stop.set()
        thread.join(timeout=30)

    service.stop_listeners.insert(0, stop_owner)
    service.detector_owner = owner  # type: ignore[attr-defined]
    return service
