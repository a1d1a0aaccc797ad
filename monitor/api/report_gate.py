"""Reports built one (or ``report_max_concurrent``) at a time, and served again from a cache.

Why: a report fits a classifier and a t-SNE plot, seconds of CPU; four at once took the cores
from the event loop (``/healthz`` 410 ms) and the worker. The same windows are asked for again
and again (a dashboard link, a reload), so a built report is kept ``report_cache_seconds`` by its
resolved windows, scope and format.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Hashable


class Busy(Exception):
    """Every report slot is taken; answer 503 with Retry-After."""


class ReportGate:
    def __init__(self, max_concurrent: int, cache_seconds: float, cache_entries: int) -> None:
        self.max_concurrent = max_concurrent
        self.cache_seconds = cache_seconds
        self.cache_entries = cache_entries
        self._running = 0
        self._cache: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0

    def cached(self, key: Hashable) -> Any | None:
        entry = self._cache.get(key)
        if entry is None or time.monotonic() - entry[0] > self.cache_seconds:
            return None
        self.hits += 1
        return entry[1]

    async def build(self, key: Hashable, make: Callable[[], Awaitable[Any]]) -> Any:
        """The cached result for ``key``, else ``await make()`` in a free slot; :class:`Busy` when none is free."""
        found = self.cached(key)
        if found is not None:
            return found
        if self._running >= self.max_concurrent:
            raise Busy(f"reports: {self._running} report(s) being built, the limit is report_max_concurrent={self.max_concurrent}")
        self._running += 1
        try:
            result = await make()
        finally:
            self._running -= 1
        if self.cache_seconds > 0:
            self._cache[key] = (time.monotonic(), result)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return result


def gate_for(app_state: Any, settings: Any) -> ReportGate:
    """The app's gate, made on first use (one per app, so test apps do not share a cache)."""
    gate = getattr(app_state, "report_gate", None)
    if gate is None:
        gate = ReportGate(settings.report_max_concurrent, settings.report_cache_seconds, settings.report_cache_entries)
        app_state.report_gate = gate
    return gate
