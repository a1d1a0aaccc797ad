"""Recent-latency summaries for ``/v1/status`` (Prometheus histograms carry the full record).

>>> w = LatencyWindow(maxlen=4)
>>> for x in (0.1, 0.2, 0.3, 0.4, 0.5): w.add(x)
>>> w.summary()["count"], round(w.summary()["p50_ms"], 1)
(4, 350.0)
"""

from __future__ import annotations

from collections import deque

import numpy as np


class LatencyWindow:
    """The last ``maxlen`` durations (seconds), summarised in milliseconds."""

    def __init__(self, maxlen: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=maxlen)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def summary(self) -> dict[str, float | int]:
        if not self._values:
            return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        arr = np.fromiter(self._values, dtype=np.float64) * 1000.0
        return {
            "count": len(arr),
            "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99)),
            "max_ms": float(arr.max()),
        }
