"""Disagreement between the judge and labels that arrive later (human review, downstream systems).

Why: labels are the only ground truth the monitor ever sees. While the traffic matches what the
judge was built for, the rate at which labels contradict it is stable; a rise in one category
means the judge no longer recognises what that category looks like now (concept shift), even
when every input-side signal is quiet.

Labels arrive long after the event, so ``update`` remembers the judge's answer for the most
recently judged ``memory`` events (an LRU map, the only state that grows, and bounded), and
``observe`` matches a label against it. A label for an event no longer remembered (or never
seen) is counted as ``unknown_event``, not an error. A second label for the same event from the
same source is counted as ``duplicate`` and ignored, so a client retrying a POST cannot
double-count; one from another source (every source is an admin token: a reviewer correcting an
earlier label) is counted ``corrected`` and tested as a trial of its own (a sequential test cannot
take back the earlier trial, so the first label's evidence stays).

One source must not be able to flip the detector alone when others label too: once a key has
``share_warmup`` trials from two or more sources, a label whose source already supplied
``max_source_share`` of that key's trials is counted ``capped`` and not tested. (A key labelled by
one source only is not capped: that source is all the ground truth there is.) Sources are token
names, so a bounded set.

Each matched label is one trial per scope of the event for two keys: the label's category (the
judge's category when the label has none) and ``""``, all categories pooled, which starts
testing long before a single category has its own warm-up of labels. The trial's time is the
label's ``timestamp`` when it has one (when the reviewer said so), else the judged event's time.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

from monitor.config import default
from monitor.signals import Condition, Reading
from monitor.drift.rate_change import RateChange, RateChangeConfig
from monitor.events import ScoredEvent
from monitor.taxonomy import SAFE

FeedbackStatus = Literal["matched", "unknown_event", "duplicate", "corrected", "capped"]
STATUSES: tuple[FeedbackStatus, ...] = ("matched", "unknown_event", "duplicate", "corrected", "capped")
TESTED: frozenset[str] = frozenset({"matched", "corrected"})


@dataclass(frozen=True, slots=True)
class Feedback:
    """A label for one judged event: is its prompt unsafe, and in which taxonomy category.

    Either field may be missing but not both; a missing ``unsafe`` follows from the category
    (``safe`` or not). ``source`` names who labelled it (free text, never a metric label).
    ``sender`` names the ingest token that sent the event (event ids are unique per sender); left
    out, the label is for the event judged last under ``event_id``.
    """

    event_id: str
    unsafe: bool | None = None
    category: str | None = None
    source: str | None = None
    timestamp: float | None = None
    sender: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event_id, str) or not self.event_id:
            raise ValueError("event_id: must be a non-empty string")
        if self.unsafe is not None and not isinstance(self.unsafe, bool):
            raise ValueError(f"unsafe: must be true, false or null, got {self.unsafe!r}")
        if self.category is not None and (not isinstance(self.category, str) or not self.category):
            raise ValueError(f"category: must be a non-empty string or null, got {self.category!r}")
        if self.unsafe is None and self.category is None:
            raise ValueError("unsafe, category: a label needs at least one of them")
        if self.category is not None and self.unsafe is not None and self.unsafe != (self.category != SAFE):
            raise ValueError(f"category: {self.category!r} contradicts unsafe={self.unsafe}")
        if self.source is not None and not isinstance(self.source, str):
            raise ValueError(f"source: must be a string or null, got {self.source!r}")
        if self.sender is not None and not isinstance(self.sender, str):
            raise ValueError(f"sender: must be a string or null, got {self.sender!r}")
        if self.timestamp is not None and (
            isinstance(self.timestamp, bool)
            or not isinstance(self.timestamp, (int, float))
            or not math.isfinite(self.timestamp)
        ):
            raise ValueError(f"timestamp: must be a finite number of epoch seconds or null, got {self.timestamp!r}")

    @property
    def label_unsafe(self) -> bool:
        return self.unsafe if self.unsafe is not None else self.category != SAFE


def check_category(feedback: Feedback, categories: frozenset[str]) -> None:
    """``ValueError`` naming a label's category outside ``categories`` (the taxonomy and ``safe``)."""
    if feedback.category is not None and feedback.category not in categories:
        raise ValueError(f"category: {feedback.category!r} is not a category of the taxonomy")


def disagrees(flagged: bool, judge_categories: Sequence[str], feedback: Feedback) -> bool:
    """Whether a label contradicts the judge: unsafe-or-not differs, or both say unsafe but the
    label's category is none of the judge's (its top category and every category it flagged).

    >>> disagrees(True, ("self_harm",), Feedback("e1", category="self_harm"))
    False
    >>> disagrees(True, ("self_harm", "violence_aiding_and_abetting_incitement"), Feedback("e2", category="privacy_violation"))
    True
    >>> disagrees(False, ("safe",), Feedback("e3", unsafe=True))
    True
    """
    unsafe = feedback.label_unsafe
    if unsafe != flagged:
        return True
    return unsafe and feedback.category is not None and feedback.category not in judge_categories


class FeedbackDisagreementDetector:
    """Watches the rate at which labels contradict the judge, per category and pooled.

    Parameters
    ----------
    categories
        Category ids a label may name (the taxonomy's; ``safe`` is always allowed).
    memory
        How many recently judged events are remembered for matching labels.
    config
        Sensitivity of the rate test.

    >>> import numpy as np
    >>> from monitor.events import Event
    >>> from monitor.judge.verdict import Verdict
    >>> det = FeedbackDisagreementDetector(["self_harm"], memory=2)
    >>> def judged(i):
    ...     verdict = Verdict("v", "self_harm", {"self_harm": 0.9}, 0.9, True)
    ...     return ScoredEvent(Event(f"e{i}", float(i), "..."), 1.0, np.zeros(2), None, verdict)
    >>> det.update([judged(1), judged(2), judged(3)])
    []
    >>> det.observe(Feedback("e3", unsafe=False))[0], det.observe(Feedback("e1", unsafe=True))[0]
    ('matched', 'unknown_event')
    >>> det.observe(Feedback("e3", unsafe=True))[0], det.observe(Feedback("e3", unsafe=True, source="lead"))[0]
    ('duplicate', 'corrected')
    >>> det.counts
    {'matched': 1, 'unknown_event': 1, 'duplicate': 1, 'corrected': 1, 'capped': 0}

    Ids are unique per sender (the ingest token): a label naming its sender finds that sender's
    event even when another sender used the same id later; one that does not, the later event.

    >>> det = FeedbackDisagreementDetector(["self_harm"], memory=10)
    >>> def sent(sender, flagged):
    ...     verdict = Verdict("v", "self_harm" if flagged else "safe", {}, float(flagged), flagged)
    ...     return ScoredEvent(Event("req-1", 1.0, "...", sender=sender), 1.0, np.zeros(2), None, verdict)
    >>> det.update([sent("gateway", True), sent("other", False)])
    []
    >>> det.lookup(Feedback("req-1", unsafe=True, sender="gateway"))[1][1], det.lookup(Feedback("req-1", unsafe=True))[1][1]
    (True, False)
    """

    name = "feedback_disagreement"
    alert_kind = name
    uses_verdicts = True  # how often labels disagree with the judge's decisions: not comparable across judges or lines

    def __init__(
        self,
        categories: Iterable[str],
        *,
        memory: int = default("feedback_memory"),
        config: RateChangeConfig = RateChangeConfig(),
        max_source_share: float = default("feedback_max_source_share"),
        share_warmup: int | None = None,
    ) -> None:
        if not isinstance(memory, int) or memory < 1:
            raise ValueError(f"memory must be a positive integer, got {memory!r}")
        if not 0 < max_source_share <= 1:
            raise ValueError(f"max_source_share must be in (0, 1], got {max_source_share!r}")
        self.max_source_share = max_source_share
        self.share_warmup = config.warmup if share_warmup is None else share_warmup
        # key ("" pooled, or a category) -> source -> tested trials; sources are token names (bounded)
        self._by_source: dict[str, dict[str, int]] = {}
        self.categories = frozenset(categories) | {SAFE}
        self.memory = memory
        self.rates = RateChange(self.name, "judge/label disagreement rate", config, direction="rise")
        self.counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        # idempotency key (Event.key) -> (judge categories (top first), prompt flagged, scopes, event time,
        # source of its label: None = not labelled; True = labelled before sources were recorded)
        self._judged: OrderedDict[str, tuple[tuple[str, ...], bool, tuple[str, ...], float, str | bool | None]] = OrderedDict()
        self._latest: dict[str, str] = {}  # event_id -> key of the latest event of a named sender with that id

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        """Remember the judge's answers; conditions come from labels, so none are returned here."""
        judged = self._judged
        for scored in batch:
            v = scored.verdict
            key = scored.event.key
            if key in judged:
                del judged[key]  # judged again: now the most recent
            judged[key] = ((v.category, *v.categories), v.prompt_flagged, scored.scopes, scored.event.timestamp, None)
            if scored.event.sender:
                self._latest[scored.event.event_id] = key
        while len(judged) > self.memory:
            oldest, _ = judged.popitem(last=False)
            event_id = oldest.partition(":")[2]  # token names hold no ":"
            if self._latest.get(event_id) == oldest:
                del self._latest[event_id]
        return []

    def lookup(self, feedback: Feedback) -> tuple[str, tuple[tuple[str, ...], bool, tuple[str, ...], float, str | bool | None] | None]:
        """The key and remembered verdict a label is for (None when not remembered)."""
        if feedback.sender is not None:
            key = f"{feedback.sender}:{feedback.event_id}" if feedback.sender else feedback.event_id
        else:
            key = self._latest.get(feedback.event_id, feedback.event_id)
        return key, self._judged.get(key)

    def observe(self, feedback: Feedback) -> tuple[FeedbackStatus, list[Condition]]:
        """Match one label against the remembered verdict; ``ValueError`` names a category outside the taxonomy."""
        check_category(feedback, self.categories)
        source = feedback.source or ""
        event_key, entry = self.lookup(feedback)
        status: FeedbackStatus
        if entry is None:
            status = "unknown_event"
        elif entry[4] is None or entry[4] is False:
            status = "matched"
        elif entry[4] == source or entry[4] is True and not source:
            status = "duplicate"
        else:
            status = "corrected"
        if status in TESTED:
            judge_categories, flagged, scopes, event_time, _ = entry  # type: ignore[misc]
            self._judged[event_key] = (judge_categories, flagged, scopes, event_time, source)
            key = feedback.category if feedback.category is not None else judge_categories[0]
            if self._capped(source, key):
                status = "capped"
        self.counts[status] += 1
        if status not in TESTED:
            return status, []
        for k in ("", key):
            counts = self._by_source.setdefault(k, {})
            counts[source] = counts.get(source, 0) + 1
        outcome = disagrees(flagged, judge_categories, feedback)
        at = feedback.timestamp if feedback.timestamp is not None else event_time
        return status, self.rates.update([(scope, k, outcome, at) for scope in scopes for k in ("", key)])

    def _capped(self, source: str, key: str) -> bool:
        """Whether ``source`` already supplies ``max_source_share`` of the trials of ``key`` or of all keys pooled."""
        if self.max_source_share >= 1:
            return False
        for k in ("", key):
            counts = self._by_source.get(k, {})
            total = sum(counts.values())
            others = any(n for name, n in counts.items() if name != source)
            if others and total >= self.share_warmup and counts.get(source, 0) + 1 > self.max_source_share * (total + 1):
                return True
        return False

    def readings(self) -> list[Reading]:
        return self.rates.readings(self.name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "judged": list(self._judged.items()),
            "latest": list(self._latest.items()),
            "counts": dict(self.counts),
            "rates": self.rates.state_dict(),
            "by_source": {k: dict(v) for k, v in self._by_source.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._judged = OrderedDict(state["judged"][-self.memory :])
        self._latest = {event_id: key for event_id, key in state.get("latest", ()) if key in self._judged}
        self.counts = {**dict.fromkeys(STATUSES, 0), **state["counts"]}
        self._by_source = {k: dict(v) for k, v in state.get("by_source", {}).items()}
        self.rates.load_state_dict(state["rates"])
