"""A calibrated online change test for Bernoulli rates, one per (scope, key).

Why a CUSUM: every concept-shift signal is a stream of yes/no trials per key (did the judge and
the label disagree, was the response unsafe, did the model refuse a safe prompt) whose rate should
stay put. The Bernoulli CUSUM is the optimal sequential test for a rate moving from a reference
``p0`` to a shifted ``p1``, and its false-alarm rate follows from its threshold alone: the
one-sided CUSUM on the log-likelihood ratio with threshold ``h`` runs at least ``e^h`` trials
between false alarms when the true rate is at most ``p0`` (Lorden, 1971). Two one-sided tests run
side by side, so ``h = ln(2 * arl)`` keeps the average run length of one key above ``arl``.
(river's DDM/EDDM/HDDM watch a binary error rate too, but their thresholds are confidences per
test, not a false-alarm rate per stream, and they reset after each drift.)

Reference: the first ``warmup`` trials of a key give the reference rate; after that the
reference keeps absorbing trials that arrive while neither test holds any evidence of change
(both statistics at zero, so a change in progress is kept out). The test constants are
recomputed each time the reference sample doubles, so sensitivity improves as the reference
sharpens. The estimation error of a finite reference is guarded by testing against the
``reference_z`` Wilson bound of the reference (the upper bound for the rise test, the lower one
for the fall test): the ``e^h`` guarantee then holds unless the true rate lies beyond that bound.

Shift the test is tuned to: ``p1 = max(ratio * bound, bound + min_shift)`` for a rise (mirrored
for a fall, which is disabled while the lower bound leaves no room below it). A rate between the
bound and ``p1`` is still caught once it passes the point where the log-likelihood ratio drifts
upwards (about ``1 + (ratio - 1) / 2`` times the bound), only more slowly.

Alert life: a key turns active when a statistic reaches ``h``; the statistic is then capped at
``h`` and the key stays active until it falls back to zero, i.e. until the evidence of change has
been fully reversed by trials at the reference rate. The trials since the statistic last left
zero estimate the current rate (the CUSUM's own change-point estimate); evidence reports it with
a 95% Wilson interval.

Trials are unweighted: the pipeline's sampling is independent of content, so the rate among
judged events estimates the rate of the whole stream. Memory is a fixed record per key; keys are
bounded by the caller (scopes from configuration, keys from the taxonomy).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

from monitor.alerts.condition import Condition, Severity
from monitor.drift.base import Reading
from monitor.events import ScoredEvent

Direction = Literal["up", "down", "both"]
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


def cusum_threshold(arl: float, sides: int) -> float:
    """Log-likelihood threshold that keeps ``sides`` one-sided CUSUMs above ``arl`` trials per false alarm.

    >>> round(cusum_threshold(1_000_000, 2), 3)
    14.509
    """
    if arl <= 1:
        raise ValueError(f"arl must be > 1 trial, got {arl}")
    return math.log(sides * arl)


class _Test:
    """Constants of one one-sided test: log-LR increments for a success and a failure."""

    __slots__ = ("bound", "p1", "inc_success", "inc_failure")

    def __init__(self, bound: float, p1: float) -> None:
        self.bound = bound
        self.p1 = p1
        self.inc_success = math.log(p1 / bound)
        self.inc_failure = math.log((1.0 - p1) / (1.0 - bound))


class _KeyState:
    """Everything one key remembers; every field is a number or None, so it saves as a tuple."""

    __slots__ = (
        "trials", "ref_n", "ref_k", "basis_n", "basis_k",
        "s_up", "n_up", "k_up", "s_down", "n_down", "k_down", "active",
        "up", "down", "next_refresh",
    )
    SAVED = __slots__[:12]

    def __init__(self) -> None:
        self.trials = self.ref_n = self.ref_k = self.basis_n = self.basis_k = 0
        self.s_up = self.s_down = 0.0
        self.n_up = self.k_up = self.n_down = self.k_down = 0
        self.active: str | None = None
        self.up: _Test | None = None
        self.down: _Test | None = None
        self.next_refresh = 0


@dataclass(frozen=True, slots=True)
class RateChangeConfig:
    """How sensitive the test is; shared by every rate detector (see the module docstring).

    Parameters
    ----------
    warmup
        Trials of a key before it is tested (the first reference sample).
    arl
        Lower bound on the average number of trials of one key between false alarms.
    ratio, min_shift
        The shift the test is tuned to: ``ratio`` times the reference bound, at least ``min_shift`` beyond it.
    reference_z
        Width of the Wilson bound that guards against an underestimated reference.
    """

    warmup: int = 1000
    arl: float = 1_000_000
    ratio: float = 1.5
    min_shift: float = 0.005
    reference_z: float = 3.0

    def __post_init__(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 10:
            raise ValueError(f"warmup must be an integer >= 10 trials, got {self.warmup!r}")
        if not self.arl > 1:
            raise ValueError(f"arl must be > 1 trial, got {self.arl}")
        if not self.ratio > 1.0:
            raise ValueError(f"ratio must be > 1, got {self.ratio}")
        if not 0.0 <= self.min_shift < 1.0:
            raise ValueError(f"min_shift must be within [0, 1), got {self.min_shift}")
        if not self.reference_z >= 0.0:
            raise ValueError(f"reference_z must be >= 0, got {self.reference_z}")


class RateChange:
    """Two-sided Bernoulli CUSUM per (scope, key) that turns trials into alert conditions.

    Parameters
    ----------
    kind
        Condition kind (alert fingerprint prefix), e.g. ``"over_refusal"``.
    description
        What the rate is, for summaries: ``"refusal rate on safe prompts"``.
    config
        Warm-up, false-alarm target and tuned shift.
    direction
        Which changes to alert on: ``"up"``, ``"down"`` or ``"both"``.
    severity_up, severity_down
        Severity of conditions for a rise and for a fall.

    >>> import random
    >>> rng = random.Random(0)
    >>> rc = RateChange("over_refusal", "refusal rate on safe prompts", RateChangeConfig(warmup=500, arl=10_000))
    >>> quiet = rc.update(("global", "", rng.random() < 0.05, float(t)) for t in range(3000))
    >>> shifted = rc.update(("global", "", rng.random() < 0.20, float(t)) for t in range(3000, 4000))
    >>> quiet, shifted[0].active, shifted[0].evidence["direction"]
    ([], True, 'up')
    >>> 3000 < shifted[0].at < 3300
    True
    """

    def __init__(
        self,
        kind: str,
        description: str,
        config: RateChangeConfig = RateChangeConfig(),
        *,
        direction: Direction = "up",
        severity_up: Severity = "warning",
        severity_down: Severity = "info",
    ) -> None:
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be 'up', 'down' or 'both', got {direction!r}")
        self.kind = kind
        self.description = description
        self.config = config
        self.direction = direction
        self.severity_up: Severity = severity_up
        self.severity_down: Severity = severity_down
        self.threshold = cusum_threshold(config.arl, 2 if direction == "both" else 1)
        self._keys: dict[tuple[str, str], _KeyState] = {}

    # ------------------------------------------------------------------ trials

    def update(self, trials: Iterable[Trial]) -> list[Condition]:
        """Feed trials in order; return a condition per activation and resolution, then one per key still active.

        Keys that are active after the batch get a refreshed condition at their last trial's time
        (so the alert engine sees event time advance); keys that never changed get none.
        """
        h = self.threshold
        out: list[Condition] = []
        touched: dict[tuple[str, str], float] = {}
        emitted: dict[tuple[str, str], float] = {}
        keys = self._keys
        for scope, key, outcome, at in trials:
            sk = (scope, key)
            st = keys.get(sk)
            if st is None:
                st = keys[sk] = _KeyState()
                st.next_refresh = self.config.warmup
            touched[sk] = at
            st.trials += 1
            s_up, s_down = st.s_up, st.s_down
            if s_up == 0.0 and s_down == 0.0:
                st.ref_n += 1
                if outcome:
                    st.ref_k += 1
                if st.ref_n >= st.next_refresh:
                    self._refresh(st)
                if st.basis_n == 0:
                    continue  # still warming up
            up, down = st.up, st.down
            if up is not None:
                s_up += up.inc_success if outcome else up.inc_failure
                if s_up <= 0.0:
                    st.s_up, st.n_up, st.k_up = 0.0, 0, 0
                else:
                    st.s_up = h if s_up > h else s_up
                    st.n_up += 1
                    if outcome:
                        st.k_up += 1
            if down is not None:
                s_down += down.inc_success if outcome else down.inc_failure
                if s_down <= 0.0:
                    st.s_down, st.n_down, st.k_down = 0.0, 0, 0
                else:
                    st.s_down = h if s_down > h else s_down
                    st.n_down += 1
                    if outcome:
                        st.k_down += 1
            was = st.active
            if s_up >= h:
                now = "up"
            elif s_down >= h:
                now = "down"
            elif (was == "up" and s_up <= 0.0) or (was == "down" and s_down <= 0.0):
                now = None
            else:
                continue
            if now != was:
                st.active = now
                out.append(self._condition(scope, key, st, at, now or was))
                emitted[sk] = at
        for sk, at in touched.items():
            st = keys[sk]
            if st.active is not None and emitted.get(sk) != at:
                out.append(self._condition(sk[0], sk[1], st, at, st.active))
        return out

    def _refresh(self, st: _KeyState) -> None:
        """Re-derive both tests from the reference sample, and schedule the next refresh at twice its size."""
        st.basis_n, st.basis_k = st.ref_n, st.ref_k
        st.next_refresh = 2 * st.ref_n
        self._derive(st)

    def _derive(self, st: _KeyState) -> None:
        st.up = st.down = None
        if st.basis_n == 0:
            return
        lo, hi = wilson_interval(st.basis_k, st.basis_n, self.config.reference_z)
        if self.direction != "down":
            p1 = max(self.config.ratio * hi, hi + self.config.min_shift)
            if p1 >= 1.0:
                p1 = (1.0 + hi) / 2.0
            if 0.0 < hi < p1 < 1.0:
                st.up = _Test(hi, p1)
        if self.direction != "up":
            p1 = min(lo / self.config.ratio, lo - self.config.min_shift)
            if 0.0 < p1 < lo < 1.0:
                st.down = _Test(lo, p1)

    # ------------------------------------------------------------------ output

    def evidence(self, scope: str, key: str, direction: str | None = None) -> dict[str, Any]:
        """The numbers behind a key's test in ``direction`` (default: the active one, else the one nearer its threshold)."""
        st = self._keys[(scope, key)]
        direction = direction or st.active or ("down" if st.s_down > st.s_up else "up")
        test = st.up if direction == "up" else st.down
        n, k = (st.n_up, st.k_up) if direction == "up" else (st.n_down, st.k_down)
        lo, hi = wilson_interval(k, n)
        return {
            "direction": direction,
            "reference_rate": st.basis_k / st.basis_n if st.basis_n else None,
            "reference_n": st.basis_n,
            "reference_bound": test.bound if test else None,
            "shift_rate": test.p1 if test else None,
            "current_rate": k / n if n else None,
            "current_ci95": [lo, hi],
            "current_n": n,
            "statistic": st.s_up if direction == "up" else st.s_down,
            "threshold": self.threshold,
            "trials": st.trials,
        }

    def _condition(self, scope: str, key: str, st: _KeyState, at: float, direction: str) -> Condition:
        ev = self.evidence(scope, key, direction)
        what = f"{self.description} [{key}]" if key else self.description
        severity = self.severity_up if direction == "up" else self.severity_down
        if st.active is None:
            summary = f"{what} in {scope} is back at its reference of {ev['reference_rate']:.2%}"
        else:
            verb = "rose" if direction == "up" else "fell"
            lo, hi = ev["current_ci95"]
            summary = (
                f"{what} in {scope} {verb} from {ev['reference_rate']:.2%} to {ev['current_rate']:.2%} "
                f"(95% CI {lo:.2%}-{hi:.2%}, n={ev['current_n']})"
            )
        return Condition(self.kind, scope, key, st.active is not None, at, severity, summary, ev)

    def readings(self, detector: str) -> list[Reading]:
        """One reading per key: the larger statistic of the two tests against the threshold."""
        return [
            Reading(detector, scope, key, max(st.s_up, st.s_down), self.threshold, st.active is not None)
            for (scope, key), st in self._keys.items()
        ]

    def active(self, scope: str, key: str) -> bool:
        st = self._keys.get((scope, key))
        return st is not None and st.active is not None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Counts and statistics per key; test constants are re-derived on load from the reference sample."""
        return {
            "keys": [
                (scope, key, tuple(getattr(st, f) for f in _KeyState.SAVED))
                for (scope, key), st in self._keys.items()
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys: dict[tuple[str, str], _KeyState] = {}
        for scope, key, values in state["keys"]:
            st = _KeyState()
            for field, value in zip(_KeyState.SAVED, values, strict=True):
                setattr(st, field, value)
            st.next_refresh = 2 * st.basis_n if st.basis_n else self.config.warmup
            self._derive(st)
            keys[(scope, key)] = st
        self._keys = keys


class RateDetector(abc.ABC):
    """A detector whose signal is one Bernoulli rate per (scope, key); subclasses say what the trials are.

    Subclasses set ``name`` and ``rates`` and implement :meth:`trials`.
    """

    name: str
    rates: RateChange

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
