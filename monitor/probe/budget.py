"""A daily token budget per target, counted in event time (the round's timestamp), never wall time.

Why reserve before asking: questions of one round run concurrently, so each reserves its worst
case (prompt estimate plus ``max_tokens``) and settles to the reply's real usage; the budget is
never overshot by a burst, and a failed call gives its reservation back.

>>> b = TokenBudget(per_day=1000)
>>> b.reserve(600, at=0.0), b.reserve(600, at=10.0)
(True, False)
>>> b.settle(600, 120, at=10.0); b.remaining(at=10.0)
880
>>> b.remaining(at=86_400.0)  # a new UTC day
1000
"""

from __future__ import annotations

DAY_SECONDS = 86_400


class TokenBudget:
    def __init__(self, per_day: int) -> None:
        if per_day < 1:
            raise ValueError(f"per_day must be >= 1, got {per_day}")
        self.per_day = per_day
        self.day = 0
        self.spent = 0

    def _roll(self, at: float) -> None:
        day = int(at // DAY_SECONDS)
        if day > self.day:
            self.day, self.spent = day, 0

    def remaining(self, at: float) -> int:
        self._roll(at)
        return max(0, self.per_day - self.spent)

    def reserve(self, tokens: int, at: float) -> bool:
        """Take ``tokens`` if today's budget still holds them."""
        self._roll(at)
        if self.spent + tokens > self.per_day:
            return False
        self.spent += tokens
        return True

    def settle(self, reserved: int, used: int, at: float) -> None:
        """Replace a reservation by what was used (0 for a call that failed)."""
        self._roll(at)
        self.spent = max(0, self.spent - reserved + used)

    def state_dict(self) -> dict[str, int]:
        return {"day": self.day, "spent": self.spent}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.day, self.spent = state["day"], state["spent"]
