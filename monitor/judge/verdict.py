"""What a judge says about one event, and the input it needs to say it."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from itertools import zip_longest
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from monitor.taxonomy import SAFE


_ABSENT = object()


def setstate_with_defaults(obj: Any, state: Sequence[Any]) -> None:
    """``__setstate__`` of a frozen slotted dataclass that also takes state pickled by an older
    release with fewer fields (a scale-out worker not yet upgraded): the missing trailing fields get
    their defaults instead of staying unset."""
    for f, value in zip_longest(fields(obj), state, fillvalue=_ABSENT):
        if value is _ABSENT:
            value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        object.__setattr__(obj, f.name, value)


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
    - ``extra``: further outputs by name (a new head's probability). A judge adds one here without
      touching any other constructor; it travels with the verdict (scale-out streams, listeners),
      and :meth:`outputs` lists it beside the built-in ones for consumers that read outputs by name.
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
    extra: Mapping[str, float] = field(default_factory=dict)

    __setstate__ = setstate_with_defaults

    @property
    def has_response(self) -> bool:
        return self.response_unsafe is not None

    def outputs(self) -> dict[str, float]:
        """Every scalar output by name, decisions as 0/1 and NaN where the judge said nothing.

        >>> v = Verdict("j", "safe", {}, 0.2, False, extra={"toxicity": 0.7})
        >>> {k: v.outputs()[k] for k in ("prompt_unsafe", "prompt_flagged", "toxicity")}
        {'prompt_unsafe': 0.2, 'prompt_flagged': 0.0, 'toxicity': 0.7}
        """
        out = {name: math.nan if getattr(self, name) is None else float(getattr(self, name)) for name in SCALAR_OUTPUTS}
        return {**out, **{name: float(value) for name, value in self.extra.items()}}

    @classmethod
    def at_half(
        cls,
        judge_version: str,
        category_probs: Mapping[str, float],
        prompt_unsafe: float,
        categories: tuple[str, ...],
        response_unsafe: float | None = None,
        refusal: float | None = None,
    ) -> Verdict:
        """A verdict from scores with no calibrated thresholds (the keyword and prototype judges):
        every decision at 0.5; ``category`` is the most likely harm category when the prompt is flagged.

        >>> v = Verdict.at_half("kw", {"self_harm": 0.75, "privacy_violation": 0.5}, 0.75, ("self_harm",), 0.2, 0.9)
        >>> (v.category, v.prompt_flagged, v.response_flagged, v.refused)
        ('self_harm', True, False, True)
        >>> Verdict.at_half("kw", {"self_harm": 0.1}, 0.1, ()).category
        'safe'
        """
        flagged = prompt_unsafe >= 0.5
        return cls(
            judge_version=judge_version,
            category=max(category_probs, key=category_probs.__getitem__) if flagged and category_probs else SAFE,
            category_probs=category_probs,
            prompt_unsafe=prompt_unsafe,
            prompt_flagged=flagged,
            response_unsafe=response_unsafe,
            response_flagged=None if response_unsafe is None else response_unsafe >= 0.5,
            refusal=refusal,
            refused=None if refusal is None else refusal >= 0.5,
            categories=categories,
        )


SCALAR_OUTPUTS = ("prompt_unsafe", "prompt_flagged", "response_unsafe", "response_flagged", "refusal", "refused", "uncertainty")


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
