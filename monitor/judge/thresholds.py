"""Operator decision thresholds: the judge's calibrated probabilities, flagged at another line.

Why: the shipped thresholds are chosen on the validation split, pooled over every source (best F1).
A deployment whose benign traffic looks unlike that pool may want fewer false flags on its
dashboards at the price of recall: real-user chat gets more of its benign prompts flagged than
templated sets do (README, "Safety judge"), and every unsafe share, category share and
unsafe-response rate the monitor exports counts flagged events. The probabilities stay the judge's;
only the decisions move (flag, category, uncertainty), and the version says so (``+pthr0.6``,
``+rthr0.4``), so a dashboard shows when the line moved.

>>> t = Thresholds(prompt=0.6)
>>> t.suffix, Thresholds().suffix, Thresholds(prompt=0.6, response=0.25).suffix
('+pthr0.6', '', '+pthr0.6+rthr0.25')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence, runtime_checkable

from monitor.judge.calibration import uncertainty
from monitor.judge.verdict import Judge, JudgeInput, Verdict
from monitor.taxonomy import SAFE


@runtime_checkable
class ThresholdedJudge(Judge, Protocol):
    """A judge whose prompt-harm and response-harm decisions are a probability against one line each."""

    @property
    def decision_thresholds(self) -> tuple[float, float]:
        """(prompt harm, response harm): where the judge flags, as chosen on its validation split."""
        ...


@dataclass(frozen=True)
class Thresholds:
    """Lines an operator sets; ``None`` keeps the judge's own."""

    prompt: float | None = None
    response: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("prompt", self.prompt), ("response", self.response)):
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} threshold {value!r} must lie strictly between 0 and 1")

    @property
    def suffix(self) -> str:
        """What the judge's version gains: one part per line moved."""
        return "".join(f"+{tag}{value!r}" for tag, value in (("pthr", self.prompt), ("rthr", self.response))
                       if value is not None)


def unmovable(judge: str) -> ValueError:
    """The start-up error for lines set on a judge that decides otherwise (the prototype judge)."""
    return ValueError(f"judge {judge} has no decision thresholds to move: judge_prompt_threshold and "
                      "judge_response_threshold apply to the heads, encoder and hybrid judges")


class RethresholdedJudge:
    """``inner``'s verdicts decided at ``thresholds``; implements :class:`~monitor.judge.verdict.Judge`.

    A prompt is flagged when its probability reaches the line; a flagged prompt's category is its
    most likely harm category, an unflagged one's ``safe`` (the shipped judges' own rule), and
    uncertainty is measured from the lines in force."""

    def __init__(self, inner: Judge, thresholds: Thresholds) -> None:
        if not isinstance(inner, ThresholdedJudge):
            raise unmovable(inner.version)
        own_prompt, own_response = inner.decision_thresholds
        self.inner = inner
        self.prompt_threshold = own_prompt if thresholds.prompt is None else thresholds.prompt
        self.response_threshold = own_response if thresholds.response is None else thresholds.response
        self._version = inner.version + thresholds.suffix

    @property
    def version(self) -> str:
        return self._version

    @property
    def categories(self) -> Sequence[str]:
        return self.inner.categories

    @property
    def decision_thresholds(self) -> tuple[float, float]:
        return self.prompt_threshold, self.response_threshold

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        return [self._decide(v) for v in self.inner.judge(batch)]

    def _decide(self, v: Verdict) -> Verdict:
        flagged = v.prompt_unsafe >= self.prompt_threshold
        answered = v.response_unsafe is not None
        category = max(v.category_probs, key=v.category_probs.__getitem__) if flagged and v.category_probs else SAFE
        lines = [(v.prompt_unsafe, self.prompt_threshold)] + ([(v.response_unsafe, self.response_threshold)] if answered else [])
        return replace(
            v,
            judge_version=self._version,
            category=category,
            prompt_flagged=bool(flagged),
            response_flagged=bool(v.response_unsafe >= self.response_threshold) if answered else None,
            uncertainty=uncertainty(lines),
        )
