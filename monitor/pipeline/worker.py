"""The batch worker: the ingest queue's one consumer.

It pulls batches from the gate (``batch_size`` or ``batch_max_wait_ms``, whichever first) and runs
``process`` (embed → judge → detect → alert) on each in a single worker thread, so the event loop
stays free for ``/healthz`` and ingest, and events are processed in arrival order (replays are
reproducible). Stopping drains what is queued for a bounded time; what is still queued then is
counted as ``dropped{reason="shutdown"}``, never only logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from monitor.ingest.counts import IngestCounter, Tally
from monitor.ingest.gate import IngestGate, QueueItem

log = logging.getLogger(__name__)


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


class BatchWorker:
    def __init__(self, gate: IngestGate, process: Callable[[list[QueueItem]], Any], counter: IngestCounter,
                 on_error: Callable[[], None], nice: int = 0) -> None:
        """``process`` isolates failures itself; ``on_error`` counts a batch that still raised."""
        self.gate = gate
        self.process = process
        self.counter = counter
        self.on_error = on_error
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-worker",
                                            initializer=lower_thread_priority, initargs=(nice,))
        self._task: asyncio.Task[None] | None = None
        self._holding = False  # a batch taken off the queue and not finished

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="monitor-worker")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn`` in the worker thread, between batches."""
        return self._executor.submit(fn, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.gate.next_batch()
            self._holding = True  # no await since next_batch returned: a stop never sees the batch in neither place
            busy_since = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, self.process, batch)
                self.gate.observe_drain(len(batch), time.perf_counter() - busy_since)
            except Exception:  # process isolates failures; this is a last line of defence
                log.exception("worker batch failed unexpectedly")
                self.on_error()
            finally:
                self._holding = False

    async def stop(self, drain_timeout: float) -> None:
        """Process what is queued for up to ``drain_timeout`` seconds, then stop. A batch in flight
        finishes; events still queued are lost with the process, counted as dropped and processed
        (so the counts add up)."""
        if self._task is None:
            return
        deadline = time.monotonic() + drain_timeout
        while (self.gate.depth() or self.gate.collecting or self._holding) and time.monotonic() < deadline and not self._task.done():
            await asyncio.sleep(0.05)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        self._executor.shutdown(wait=True)
        lost = self.gate.clear()
        if lost:
            log.warning("stopping with %d events unprocessed after the %.0f s drain: counted dropped{reason=\"shutdown\"}", lost, drain_timeout)
            self.counter.record(Tally(processed=lost, dropped={"shutdown": lost}))

    def close(self) -> None:
        """Release the worker thread of a worker that was never started."""
        self._executor.shutdown(wait=True)
