"""Platt calibration, thresholds and ECE on cases that broke naive versions."""

from __future__ import annotations

import numpy as np

from monitor.judge.calibration import best_f1_threshold, expected_calibration_error, fit_platt, platt


def test_platt_stays_finite_and_monotone_on_nearly_separable_scores():
    # Newton without backtracking diverged here (scale ~1e10), flattening probabilities to 0/1 ties.
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1700, bool), np.ones(70, bool)]
    logits = np.r_[rng.normal(-9, 3, 1700), rng.normal(4, 3, 70)]
    a, b = fit_platt(logits, y)
    assert 0 < a < 10 and abs(b) < 50
    p = platt(logits, a, b)
    assert len(np.unique(p)) > 1700 and p.max() < 1.0


def test_platt_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))
    a, b = fit_platt(logits, y)
    assert abs(a - 0.5) < 0.05 and abs(b + 1.0) < 0.1
    assert expected_calibration_error(y, platt(logits, a, b)) < 0.02


def test_degenerate_labels_fall_back_to_defaults():
    assert fit_platt(np.array([1.0, 2.0]), np.array([True, True])) == (1.0, 0.0)
    assert best_f1_threshold(np.array([False, False]), np.array([0.1, 0.9])) == 0.5


def test_threshold_never_splits_tied_scores():
    y = np.array([True, False, True, False])
    p = np.array([0.8, 0.8, 0.3, 0.1])
    assert best_f1_threshold(y, p) in (0.8, 0.3)
    assert best_f1_threshold(y, p) == 0.3  # flagging 3 rows (2 true) beats the tied pair (F1 0.8 vs 0.5)
