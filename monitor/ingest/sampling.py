"""Load shedding by sampling: when the worker falls behind, judge a random subset of events.

The admission probability falls linearly from 1 at ``start_fill`` of the queue to ``min_rate``
when full, so the queue settles where admitted traffic matches what the worker can embed
instead of lagging without bound. Each admitted event carries ``weight = 1 / rate`` so counts
estimated from judged events stay unbiased. Draws come from a seeded generator.

>>> s = AdaptiveSampler(start_fill=0.5, min_rate=0.1, seed=0)
>>> s.rate(fill=0.2), s.rate(fill=0.75), s.rate(fill=1.0)
(1.0, 0.55, 0.1)
"""

from __future__ import annotations

import random


class AdaptiveSampler:
    def __init__(self, start_fill: float, min_rate: float, seed: int = 0, enabled: bool = True) -> None:
        self.start_fill = start_fill
        self.min_rate = min_rate
        self.enabled = enabled
        self._rng = random.Random(seed)
        self.current_rate = 1.0

    def rate(self, fill: float) -> float:
        if not self.enabled or fill <= self.start_fill:
            return 1.0
        frac = min(1.0, (fill - self.start_fill) / (1.0 - self.start_fill))
        return round(1.0 - frac * (1.0 - self.min_rate), 6)

    def admit(self, fill: float) -> float | None:
        """The event's weight if admitted for judging, None if sampled out."""
        rate = self.rate(fill)
        self.current_rate = rate
        if rate >= 1.0 or self._rng.random() < rate:
            return 1.0 / rate
        return None
