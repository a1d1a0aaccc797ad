"""Periodic snapshots of the service's state, and restoring the latest one on start.

Why: detectors carry history (references, CUSUM statistics, windows) that takes hours of
traffic to rebuild, and the alert engine knows which alerts are already firing. Losing either
on a restart means a blind spot and a second page for the same incident. The worker thread is
the only writer of that state, so a snapshot taken there between batches is consistent without
stopping anything.

When: at the end of the first batch after ``every_events`` processed events or ``every_seconds``
of wall time since the last snapshot (wall time because it bounds what a crash can lose, not
what is detected), and always on shutdown after the queue drained. A failed save (Redis down) is
logged, counted and retried no sooner than ``retry_seconds`` later; the service keeps running.

Format: a pickle (detector state holds numpy arrays and river estimators) of the service's
:meth:`~monitor.pipeline.service.MonitorService.state_dict` plus ``format`` (bumped whenever the
layout changes; another format is not restored: the service starts fresh and says so), ``seq``
(increasing with each save) and ``saved_at``. Pickles execute code when loaded: the store must
be trusted, as its ACL/password must ensure for Redis.

>>> from monitor.state.memory import MemoryStateStore
>>> store = MemoryStateStore()
>>> store.save_snapshot("service", encode({"detectors": {}}, seq=3, saved_at=0.0))
>>> state = decode(store.load_snapshot("service"))
>>> state["seq"], state["format"], state["detectors"]
(3, 1, {})
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any, Callable, Protocol, Sequence

from prometheus_client import Counter, Gauge

from monitor.events import ScoredEvent
from monitor.state.store import StateStore, StoreUnavailable


log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SNAPSHOT_NAME = "service"


class SnapshotError(ValueError):
    """Stored bytes that are not a snapshot this version can restore."""


def encode(state: dict[str, Any], seq: int, saved_at: float) -> bytes:
    return pickle.dumps({**state, "format": FORMAT_VERSION, "seq": seq, "saved_at": saved_at}, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> dict[str, Any]:
    try:
        state = pickle.loads(data)
    except Exception as exc:
        raise SnapshotError(f"snapshot: not readable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or "format" not in state:
        raise SnapshotError("snapshot: not a monitor snapshot (no format field)")
    if state["format"] != FORMAT_VERSION:
        raise SnapshotError(f"snapshot: format {state['format']!r}, this version reads format {FORMAT_VERSION}")
    return state


class SnapshotHost(Protocol):
    """What a snapshotter needs of the service it saves: its state, its metrics registry, and the
    hooks it saves from (after judged batches, on stop)."""

    metrics: Any  # has ``.registry``
    batch_listeners: list[Callable[[list[ScoredEvent]], None]]
    stop_listeners: list[Callable[[], Any]]

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Snapshotter:
    """Saves ``service.state_dict()`` into ``store`` now and then; :meth:`attach` restores and hooks in."""

    def __init__(
        self,
        service: SnapshotHost,
        store: StateStore,
        every_events: int = 10_000,
        every_seconds: float = 60.0,
        retry_seconds: float = 5.0,
        name: str = SNAPSHOT_NAME,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if every_events < 1 or every_seconds <= 0:
            raise ValueError(f"every_events, every_seconds: must be positive, got {every_events}, {every_seconds}")
        self.service = service
        self.store = store
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.retry_seconds = retry_seconds
        self.name = name
        self._clock, self._sleep = clock, sleep
        self.seq = 0
        self.restored_seq: int | None = None
        self._events_since = 0
        self._last = clock()
        self._not_before = self._last
        registry = service.metrics.registry
        self._saves = Counter("llmsafety_state_snapshots", "Snapshot saves by result.", ["result"], registry=registry)
        self._bytes = Gauge("llmsafety_state_snapshot_bytes", "Size of the last snapshot saved.", registry=registry)
        for result in ("saved", "failed"):
            self._saves.labels(result=result)

    def attach(self) -> bool:
        """Restore the latest snapshot (if any), then save after batches and on stop. True if restored.

        Waits for an unavailable store (retrying, logged) rather than starting without the
        history: the service becomes ready by itself once the store is back.
        """
        delay = 0.25
        while True:
            try:
                restored = self.restore()
                break
            except StoreUnavailable as exc:
                log.warning("waiting for the state store to restore the snapshot (retry in %.1fs): %s", delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, self.retry_seconds)
        self.service.batch_listeners.append(self.on_batch)
        self.service.stop_listeners.append(self.save)
        return restored

    def restore(self) -> bool:
        data = self.store.load_snapshot(self.name)  # StoreUnavailable propagates: starting blind would be silent loss
        if data is None:
            log.info("no snapshot %r in the %s store: starting fresh", self.name, self.store.backend)
            return False
        try:
            state = decode(data)
        except SnapshotError as exc:
            log.error("%s; starting fresh (the old snapshot is overwritten by the next save)", exc)
            return False
        self.service.load_state_dict(state)
        self.seq = self.restored_seq = state["seq"]
        log.info("restored snapshot %r seq %d (event time %s)", self.name, self.seq, state["event_time"])
        return True

    def on_batch(self, batch: Sequence[ScoredEvent]) -> None:
        """Batch listener (worker thread): save when due."""
        self._events_since += len(batch)
        now = self._clock()
        due = self._events_since >= self.every_events or now - self._last >= self.every_seconds
        if due and self._events_since and now >= self._not_before:
            self.save()

    def save(self) -> bool:
        """Save now (worker thread or after stop). Returns False when the store is unavailable."""
        data = encode(self.service.state_dict(), self.seq + 1, time.time())
        now = self._clock()
        try:
            self.store.save_snapshot(self.name, data)
        except StoreUnavailable as exc:
            self._not_before = now + self.retry_seconds
            self._saves.labels(result="failed").inc()
            log.warning("snapshot not saved, retrying in %.0fs: %s", self.retry_seconds, exc)
            return False
        self.seq += 1
        self._events_since, self._last, self._not_before = 0, now, now
        self._saves.labels(result="saved").inc()
        self._bytes.set(len(data))
        return True
