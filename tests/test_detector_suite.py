"""The detector stage isolates a failing detector and reports it."""

from __future__ import annotations

import pytest

from monitor.drift.suite import DetectorSuite
from tests.helpers.scored import scored


class Broken:
    name = "broken"

    def update(self, batch):
        raise RuntimeError("bug")

    def readings(self):
        return []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Counting(Broken):
    name = "counting"

    def __init__(self):
        self.seen = 0

    def update(self, batch):
        self.seen += len(batch)
        return []


def test_a_failing_detector_is_reported_and_the_others_still_run():
    counting, failures = Counting(), []
    suite = DetectorSuite([Broken(), counting])
    suite.on_error = failures.append
    assert suite.update([scored(0.0), scored(1.0)]) == []
    assert counting.seen == 2 and failures == ["broken"]


def test_detector_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        DetectorSuite([Broken(), Broken()])
