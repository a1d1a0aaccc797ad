"""How often the second-opinion judge contradicts the primary one, watched for a rise.

Why: on the traffic both judges were built for, they disagree at a steady rate. When that rate
rises, one of them (usually the fast primary) has stopped recognising what it sees: harm worded
in a new way, or a new kind of benign traffic mistaken for harm. This is concept shift that no
input-side detector sees, because the inputs may look perfectly ordinary.

One trial per event that has a second opinion, per scope of the event, for two keys: the
primary's category (where the disagreement lands) and ``""`` (all categories pooled, which
catches a rise spread thinly over many categories). The outcome is whether the two judges differ
on whether the prompt is harmful (:func:`monitor.judge.second_opinion.compare`). The second
opinion samples uncertain verdicts at a higher rate than the rest; each stratum is a uniform
sample of its events, so the uncertain stratum is tested under keys of its own (``uncertain``
pooled, ``uncertain/<category>``), and neither rate needs reweighting.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from monitor.drift.rate_change import RateChange, RateChangeConfig, RateDetector, Trial
from monitor.events import ScoredEvent
from monitor.judge.second_opinion import compare, stratum


class SecondOpinionDisagreementDetector(RateDetector):
    """Rate of prompt-harm disagreement between the primary and the second-opinion judge.

    >>> import random
    >>> import numpy as np
    >>> from monitor.events import Event
    >>> from monitor.judge.verdict import Verdict
    >>> def scored(i, flagged, second_flagged):
    ...     verdict = lambda f: Verdict("v", "self_harm" if f else "safe", {}, float(f), f)
    ...     event = Event(f"e{i}", float(i), "...")
    ...     return ScoredEvent(event, 1.0, np.zeros(2), None, verdict(flagged), second_opinion=verdict(second_flagged))
    >>> rng = random.Random(0)
    >>> det = SecondOpinionDisagreementDetector(RateChangeConfig(warmup=200, arl=10_000))
    >>> det.update([scored(i, False, rng.random() < 0.05) for i in range(2000)])
    []
    >>> alarms = det.update([scored(i, False, rng.random() < 0.3) for i in range(2000, 2500)])
    >>> sorted({(c.scope, c.key) for c in alarms if c.active})
    [('global', ''), ('global', 'safe')]
    """

    name = "judge_disagreement"

    def __init__(self, config: RateChangeConfig = RateChangeConfig(), uncertain_above: float | None = None) -> None:
        """``uncertain_above``: the second opinion's stratum bound (None: it samples one stratum)."""
        self.rates = RateChange(self.name, "primary/second-opinion judge disagreement rate", config, direction="rise")
        self.uncertain_above = uncertain_above

    def trials(self, batch: Sequence[ScoredEvent]) -> Iterator[Trial]:
        for scored in batch:
            if scored.second_opinion is None:
                continue
            d = compare(scored.verdict, scored.second_opinion, scored.event.timestamp)
            part = stratum(scored.verdict.uncertainty, self.uncertain_above)
            pooled, by_category = (part, f"{part}/{d.primary_category}") if part else ("", d.primary_category)
            for scope in scored.scopes:
                yield scope, pooled, d.prompt_disagree, d.at
                yield scope, by_category, d.prompt_disagree, d.at
