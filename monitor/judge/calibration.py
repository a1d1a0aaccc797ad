"""Turn classifier scores into calibrated probabilities and decisions, and measure how calibrated they are.

Platt scaling (a scale and a shift on the logit, i.e. temperature plus bias) is fitted on a validation
split: two numbers per head, stored as plain arrays, and monotone, so it never changes AUROC.

>>> import numpy as np
>>> logits = np.array([-3.0, -1.0, -0.5, 0.5, 1.0, 3.0])
>>> y = np.array([0, 0, 1, 0, 1, 1])
>>> a, b = fit_platt(logits, y)
>>> p = platt(logits, a, b)
>>> bool(np.all(np.diff(p) > 0)), round(float(expected_calibration_error(y, p)), 2)
(True, 0.38)
>>> bool(best_f1_threshold(y, p) == p[2])  # flag 4 rows: 3 true, 1 false, F1 6/7
True
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def platt(logits: np.ndarray, scale: float | np.ndarray, shift: float | np.ndarray) -> np.ndarray:
    return sigmoid(np.asarray(logits) * scale + shift)


def fit_platt(logits: np.ndarray, y: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """Fit ``p = sigmoid(a * logit + b)`` by Newton's method on the log loss.

    Targets use Platt's prior correction ((n+ + 1) / (n+ + 2), 1 / (n- + 2)), which keeps the fit
    finite on small or separable validation sets. Deterministic: no randomness, fixed iterations.
    """
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return 1.0, 0.0
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = sigmoid(a * x + b)
        g = np.array([np.dot(p - t, x), np.sum(p - t)])
        w = p * (1 - p) + 1e-12
        h = np.array([[np.dot(w, x * x), np.dot(w, x)], [np.dot(w, x), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        # Backtrack until the loss drops: plain Newton can overshoot on near-separable data.
        for _ in range(40):
            trial = loss(a - step[0], b - step[1])
            if trial <= current:
                break
            step = step / 2
        else:
            break
        a, b, current = a - step[0], b - step[1], trial
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(a), float(b)


def best_f1_threshold(y: np.ndarray, p: np.ndarray, default: float = 0.5) -> float:
    """The probability cut (flag when ``p >= cut``) with the best F1; ``default`` without positives."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    if not y.any() or y.all():
        return default
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    f1 = 2 * tp / (tp + fp + y.sum())
    # Only cut between distinct scores: every row with the cut's score is flagged too.
    last_of_run = np.r_[ps[1:] != ps[:-1], True]
    f1 = np.where(last_of_run, f1, -1.0)
    return float(ps[int(np.argmax(f1))])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(p))


def uncertainty(scores: Sequence[tuple[float, float]], width: float = 2.0) -> float:
    """How close the judge's decisions are to flipping: 1 at a threshold, 0 once every calibrated
    probability is ``width`` logits or more from its threshold (the largest over prompt and response).

    Exposed on every verdict so that whoever picks events for a second look (an LLM judge, a person
    triaging) can prefer the uncertain ones: that is where a verdict is most likely wrong.

    >>> uncertainty([(0.5, 0.5)]), uncertainty([(0.999, 0.5)]), round(uncertainty([(0.62, 0.5)]), 2)
    (1.0, 0.0, 0.76)
    """
    best = 0.0
    for p, t in scores:
        z = float(logit(p) - logit(t))
        best = max(best, 1.0 - min(1.0, abs(z) / width))
    return best


def logit(p: float | np.ndarray) -> np.ndarray:
    """Probabilities back to log-odds (clipped at 1e-6 from 0 and 1; NaN stays NaN), where adding two
    judges' evidence makes sense."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
