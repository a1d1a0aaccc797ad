"""A calibrated online change test for Bernoulli rates, one per (scope, key), fed one trial at a time.

Why a CUSUM: every concept-shift signal is a stream of yes/no trials per key (did the judge and
the label disagree, was the response unsafe, did the model refuse a safe prompt) whose rate should
stay put. The Bernoulli CUSUM is the optimal sequential test for a rate moving from a reference
``p0`` to a shifted ``p1`` and keeps a few numbers per key. Its threshold is set from the exact
average run length (:func:`monitor.drift.bernoulli_cusum.average_run_length`) so that a key runs
``arl`` trials between false alarms on average (``2 * arl`` per test when the rise and the drop
test both run). (river's DDM/EDDM/HDDM watch a binary error rate too, but their thresholds are
confidences per test, not a false-alarm rate per stream.)

Sparse keys. Unlike category shares, where every event is a trial for every key
(:mod:`monitor.drift.category_share` runs those as arrays), the trials here reach one key at a time
and most keys see few of them: a category's feedback, a category's responses. So the reference is
per key and starts small, and two things keep a small reference from false-alarming:

- Guarded design: the rise test starts from the ``reference_z`` Wilson *upper* bound of the
  reference (the drop test from the lower one) and is tuned to ``odds_shift(bound, ratio)``; its
  threshold gives ``arl`` at the bound itself. The rise test's run length only grows as the true
  rate falls below the bound (mirrored for the drop test), so the false-alarm target holds
  whenever the true rate lies inside the bound (with ``reference_z = 3``, for all but 0.13% of
  references), without the cost or the fragility of averaging over the reference's posterior
  (which the category-share detector affords because it calibrates once per scope, on a large
  reference).
- Growing reference: after the first ``warmup`` trials the reference keeps absorbing the trials
  that arrive while neither test holds any evidence of change (both statistics at zero, so a
  change in progress is kept out), and the tests are re-derived each time it doubles: sensitivity
  improves as the reference sharpens. A re-derivation solves a few small banded systems (a few
  milliseconds), a logarithmic number of times in a key's life.

Alert life: a key turns active when a statistic reaches its threshold; the statistic is then
capped there and the key stays active until it falls back to zero, i.e. until as much evidence
for the way back has arrived as fired it (a CUSUM for the way back, as in the category-share
detector). The trials since the statistic last left zero are the change-point estimate; evidence
reports the rate over them with a 95% Wilson interval.

Trials are unweighted: the pipeline's sampling is independent of content, so the rate among
judged events estimates the rate of the whole stream. Memory is a fixed record per key; keys are
bounded by the caller (scopes from configuration, keys from the taxonomy).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

from monitor.config import default
from monitor.signals import Condition, Reading, Severity
from monitor.drift.bernoulli_cusum import average_run_length, llr_steps, odds_shift
from monitor.events import ScoredEvent

Direction = Literal["rise", "drop", "both"]
Trial = tuple[str, str, bool, float]
"""(scope, key, outcome, event time) of one Bernoulli trial."""

_CI_Z = 1.959963984540054  # 95%


def wilson_interval(successes: int, n: int, z: float = _CI_Z) -> tuple[float, float]:
    """Wilson score interval for a binomial rate; ``(0, 1)`` when ``n`` is 0.

    >>> lo, hi = wilson_interval(5, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.0215, 0.1118)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return lo, hi


def threshold_for_arl(step_one: float, step_zero: float, rate: float, arl: float) -> float:
    """The CUSUM threshold whose exact average run length at ``rate`` is ``arl`` (never less).

    ``rate`` is the rate the test starts from, where Lorden's bound ``ARL >= e^h`` holds, so the
    root lies between 0 and ``ln(arl)``; log run length is nearly linear in the threshold, so the
    Illinois variant of false position finds it in a handful of run-length solves.

    >>> from monitor.drift.bernoulli_cusum import llr_steps, odds_shift
    >>> one, zero = llr_steps(0.05, odds_shift(0.05, 1.5))
    >>> h = threshold_for_arl(one, zero, 0.05, 1e6)
    >>> round(h, 2), h < math.log(1e6)
    (8.31, True)
    """
    if not arl > 1:
        raise ValueError(f"arl must be > 1 trial, got {arl}")
    target = math.log(arl)
    lo, f_lo = 0.0, -target  # a zero threshold alarms on the first trial
    hi = target
    f_hi = math.log(average_run_length(step_one, step_zero, rate, hi)) - target
    side = 0  # f_hi < 0 only from grid error: Lorden's bound still holds there
    for _ in range(60):
        if f_hi < 1e-3 or hi - lo < 1e-6:  # within 0.1% above the target
            break
        h = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        f = math.log(average_run_length(step_one, step_zero, rate, h)) - target
        if f >= 0:
            hi, f_hi = h, f
            if side == 1:
                f_lo /= 2.0
            side = 1
        else:
            lo, f_lo = h, f
            if side == -1:
                f_hi /= 2.0
            side = -1
    return hi


class _Test:
    """One one-sided test: the reference bound it starts from, the rate it is tuned to, its threshold."""

    __slots__ = ("bound", "p1", "h", "inc_success", "inc_failure")

    def __init__(self, bound: float, p1: float, h: float) -> None:
        self.bound, self.p1, self.h = bound, p1, h
        self.inc_success, self.inc_failure = llr_steps(bound, p1)

    def saved(self) -> tuple[float, float, float]:
        return self.bound, self.p1, self.h


class _Side:
    """One direction's CUSUM (rise or drop): its statistic, the trials and 1s since it left zero,
    when it left zero, and its test (None while untested)."""

    __slots__ = ("s", "n", "k", "since", "test")

    def __init__(self) -> None:
        self.s = 0.0
        self.n = self.k = 0
        self.since: float | None = None
        self.test: _Test | None = None

    def step(self, outcome: bool, at: float) -> bool:
        """Add one trial; True when the statistic reaches its threshold (where it is then held)."""
        test = self.test
        if test is None:
            return False
        if self.s == 0.0:
            self.since = at
        s = self.s + (test.inc_success if outcome else test.inc_failure)
        if s <= 0.0:
            self.s, self.n, self.k = 0.0, 0, 0
            return False
        fires = s >= test.h
        self.s = test.h if fires else s
        self.n += 1
        if outcome:
            self.k += 1
        return fires


class _KeyState:
    """Everything one key remembers: counts, and its rise and drop sides."""

    __slots__ = ("trials", "ref_n", "ref_k", "basis_n", "basis_k", "active", "alarm_at", "up", "down")
    _NUMBERS = __slots__[:-2]
    _SIDE = ("s", "n", "k", "since")  # saved per side, rise then drop, after _NUMBERS (the layout snapshots keep)

    def __init__(self) -> None:
        self.trials = self.ref_n = self.ref_k = self.basis_n = self.basis_k = 0
        self.active: str | None = None  # "rise", "drop" or None
        self.alarm_at: float | None = None
        self.up = _Side()
        self.down = _Side()

    def saved(self) -> tuple[Any, ...]:
        sides = (self.up, self.down)
        return (
            tuple(getattr(self, f) for f in self._NUMBERS)
            + tuple(getattr(side, f) for side in sides for f in self._SIDE)
            + tuple(None if side.test is None else side.test.saved() for side in sides)
        )

    @classmethod
    def restore(cls, values: Sequence[Any]) -> _KeyState:
        st = cls()
        *rest, up, down = values
        numbers, sides = rest[: len(cls._NUMBERS)], rest[len(cls._NUMBERS):]
        for field, value in zip(cls._NUMBERS, numbers, strict=True):
            setattr(st, field, value)
        for i, side in enumerate((st.up, st.down)):
            for field, value in zip(cls._SIDE, sides[i * 4:(i + 1) * 4], strict=True):
                setattr(side, field, value)
        st.up.test = None if up is None else _Test(*up)
        st.down.test = None if down is None else _Test(*down)
        return st

    def next_refresh(self, warmup: int) -> int:
        """The reference size at which the tests are re-derived: the warm-up, then each doubling."""
        return 2 * self.basis_n if self.basis_n else warmup


@dataclass(frozen=True, slots=True)
class RateChangeConfig:
    """How sensitive the test is; shared by every rate detector (see the module docstring).

    Parameters
    ----------
    warmup
        Trials of a key before it is tested (the first reference sample).
    arl
        Average number of trials of one key between false alarms.
    ratio
        The shift each test is tuned to: the odds of the reference bound times ``ratio`` (divided for a drop).
    reference_z
        Width of the Wilson bound that guards against an underestimated reference.
    """

    warmup: int = default("concept_warmup_trials")
    arl: float = default("concept_arl_trials")
    ratio: float = default("concept_shift_ratio")
    reference_z: float = 3.0

    def __post_init__(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 10:
            raise ValueError(f"warmup must be an integer >= 10 trials, got {self.warmup!r}")
        if not self.arl > 1:
            raise ValueError(f"arl must be > 1 trial, got {self.arl}")
        if not self.ratio > 1.0:
            raise ValueError(f"ratio must be > 1, got {self.ratio}")
        if not self.reference_z >= 2.0:
            raise ValueError(f"reference_z must be >= 2 (a looser guard lets a small reference false-alarm), got {self.reference_z}")


class RateChange:
    """Rise and/or fall tests per (scope, key) that turn Bernoulli trials into alert conditions.

    Parameters
    ----------
    kind
        Condition kind (alert fingerprint prefix), e.g. ``"over_refusal"``.
    description
        What the rate is, for summaries: ``"refusal rate on safe prompts"``.
    config
        Warm-up, false-alarm target and tuned shift.
    direction
        Which changes to alert on: ``"rise"``, ``"drop"`` or ``"both"``.
    severity_rise, severity_drop
        Severity of conditions for a rise and for a drop.

    >>> import random
    >>> rng = random.Random(0)
    >>> rc = RateChange("over_refusal", "refusal rate on safe prompts", RateChangeConfig(warmup=500, arl=10_000))
    >>> quiet = rc.update(("global", "", rng.random() < 0.05, float(t)) for t in range(3000))
    >>> shifted = rc.update(("global", "", rng.random() < 0.20, float(t)) for t in range(3000, 4000))
    >>> quiet, shifted[0].active, shifted[0].evidence["direction"]
    ([], True, 'rise')
    >>> 3000 < shifted[0].at < 3200
    True
    """

    def __init__(
        self,
        kind: str,
        description: str,
        config: RateChangeConfig = RateChangeConfig(),
        *,
        direction: Direction = "rise",
        severity_rise: Severity = "warning",
        severity_drop: Severity = "info",
    ) -> None:
        if direction not in ("rise", "drop", "both"):
            raise ValueError(f"direction must be 'rise', 'drop' or 'both', got {direction!r}")
        self.kind = kind
        self.description = description
        self.config = config
        self.direction = direction
        self.severity_rise: Severity = severity_rise
        self.severity_drop: Severity = severity_drop
        self._test_arl = config.arl * (2 if direction == "both" else 1)
        self._keys: dict[tuple[str, str], _KeyState] = {}

    # ------------------------------------------------------------------ trials

    def update(self, trials: Iterable[Trial]) -> list[Condition]:
        """Feed trials in order; return a condition per activation and resolution, then one per key still active.

        Keys that are active after the batch get a refreshed condition at their last trial's time
        (so the alert engine sees event time advance); keys that never changed get none.
        """
        out: list[Condition] = []
        touched: dict[tuple[str, str], float] = {}
        emitted: dict[tuple[str, str], float] = {}
        keys = self._keys
        for scope, key, outcome, at in trials:
            sk = (scope, key)
            st = keys.get(sk)
            if st is None:
                st = keys[sk] = _KeyState()
            touched[sk] = at
            st.trials += 1
            up, down = st.up, st.down
            if up.s == 0.0 and down.s == 0.0:
                st.ref_n += 1
                if outcome:
                    st.ref_k += 1
                if st.ref_n >= st.next_refresh(self.config.warmup):
                    self._derive(st)
                if st.basis_n == 0:
                    continue  # still warming up
            up_fires = up.step(outcome, at)
            down_fires = down.step(outcome, at)
            was = st.active
            if up_fires:
                now = "rise"
            elif down_fires:
                now = "drop"
            elif (was == "rise" and up.s <= 0.0) or (was == "drop" and down.s <= 0.0):
                now = None
            else:
                continue
            if now != was:
                st.active = now
                if now is not None:
                    st.alarm_at = at
                out.append(self._condition(scope, key, st, at, now or was))
                emitted[sk] = at
        for sk, at in touched.items():
            st = keys[sk]
            if st.active is not None and emitted.get(sk) != at:
                out.append(self._condition(sk[0], sk[1], st, at, st.active))
        return out

    def _derive(self, st: _KeyState) -> None:
        """Take the reference sample as the new basis and re-derive both tests from it."""
        st.basis_n, st.basis_k = n, k = st.ref_n, st.ref_k
        lo, hi = wilson_interval(k, n, self.config.reference_z)
        st.up.test = self._test(hi, odds_shift(hi, self.config.ratio)) if self.direction != "drop" and hi < 1.0 else None
        st.down.test = self._test(lo, odds_shift(lo, 1.0 / self.config.ratio)) if self.direction != "rise" and lo > 0.0 else None

    def _test(self, bound: float, p1: float) -> _Test:
        one, zero = llr_steps(bound, p1)
        return _Test(bound, p1, threshold_for_arl(one, zero, bound, self._test_arl))

    # ------------------------------------------------------------------ output

    def evidence(self, scope: str, key: str, direction: str | None = None) -> dict[str, Any]:
        """The numbers behind a key's test in ``direction`` (default: the active one, else the one nearer its threshold).

        Field names follow the category-share detector's, with trials for events and rates for shares.
        """
        st = self._keys[(scope, key)]
        direction = direction or st.active or ("drop" if st.down.s > st.up.s else "rise")
        side = st.up if direction == "rise" else st.down
        test, n, k, since, stat = side.test, side.n, side.k, side.since, side.s
        return {
            "direction": direction,
            "reference_rate": st.basis_k / st.basis_n if st.basis_n else None,
            "reference_ci95": list(wilson_interval(st.basis_k, st.basis_n)),
            "reference_trials": st.basis_n,
            "reference_bound": test.bound if test else None,
            "design_rate": test.p1 if test else None,
            "current_rate": k / n if n else None,
            "current_ci95": list(wilson_interval(k, n)),
            "current_trials": n,
            "change_point_at": since if n else None,
            "alarm_at": st.alarm_at,
            "statistic": stat,
            "threshold": test.h if test else None,
            "target_arl_trials": self._test_arl,
            "trials": st.trials,
        }

    def _condition(self, scope: str, key: str, st: _KeyState, at: float, direction: str) -> Condition:
        ev = self.evidence(scope, key, direction)
        what = f"{self.description} [{key}]" if key else self.description
        severity = self.severity_rise if direction == "rise" else self.severity_drop
        if st.active is None:
            summary = f"{what} in {scope} is back at its reference of {ev['reference_rate']:.2%}"
        else:
            lo, hi = ev["current_ci95"]
            summary = (
                f"{what} in {scope} {'rose' if direction == 'rise' else 'fell'} from {ev['reference_rate']:.2%} "
                f"to {ev['current_rate']:.2%} (95% CI {lo:.2%}-{hi:.2%}, {ev['current_trials']} trials)"
            )
        return Condition(self.kind, scope, key, st.active is not None, at, severity, summary, ev)

    def readings(self, detector: str) -> list[Reading]:
        """One reading per tested key: the test nearer its threshold (the active one while active)."""
        out = []
        for (scope, key), st in self._keys.items():
            tests = [(side.s, side.test.h) for side in (st.up, st.down) if side.test is not None]
            if tests:
                statistic, threshold = max(tests, key=lambda pair: pair[0] / pair[1])
                out.append(Reading(detector, scope, key, statistic, threshold, st.active is not None))
        return out

    def active(self, scope: str, key: str) -> bool:
        st = self._keys.get((scope, key))
        return st is not None and st.active is not None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Counts, statistics and test constants per key (restoring never recalibrates)."""
        return {"keys": [(scope, key, st.saved()) for (scope, key), st in self._keys.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._keys = {(scope, key): _KeyState.restore(values) for scope, key, values in state["keys"]}


class RateDetector(abc.ABC):
    """A detector whose signal is one Bernoulli rate per (scope, key); subclasses say what the trials are.

    Subclasses set ``name`` and ``rates`` and implement :meth:`trials`.
    """

    name: str
    rates: RateChange
    uses_verdicts = True  # rates of the judge's decisions: not comparable across judges or decision lines

    @property
    def alert_kind(self) -> str:
        return self.name

    @abc.abstractmethod
    def trials(self, batch: Sequence[ScoredEvent]) -> Iterable[Trial]:
        """The Bernoulli trials a batch of judged events contributes, in order."""

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        return self.rates.update(self.trials(batch))

    def readings(self) -> list[Reading]:
        return self.rates.readings(self.name)

    def state_dict(self) -> dict[str, Any]:
        return self.rates.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rates.load_state_dict(state)
