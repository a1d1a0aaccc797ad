"""Category-share drift: has the share of a harm category, or of unsafe prompts overall, left its reference?

Test. Per scope and key (``unsafe`` plus each harm category) a one-sided Bernoulli CUSUM watches
for a rise to ``ratio`` times the reference odds, and a second one for a fall to ``1 / ratio``
times them. The CUSUM is the optimal sequential test for a rate moving from one value to another
(shortest worst-case delay for a given false-alarm rate), and unlike a windowed Fisher/chi-square
test it needs no window length and keeps no window: a few integers per key.

Calibration. Thresholds come from the exact average run length of each CUSUM at the reference
rate (:mod:`monitor.drift.bernoulli_cusum`), averaged over the posterior of that rate so a
reference estimated from few events does not inflate false alarms. Multiple testing is a weighted
Bonferroni split of one false-alarm budget per scope, one alarm per ``expected_run_time`` events:
the rise tests share ``1 - drop_budget`` of it, the fall tests share ``drop_budget`` equally
(falls of safety categories matter less than rises and are slow to detect anyway). Of the rise
budget, ``share_weighting`` goes to the keys in proportion to their reference share and the rest
equally. Why: a key's delay grows with the log of its share of the budget, and what a rise costs
is the excess harmful prompts before the alarm, which for a doubling is the same number of events
whatever the key's share; if the key that moves is as likely to be any unit of traffic (a key
moves in proportion to its share), weights in proportion to share minimise the expected excess.
Half and half (the default) took a 5% -> 10% rise from a median 416 events to 356 and a rare
0.2% category's rise to 1% from 1,244 to 1,320, at the same false alarms (40 seeds each,
``bench/drift_scenarios.py``). A fall test
runs only for keys whose reference can tell the fall apart (posterior probability under 0.1% that
the true rate is already low enough to make the test drift up); the rises get the whole budget
when no fall is testable.

Alert life. A key turns active when one of its CUSUMs reaches its threshold. It resolves when a
CUSUM for the way back (the same log-likelihood ratio with the sign flipped) reaches the same
threshold: resolving takes as much evidence as firing, so a shift that persists never flaps and
a key returns only once the reference rate is back. The events since the rising CUSUM last left
zero are the change-point estimate (its maximum-likelihood position); the current share is the
share over them, with a 95% Wilson interval. At the moment of the alarm that share is biased up
(the stopping rule selects a run of 1s); every later condition of the alert counts from the same
change point, so the estimate converges on the new share while the alert stays open.

Reference. The first ``warmup_events`` events of each scope, or a given :class:`ShareReference`
(stored counts, or shares with the number of events they were measured on).

Determinism and cost. Statistics are int64 in units of 2^-32 nats, so sums are exact and
results do not depend on how events are batched. A batch costs a handful of numpy passes over
an (events x keys) array; the threshold calibration runs once per scope, when its warm-up ends
(well under a second for the 15 default keys).

>>> import random
>>> from monitor.events import Event, ScoredEvent
>>> from monitor.judge.verdict import Verdict
>>> def scored(t, flagged):
...     v = Verdict("j", "self_harm" if flagged else "safe", {}, float(flagged), flagged, categories=("self_harm",) if flagged else ())
...     return ScoredEvent(Event(str(t), float(t), "p"), 1.0, None, None, v)
>>> rng = random.Random(0)
>>> det = CategoryShareDetector(["self_harm"], warmup_events=5000, expected_run_time=1_000_000)
>>> det.update([scored(t, rng.random() < 0.05) for t in range(10_000)])
[]
>>> alarm = det.update([scored(t, rng.random() < 0.10) for t in range(10_000, 12_000)])[0]
>>> alarm.key, alarm.active, alarm.evidence["direction"], 10_000 < alarm.at < 11_000
('unsafe', True, 'rise', True)
"""

from __future__ import annotations

import logging
import math
from typing import Any, Collection, Iterator, Sequence

import numpy as np
from scipy.stats import beta

from monitor.config import default
from monitor.signals import Condition, Reading, Severity
from monitor.drift.bernoulli_cusum import calibrate_threshold, llr_steps, neutral_rate, odds_shift
from monitor.drift.rate_change import wilson_interval
from monitor.drift.reference import ShareKeys, ShareReference, ShareWarmUp, UNSAFE, rows_by_scope
from monitor.events import ScoredEvent

log = logging.getLogger(__name__)

SCALE = 2.0**32
"""CUSUM units per nat."""
_UNTESTABLE_FALL = 1e-3


def _guarded_rise(p0: float, k: int, n: int, ratio: float) -> float:
    """The rate a rise test is tuned to: ``ratio`` times the reference odds, raised where needed so
    that the reference's posterior puts under ``_UNTESTABLE_FALL`` of its mass above the test's
    neutral rate.

    A rare key seen few times (or never) in the reference may truly sit well above its point
    estimate; a test tuned to twice that estimate would then drift up on stationary traffic, and
    no threshold could hold its false-alarm rate. So the shift it detects grows with the
    reference's uncertainty: a key never seen in 1,500 events is watched for a rise past ~0.4%.

    >>> round(_guarded_rise(0.05, 250, 5000, 2.0), 4)  # a well-measured share: the plain 2x odds
    0.0952
    >>> round(_guarded_rise(0.5 / 1501, 0, 1500, 2.0), 4) > 0.003
    True
    """
    p1 = odds_shift(p0, ratio)
    ceiling = beta.ppf(1.0 - _UNTESTABLE_FALL, k + 0.5, n - k + 0.5)
    while neutral_rate(*llr_steps(p0, p1)) < ceiling:
        p1 = odds_shift(p1, 1.25)
    return p1


def _cusum_path(steps: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``S_t = max(0, S_{t-1} + steps_t)`` for every row at once: ``S_t = P_t - min(-S_0, min_{j<=t} P_j)``."""
    partial = np.cumsum(steps, axis=0)
    return partial - np.minimum(np.minimum.accumulate(partial, axis=0), -start)


class _ScopeTests:
    """The CUSUMs of one scope: one channel per (key, direction), every field an array over channels."""

    ARRAYS = ("key_of", "rising", "design", "target_arl", "step_one", "step_zero", "threshold", "stat",
              "back", "alarmed", "since_n", "since_ones", "since_at", "back_n", "back_ones", "back_at", "alarm_at")

    def __init__(self, reference: ShareReference, keys: Sequence[str], ratio: float, expected_run_time: float, drop_budget: float,
                 share_weighting: float) -> None:
        self.reference = reference
        n = reference.events
        plans: list[tuple[int, bool, float, float, float]] = []  # key index, rising, p1, step one, step zero
        for j, key in enumerate(keys):
            k = reference.count(key)
            p0 = (k + 0.5) / (n + 1.0)
            for rising in (True, False):
                p1 = _guarded_rise(p0, k, n, ratio) if rising else odds_shift(p0, 1.0 / ratio)
                one, zero = llr_steps(p0, p1)
                if not rising and (drop_budget == 0 or beta.cdf(neutral_rate(one, zero), k + 0.5, n - k + 0.5) > _UNTESTABLE_FALL):
                    continue
                plans.append((j, rising, p1, one, zero))
        rises = sum(1 for p in plans if p[1])
        falls = len(plans) - rises
        rise_budget = (1.0 - drop_budget if falls else 1.0) / expected_run_time
        shares = np.array([(reference.count(keys[p[0]]) + 0.5) / (n + 1.0) for p in plans if p[1]])
        rise_weights = iter((1.0 - share_weighting) / rises + share_weighting * shares / shares.sum())
        arl = [1.0 / (rise_budget * next(rise_weights)) if p[1] else falls * expected_run_time / drop_budget for p in plans]
        self.key_of = np.array([p[0] for p in plans], dtype=np.intp)
        self.rising = np.array([p[1] for p in plans], dtype=bool)
        self.design = np.array([p[2] for p in plans])
        self.target_arl = np.array(arl)
        self.step_one = np.array([round(p[3] * SCALE) for p in plans], dtype=np.int64)
        self.step_zero = np.array([round(p[4] * SCALE) for p in plans], dtype=np.int64)
        self.threshold = np.array(
            [math.ceil(calibrate_threshold(p[3], p[4], reference.count(keys[p[0]]), n, a) * SCALE) for p, a in zip(plans, arl)],
            dtype=np.int64,
        )
        c = len(plans)
        self.everything = np.ones(c, dtype=bool)
        self.stat = np.zeros(c, dtype=np.int64)  # the CUSUM towards the shifted rate
        self.back = np.zeros(c, dtype=np.int64)  # while alarmed: the CUSUM for the way back
        self.alarmed = np.zeros(c, dtype=bool)
        self.since_n = np.zeros(c, dtype=np.int64)  # events since the change point (``stat`` last left zero)
        self.since_ones = np.zeros(c, dtype=np.int64)
        self.since_at = np.full(c, math.nan)
        self.back_n = np.zeros(c, dtype=np.int64)  # the same for ``back`` (evidence of a resolve)
        self.back_ones = np.zeros(c, dtype=np.int64)
        self.back_at = np.full(c, math.nan)
        self.alarm_at = np.full(c, math.nan)

    # ------------------------------------------------------------------ stepping

    def advance(self, indicators: np.ndarray, times: np.ndarray) -> Iterator[tuple[int, int]]:
        """Feed rows in order, yielding ``(row, channel)`` right after each alarm or resolve."""
        ones = indicators[:, self.key_of]
        steps = np.where(ones, self.step_one, self.step_zero)
        start, rows = 0, len(steps)
        while start < rows:
            seg_steps, seg_ones, seg_times = steps[start:], ones[start:], times[start:]
            stat = _cusum_path(seg_steps, self.stat)
            back = _cusum_path(-seg_steps, self.back)
            crossed = np.where(self.alarmed, back, stat) >= self.threshold
            hit_rows = crossed.any(axis=1)
            end = int(hit_rows.argmax()) if hit_rows.any() else len(seg_steps) - 1
            keep = slice(0, end + 1)
            watching = ~self.alarmed
            cum = np.cumsum(seg_ones[keep], axis=0)
            # watching: events since ``stat`` left zero; alarmed: since the change point, plus since ``back`` left zero
            self._count(stat[keep], cum, seg_times[keep], self.since_n, self.since_ones, self.since_at, self.everything, restart=watching)
            self._count(back[keep], cum, seg_times[keep], self.back_n, self.back_ones, self.back_at, self.alarmed, restart=self.alarmed)
            self.stat = stat[end].copy()
            self.back = np.where(self.alarmed, back[end], 0)
            for channel in np.flatnonzero(crossed[end]):
                self._switch(int(channel), float(seg_times[end]))
                yield start + end, int(channel)
            start += end + 1

    @staticmethod
    def _count(path: np.ndarray, cum: np.ndarray, times: np.ndarray, n: np.ndarray, k: np.ndarray, at: np.ndarray, channels: np.ndarray, restart: np.ndarray) -> None:
        """For ``channels``: events, ones and first event time since ``path`` last sat at zero (where ``restart``), else just add."""
        rows = len(path)
        zero = (path == 0) & restart
        has_zero = zero.any(axis=0)
        last = rows - 1 - zero[::-1].argmax(axis=0)
        idx = np.flatnonzero(has_zero & channels)
        if idx.size:
            lz = last[idx]
            n[idx] = rows - 1 - lz
            k[idx] = cum[-1, idx] - cum[lz, idx]
            at[idx] = np.where(lz < rows - 1, times[np.minimum(lz + 1, rows - 1)], math.nan)
        rest = np.flatnonzero(~has_zero & channels)
        at[rest] = np.where(n[rest] == 0, times[0], at[rest])
        n[rest] += rows
        k[rest] += cum[-1, rest]

    def _switch(self, c: int, at: float) -> None:
        if not self.alarmed[c]:
            self.alarmed[c] = True
            self.back[c] = 0
            self.back_n[c] = self.back_ones[c] = 0
            self.back_at[c] = math.nan
            self.alarm_at[c] = at
        else:
            self.alarmed[c] = False
            self.stat[c] = self.back[c] = 0
            self.since_n[c] = self.since_ones[c] = 0
            self.since_at[c] = math.nan

    # ------------------------------------------------------------------ reporting

    def reset(self, j: int) -> None:
        """Start key ``j``'s tests from zero (a reviewer called its alarm false): a shift that persists
        has to gather the evidence again."""
        channels = self.key_of == j
        self.stat[channels] = self.back[channels] = 0
        self.alarmed[channels] = False
        self.since_n[channels] = self.since_ones[channels] = self.back_n[channels] = self.back_ones[channels] = 0
        self.since_at[channels] = self.back_at[channels] = self.alarm_at[channels] = math.nan

    def key_active(self, j: int) -> bool:
        return bool(self.alarmed[self.key_of == j].any())

    def lead_channel(self, j: int) -> int:
        """The channel that speaks for key ``j``: an alarmed one, else the one closest to alarm."""
        channels = np.flatnonzero(self.key_of == j)
        alarmed = channels[self.alarmed[channels]]
        if alarmed.size:
            return int(alarmed[0])
        return int(channels[np.argmax(self.stat[channels] / self.threshold[channels])])

    def evidence(self, key: str, c: int, resolved: bool) -> dict[str, Any]:
        ref = self.reference
        ref_k = ref.count(key)
        n, k, since = (self.back_n[c], self.back_ones[c], self.back_at[c]) if resolved else (self.since_n[c], self.since_ones[c], self.since_at[c])
        n, k = int(n), int(k)
        return {
            "direction": "rise" if self.rising[c] else "drop",
            "reference_share": ref_k / ref.events,
            "reference_ci95": list(wilson_interval(ref_k, ref.events)),
            "reference_events": ref.events,
            "reference_start": ref.start,
            "reference_end": ref.end,
            "current_share": k / n if n else None,
            "current_ci95": list(wilson_interval(k, n)),
            "current_events": n,
            "change_point_at": None if math.isnan(since) else float(since),
            "alarm_at": None if math.isnan(self.alarm_at[c]) else float(self.alarm_at[c]),
            "statistic": float(self.stat[c] / SCALE),
            "threshold": float(self.threshold[c] / SCALE),
            "design_share": float(self.design[c]),
            "target_arl_events": float(self.target_arl[c]),
        }

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name).copy() for name in self.ARRAYS}
        ref = self.reference
        state["reference"] = (ref.events, dict(ref.counts), ref.start, ref.end)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _ScopeTests:
        tests = cls.__new__(cls)
        tests.reference = ShareReference(*state["reference"])
        for name in cls.ARRAYS:
            setattr(tests, name, np.array(state[name]))
        tests.everything = np.ones(len(tests.key_of), dtype=bool)
        return tests


class CategoryShareDetector:
    """Calibrated two-way Bernoulli CUSUMs on the share of each harm category and of unsafe prompts, per scope.

    Parameters
    ----------
    categories
        Harm category ids to watch (default: the taxonomy's); key ``unsafe`` is always watched.
    warmup_events
        Events of a scope that form its reference, when no ``reference`` is given.
    reference
        A fixed reference for every scope (skips the warm-up).
    expected_run_time
        Events per false alarm for the whole detector in one scope (all keys and directions together).
        The default, 125k, leaves margin under one false alarm per 100k events: the calibration holds
        on average, and on real prompts 100k gave 1.2 per 100k (bench/drift_scenarios.py).
    ratio
        The shift the tests are tuned to: the odds of a key multiplied (rise) or divided (fall) by it.
    drop_budget
        Share of the false-alarm budget given to the fall tests (0 turns them off).
    share_weighting
        Part of the rise tests' budget split in proportion to each key's reference share (the rest
        is split equally): 0 gives every key the same false-alarm rate, 1 puts sensitivity where
        the traffic is (see the module doc), and leaves a key absent from the reference almost
        no budget, so that it is in effect not watched.
    max_scopes
        Scopes tracked at most; events of further scopes are ignored (scopes come from configuration).
    """

    name = "category_share"
    alert_kind = name
    uses_verdicts = True  # rates of the judge's decisions: not comparable across judges or decision lines

    def __init__(
        self,
        categories: Sequence[str] | None = None,
        *,
        warmup_events: int = default("share_warmup_events"),
        reference: ShareReference | None = None,
        expected_run_time: float = default("share_expected_run_time"),
        ratio: float = default("share_shift_ratio"),
        drop_budget: float = 0.1,
        share_weighting: float = default("share_weighting"),
        max_scopes: int = 64,
    ) -> None:
        if categories is None:
            from monitor.taxonomy import load_taxonomy

            categories = load_taxonomy().harm_ids
        if warmup_events < 100:
            raise ValueError(f"warmup_events must be at least 100, got {warmup_events}")
        if not expected_run_time > 1:
            raise ValueError(f"expected_run_time must be > 1 event, got {expected_run_time}")
        if not ratio > 1.0:
            raise ValueError(f"ratio must be > 1, got {ratio}")
        if not 0.0 <= drop_budget < 1.0:
            raise ValueError(f"drop_budget must be within [0, 1), got {drop_budget}")
        if not 0.0 <= share_weighting <= 1.0:
            raise ValueError(f"share_weighting must be within [0, 1], got {share_weighting}")
        if max_scopes < 1:
            raise ValueError(f"max_scopes must be at least 1, got {max_scopes}")
        self.share_keys = ShareKeys(categories)
        self.keys = self.share_keys.keys
        if reference is not None:
            unknown = sorted(set(reference.counts) - set(self.keys))
            if unknown:
                raise ValueError(f"reference counts name unknown key(s): {', '.join(unknown)}")
        self.warmup_events = warmup_events
        self.reference = reference
        self.expected_run_time = float(expected_run_time)
        self.ratio = float(ratio)
        self.drop_budget = float(drop_budget)
        self.share_weighting = float(share_weighting)
        self.max_scopes = max_scopes
        self._warmups: dict[str, ShareWarmUp] = {}
        self._tests: dict[str, _ScopeTests] = {}
        self._full_warned = False
        self._learned: dict[str, CategoryShareDetector] = {}  # categories added at run time (triage), one detector each

    # ------------------------------------------------------------------ categories learned at run time

    def add_category(self, key: str) -> bool:
        """Watch a category taught to the judge at run time (triage), against a fresh reference.

        Why a detector of its own: before it was learned the key's share was 0 by construction, so
        the key needs its own warm-up (``warmup_events`` per scope from now on) and its own
        false-alarm budget; the base keys' references and thresholds stay as they are. Its ``unsafe``
        channel duplicates the base one and is never reported. False when the key is already watched."""
        if key in self.keys or key in self._learned:
            return False
        self._learned[key] = self._learner(key)
        return True

    def retain_categories(self, keys: Collection[str], at: float) -> list[Condition]:
        """Keep watching only the run-time categories in ``keys`` (triage reverted the others, or a snapshot
        older than the triage state still held them; base keys stay). The dropped keys' open alarms resolve
        (the returned conditions, at event time ``at``): with the key gone nothing else would."""
        out: list[Condition] = []
        for key in [k for k in self._learned if k not in keys]:
            sub = self._learned.pop(key)
            out += [Condition(self.name, r.scope, key, False, at, summary=f"category {key!r} was reverted in triage: no longer watched")
                    for r in sub.readings() if r.key == key and r.active]
        return out

    def _learner(self, key: str) -> CategoryShareDetector:
        return CategoryShareDetector([key], warmup_events=self.warmup_events, expected_run_time=self.expected_run_time,
                                     ratio=self.ratio, drop_budget=self.drop_budget, share_weighting=self.share_weighting,
                                     max_scopes=self.max_scopes)

    def references(self) -> dict[str, dict[str, float]]:
        """Per scope whose warm-up is over: each key's reference share (learned keys once their own warm-up ends)."""
        out = {scope: {key: tests.reference.share(key) for key in self.keys} for scope, tests in self._tests.items()}
        for key, sub in self._learned.items():
            for scope, shares in sub.references().items():
                out.setdefault(scope, {})[key] = shares[key]
        return out

    def reset(self, scope: str, key: str) -> bool:
        """Restart ``key``'s tests in ``scope`` (its alarm was judged false); False when not watched there."""
        if key in self._learned:
            return self._learned[key].reset(scope, key)
        tests = self._tests.get(scope)
        if tests is None or key not in self.keys:
            return False
        tests.reset(self.keys.index(key))
        return True

    # ------------------------------------------------------------------ update

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        if not batch:
            return []
        indicators = self.share_keys.indicators(batch)
        times = np.fromiter((e.event.timestamp for e in batch), dtype=float, count=len(batch))
        out: list[tuple[int, Condition]] = []
        for scope, rows in rows_by_scope(batch).items():
            if not self._admit(scope):
                continue
            x, t = indicators[rows], times[rows]
            tests = self._tests.get(scope)
            if tests is None and self.reference is not None:
                tests = self._start(scope, self.reference)
            elif tests is None:
                warm = self._warmups.setdefault(scope, ShareWarmUp(self.warmup_events, self.keys))
                taken = warm.absorb(x, t)
                if not warm.done:
                    continue
                tests = self._start(scope, warm.reference())
                del self._warmups[scope]
                x, t, rows = x[taken:], t[taken:], rows[taken:]
            out += self._advance(scope, tests, x, t, rows)
        out.sort(key=lambda item: item[0])
        return [cond for _, cond in out] + [c for sub in self._learned.values() for c in sub.update(batch) if c.key != UNSAFE]

    def _admit(self, scope: str) -> bool:
        if scope in self._tests or scope in self._warmups or len(self._tests) + len(self._warmups) < self.max_scopes:
            return True
        if not self._full_warned:
            log.warning("%s: more than %d scopes; events of further scopes are not watched", self.name, self.max_scopes)
            self._full_warned = True
        return False

    def _start(self, scope: str, reference: ShareReference) -> _ScopeTests:
        tests = _ScopeTests(reference, self.keys, self.ratio, self.expected_run_time, self.drop_budget, self.share_weighting)
        self._tests[scope] = tests
        return tests

    def _advance(self, scope: str, tests: _ScopeTests, x: np.ndarray, t: np.ndarray, rows: np.ndarray) -> list[tuple[int, Condition]]:
        if not len(x):
            return []
        out: list[tuple[int, Condition]] = []
        before = [tests.key_active(j) for j in range(len(self.keys))]
        last_emitted: dict[int, int] = {}
        for row, channel in tests.advance(x, t):
            j = int(tests.key_of[channel])
            now = tests.key_active(j)
            if now != before[j]:
                before[j] = now
                out.append((int(rows[row]), self._condition(scope, tests, j, channel, float(t[row]), resolved=not now)))
                last_emitted[j] = row
        for j, active in enumerate(before):
            if active and last_emitted.get(j) != len(x) - 1:
                out.append((int(rows[-1]), self._condition(scope, tests, j, tests.lead_channel(j), float(t[-1]), resolved=False)))
        return out

    def _condition(self, scope: str, tests: _ScopeTests, j: int, channel: int, at: float, resolved: bool) -> Condition:
        key = self.keys[j]
        ev = tests.evidence(key, channel, resolved)
        what = "unsafe prompts" if key == UNSAFE else f"prompts flagged {key}"
        rising = ev["direction"] == "rise"
        severity: Severity = "warning" if rising else "info"
        if resolved:
            summary = f"share of {what} in {scope} is back near its reference {ev['reference_share']:.2%}"
        else:
            lo, hi = ev["current_ci95"]
            share = ev["current_share"] or 0.0
            summary = (
                f"share of {what} in {scope} {'rose' if rising else 'fell'} from {ev['reference_share']:.2%} "
                f"to {share:.2%} (95% CI {lo:.2%}-{hi:.2%}, {ev['current_events']} events)"
            )
        return Condition(self.name, scope, key, not resolved, at, severity, summary, ev)

    # ------------------------------------------------------------------ readings and state

    def readings(self) -> list[Reading]:
        """Per scope and key: the CUSUM closest to alarm as a fraction of its threshold (alarm at 1).

        Scopes still in warm-up have no readings yet.
        """
        out = []
        for scope, tests in self._tests.items():
            for j, key in enumerate(self.keys):
                c = tests.lead_channel(j)
                out.append(Reading(self.name, scope, key, float(tests.stat[c] / tests.threshold[c]), 1.0, tests.key_active(j)))
        return out + [r for sub in self._learned.values() for r in sub.readings() if r.key != UNSAFE]

    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "warmups": {scope: warm.state_dict() for scope, warm in self._warmups.items()},
            "tests": {scope: tests.state_dict() for scope, tests in self._tests.items()},
            "learned": {key: sub.state_dict() for key, sub in self._learned.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["keys"]) != list(self.keys):
            raise ValueError(f"saved state watches keys {state['keys']}, this detector watches {list(self.keys)}")
        self._warmups = {}
        for scope, saved in state["warmups"].items():
            warm = ShareWarmUp(self.warmup_events, self.keys)
            warm.load_state_dict(saved)
            self._warmups[scope] = warm
        self._tests = {scope: _ScopeTests.from_state(saved) for scope, saved in state["tests"].items()}
        self._learned = {}
        for key, saved in state.get("learned", {}).items():
            self._learned[key] = self._learner(key)
            self._learned[key].load_state_dict(saved)
