"""Model behaviour drift: how often the model answers harmfully.

Why: a model update (or a silent provider-side change) that regresses safety shows up first as a
change in what the model does with the same kind of prompt, not in the prompts. The share of
responses judged harmful is watched per scope and prompt category (``safe`` included: harmful
answers to harmless prompts), both ways: a rise is a safety regression (critical), a drop is a
behaviour change worth knowing about (info). Events without a response say nothing about
behaviour and are skipped.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from monitor.drift.rate_change import Direction, RateChange, RateChangeConfig, RateDetector, Trial
from monitor.events import ScoredEvent


class UnsafeResponseRateDetector(RateDetector):
    """Rate of responses judged harmful, per scope and prompt category.

    >>> import random
    >>> import numpy as np
    >>> from monitor.events import Event
    >>> from monitor.judge.verdict import Verdict
    >>> def scored(i, response_flagged):
    ...     verdict = Verdict("v", "self_harm", {}, 0.9, True, float(response_flagged), response_flagged, 0.0, False)
    ...     return ScoredEvent(Event(f"e{i}", float(i), "...", "..."), 1.0, np.zeros(2), np.zeros(2), verdict)
    >>> rng = random.Random(0)
    >>> det = UnsafeResponseRateDetector(RateChangeConfig(warmup=200, arl=10_000))
    >>> det.update([scored(i, rng.random() < 0.1) for i in range(3000)])
    []
    >>> alarm = det.update([scored(i, rng.random() < 0.4) for i in range(3000, 3500)])[0]
    >>> alarm.kind, alarm.key, alarm.severity, alarm.evidence["direction"]
    ('unsafe_response_rate', 'self_harm', 'critical', 'rise')
    """

    name = "unsafe_response_rate"

    def __init__(self, config: RateChangeConfig = RateChangeConfig(), direction: Direction = "both") -> None:
        self.rates = RateChange(
            self.name, "unsafe-response rate by prompt category", config,
            direction=direction, severity_rise="critical", severity_drop="info",
        )

    def trials(self, batch: Sequence[ScoredEvent]) -> Iterator[Trial]:
        for scored in batch:
            v = scored.verdict
            if v.response_flagged is None:
                continue
            for scope in scored.scopes:
                yield scope, v.category, v.response_flagged, scored.event.timestamp
