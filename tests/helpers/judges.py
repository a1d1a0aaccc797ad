"""Wrappers around a real judge that change its timing, as a busy CPU would."""

from __future__ import annotations

import threading
import time
from typing import Sequence

from monitor.judge.verdict import JudgeInput, Verdict


class SlowJudge:
    """Delegates to a real judge after waiting ``seconds`` per batch, or until ``gate`` opens."""

    def __init__(self, inner, seconds: float = 0.0, gate: threading.Event | None = None) -> None:
        self.inner = inner
        self.seconds = seconds
        self.gate = gate
        self.version = inner.version
        self.categories = inner.categories

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        if self.gate is not None:
            self.gate.wait(timeout=60)
        time.sleep(self.seconds)
        return self.inner.judge(batch)
