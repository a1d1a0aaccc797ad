"""Covariate shift on real prompts: category shares (CUSUM and the ADWIN baseline) and embedding drift.

Every event carries a real MiniLM embedding drawn from a pool (:mod:`bench.scenarios.pools`) and a
verdict equal to its pool's label (a perfect judge, so the scenario measures the detectors, not
the judge). Scenarios are phases of ``(events, mix)``; a mix maps pool names to shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from bench.scenarios.pools import CHAT, INSTRUCTIONS, Pools
from bench.scenarios.running import EVENT_RATE, Row, Run, change_row, feed, stationary_row
from monitor.drift.category_share_adwin import AdwinShareDetector
from monitor.drift.base import Detector
from monitor.drift.embedding_drift import EmbeddingMMDDetector
from monitor.drift.category_share import CategoryShareDetector
from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.taxonomy import SAFE

RISING = "violence_aiding_and_abetting_incitement"
WARMUP = 20_000


@dataclass(frozen=True)
class Scenario:
    """Phases of ``(events, mix)``; ``key`` is the alert key a detection must name (None: any)."""

    name: str
    phases: tuple[tuple[int, Mapping[str, float]], ...]
    key: str | None = None

    @property
    def change_at(self) -> int | None:
        return self.phases[0][0] if len(self.phases) > 1 else None


def base_mix(pools: Pools, shares: Mapping[str, float] | None = None, background: float = 0.002) -> dict[str, float]:
    """Benign chat plus every harm category at ``background``, with ``shares`` overriding some."""
    mix = {cat: background for cat in pools.categories()}
    mix.update(shares or {})
    mix[CHAT] = 1.0 - sum(mix.values())
    return mix


def stationary(pools: Pools, events: int) -> Scenario:
    return Scenario(f"stationary, {events // 1000}k events ({RISING} 5%, other categories 0.2%)",
                    ((events, base_mix(pools, {RISING: 0.05})),))


def category_rise(pools: Pools, before: float, after: float, pre: int = 30_000, post: int = 10_000) -> Scenario:
    return Scenario(f"one category {before:.1%} → {after:.1%}".replace(".0%", "%"),
                    ((pre, base_mix(pools, {RISING: before})), (post, base_mix(pools, {RISING: after}))), key=RISING)


def topic_shift(pools: Pools, share: float = 0.25, pre: int = 10_000, post: int = 10_000) -> Scenario:
    """A new integration: ``share`` of the benign traffic becomes instruction-style prompts (no category moves)."""
    before = base_mix(pools, {RISING: 0.05})
    after = dict(before)
    after[INSTRUCTIONS] = share * before[CHAT]
    after[CHAT] = (1.0 - share) * before[CHAT]
    return Scenario(f"{share:.0%} of benign prompts change style", ((pre, before), (post, after)))


def build_stream(scenario: Scenario, pools: Pools, seed: int) -> list[ScoredEvent]:
    """Each phase draws pool names by its mix, then a prompt (with replacement) from the pool."""
    rng = np.random.default_rng(seed)
    verdicts = {
        name: Verdict("labels", SAFE, {}, 0.0, False) if name in (CHAT, INSTRUCTIONS)
        else Verdict("labels", name, {name: 1.0}, 1.0, True, categories=(name,))
        for name in pools.vectors
    }
    events: list[ScoredEvent] = []
    for n, mix in scenario.phases:
        names = list(mix)
        probs = np.array([mix[k] for k in names])
        picks = rng.choice(len(names), size=n, p=probs / probs.sum())
        for pick, u in zip(picks.tolist(), rng.random(n).tolist()):
            pool = pools.vectors[names[pick]]
            i = len(events)
            events.append(ScoredEvent(Event(f"e{i}", i / EVENT_RATE, ""), 1.0, pool[int(u * len(pool))], None, verdicts[names[pick]]))
    return events


# name -> (factory given the seed, events before it can alarm, scenarios it watches)
DETECTORS: dict[str, tuple[Callable[[int], Detector], int, tuple[str, ...]]] = {
    "category_share": (lambda seed: CategoryShareDetector(warmup_events=WARMUP), WARMUP, ("stationary", "rise")),
    "category_share_adwin (baseline)": (lambda seed: AdwinShareDetector(warmup_events=WARMUP), WARMUP, ("stationary", "rise")),
    "embedding_drift": (lambda seed: EmbeddingMMDDetector(seed=seed), 3_000, ("stationary", "topic")),
}


def rows(pools: Pools, *, stationary_events: int, stationary_seeds: int, change_seeds: int) -> list[Row]:
    """Stationary false alarms and cost, then the rises and the style shift, for every detector that watches them."""
    plans = [("stationary", stationary(pools, stationary_events), range(1000, 1000 + stationary_seeds))]
    rises = ((0.05, 0.10), (0.02, 0.06), (0.002, 0.01))  # the last: a rare category, which share weighting slows
    plans += [("rise", category_rise(pools, a, b), range(change_seeds)) for a, b in rises]
    plans.append(("topic", topic_shift(pools), range(change_seeds)))
    out: list[Row] = []
    for kind, scenario, seeds in plans:
        runs: dict[str, list[Run]] = {name: [] for name, (_, _, kinds) in DETECTORS.items() if kind in kinds}
        for seed in seeds:
            events = build_stream(scenario, pools, seed)
            for name in runs:
                factory, warmup, _ = DETECTORS[name]
                runs[name].append(feed(factory(seed), events, warmup))
        for name, rs in runs.items():
            if scenario.change_at is None:
                out.append(stationary_row(name, f"{scenario.name} × {len(rs)}", rs))
            else:
                out.append(change_row(name, scenario.name, rs, scenario.change_at, scenario.key))
    return out
