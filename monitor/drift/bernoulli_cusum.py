"""Bernoulli CUSUM design: log-likelihood-ratio steps, exact average run length, calibrated thresholds.

A one-sided CUSUM on a 0/1 stream adds ``step_one`` for a 1 and ``step_zero`` for a 0 (the
log-likelihood ratio of a shifted rate ``p1`` against the reference ``p0``), floors the sum at 0
and alarms when it reaches the threshold ``h``. Lorden's bound ``ARL >= e^h`` is safe but loose by
orders of magnitude for rare events (a CUSUM tuned to a doubling of a 5% rate with ``h = 8`` runs about 270,000
trials between false alarms, not 3,000), and a loose threshold costs detection delay. So the
threshold here comes from the exact run length: the CUSUM is a Markov chain on ``[0, h)``,
discretised on a grid with steps split between neighbouring cells so their mean is kept (Brook &
Evans, 1972); its expected time to absorption solves one banded linear system.

The reference rate is estimated from a finite sample, and a CUSUM tuned to an underestimated rate
false-alarms far more often than designed (tenfold for a 0.2% category estimated from 10,000
events). :func:`calibrate_threshold` therefore sets ``h`` so the false-alarm rate *averaged over
the posterior of the reference rate* (Jeffreys prior, Beta(k + 1/2, n - k + 1/2)) meets the
target: rare categories with few reference counts get a higher threshold, common ones almost the
plug-in one.

>>> up = odds_shift(0.05, 2.0)
>>> step_one, step_zero = llr_steps(0.05, up)
>>> round(up, 4), round(step_one, 4), round(step_zero, 4)
(0.0952, 0.6444, -0.0488)
>>> round(average_run_length(step_one, step_zero, rate=0.05, threshold=3.0))
1511
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.linalg import solve_banded
from scipy.stats import beta

_GRID_CELLS = 400
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(8)
_NODES = (_NODES + 1.0) / 2.0  # Gauss-Legendre on the posterior's probability scale (0, 1)
_WEIGHTS = _WEIGHTS / 2.0


def odds_shift(p0: float, ratio: float) -> float:
    """The rate whose odds are ``ratio`` times those of ``p0`` (about ``ratio * p0`` for rare events, always < 1)."""
    odds = ratio * p0 / (1.0 - p0)
    return odds / (1.0 + odds)


def llr_steps(p0: float, p1: float) -> tuple[float, float]:
    """Log-likelihood ratio of ``p1`` against ``p0`` for a 1 and for a 0, in nats."""
    if not (0.0 < p0 < 1.0 and 0.0 < p1 < 1.0) or p0 == p1:
        raise ValueError(f"rates must be distinct and inside (0, 1), got p0={p0}, p1={p1}")
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def average_run_length(step_one: float, step_zero: float, rate: float, threshold: float, cells: int = _GRID_CELLS) -> float:
    """Expected number of trials until a CUSUM started at 0 reaches ``threshold`` when 1s arrive at ``rate``.

    The grid converges from below: at the default 400 cells the result is within 2% for rates of
    5% and more and up to 20% low for rates of 0.2% and less, so calibrated thresholds err high
    (by under 0.2 nats). The tests check it against simulation.
    """
    if threshold <= 0 or not 0.0 < rate < 1.0:
        raise ValueError(f"need threshold > 0 and 0 < rate < 1, got {threshold}, {rate}")
    width = threshold / cells
    moves: list[tuple[int, float]] = []
    for step, prob in ((step_one, rate), (step_zero, 1.0 - rate)):
        cells_moved = step / width
        lower = math.floor(cells_moved)
        frac = cells_moved - lower
        moves += [(lower, prob * (1.0 - frac)), (lower + 1, prob * frac)]
    below = max(0, -min(off for off, _ in moves))
    above = max(0, max(off for off, _ in moves))
    # (I - P) in LAPACK band storage: entry (i, j) lives at band[above + i - j, j].
    band = np.zeros((below + above + 1, cells))
    band[above] = 1.0
    rows = np.arange(cells)
    for off, prob in moves:
        if prob == 0.0:
            continue
        cols = rows + off
        inside = (cols >= 0) & (cols < cells)  # cols >= cells: absorbed (alarm)
        band[above + rows[inside] - cols[inside], cols[inside]] -= prob
        floored = cols < 0  # the CUSUM floors at 0
        band[above + rows[floored], 0] -= prob
    run = solve_banded((below, above), band, np.ones(cells))
    return float(run[0])


def neutral_rate(step_one: float, step_zero: float) -> float:
    """The rate at which the CUSUM's steps average zero: a true rate beyond it drives the CUSUM to alarm.

    >>> round(neutral_rate(*llr_steps(0.05, odds_shift(0.05, 2.0))), 4)
    0.0704
    """
    return step_zero / (step_zero - step_one)


@lru_cache(maxsize=4096)
def calibrate_threshold(step_one: float, step_zero: float, successes: int, trials: int, target_arl: float) -> float:
    """Threshold whose false-alarm rate, averaged over the reference rate's posterior, is ``1 / target_arl``.

    ``successes`` of ``trials`` reference events were 1s. The steps are the test's design (from the
    point estimate); the posterior only decides how much margin the threshold needs.
    """
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    if target_arl <= 1:
        raise ValueError(f"target_arl must be > 1 trial, got {target_arl}")
    rates = beta.ppf(_NODES, successes + 0.5, trials - successes + 0.5)

    def log_rate_gap(h: float) -> float:
        alarm_rate = sum(w / average_run_length(step_one, step_zero, r, h) for w, r in zip(_WEIGHTS, rates))
        return math.log(alarm_rate) + math.log(target_arl)

    # log ARL grows almost linearly in h with slope ~1: secant from two points converges in a few solves.
    h0, h1 = math.log(target_arl) / 2.0, 0.0
    f0 = log_rate_gap(h0)
    h1 = max(h0 + f0, 0.1)
    for _ in range(40):
        f1 = log_rate_gap(h1)
        if abs(f1) < 2e-3:
            return h1
        slope = (f1 - f0) / (h1 - h0) if h1 != h0 else -1.0
        h0, f0 = h1, f1
        h1 = max(h1 - f1 / min(slope, -0.05), h1 / 2.0)
    raise RuntimeError(f"threshold did not converge for steps ({step_one}, {step_zero}), reference {successes}/{trials}")
