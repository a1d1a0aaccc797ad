"""Emerging unsafe categories on real embeddings: a withheld group injected at 2%, and a stationary stream.

Traffic: benign real-user chat (95%) and known unsafe categories (5%, equal shares), every prompt a
real MiniLM embedding (:mod:`bench.scenarios.pools`). A withheld group is either a raw-label group
that no category pool holds (AILuminate IP violation, defamation) or a whole taxonomy category
(animal abuse), which then leaves the known traffic and the judge's training too.

The judge is a stand-in that never saw the withheld group: the shipped judge was trained on every
file in the shared data, so it cannot play a judge meeting a new category. Two logistic
regressions on the embeddings (unsafe or not; which known category) are cross-fitted over two
halves of the benign and known pools, so every streamed prompt is scored by a model that did not
train on it; withheld prompts get the average of both halves' models. The detector is the shipped
one at its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bench.scenarios.pools import CHAT, WITHHELD, Pools
from bench.scenarios.running import EVENT_RATE, Row, Run, change_row, feed, stationary_row
from monitor.drift.emerging_clusters import EmergingClusterDetector, EmergingClusterSettings
from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.taxonomy import SAFE

WITHHELD_CATEGORIES = ("animal_abuse",)
GROUPS = (*WITHHELD, *WITHHELD_CATEGORIES)
UNSAFE_SHARE = 0.05
PREVALENCE = 0.02
_DEFAULTS = EmergingClusterSettings()
WARMUP = _DEFAULTS.reference_events + _DEFAULTS.calibration_events  # no alert is possible before
CHANGE_AT = WARMUP + 2_000
AFTER = 6_000


@dataclass(frozen=True)
class Judged:
    """One pool's prompts with the stand-in judge's P(unsafe) and top known category."""

    name: str
    texts: list[str]
    vectors: np.ndarray
    p_unsafe: np.ndarray
    category: list[str]


def stand_in_judge(pools: Pools, known: tuple[str, ...], withheld: str | None) -> dict[str, Judged]:
    """Cross-fitted logistic regressions trained on benign chat and the ``known`` category pools."""
    from sklearn.linear_model import LogisticRegression

    names = (CHAT, *known)
    x = np.vstack([pools.vectors[n] for n in names])
    owner = np.concatenate([[n] * len(pools.vectors[n]) for n in names])
    unsafe = owner != CHAT
    fold = np.arange(len(x)) % 2  # pools are in file order, so alternating rows split every source
    p = np.zeros(len(x))
    cat = np.empty(len(x), dtype=object)
    models = []
    for f in (0, 1):
        train = fold != f
        harm = LogisticRegression(C=4.0, max_iter=2000).fit(x[train], unsafe[train])
        cats = LogisticRegression(C=4.0, max_iter=2000).fit(x[train & unsafe], owner[train & unsafe])
        p[fold == f] = harm.predict_proba(x[fold == f])[:, 1]
        cat[fold == f] = cats.predict(x[fold == f])
        models.append((harm, cats))
    out = {}
    start = 0
    for n in names:
        end = start + len(pools.vectors[n])
        out[n] = _judged(n, pools, p[start:end], list(cat[start:end]))
        start = end
    if withheld is not None:
        xw = pools.vectors[withheld]
        pw = np.mean([h.predict_proba(xw)[:, 1] for h, _ in models], axis=0)
        probs = np.mean([c.predict_proba(xw) for _, c in models], axis=0)
        out[withheld] = _judged(withheld, pools, pw, list(models[0][1].classes_[probs.argmax(axis=1)]))
    return out


def _judged(name: str, pools: Pools, p: np.ndarray, category: list[str]) -> Judged:
    return Judged(name, pools.texts[name], pools.vectors[name], p, [c if q >= 0.5 else SAFE for c, q in zip(category, p)])


def build_stream(judged: dict[str, Judged], known: tuple[str, ...], n: int, seed: int,
                 inject: str | None = None) -> list[ScoredEvent]:
    """Benign and known unsafe with replacement; the injected group from ``CHANGE_AT`` without replacement while it lasts."""
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(judged[inject].texts))) if inject else []
    out = []
    for i in range(n):
        u = rng.random()
        if inject and i >= CHANGE_AT and order and u < PREVALENCE:
            src, j = judged[inject], order.pop()
        elif u > 1 - UNSAFE_SHARE:
            src = judged[known[int(rng.integers(len(known)))]]
            j = int(rng.integers(len(src.texts)))
        else:
            src = judged[CHAT]
            j = int(rng.integers(len(src.texts)))
        q, c = float(src.p_unsafe[j]), src.category[j]
        v = Verdict("stand-in", c, {c: q} if c != SAFE else {}, q, q >= 0.5)
        out.append(ScoredEvent(Event(f"e{i}", i / EVENT_RATE, src.texts[j]), 1.0, src.vectors[j], None, v))
    return out


def rows(pools: Pools, *, stationary_events: int, stationary_seeds: int, seeds: int,
         groups: tuple[str, ...] = GROUPS) -> list[Row]:
    """False alarms and cost on stationary streams (``stationary_events`` after the warm-up each), then delay and
    exemplar purity per withheld group."""
    @lru_cache(maxsize=None)
    def setup(withheld: str | None) -> tuple[tuple[str, ...], dict[str, Judged]]:
        known = tuple(c for c in pools.categories() if c != withheld)
        return known, stand_in_judge(pools, known, withheld)

    name = "emerging_category"
    known, judged = setup(None)
    runs = [feed(EmergingClusterDetector(), build_stream(judged, known, WARMUP + stationary_events, 1000 + s), WARMUP)
            for s in range(stationary_seeds)]
    benign_fp = float(np.mean(judged[CHAT].p_unsafe >= 0.5))
    recall = float(np.mean(np.concatenate([judged[k].p_unsafe for k in known]) >= 0.5))
    alarms = sum(len(r.activations) for r in runs)
    out = [stationary_row(name, f"stationary, {stationary_events // 1000}k events after the warm-up, 5% known unsafe × {stationary_seeds}", runs,
                          note=f"{alarms} alarms; stand-in judge flags {benign_fp:.0%} of benign chat, {recall:.0%} of known unsafe")]
    every: list[Run] = []
    union: set[str] = set()
    for group in groups:
        known, judged = setup(group)
        texts = set(judged[group].texts)
        flagged = float(np.mean(judged[group].p_unsafe >= 0.5))
        group_runs = [feed(EmergingClusterDetector(), build_stream(judged, known, CHANGE_AT + AFTER, s, inject=group), WARMUP)
                      for s in range(seeds)]
        every += group_runs
        union |= texts
        out.append(change_row(
            name, f"unseen group at {PREVALENCE:.0%}: {group} ({len(texts)} prompts)", group_runs, CHANGE_AT,
            purity=lambda c: float(np.mean([t in texts for t in c.evidence["exemplars"]])),
            note=f"judge flags {flagged:.0%} of the group",
        ))
    out.append(change_row(name, f"unseen group at {PREVALENCE:.0%}: all {len(groups)} groups pooled", every, CHANGE_AT,
                          purity=lambda c: float(np.mean([t in union for t in c.evidence["exemplars"]]))))
    return out


