"""A second judge on a deterministic sample of events, and where its verdicts differ from the first's.

Why: the fast default judge sees every event; an independent (slower, costlier) judge sees a small
sample. Their disagreement rate is stable while both judges see the kind of traffic they were
built for, so a change in it signals concept shift: harm the primary judge no longer recognises,
or a new kind of benign traffic it mistakes for harm.

Selection hashes the event id with the seed, so a replay picks the same events whatever the
batching. It prefers uncertain events (verdicts near a threshold, where the primary is most often
wrong) by sampling two strata at two rates: events whose ``uncertainty`` is at least
``uncertain_above`` at ``uncertain_rate``, the rest at ``rate``. Within a stratum the sample is
uniform, so each stratum's disagreement rate needs no reweighting; the detector tests the strata
as separate keys (:func:`stratum`), and a shift in how many events are uncertain moves no rate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from monitor.judge.verdict import JudgeInput, Verdict


UNCERTAIN = "uncertain"


def stratum(uncertainty: float | None, uncertain_above: float | None) -> str:
    """The sampling stratum of a verdict: ``"uncertain"``, or ``""`` (the rest, and every verdict
    when stratifying is off or the judge states no uncertainty).

    >>> stratum(0.8, 0.5), stratum(0.2, 0.5), stratum(None, 0.5), stratum(0.8, None)
    ('uncertain', '', '', '')
    """
    if uncertain_above is None or uncertainty is None or uncertainty < uncertain_above:
        return ""
    return UNCERTAIN


@runtime_checkable
class AsyncJudge(Protocol):
    """A judge called over the network: None for an input it could not judge, never an exception."""

    @property
    def version(self) -> str: ...

    async def ajudge(self, batch: Sequence[JudgeInput]) -> list[Verdict | None]: ...


class SecondOpinion:
    """Sends the events picked by ``selected`` to ``judge``.

    >>> from monitor.judge.llm_guard import LlmGuardJudge
    >>> second = SecondOpinion(LlmGuardJudge("http://127.0.0.1:9/v1", "llama-guard3"), rate=0.25, seed=7,
    ...                        uncertain_rate=0.75, uncertain_above=0.5)
    >>> picks = [second.selected(f"event-{i}") for i in range(1000)]
    >>> picks == [second.selected(f"event-{i}") for i in range(1000)], sum(picks)
    (True, 247)
    >>> sum(second.selected(f"event-{i}", uncertainty=0.9) for i in range(1000))
    743
    """

    def __init__(self, judge: AsyncJudge, rate: float, seed: int = 0, uncertain_rate: float | None = None,
                 uncertain_above: float | None = None) -> None:
        for name, value in (("rate", rate), ("uncertain_rate", uncertain_rate), ("uncertain_above", uncertain_above)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        self.judge = judge
        self.rate = rate
        self.seed = seed
        self.uncertain_rate = uncertain_rate
        # Stratify only when the uncertain stratum has a rate of its own.
        self.uncertain_above = uncertain_above if uncertain_rate is not None else None

    def selected(self, event_id: str, uncertainty: float | None = None) -> bool:
        """Whether this event gets a second opinion: a fixed function of (seed, event_id) and its stratum."""
        rate = self.uncertain_rate if stratum(uncertainty, self.uncertain_above) else self.rate
        digest = hashlib.blake2b(f"{self.seed}\x00{event_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < rate * 2**64  # type: ignore[operator]

    async def run(self, event_ids: Sequence[str], inputs: Sequence[JudgeInput],
                  uncertainties: Sequence[float | None] | None = None) -> list[Verdict | None]:
        """Second verdicts aligned with ``inputs``: None for events not selected or not judged."""
        if len(event_ids) != len(inputs):
            raise ValueError(f"event_ids and inputs differ in length ({len(event_ids)} != {len(inputs)})")
        uncertainties = uncertainties if uncertainties is not None else [None] * len(inputs)
        chosen = [i for i, event_id in enumerate(event_ids) if self.selected(event_id, uncertainties[i])]
        out: list[Verdict | None] = [None] * len(inputs)
        if chosen:
            verdicts = await self.judge.ajudge([inputs[i] for i in chosen])
            for i, verdict in zip(chosen, verdicts, strict=True):
                out[i] = verdict
        return out


@dataclass(frozen=True, slots=True)
class Disagreement:
    """How a second verdict differs from the primary one for one event (no scope: the caller has it).

    ``response_disagree`` is None unless both verdicts judged a response.
    """

    at: float
    prompt_disagree: bool
    response_disagree: bool | None
    primary_category: str
    secondary_category: str

    @property
    def category_disagree(self) -> bool:
        """Both call the prompt harmful but name different top categories."""
        return not self.prompt_disagree and self.primary_category != self.secondary_category


def compare(primary: Verdict, secondary: Verdict, at: float) -> Disagreement:
    """Compare two verdicts on the same event; ``at`` is the event time.

    >>> def verdict(category, flagged, response_flagged=None):
    ...     response = None if response_flagged is None else float(response_flagged)
    ...     return Verdict("v", category, {}, float(flagged), flagged, response, response_flagged)
    >>> d = compare(verdict("self_harm", True, False), verdict("privacy_violation", True, True), at=5.0)
    >>> d.prompt_disagree, d.category_disagree, d.response_disagree
    (False, True, True)
    >>> compare(verdict("safe", False), verdict("self_harm", True, True), at=6.0).response_disagree is None
    True
    """
    both_responses = primary.has_response and secondary.has_response
    return Disagreement(
        at=at,
        prompt_disagree=primary.prompt_flagged != secondary.prompt_flagged,
        response_disagree=primary.response_flagged != secondary.response_flagged if both_responses else None,
        primary_category=primary.category,
        secondary_category=secondary.category,
    )
