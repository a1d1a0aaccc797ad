"""What category shares are compared with, and the one definition of "this event counts for that key".

Both category-share detectors (the calibrated CUSUM and the ADWIN baseline) watch the same 0/1
streams per scope: key ``unsafe`` is 1 when the prompt is flagged, a harm category's key is 1 when
the flagged prompt carries that category (``Verdict.categories``; ``Verdict.category`` when a
judge lists none). Sampling weights are ignored on purpose: the pipeline samples independently
of content, so the unweighted share among judged events is an unbiased estimate of the share in
the whole stream, and weighting would only add variance.

The reference is either the first ``size`` events of each scope (:class:`ShareWarmUp`) or a given
:class:`ShareReference` (counts from an earlier window, or shares with the sample size they came
from), so its uncertainty is always known.

>>> ref = ShareReference(events=1000, counts={"unsafe": 50, "self_harm": 5})
>>> ref.share("unsafe"), ref.count("privacy_violation")
(0.05, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from monitor.events import ScoredEvent
from monitor.taxonomy import SAFE

UNSAFE = "unsafe"


def rows_by_scope(batch: Sequence[ScoredEvent]) -> dict[str, np.ndarray]:
    """Row indices of the batch per scope, in batch order (scopes in order of first appearance)."""
    rows: dict[str, list[int]] = {}
    for i, event in enumerate(batch):
        for scope in event.scopes:
            rows.setdefault(scope, []).append(i)
    return {scope: np.asarray(idx, dtype=np.intp) for scope, idx in rows.items()}


class ShareKeys:
    """The keys a share detector watches (``unsafe`` first, then the harm categories) and their indicators."""

    def __init__(self, categories: Sequence[str]) -> None:
        categories = tuple(categories)
        if UNSAFE in categories or SAFE in categories:
            raise ValueError(f"categories must be harm category ids, without {UNSAFE!r} or {SAFE!r}")
        if len(set(categories)) != len(categories):
            raise ValueError(f"categories must be unique, got {list(categories)}")
        self.keys: tuple[str, ...] = (UNSAFE, *categories)
        self._column = {key: j for j, key in enumerate(self.keys)}

    def indicators(self, batch: Sequence[ScoredEvent]) -> np.ndarray:
        """``(len(batch), len(keys))`` booleans; categories outside the keys are ignored.

        >>> from monitor.judge.verdict import Verdict
        >>> from monitor.events import Event, ScoredEvent
        >>> def scored(flagged, cats):
        ...     v = Verdict("t", cats[0] if cats else SAFE, {}, 0.9 if flagged else 0.1, flagged, categories=cats)
        ...     return ScoredEvent(Event("e", 0.0, "p"), 1.0, np.zeros(2), None, v)
        >>> ShareKeys(["self_harm", "privacy_violation"]).indicators([scored(True, ("self_harm",)), scored(False, ())])
        array([[ True,  True, False],
               [False, False, False]])
        """
        out = np.zeros((len(batch), len(self.keys)), dtype=bool)
        column = self._column
        for i, event in enumerate(batch):
            verdict = event.verdict
            if not verdict.prompt_flagged:
                continue
            out[i, 0] = True
            for category in verdict.categories or (verdict.category,):
                j = column.get(category)
                if j:  # 0 is "unsafe", never a category
                    out[i, j] = True
        return out


@dataclass(frozen=True, slots=True)
class ShareReference:
    """How many of ``events`` reference events counted for each key (missing keys counted 0).

    ``start``/``end`` are the event times the reference spans, when it came from a warm-up (a
    stored reference has none); alerts carry them so their drift report compares the same period.
    """

    events: int
    counts: Mapping[str, int] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.events, (int, np.integer)) or self.events < 1:
            raise ValueError(f"reference events must be a positive integer, got {self.events!r}")
        for key, count in self.counts.items():
            if not isinstance(count, (int, np.integer)) or not 0 <= count <= self.events:
                raise ValueError(f"reference counts[{key!r}] must be an integer in [0, {self.events}], got {count!r}")

    @classmethod
    def from_shares(cls, shares: Mapping[str, float], events: int) -> ShareReference:
        """A reference from shares measured on ``events`` events (the size sets how sure the shares are)."""
        for key, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"reference shares[{key!r}] must be within [0, 1], got {share!r}")
        return cls(events, {key: int(round(share * events)) for key, share in shares.items()})

    def count(self, key: str) -> int:
        return int(self.counts.get(key, 0))

    def share(self, key: str) -> float:
        return self.count(key) / self.events


class ShareWarmUp:
    """Counts each key over the first ``size`` events of a scope, then hands over a :class:`ShareReference`."""

    def __init__(self, size: int, keys: Sequence[str]) -> None:
        if size < 1:
            raise ValueError(f"warm-up size must be at least 1 event, got {size}")
        self.size = size
        self.keys = tuple(keys)
        self.events = 0
        self.counts = np.zeros(len(self.keys), dtype=np.int64)
        self.start: float | None = None
        self.end: float | None = None

    @property
    def done(self) -> bool:
        return self.events >= self.size

    def absorb(self, indicators: np.ndarray, times: np.ndarray) -> int:
        """Count the leading rows the warm-up still needs (``times``: their event times); return how many it took."""
        take = min(self.size - self.events, len(indicators))
        if take > 0:
            self.counts += indicators[:take].sum(axis=0)
            self.events += take
            first, last = float(times[:take].min()), float(times[:take].max())
            self.start = first if self.start is None else min(self.start, first)
            self.end = last if self.end is None else max(self.end, last)
        return take

    def reference(self) -> ShareReference:
        return ShareReference(self.events, {k: int(c) for k, c in zip(self.keys, self.counts)}, self.start, self.end)

    def state_dict(self) -> dict[str, Any]:
        return {"events": self.events, "counts": self.counts.tolist(), "start": self.start, "end": self.end}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events = int(state["events"])
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self.start, self.end = state.get("start"), state.get("end")
