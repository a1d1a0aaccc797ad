"""Run probe rounds every ``interval_s`` in a thread of their own, until closed.

Why a thread with its own event loop: a round waits on remote models for up to
``timeout x (retries + 1)`` seconds; it must hold up neither the HTTP event loop nor the worker.
Each round's event time is the wall clock when it starts. A round that raises is logged and
counted (``on_error``) and the next one runs on schedule: a broken target never stops the service.
The first round waits until ``ready()`` (the service's worker runs, so saved state is restored and
answers can be judged).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from monitor.probe.prober import Prober, RoundResult

log = logging.getLogger(__name__)


class ProbeScheduler:
    def __init__(self, prober: Prober, interval_s: float, on_round: Callable[[RoundResult], None],
                 on_error: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.time,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.prober = prober
        self.interval_s = interval_s
        self.on_round = on_round
        self.on_error = on_error
        self.clock = clock
        self.ready = ready
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-prober", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self.ready():
            if self._closing.wait(0.1):
                return
        while not self._closing.is_set():
            started = time.monotonic()
            try:
                result = asyncio.run(self.prober.run_round(self.clock()))
                if result.conditions and not self._closing.is_set():
                    self.on_round(result)
            except Exception:
                self.on_error()
                log.exception("probe round failed")
            self._closing.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
