"""Concept shift and model behaviour: feedback and second-judge disagreement, unsafe answers, over-refusal.

Synthetic judged traffic (seeded) puts every event in two scopes (global and one model), as a
deployment with one configured model does; each detector runs at its defaults against a change it
must catch. The baseline for each is river's ADWIN at defaults on the same raw 0/1 trials: the
detector's own trial extraction with :class:`AdwinRates` in place of its calibrated CUSUMs. A last
row replays real human refusal labels from XSTest (safe prompts, answers of Mistral-Instruct then
GPT-4) to time the over-refusal alarm on a model swap.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from river.drift import ADWIN

from bench.scenarios.running import EVENT_RATE, Row, Run, change_row, feed, stationary_row
from monitor.signals import Condition
from monitor.drift.over_refusal import OverRefusalDetector
from monitor.drift.unsafe_response_rate import UnsafeResponseRateDetector
from monitor.drift.feedback_disagreement import Feedback, FeedbackDisagreementDetector
from monitor.drift.rate_change import Trial
from monitor.drift.judge_disagreement import SecondOpinionDisagreementDetector
from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.taxonomy import SAFE
from monitor.taxonomy import load_taxonomy

VEC = np.zeros(384, dtype=np.float32)
SCOPES = ("global", "model=a")
MIX = {SAFE: 0.9, "self_harm": 0.04, "privacy_violation": 0.03, "violence_aiding_and_abetting_incitement": 0.03}
PRE = 40_000  # events before the change
POST = 40_000  # events after it (a detector that has not fired by then missed)


def verdict(category: str, response_flagged: bool | None = None, refused: bool | None = None) -> Verdict:
    flagged = category != SAFE
    return Verdict("bench", category, {}, float(flagged), flagged,
                   None if response_flagged is None else float(response_flagged), response_flagged,
                   None if refused is None else float(refused), refused)


class Stream:
    """Judged traffic with a label for every event; per-category rates can change mid-stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.i = 0
        self.unsafe_response = {SAFE: 0.005, "self_harm": 0.05, "privacy_violation": 0.08, "violence_aiding_and_abetting_incitement": 0.04}
        self.refusal_safe = 0.03
        self.second_disagree = {SAFE: 0.02, "self_harm": 0.08, "privacy_violation": 0.1, "violence_aiding_and_abetting_incitement": 0.06}
        self.label_wrong = {SAFE: 0.01, "self_harm": 0.05, "privacy_violation": 0.08, "violence_aiding_and_abetting_incitement": 0.04}

    def take(self, n: int) -> tuple[list[ScoredEvent], list[Feedback]]:
        rng, cats, weights = self.rng, list(MIX), list(MIX.values())
        events, labels = [], []
        for _ in range(n):
            i = self.i
            self.i += 1
            truth = rng.choices(cats, weights)[0]
            judged = truth
            if rng.random() < self.label_wrong[truth]:
                judged = SAFE if truth != SAFE else "self_harm"
            v = verdict(judged, rng.random() < self.unsafe_response[judged],
                        rng.random() < (self.refusal_safe if judged == SAFE else 0.7))
            second = None
            if i % 4 == 0:  # a quarter of events get a second opinion
                flip = rng.random() < self.second_disagree[judged]
                second = verdict(("privacy_violation" if judged == SAFE else SAFE) if flip else judged)
            events.append(ScoredEvent(Event(f"e{i}", i / EVENT_RATE, "p", "r"), 1.0, VEC, VEC, v, SCOPES, second))
            labels.append(Feedback(f"e{i}", category=truth))
        return events, labels


class AdwinRates:
    """ADWIN at river's defaults per (scope, key) on raw trials: the baseline in a detector's ``rates`` slot.

    A detected change that raises the window's mean turns the key active; one that lowers it resolves it.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.adwins: dict[tuple[str, str], ADWIN] = {}
        self.active: dict[tuple[str, str], bool] = {}

    def update(self, trials: Iterable[Trial]) -> list[Condition]:
        out = []
        for scope, key, outcome, at in trials:
            adwin = self.adwins.setdefault((scope, key), ADWIN())
            before = adwin.estimation
            adwin.update(float(outcome))
            if adwin.drift_detected:
                up = adwin.estimation > before
                if up != self.active.get((scope, key), False):
                    self.active[(scope, key)] = up
                    out.append(Condition(self.kind, scope, key, up, at=at))
        return out


def with_adwin(detector):
    detector.rates = AdwinRates(detector.name)
    return detector


# name -> (factory, the change it must catch, its description, alert key of a detection)
CHANGES: dict[str, tuple[Callable[[], object], Callable[[Stream], None], str, str | None]] = {
    "feedback_disagreement": (lambda: FeedbackDisagreementDetector(load_taxonomy().harm_ids),
                              lambda s: s.label_wrong.update(self_harm=0.15),
                              "feedback labels flip: judge misses self_harm 5% → 15% (4% of traffic)", None),
    "judge_disagreement": (SecondOpinionDisagreementDetector, lambda s: s.second_disagree.update({SAFE: 0.05}),
                           "second judge flags safe prompts 2% → 5% (¼ of events judged twice)", None),
    "unsafe_response_rate": (UnsafeResponseRateDetector, lambda s: s.unsafe_response.update(self_harm=0.15),
                             "model update: unsafe answers to self_harm (4% of traffic) 5% → 15%", "self_harm"),
    "over_refusal": (OverRefusalDetector, lambda s: setattr(s, "refusal_safe", 0.06),
                     "model update: refusals of safe prompts 3% → 6%", None),
}


def rows(*, stationary_events: int, seeds: int, data_dir: Path) -> list[Row]:
    """Per detector and its ADWIN baseline: false alarms and cost on one stationary stream, then its change."""
    events, labels = Stream(seed=100).take(stationary_events)
    out: list[Row] = []
    for name, (factory, change, text, key) in CHANGES.items():
        variants = {name: factory, f"{name} ADWIN (baseline)": lambda f=factory: with_adwin(f())}
        for label, make in variants.items():
            out.append(stationary_row(label, f"stationary, {stationary_events // 1000}k events × 2 scopes",
                                      [feed(make(), events, labels=labels)]))
        runs: dict[str, list[Run]] = {label: [] for label in variants}
        for seed in range(seeds):
            stream = Stream(seed)
            ev, lab = stream.take(PRE)
            change(stream)
            more_ev, more_lab = stream.take(POST)
            for label, make in variants.items():
                runs[label].append(feed(make(), ev + more_ev, labels=lab + more_lab))
        out += [change_row(label, text, rs, PRE, key) for label, rs in runs.items()]
    out += xstest_model_swap(data_dir, seeds)
    return out


def xstest_model_swap(data_dir: Path, seeds: int, swap_at: int = 20_000, after: int = 40_000) -> list[Row]:
    """Over-refusal on real human refusal labels: XSTest safe prompts answered by Mistral-Instruct, then GPT-4."""
    refused: dict[str, list[bool]] = {}
    for model in ("mistralinstruct", "gpt4"):
        path = data_dir / f"xstest-completions-{model}.jsonl"
        if not path.exists():
            return []
        rows_ = [json.loads(line) for line in path.open()]
        refused[model] = [bool(r["refusal"]) for r in rows_ if r["unsafe"] is False]
    rates = {m: sum(v) / len(v) for m, v in refused.items()}
    scenario = f"real XSTest refusal labels: Mistral ({rates['mistralinstruct']:.1%}) → GPT-4 ({rates['gpt4']:.1%})"
    variants = {"over_refusal": OverRefusalDetector, "over_refusal ADWIN (baseline)": lambda: with_adwin(OverRefusalDetector())}
    runs: dict[str, list[Run]] = {label: [] for label in variants}
    for seed in range(seeds):
        rng = random.Random(seed)
        events: Sequence[ScoredEvent] = [
            ScoredEvent(Event(f"x{i}", i / EVENT_RATE, "p", "r"), 1.0, VEC, VEC,
                        verdict(SAFE, False, rng.choice(refused["mistralinstruct" if i < swap_at else "gpt4"])))
            for i in range(swap_at + after)
        ]
        for label, make in variants.items():
            runs[label].append(feed(make(), events))
    return [change_row(label, scenario, rs, swap_at) for label, rs in runs.items()]
