"""A prober against a fake model, judged by the keyword judge (fast; the real judge has tests of its own)."""

from __future__ import annotations

import asyncio
from typing import Sequence

import numpy as np
from prometheus_client import CollectorRegistry

from monitor.events import Event
from monitor.judge.keyword_baseline import KeywordJudge
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.probe.client import Target
from monitor.probe.detector import ProbeDetector
from monitor.probe.metrics import ProbeMetrics
from monitor.probe.prober import Prober, ProbeSettings
from monitor.probe.probe_sets import ProbeSet, load_probe_sets
from monitor.taxonomy import load_taxonomy

BUILTIN = ("benign_but_scary", "clearly_harmful")


class RecordingKeywordJudge:
    """The keyword judge on texts alone (it ignores embeddings); keeps every event it was given."""

    def __init__(self) -> None:
        self.inner = KeywordJudge(load_taxonomy().harm_ids)
        self.events: list[Event] = []

    def __call__(self, events: Sequence[Event]) -> list[Verdict]:
        self.events.extend(events)
        zero = np.zeros(1, dtype=np.float32)
        return self.inner.judge([JudgeInput(e.prompt, zero, e.response, zero) for e in events])


def builtin_sets() -> list[ProbeSet]:
    return load_probe_sets(list(BUILTIN))


def make_prober(base_url: str, judge=None, sets: Sequence[ProbeSet] | None = None, registry: CollectorRegistry | None = None,
                detector: ProbeDetector | None = None, **settings) -> Prober:
    defaults = dict(concurrency=8, timeout_s=5.0, max_retries=1, daily_tokens=10**9)
    return Prober(
        [Target.parse(f"canary@{base_url}")],
        list(sets) if sets is not None else builtin_sets(),
        judge or RecordingKeywordJudge(),
        detector or ProbeDetector(),
        ProbeMetrics(registry or CollectorRegistry()),
        ProbeSettings(**{**defaults, **settings}),
    )


def run_round(prober: Prober, at: float):
    return asyncio.run(prober.run_round(at))
