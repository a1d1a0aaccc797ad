"""Feeding a detector a stream and turning runs into rows of the one results table.

Every scenario module builds events ``1 / EVENT_RATE`` seconds of event time apart, feeds them in
batches of ``BATCH`` through :func:`feed`, and summarises seeds with :func:`stationary_row` or
:func:`change_row`. Cost is CPU time of the detector calls (process time: the machine is shared,
so wall time would measure the neighbours).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from monitor.signals import Condition
from monitor.drift.base import Detector
from monitor.drift.feedback_disagreement import Feedback
from monitor.events import ScoredEvent

EVENT_RATE = 10.0  # events per second of event time
BATCH = 64


@dataclass
class Run:
    """One stream through one detector."""

    activations: list[tuple[int, Condition]]  # (event index, condition) each time a (scope, key) turned active
    monitored: int  # events fed in batches that start after the warm-up
    seconds: float  # CPU time spent on those events


def feed(detector: Detector, events: Sequence[ScoredEvent], warmup: int = 0,
         labels: Sequence[Feedback | None] | None = None) -> Run:
    """Feed ``events`` in batches; ``labels`` (aligned with events) go to ``detector.observe`` after their batch."""
    state: dict[tuple[str, str], bool] = {}
    activations: list[tuple[int, Condition]] = []
    seconds, monitored = 0.0, 0
    observe: Callable[[Feedback], tuple[str, list[Condition]]] | None = getattr(detector, "observe", None)
    for i in range(0, len(events), BATCH):
        batch = events[i : i + BATCH]
        t0 = time.process_time()
        conditions = list(detector.update(batch))
        if labels is not None and observe is not None:
            for fb in labels[i : i + BATCH]:
                if fb is not None:
                    conditions += observe(fb)[1]
        dt = time.process_time() - t0
        if i >= warmup:  # the batch that ends the warm-up (fitting, calibration) is not detection cost
            seconds += dt
            monitored += len(batch)
        for c in conditions:
            fp = (c.scope, c.key)
            if c.active and not state.get(fp, False):
                activations.append((min(len(events) - 1, round(c.at * EVENT_RATE)), c))
            state[fp] = c.active
    return Run(activations, monitored, seconds)


@dataclass(frozen=True)
class Row:
    """One line of the table: a detector on a scenario, summarised over seeds."""

    detector: str
    scenario: str
    detected: str = "–"  # "k/n" for change scenarios
    delay_events: float | None = None  # median over detected seeds
    false_alarms_per_100k: float | None = None  # stationary scenarios only
    us_per_event: float | None = None
    purity: float | None = None  # emerging clusters only: median share of exemplars from the new group
    note: str = ""


def cost(runs: Sequence[Run]) -> float | None:
    """Median CPU µs per monitored event."""
    values = [r.seconds / r.monitored * 1e6 for r in runs if r.monitored]
    return statistics.median(values) if values else None


def stationary_row(detector: str, scenario: str, runs: Sequence[Run], note: str = "") -> Row:
    watched = sum(r.monitored for r in runs)
    alarms = sum(len(r.activations) for r in runs)
    return Row(detector, scenario, false_alarms_per_100k=alarms / watched * 1e5 if watched else None,
               us_per_event=cost(runs), note=note or f"{alarms} alarms in {watched:,} events")


def first_detection(run: Run, change_at: int, key: str | None = None) -> tuple[int, Condition] | None:
    """(delay in events, condition) of the first activation at or after the change naming ``key`` (any key if None)."""
    hits = [(i - change_at, c) for i, c in run.activations if i >= change_at and (key is None or c.key in (key, ""))]
    return hits[0] if hits else None


def change_row(detector: str, scenario: str, runs: Sequence[Run], change_at: int, key: str | None = None,
               purity: Callable[[Condition], float] | None = None, note: str = "") -> Row:
    """Median delay over the seeds that detected; alarms before the change are counted in the note."""
    found = [d for r in runs if (d := first_detection(r, change_at, key)) is not None]
    early = sum(1 for r in runs for i, _ in r.activations if i < change_at)
    delay = statistics.median(d for d, _ in found) if found else None
    pure = statistics.median(purity(c) for _, c in found) if found and purity else None
    extra = f"{early} alarms before the change" if early else ""
    return Row(detector, scenario, f"{len(found)}/{len(runs)}", delay, None, cost(runs), pure,
               "; ".join(x for x in (note, extra) if x))


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| detector | scenario | detected | median delay (events) | median delay (event time) "
        "| false alarms / 100k stationary events | CPU µs/event | exemplar purity | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        seconds = None if r.delay_events is None else r.delay_events / EVENT_RATE
        lines.append(
            f"| {r.detector} | {r.scenario} | {r.detected} | {_fmt(r.delay_events, ',.0f')} | "
            f"{'–' if seconds is None else f'{seconds:,.0f} s'} | {_fmt(r.false_alarms_per_100k, '.2f')} | "
            f"{_fmt(r.us_per_event, '.1f')} | {_fmt(r.purity, '.2f')} | {r.note} |"
        )
    return "\n".join(lines)
