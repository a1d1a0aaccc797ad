"""What a judge says about one event, and the input it needs to say it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

SAFE = "safe"


@dataclass(frozen=True, slots=True)
class JudgeInput:
    """Texts and their (normalised) embeddings; response fields are None when there is no reply."""

    prompt: str
    prompt_embedding: np.ndarray
    response: str | None = None
    response_embedding: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Three verdicts per event, each a calibrated probability plus the thresholded decision.

    - prompt harm: ``category_probs`` (multi-label, one per harm category of the taxonomy) and
      ``prompt_unsafe``; ``category`` is the top harm category when the prompt is flagged, else ``safe``.
    - response harm given the prompt: ``response_unsafe`` (None when there is no response).
    - refusal: ``refusal`` (None when there is no response).
    - ``uncertainty``: how close the prompt and response decisions are to flipping (1 at a threshold,
      0 far from every threshold; see :func:`monitor.judge.calibration.uncertainty`); None when the
      judge does not say.
    """

    judge_version: str
    category: str
    category_probs: Mapping[str, float]
    prompt_unsafe: float
    prompt_flagged: bool
    response_unsafe: float | None = None
    response_flagged: bool | None = None
    refusal: float | None = None
    refused: bool | None = None
    categories: tuple[str, ...] = field(default=())
    uncertainty: float | None = None

    @property
    def has_response(self) -> bool:
        return self.response_unsafe is not None


@runtime_checkable
class Judge(Protocol):
    """Anything that judges a batch. Implementations must be deterministic for a given input."""

    @property
    def version(self) -> str:
        """Identifies the judge and its artifact; exported as the ``judge_version`` metric label."""
        ...

    @property
    def categories(self) -> Sequence[str]:
        """Harm categories it scores (taxonomy ids, without ``safe``)."""
        ...

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        """One verdict per input, in order."""
        ...
