"""The line bench: each line it prints flags at most the asked share of real-user benign prompts, and is the lowest
such line (any lower flags more)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from bench import judge_thresholds
from bench.judge_thresholds import line_for


def test_doctests_pass():
    assert doctest.testmod(judge_thresholds).failed == 0


@pytest.mark.parametrize("share", [0.0, 0.013, 0.05, 0.2])
def test_the_line_is_the_lowest_that_keeps_the_share(share):
    rng = np.random.default_rng(7)
    probs = rng.random(500)
    benign_real = rng.random(500) < 0.6
    line = line_for(probs, benign_real, share)
    benign = probs[benign_real]
    assert (benign >= line).mean() <= share
    below = benign[benign < line]
    if len(below):
        assert (benign >= below.max()).mean() > share  # the next benign prompt down would break the share
