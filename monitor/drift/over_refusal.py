"""Model behaviour drift: how often the model refuses harmless asks.

Why: a model made "safer" by refusing more does so at the cost of its users, and users rarely
report it. The share of prompts the judge calls safe that the model refuses is watched per scope
for a rise. Events without a response are skipped.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from monitor.drift.rate_change import Direction, RateChange, RateChangeConfig, RateDetector, Trial
from monitor.events import ScoredEvent


class OverRefusalDetector(RateDetector):
    """Rate of refusals among responses to prompts the judge calls safe, per scope (key ``""``).

    >>> import random
    >>> import numpy as np
    >>> from monitor.events import Event
    >>> from monitor.judge.verdict import Verdict
    >>> def scored(i, refused):
    ...     verdict = Verdict("v", "safe", {}, 0.1, False, 0.0, False, float(refused), refused)
    ...     return ScoredEvent(Event(f"e{i}", float(i), "...", "..."), 1.0, np.zeros(2), np.zeros(2), verdict, ("global", "model=m"))
    >>> rng = random.Random(0)
    >>> det = OverRefusalDetector(RateChangeConfig(warmup=200, arl=10_000))
    >>> det.update([scored(i, rng.random() < 0.05) for i in range(3000)])
    []
    >>> sorted({c.scope for c in det.update([scored(i, rng.random() < 0.25) for i in range(3000, 3500)])})
    ['global', 'model=m']
    """

    name = "over_refusal"

    def __init__(self, config: RateChangeConfig = RateChangeConfig(), direction: Direction = "rise") -> None:
        self.rates = RateChange(self.name, "refusal rate on safe prompts", config, direction=direction)

    def trials(self, batch: Sequence[ScoredEvent]) -> Iterator[Trial]:
        for scored in batch:
            v = scored.verdict
            if v.prompt_flagged or v.refused is None:
                continue
            for scope in scored.scopes:
                yield scope, "", v.refused, scored.event.timestamp
