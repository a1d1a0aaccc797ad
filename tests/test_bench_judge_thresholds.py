"""The line bench: each line it prints flags at most the asked share of real-user benign prompts, ties included, and
is the lowest such line a setting can be written as (one step of 0.0001 lower flags more)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from bench import judge_thresholds
from bench.judge_thresholds import STEPS, line_for


def test_doctests_pass():
    assert doctest.testmod(judge_thresholds).failed == 0


@pytest.mark.parametrize("share", [0.0, 0.013, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_the_line_is_the_lowest_that_keeps_the_share(share, ties):
    rng = np.random.default_rng(7)
    probs = rng.random(500)
    if ties:  # calibrated probabilities of repeated texts: many equal values
        probs = np.round(probs, 1)
    benign_real = rng.random(500) < 0.6
    line = line_for(probs, benign_real, share)
    benign = probs[benign_real]
    assert (benign >= line).mean() <= share
    assert round(line * STEPS) == pytest.approx(line * STEPS)  # writable as a setting
    if share < 1.0:
        assert (benign >= line - 1 / STEPS).mean() > share  # a step lower flags more than the share


def test_no_real_user_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="no real-user benign prompts"):
        line_for(np.array([0.5]), np.array([False]), 0.05)


def test_a_skip_line_counts_the_decisions_it_changes(capsys):
    """A harmful prompt the combination flags but the heads put below the line loses its flag; the table says so."""
    full = np.array([0.9, 0.8, 0.1, 0.05])
    heads = np.array([0.01, 0.7, 0.02, 0.2])
    y = np.array([True, True, False, False])
    origin = np.array(["toxicchat-train"] * 4)
    judge_thresholds.skip_lines(full, heads, y, origin, 0.5, [0.03])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.03 ")]
    assert rows == ["| 0.03 | 50.0% / 50.0% | 1 (1) | 0.5000 | 0.5000 |"]


def test_a_line_low_enough_to_turn_the_default_skip_line_off_is_drawn_on_the_full_probabilities():
    """Below 0.3 a moved prompt line turns the cascade off, so the service then flags on the full hybrid's probabilities."""
    heads = np.array([0.01, 0.02, 0.9, 0.5])
    full = np.array([0.25, 0.05, 0.9, 0.5])  # the first two are skipped at the default line (heads below 0.03)
    benign_real = np.array([True, True, False, True])
    high = judge_thresholds._line_for(full, heads, benign_real, 0.0, "hybrid")  # nothing benign flagged: above 0.5
    assert high == 0.5001 and (judge_thresholds._at_line(full, heads, high, "hybrid") >= high)[benign_real].sum() == 0
    low = judge_thresholds._line_for(full, heads, benign_real, 2 / 3, "hybrid")  # two of three may be flagged
    flagged = judge_thresholds._at_line(full, heads, low, "hybrid") >= low
    assert low < 0.3 and flagged[benign_real].sum() <= 2 and (full >= low)[benign_real].sum() <= 2
