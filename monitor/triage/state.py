"""Everything triage decided, in one document kept in the state store (memory or Redis).

Why one document, written whole after every action: actions come at human rate (a few a day), so
rewriting a few megabytes per action is cheap, and a single ``save_snapshot`` is atomic in both
stores, so a restart between labelling and export finds either the state before an action or
after it, never half of it. JSON, not pickle: it holds reviewer-supplied text.

Contents, each bounded: learned categories (``max_categories``), labelled examples (``max_labels``,
oldest out; texts redacted, raw texts only with ``store_raw_text``), online-model revisions
(``max_models``; the last one is current, the one before it is what revert restores), marks on
alerts (``max_marks``), and the append-only audit log (``max_audit``, oldest out, counted in
``audit_dropped``). Nothing in here is ever edited in place by an API: entries are appended,
and models are reverted by popping the newest.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from monitor.state.store import StateStore
from monitor.triage.online import OnlineModel

SNAPSHOT = "triage"
FORMAT = 1


@dataclass(frozen=True)
class Limits:
    """Bounds on what triage keeps (defaults suit a reviewer team; all in counts, each entry a few KB at most)."""

    max_categories: int = 8
    max_labels: int = 2000
    max_models: int = 16
    max_marks: int = 1000
    max_audit: int = 5000


@dataclass
class Labelled:
    """One labelled event: its label, the embedding the judge saw, texts, and the judge's verdict then."""

    event_id: str
    label: str
    timestamp: float  # event time
    embedding: np.ndarray
    prompt: str  # redacted (unless redaction is off)
    response: str | None
    scope: str
    judge_category: str
    response_flagged: bool | None
    refused: bool | None
    who: str
    at: float  # wall time of the label
    cluster_id: str | None = None
    revision: int = 0  # the online-model revision it was first learned in (revert drops it with that revision)
    raw_prompt: str | None = None  # only with store_raw_text
    raw_response: str | None = None

    def to_state(self) -> dict[str, Any]:
        out = asdict(self)
        out["embedding"] = base64.b64encode(np.asarray(self.embedding, dtype=np.float32).tobytes()).decode()
        return out

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Labelled:
        s = dict(s)
        s["embedding"] = np.frombuffer(base64.b64decode(s["embedding"]), dtype=np.float32).copy()
        return cls(**s)


@dataclass
class Mark:
    """What reviewers did to one alert (shown next to it; the alert itself lives in the alert engine)."""

    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    silenced_until: float | None = None  # wall time
    silence_ids: list[str] = field(default_factory=list)  # Alertmanager's, one per configured instance that took it
    false_alarm_by: str | None = None
    # The silenced alert's kind/scope/key: the silence also covers a later alert with the same labels, as
    # Alertmanager's label matchers do (None in marks saved before it was kept: they cover their own alert only).
    silenced_fingerprint: str | None = None


@dataclass
class TriageState:
    limits: Limits = field(default_factory=Limits)
    seq: int = 0
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)  # learned id -> description, who, at
    labels: OrderedDict[str, Labelled] = field(default_factory=OrderedDict)
    models: list[OnlineModel] = field(default_factory=list)
    next_revision: int = 1
    marks: OrderedDict[str, Mark] = field(default_factory=OrderedDict)
    clusters: OrderedDict[str, str] = field(default_factory=OrderedDict)  # cluster id -> label (re-applied after a restart)
    audit: list[dict[str, Any]] = field(default_factory=list)
    audit_dropped: int = 0
    # cluster id -> the revision whose label action named it (revert un-names it); false-alarm marks have none
    cluster_revisions: dict[str, int] = field(default_factory=dict)

    @property
    def model(self) -> OnlineModel:
        return self.models[-1] if self.models else OnlineModel(0, ())

    def add_label(self, item: Labelled) -> None:
        self.labels.pop(item.event_id, None)  # a relabel replaces the earlier label (the audit log keeps both)
        self.labels[item.event_id] = item
        while len(self.labels) > self.limits.max_labels:
            self.labels.popitem(last=False)

    def push_model(self, model: OnlineModel) -> None:
        self.models.append(model)
        self.next_revision = max(self.next_revision, model.revision + 1)
        del self.models[: -self.limits.max_models]

    def mark(self, alert_id: str, now: float) -> Mark:
        """``alert_id``'s mark, now the newest. Past ``max_marks`` the oldest goes, but one whose silence lasts
        beyond ``now`` (wall time) only when every mark's does: the silence still mutes webhooks and Slack.

        >>> state = TriageState(Limits(max_marks=2))
        >>> state.mark("a", now=0.0).silenced_until = 60.0
        >>> _ = state.mark("b", now=0.0), state.mark("c", now=0.0)
        >>> list(state.marks)
        ['a', 'c']
        """
        mark = self.marks.setdefault(alert_id, Mark())
        self.marks.move_to_end(alert_id)
        while len(self.marks) > self.limits.max_marks:
            ended = next((k for k, m in self.marks.items() if m.silenced_until is None or m.silenced_until <= now), None)
            if ended is None:
                self.marks.popitem(last=False)
            else:
                del self.marks[ended]
        return mark

    def silence_ends(self) -> tuple[dict[str, float], dict[str, float]]:
        """When the silences end (wall time): by alert id, and by alert fingerprint (the latest silence of
        an alert with those labels), for lookups that do not scan every mark."""
        by_alert: dict[str, float] = {}
        by_fingerprint: dict[str, float] = {}
        for alert_id, mark in self.marks.items():
            if mark.silenced_until is None:
                continue
            by_alert[alert_id] = mark.silenced_until
            if mark.silenced_fingerprint is not None:
                by_fingerprint[mark.silenced_fingerprint] = max(mark.silenced_until, by_fingerprint.get(mark.silenced_fingerprint, 0.0))
        return by_alert, by_fingerprint

    def record(self, entry: dict[str, Any]) -> None:
        self.audit.append(entry)
        excess = len(self.audit) - self.limits.max_audit
        if excess > 0:
            del self.audit[:excess]
            self.audit_dropped += excess

    def copy(self) -> TriageState:
        """A copy whose containers (and marks) can change without touching this one (entries are shared:
        they are never modified once made), so an action is applied to a copy, saved, then swapped in."""
        return TriageState(self.limits, self.seq, dict(self.categories), OrderedDict(self.labels), list(self.models),
                           self.next_revision, OrderedDict((k, replace(v, silence_ids=list(v.silence_ids))) for k, v in self.marks.items()),
                           OrderedDict(self.clusters), list(self.audit), self.audit_dropped, dict(self.cluster_revisions))

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        kept_clusters = dict(list(self.clusters.items())[-self.limits.max_marks:])
        return json.dumps({
            "format": FORMAT,
            "seq": self.seq,
            "categories": self.categories,
            "labels": [item.to_state() for item in self.labels.values()],
            "models": [m.to_state() for m in self.models],
            "next_revision": self.next_revision,
            "marks": {k: asdict(v) for k, v in self.marks.items()},
            "clusters": list(kept_clusters.items()),
            "audit": self.audit,
            "audit_dropped": self.audit_dropped,
            "cluster_revisions": {k: r for k, r in self.cluster_revisions.items() if k in kept_clusters},
        }, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, limits: Limits) -> TriageState:
        raw = json.loads(data)
        if raw.get("format") != FORMAT:
            raise ValueError(f"triage state: format {raw.get('format')!r}, this version reads {FORMAT}")
        state = cls(limits, int(raw["seq"]), dict(raw["categories"]),
                    OrderedDict((s["event_id"], Labelled.from_state(s)) for s in raw["labels"]),
                    [OnlineModel.from_state(m) for m in raw["models"]], int(raw["next_revision"]),
                    OrderedDict((k, Mark(**v)) for k, v in raw["marks"].items()), OrderedDict(map(tuple, raw["clusters"])),
                    list(raw["audit"]), int(raw["audit_dropped"]),
                    {k: int(v) for k, v in raw.get("cluster_revisions", {}).items()})  # absent before revert un-named clusters
        return state

    def save(self, store: StateStore) -> None:
        """Write the whole document (``StoreUnavailable`` propagates: the caller answers 503, nothing half-done)."""
        store.save_snapshot(SNAPSHOT, self.to_bytes())

    @classmethod
    def load(cls, store: StateStore, limits: Limits) -> TriageState:
        data = store.load_snapshot(SNAPSHOT)
        return cls(limits) if data is None else cls.from_bytes(data, limits)
