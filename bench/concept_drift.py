"""Concept-shift detectors: cost per event, false alarms on stationary streams, detection delay.

Synthetic streams (seeded) put every event in two scopes (global and one model), as a deployment
with one configured model does; the detectors run with their default settings. The last section
replays real human refusal labels from XSTest (safe prompts answered by GPT-4, Llama-2 and
Mistral-Instruct) to time the over-refusal alarm on a model swap; it is skipped when
``MONITOR_DATA_DIR`` (default ``../shared/data``) is absent.

Prints, asserts nothing::

    .venv/bin/python bench/concept_drift.py            # 300k stationary events per detector, 5 seeds per delay
    .venv/bin/python bench/concept_drift.py --quick    # 50k events, 2 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.drift.base import Detector  # noqa: E402
from monitor.drift.behaviour import OverRefusalDetector, UnsafeResponseRateDetector  # noqa: E402
from monitor.drift.feedback import Feedback, FeedbackDisagreementDetector  # noqa: E402
from monitor.drift.second_opinion_disagreement import SecondOpinionDisagreementDetector  # noqa: E402
from monitor.events import Event, ScoredEvent  # noqa: E402
from monitor.judge.verdict import SAFE, Verdict  # noqa: E402
from monitor.taxonomy import load_taxonomy  # noqa: E402

DATA_DIR = Path(os.environ.get("MONITOR_DATA_DIR", ROOT.parent / "shared" / "data"))
HARM = load_taxonomy().harm_ids
VEC = np.zeros(384, dtype=np.float32)
SCOPES = ("global", "model=a")
BATCH = 64
# traffic: mostly safe prompts, a few harm categories
MIX = {SAFE: 0.9, "self_harm": 0.04, "privacy_violation": 0.03, "violence_aiding_and_abetting_incitement": 0.03}


def verdict(category: str, response_flagged: bool | None = None, refused: bool | None = None) -> Verdict:
    flagged = category != SAFE
    return Verdict("bench", category, {}, float(flagged), flagged,
                   None if response_flagged is None else float(response_flagged), response_flagged,
                   None if refused is None else float(refused), refused)


class Stream:
    """Synthetic judged traffic whose per-category rates can be changed mid-stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.i = 0
        self.cats, self.weights = list(MIX), list(MIX.values())
        self.unsafe_response = {SAFE: 0.005, "self_harm": 0.05, "privacy_violation": 0.08, "violence_aiding_and_abetting_incitement": 0.04}
        self.refusal_safe = 0.03
        self.second_disagree = {SAFE: 0.02, "self_harm": 0.08, "privacy_violation": 0.1, "violence_aiding_and_abetting_incitement": 0.06}
        self.label_wrong = {SAFE: 0.01, "self_harm": 0.05, "privacy_violation": 0.08, "violence_aiding_and_abetting_incitement": 0.04}

    def next(self) -> tuple[ScoredEvent, Feedback]:
        rng, i = self.rng, self.i
        self.i += 1
        truth = rng.choices(self.cats, self.weights)[0]
        judged = truth
        if rng.random() < self.label_wrong[truth]:
            judged = SAFE if truth != SAFE else "self_harm"
        v = verdict(judged, rng.random() < self.unsafe_response[judged],
                    rng.random() < (self.refusal_safe if judged == SAFE else 0.7))
        second = None
        if i % 4 == 0:  # a quarter of events get a second opinion
            flip = rng.random() < self.second_disagree[judged]
            second = verdict(("privacy_violation" if judged == SAFE else SAFE) if flip else judged)
        event = Event(f"e{i}", float(i), "p", "r")
        return ScoredEvent(event, 1.0, VEC, VEC, v, SCOPES, second), Feedback(f"e{i}", category=truth)

    def batch(self, n: int = BATCH) -> tuple[list[ScoredEvent], list[Feedback]]:
        pairs = [self.next() for _ in range(n)]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def step(det: Detector, events: list[ScoredEvent], labels: list[Feedback]) -> list:
    out = list(det.update(events))
    if isinstance(det, FeedbackDisagreementDetector):
        for fb in labels:
            out.extend(det.observe(fb)[1])
    return out


DETECTORS: dict[str, Callable[[], Detector]] = {
    "feedback_disagreement": lambda: FeedbackDisagreementDetector(HARM),
    "judge_disagreement": SecondOpinionDisagreementDetector,
    "unsafe_response_rate": UnsafeResponseRateDetector,
    "over_refusal": OverRefusalDetector,
}

CHANGES: dict[str, Callable[[Stream], None]] = {
    "feedback_disagreement": lambda s: s.label_wrong.update(self_harm=0.15),
    "judge_disagreement": lambda s: s.second_disagree.update({SAFE: 0.05}),
    "unsafe_response_rate": lambda s: s.unsafe_response.update(self_harm=0.15),
    "over_refusal": lambda s: setattr(s, "refusal_safe", 0.06),
}


def cost_and_false_alarms(n_events: int) -> None:
    print(f"\n== stationary stream, {n_events} events x 2 scopes, default settings ==")
    print(f"{'detector':24s} {'us/event':>9s} {'alarms':>7s} {'per 100k':>9s}   (CPU time; feedback: every event labelled)")
    for name, make in DETECTORS.items():
        det, stream = make(), Stream(seed=100)
        batches = [stream.batch() for _ in range(n_events // BATCH)]
        t0 = time.process_time()
        alarms = sum(1 for ev, fb in batches for c in step(det, ev, fb) if c.active)
        dt = time.process_time() - t0
        n = len(batches) * BATCH
        print(f"{name:24s} {dt / n * 1e6:9.2f} {alarms:7d} {alarms / n * 1e5:9.2f}")


def delays(seeds: int, pre: int = 40_000, limit: int = 200_000) -> None:
    print(f"\n== events from change to first alarm (median of {seeds} seeds, change after {pre} events) ==")
    for name, make in DETECTORS.items():
        found = []
        for seed in range(seeds):
            det, stream = make(), Stream(seed)
            for _ in range(pre // BATCH):
                step(det, *stream.batch())
            CHANGES[name](stream)
            start, hit = stream.i, None
            while hit is None and stream.i - start < limit:
                fired = [c for c in step(det, *stream.batch()) if c.active]
                if fired:
                    hit = (int(fired[0].at) - start, fired[0].scope, fired[0].key)
            found.append(hit)
        got = [h[0] for h in found if h]
        print(f"{name:24s} change: {CHANGES_TEXT[name]:44s} median {statistics.median(got) if got else '-':>7} "
              f"(missed {sum(h is None for h in found)}/{seeds}) first key {found[0][1:] if found[0] else '-'}")


CHANGES_TEXT = {
    "feedback_disagreement": "judge misses self_harm 5% -> 15% (4% of traffic)",
    "judge_disagreement": "second judge flags safe prompts 2% -> 5%",
    "unsafe_response_rate": "unsafe answers to self_harm (4% of traffic) 5% -> 15%",
    "over_refusal": "refusals of safe prompts 3% -> 6%",
}


def xstest_model_swap(seeds: int) -> None:
    files = {m: DATA_DIR / f"xstest-completions-{m}.jsonl" for m in ("gpt4", "llama2new", "mistralinstruct")}
    if not all(p.exists() for p in files.values()):
        print(f"\n(XSTest completions not found under {DATA_DIR}: real-data section skipped)")
        return
    refused = {}
    for model, path in files.items():
        rows = [json.loads(line) for line in path.open()]
        refused[model] = [bool(r["refusal"]) for r in rows if r["unsafe"] is False]
    print("\n== real labels: XSTest safe prompts, human refusal labels, model swapped after 20k answers ==")
    print("   refusal rate on safe prompts: " + ", ".join(f"{m} {sum(v) / len(v):.1%}" for m, v in refused.items()))
    for before, after in (("mistralinstruct", "gpt4"), ("gpt4", "llama2new"), ("gpt4", "gpt4")):
        found = []
        for seed in range(seeds):
            rng, det = random.Random(seed), OverRefusalDetector()
            hit = None
            for i in range(60_000):
                model = before if i < 20_000 else after
                v = verdict(SAFE, False, rng.choice(refused[model]))
                fired = [c for c in det.update([ScoredEvent(Event(f"x{i}", float(i), "p", "r"), 1.0, VEC, VEC, v)]) if c.active]
                if fired:
                    hit = i - 20_000
                    break
            found.append(hit)
        print(f"   {before:>15s} -> {after:<15s} answers from swap to alarm: {found}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cost_and_false_alarms(50_000 if args.quick else 300_000)
    delays(2 if args.quick else 5)
    xstest_model_swap(2 if args.quick else 5)
