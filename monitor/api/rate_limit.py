"""Token buckets per feedback source: one client cannot pour labels in faster than ``feedback_rate_per_source``.

Why: feedback steers the concept-shift detector; 4,000 labels sent in a burst from one client
raised four alerts. Buckets are keyed by token name (a bounded set when authentication is on; one
``anonymous`` bucket when it is off) and kept per process (per api replica in scale-out).
"""

from __future__ import annotations

import math
import threading
import time


class SourceLimiter:
    def __init__(self, rate: float, burst: int, max_sources: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, source: str, n: int, now: float | None = None) -> float | None:
        """Take ``n`` labels' worth for ``source``: None when allowed, else seconds until they would be.

        >>> limiter = SourceLimiter(rate=10, burst=20)
        >>> limiter.take("ops", 15, now=0.0), limiter.take("ops", 15, now=0.0), limiter.take("ops", 15, now=1.0)
        (None, 1.0, None)
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if n > tokens:
                self._buckets[source] = (tokens, now)
                return (n - tokens) / self.rate if n <= self.burst else math.inf
            self._buckets[source] = (tokens - n, now)
            if len(self._buckets) > self.max_sources:  # bounded: forget the fullest (least recently limited) bucket
                self._buckets.pop(next(iter(self._buckets)))
            return None
