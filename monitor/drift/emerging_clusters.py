"""Emerging unsafe categories: clusters of unsafe-looking traffic that fills a region faster than the reference did.

Why this shape: a category the judge was never trained on still tends to look unsafe (flagged, or
in the judge's uncertain band), and it fills a region of embedding space faster than the reference
period ever did. Unsafe-looking events (*candidates*) pass a density-ratio gate
(:mod:`monitor.drift.density_gate`: regions around the newest candidates, recent against
reference counts, a binomial tail test). The candidates of a region that passes become a cluster
together (or join the cluster their centroid matches); a smaller group joins the nearest cluster
member by member when close enough (``join_similarity``), else waits in a bounded *novelty
buffer* per scope, which is clustered periodically. A cluster that is young,
growing and takes a share of traffic the calibration period never showed raises an
``emerging_category`` condition keyed by the cluster's stable id. Distance to the known
categories is evidence only (it did not separate new categories from the judge's false positives;
the gate's recent-vs-reference counts do).

Three phases, counted in events of the whole stream:

1. reference (``reference_events``): learn the known regions
   (:class:`~monitor.drift.known_regions.KnownRegions`: centring/projection and per-category
   centroids, for clustering and evidence) and the reference density of candidates (projected on
   the first ``gate_components`` principal axes of the reference sample). The reference is long
   (20,000 events by default) because the gate's power grows with it: under no change a region's
   recent count is binomial with ``p = window / (window + reference)`` (measured delays:
   docs/emerging_clusters.md).
2. calibration (``calibration_events``): the full machinery runs but never alerts; the largest
   share of traffic a growing cluster reaches in a scope sets that scope's alert threshold
   ``max(min_share, share_margin * largest share seen)``.
3. detection: a cluster alerts when, over the last ``window_events`` of its scope's traffic, it
   holds at least ``min_recent`` events and that threshold's share, *and* that share is at least
   ``min_growth`` times its share over the longer ``baseline_events`` window. The growth test is
   what keeps stationary topics of the background (recurring judge false positives, the fringe
   of known categories) quiet: their short and long shares agree. The alert resolves when the
   recent share or count falls below ``resolve_ratio`` of the bar.

Clustering: unseen categories are *diffuse* in embedding space, so the gate's region (a ball
around the group's centre) is the first grouping, and average linkage (cosine, cut at
``link_similarity``, every ``recluster_every`` new buffer entries) groups what passes alone;
novel events join the nearest cluster when their cosine to its centroid reaches
``join_similarity``. A group that matches an existing centroid merges into it, so cluster ids stay
stable: ``"c"`` plus a hash of the scope and the cluster's first event id. Why these choices, with
the bench figures behind them (DBSTREAM, re-clustering regions): docs/emerging_clusters.md.

Rates: ``share_of_traffic`` is a cluster's exponentially decayed weight over the scope's decayed
traffic, both fading per unit of traffic weight, so shares do not move with diurnal volume;
``growth_rate`` is members per hour of event time (decay ``rate_window_seconds``). Members count
from their own arrival, also when they join a cluster later. No wall clock is read anywhere.

Bounds per scope: ``window_capacity`` gate candidates, ``buffer_size`` waiting events,
``max_clusters`` clusters (dormant and quiet ones are evicted first, alerting ones never), ``2 * max_exemplars`` stored texts per cluster, each cut to
``max_text_chars``; at most ``max_scopes`` scopes.

Privacy: a candidate's text is redacted (:mod:`monitor.privacy.redact`) when its member is made,
before anything keeps it (gate window, buffer, exemplars, snapshots), so exemplars, keywords and
alert summaries are built from redacted text only. With ``store_raw_text`` the cut raw text is
kept beside it, for :meth:`EmergingClusterDetector.clusters` ``(raw=True)`` (an admin's request). The reference sample (at most
``2 * max_reference_sample + max_reference_candidates`` vectors) is freed once the known regions
are fitted; the gate keeps at most ``max_reference_candidates`` projected candidates.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Collection, Iterable, Literal, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from monitor.config import default
from monitor.signals import Condition, Reading
from monitor.drift.density_gate import DensityGate, RecentWindow, ReferenceDensity
from monitor.drift.keywords import class_tfidf_keywords
from monitor.drift.known_regions import KnownRegions, unit_rows
from monitor.events import ScoredEvent
from monitor.taxonomy import SAFE
from monitor.privacy.redact import REDACT_ON, Redactor, cut_reads, strip_placeholders

log = logging.getLogger(__name__)

KIND = "emerging_category"
ClusterStatus = Literal["tracking", "emerging", "dormant"]
_BACKGROUND = "\x00background"  # c-TF-IDF class of the unclustered buffer; never a cluster id


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    """One cluster as ``GET /v1/clusters`` shows it.

    ``distance_to_nearest`` is ``1 - cosine`` between the cluster centroid and the nearest known
    category centroid in the projected space (None when no category is known). ``growth_rate`` is
    members per hour of event time; ``growth`` is the recent share over the long-run share (about 1
    for a stationary topic). ``exemplars`` are the stored texts closest to the centroid. ``status``:
    ``emerging`` while its alert condition is active, ``dormant`` when less than one member is
    left in its decayed window, else ``tracking``. ``exemplar_ids`` are the event ids of every stored
    exemplar (up to ``2 * max_exemplars``), closest first, so the first ones are those of ``exemplars``:
    a reviewer's label reaches all of them (more examples teach the judge better); ``label`` is what
    triage decided the cluster is (a category id, ``safe`` for benign), None while undecided.
    """

    id: str
    scope: str
    size: int
    growth_rate: float
    share_of_traffic: float
    growth: float
    nearest_category: str | None
    distance_to_nearest: float | None
    keywords: tuple[str, ...]
    exemplars: tuple[str, ...]
    first_seen: float
    last_seen: float
    status: ClusterStatus
    exemplar_ids: tuple[str, ...] = ()
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}  # flat fields: no deep copy (built every batch while alerting)
        out["keywords"], out["exemplars"], out["exemplar_ids"] = list(self.keywords), list(self.exemplars), list(self.exemplar_ids)
        return out


@dataclass(slots=True)
class _Decaying:
    """A sum whose terms fade exponentially along a clock (traffic weight, or event time)."""

    value: float = 0.0
    at: float = 0.0

    def get(self, now: float, scale: float) -> float:
        return self.value * math.exp(-max(0.0, now - self.at) / scale)

    def add(self, now: float, scale: float, amount: float, since: float) -> None:
        """Add ``amount`` that arrived at clock ``since`` (<= ``now``)."""
        self.value = self.get(now, scale) + amount * math.exp(-max(0.0, now - since) / scale)
        self.at = now


@dataclass(slots=True)
class _Member:
    """A novel event as a scope keeps it: projected vector, cut (redacted) text, and where it arrived."""

    z: np.ndarray
    text: str  # redacted unless redaction is off
    event_id: str
    at: float  # event time
    weight: float
    clock: float  # the scope's traffic clock (cumulative weight) on arrival
    raw_text: str | None = None  # the cut raw text, only with ``store_raw_text``
    pending: bool = False  # ``text`` is still the raw prefix redaction reads (see ``_redacted``); never in a snapshot

    def to_state(self) -> tuple[Any, ...]:
        assert not self.pending, "a member's text is redacted before it is saved"
        return (self.z, self.text, self.event_id, self.at, self.weight, self.clock, self.raw_text)


_DECAYING_FIELDS = ("recent", "baseline", "rate")


@dataclass(slots=True)
class _Cluster:
    id: str
    total: np.ndarray  # sum of member vectors; its direction is the centroid
    size: int
    first_seen: float
    last_seen: float
    recent: _Decaying = field(default_factory=_Decaying)  # member weight, fading over ``window_events`` of traffic
    baseline: _Decaying = field(default_factory=_Decaying)  # the same over ``baseline_events``
    rate: _Decaying = field(default_factory=_Decaying)  # the same over ``rate_window_seconds`` of event time
    exemplars: list[_Member] = field(default_factory=list)
    active: bool = False
    changed: bool = False  # active flag flipped since the last emitted condition
    opened_at: float = 0.0  # event time of the event that activated it: the alert's start, however batches fall
    keywords: tuple[str, ...] = ()
    keywords_size: int = 0  # size when ``keywords`` were computed
    label: str | None = None  # set by triage: a known region now, which never alerts again

    @property
    def centroid(self) -> np.ndarray:
        return unit_rows(self.total)

    def to_state(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self.__slots__}
        state["exemplars"] = [m.to_state() for m in self.exemplars]
        for name in _DECAYING_FIELDS:
            state[name] = (state[name].value, state[name].at)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], member: Callable[[Sequence[Any]], _Member]) -> _Cluster:
        state = dict(state)
        state["exemplars"] = [member(m) for m in state["exemplars"]]
        state["keywords"] = tuple(state["keywords"])
        for name in _DECAYING_FIELDS:
            state[name] = _Decaying(*state[name])
        return cls(**state)



@dataclass(slots=True)
class _Scope:
    buffer: deque[_Member]
    clock: float = 0.0  # cumulative event weight
    judged: int = 0  # events seen (each once, whatever its weight): the density gate's clock
    traffic: float = 0.0  # event weight fading over ``window_events``, as of ``clock``
    baseline_traffic: float = 0.0  # the same over ``baseline_events``
    now: float = -math.inf  # latest event time seen
    since_recluster: int = 0
    calibration_max_share: float = 0.0
    clusters: dict[str, _Cluster] = field(default_factory=dict)
    window: RecentWindow | None = None  # the gate's recent candidates, once the gate is fitted


@dataclass(frozen=True, slots=True)
class EmergingClusterSettings:
    """The detector's tuning, checked once (each bad value raises ``ValueError`` naming the field).

    The module docstring says what each phase and bound does; ``MONITOR_EMERGING_*`` settings set
    the few an operator tunes (reference, calibration, minimum share, cluster count).
    """

    reference_events: int = default("emerging_reference_events")
    calibration_events: int = default("emerging_calibration_events")
    n_components: int = 384
    uncertain_min: float = 0.3
    gate_components: int = 128
    gate_radius: float = 0.5
    gate_surprise: float = 12.0
    gate_test_every: int = 16
    duplicate_similarity: float = 0.98
    window_capacity: int = 512
    min_category_events: int = 5
    max_reference_sample: int = 2000
    max_reference_candidates: int = 4000
    buffer_size: int = 256
    recluster_every: int = 4
    link_similarity: float = 0.2
    join_similarity: float = 0.35
    min_cluster_size: int = 5
    max_clusters: int = default("emerging_max_clusters")
    max_exemplars: int = 10
    max_text_chars: int = 300
    window_events: float = 1000.0
    baseline_events: float = 10000.0
    min_growth: float = 2.0
    min_recent: float = 4.0
    min_share: float = default("emerging_min_share")
    share_margin: float = 1.5
    resolve_ratio: float = 0.5
    rate_window_seconds: float = 3600.0
    top_keywords: int = 8
    max_scopes: int = 16

    def __post_init__(self) -> None:
        _positive(reference_events=self.reference_events, n_components=self.n_components, buffer_size=self.buffer_size,
                  recluster_every=self.recluster_every, max_clusters=self.max_clusters, max_exemplars=self.max_exemplars,
                  max_text_chars=self.max_text_chars, window_events=self.window_events, baseline_events=self.baseline_events,
                  rate_window_seconds=self.rate_window_seconds, top_keywords=self.top_keywords, max_scopes=self.max_scopes,
                  gate_components=self.gate_components, gate_surprise=self.gate_surprise, window_capacity=self.window_capacity,
                  gate_test_every=self.gate_test_every)
        _fraction(uncertain_min=self.uncertain_min, min_share=self.min_share, resolve_ratio=self.resolve_ratio)
        _cosine(link_similarity=self.link_similarity, join_similarity=self.join_similarity, gate_radius=self.gate_radius,
                duplicate_similarity=self.duplicate_similarity)
        if self.duplicate_similarity <= self.gate_radius:
            raise ValueError(f"duplicate_similarity: must be above gate_radius ({self.gate_radius}), got {self.duplicate_similarity}")
        if self.calibration_events < 0:
            raise ValueError(f"calibration_events: must be >= 0, got {self.calibration_events}")
        if self.min_cluster_size < 2:
            raise ValueError(f"min_cluster_size: must be >= 2, got {self.min_cluster_size}")
        if self.max_reference_sample < 2:
            raise ValueError(f"max_reference_sample: must be >= 2, got {self.max_reference_sample}")
        if self.max_reference_candidates < 1:
            raise ValueError(f"max_reference_candidates: must be >= 1, got {self.max_reference_candidates}")
        if self.baseline_events <= self.window_events:
            raise ValueError(f"baseline_events: must be longer than window_events ({self.window_events}), got {self.baseline_events}")
        if self.min_growth < 1:
            raise ValueError(f"min_growth: must be >= 1, got {self.min_growth}")
        if self.share_margin < 1:
            raise ValueError(f"share_margin: must be >= 1, got {self.share_margin}")


class EmergingClusterDetector:
    """Online detector of new unsafe clusters, one independent state per scope.

    Feed it every judged event in pipeline order (``update``); read alerts as conditions of kind
    ``emerging_category`` (key = cluster id) and the cluster list with :meth:`clusters`.
    """

    name = "emerging_clusters"
    uses_embeddings = True  # state is only comparable with embeddings from the same model and backend
    alert_kind = KIND

    def __init__(self, settings: EmergingClusterSettings | None = None, *, redactor: Redactor = REDACT_ON,
                 store_raw_text: bool = False) -> None:
        self.settings = s = settings or EmergingClusterSettings()
        self.redactor = redactor
        self.store_raw_text = store_raw_text
        # The reference sample keeps every ``stride``-th event so it spans the whole reference period;
        # the gate's reference candidates come from the events in between.
        self._stride = max(2, math.ceil(s.reference_events / s.max_reference_sample))

        self._seen = 0
        self._regions: KnownRegions | None = None
        self._gate: DensityGate | None = None
        self._sample: list[np.ndarray] = []
        self._candidates: list[np.ndarray] = []  # reference candidates, for the gate's reference density
        self._candidate_events = 0  # events of the reference period they were drawn from (each once, whatever its weight)
        self._flagged: list[np.ndarray] = []
        self._flagged_categories: list[str] = []
        self._dim: int | None = None
        self._scopes: dict[str, _Scope] = {}
        self._dropped_scopes: set[str] = set()  # not persisted: only rate-limits a log line
        self._explained: set[str] = set()  # categories triage taught the judge: their events are known, not novel

    # ------------------------------------------------------------------ phases
    @property
    def phase(self) -> Literal["reference", "calibration", "detection"]:
        if self._regions is None:
            return "reference"
        if self._seen <= self.settings.reference_events + self.settings.calibration_events:
            return "calibration"
        return "detection"

    @property
    def regions(self) -> KnownRegions | None:
        """The known regions, once the reference period is over."""
        return self._regions

    # ------------------------------------------------------------------ update
    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        if not batch:
            return []
        x = self._validated(batch)  # the whole batch is checked before any state changes
        candidates = self._candidates_of(batch, x, 0)
        touched: dict[str, _Scope] = {}
        for i, scored in enumerate(batch):
            ev, weight = scored.event, scored.weight
            recent_decay = math.exp(-weight / self.settings.window_events)
            baseline_decay = math.exp(-weight / self.settings.baseline_events)
            scopes = [(n, st) for n in scored.scopes if (st := self._scopes.get(n) or self._scope(n)) is not None]
            for name, st in scopes:
                st.clock += weight
                st.judged += 1
                st.traffic = st.traffic * recent_decay + weight
                st.baseline_traffic = st.baseline_traffic * baseline_decay + weight
                st.now = max(st.now, ev.timestamp)
                touched[name] = st
            self._seen += 1
            if self._regions is None:
                self._collect_reference(scored, x[i])
                if self._seen >= self.settings.reference_events:
                    self._fit_regions()
                    candidates = self._candidates_of(batch, x, i + 1)
                continue
            zd = candidates.get(i)
            if zd is None:
                continue
            text = ev.prompt[: cut_reads(self.settings.max_text_chars)]  # redacted once admitted or saved (_redacted)
            raw = ev.prompt[: self.settings.max_text_chars] if self.store_raw_text else None
            for name, st in scopes:
                waiting = _Member(x[i], text, ev.event_id, ev.timestamp, weight, st.clock, raw, pending=True)  # z: the raw embedding until admitted
                for region in self._admit(st, zd, waiting):
                    if len(region) < self.settings.min_cluster_size or not self._settle(name, st, region):
                        for member in region:
                            self._add_novel(name, st, member)
        return [cond for name, st in touched.items() for cond in self._conditions(name, st)]

    def _is_candidate(self, scored: ScoredEvent) -> bool:
        verdict = scored.verdict
        if verdict.category in self._explained:
            return False
        return verdict.prompt_flagged or verdict.prompt_unsafe >= self.settings.uncertain_min

    def _candidates_of(self, batch: Sequence[ScoredEvent], x: np.ndarray, start: int) -> dict[int, np.ndarray]:
        """For each unsafe-looking event from ``start`` on: its gate-space vector."""
        if self._regions is None or self._gate is None:
            return {}
        rows = [i for i in range(start, len(batch)) if self._is_candidate(batch[i])]
        if not rows:
            return {}
        zd = self._gate.reference.project(x[rows])
        keep = zd.any(axis=1)
        return {i: zd[j] for j, i in enumerate(rows) if keep[j]}

    def _admit(self, st: _Scope, zd: np.ndarray, member: _Member) -> list[list[_Member]]:
        """Enter a candidate into the scope's gate window; the regions of waiting members (it, or earlier ones) that pass now.

        The gate counts events, not weights, on both sides of its test: an event sampled at 1/4
        stands for four in traffic shares, but it is one observation, and counting it four times
        would make ordinary regions look significant. Only admitted members are projected for
        clustering (a few percent of candidates), which saves a 384 x 384 product per candidate."""
        assert self._gate is not None and self._regions is not None
        if st.window is None:
            st.window = self._gate.new_window()
        regions = self._gate.add(st.window, zd, clock=st.judged, payload=member)
        return [[replace(self._redacted(m), z=z) for m, z in zip(region, self._regions.project(np.stack([m.z for m in region])))]
                for region in regions]

    def _redacted(self, member: _Member) -> _Member:
        """``member`` with its text redacted and cut, in place (the gate window holds the same object).

        Why late: most candidates wait in the gate window and leave it without being admitted, and
        redaction was most of this detector's cost when every candidate paid it on arrival. A raw
        text stays in memory only while it waits there; it is redacted before anything keeps it
        (admission to a region) or writes it out (a snapshot), and it is never shown before that."""
        if member.pending:
            member.text, member.pending = self.redactor.cut(member.text, self.settings.max_text_chars), False
        return member

    def _validated(self, batch: Sequence[ScoredEvent]) -> np.ndarray:
        """The batch's prompt embeddings as one ``(n, d)`` array; ``ValueError`` names the bad event and field."""
        for scored in batch:
            if not (math.isfinite(scored.weight) and scored.weight > 0):
                raise ValueError(f"event {scored.event.event_id!r}: weight must be a positive finite number, got {scored.weight!r}")
            if not math.isfinite(scored.event.timestamp):
                raise ValueError(f"event {scored.event.event_id!r}: timestamp must be finite, got {scored.event.timestamp!r}")
        try:
            x = np.stack([scored.prompt_embedding for scored in batch]).astype(np.float32, copy=False)
        except (ValueError, TypeError):
            x = None
        dim = self._dim if self._dim is not None else (x.shape[1] if x is not None and x.ndim == 2 else None)
        if x is None or x.ndim != 2 or x.shape[1] != dim or dim == 0:
            for scored in batch:
                shape = np.shape(scored.prompt_embedding)
                if len(shape) != 1 or shape[0] != (dim or shape[0]) or shape[0] == 0:
                    raise ValueError(f"event {scored.event.event_id!r}: prompt_embedding must be a vector of "
                                     f"{dim or 'the same'} floats, got shape {shape}")
            raise ValueError("prompt_embedding: vectors of different lengths in one batch")
        if not np.isfinite(x).all():
            bad = batch[int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])].event.event_id
            raise ValueError(f"event {bad!r}: prompt_embedding has non-finite values")
        self._dim = dim
        return x

    def _scope(self, name: str) -> _Scope | None:
        st = self._scopes.get(name)
        if st is None:
            if len(self._scopes) >= self.settings.max_scopes:
                if name not in self._dropped_scopes:
                    self._dropped_scopes.add(name)
                    log.warning("emerging clusters: scope %r ignored, already tracking max_scopes=%d", name, self.settings.max_scopes)
                return None
            st = self._scopes[name] = _Scope(buffer=deque(maxlen=self.settings.buffer_size))
        return st

    def _collect_reference(self, scored: ScoredEvent, x: np.ndarray) -> None:
        if (self._seen - 1) % self._stride == 0:
            self._sample.append(x)  # fits the projections; its events stay out of the gate's reference density
        elif len(self._candidates) < self.settings.max_reference_candidates:  # the density is per event of the traffic it covers
            self._candidate_events += 1
            if self._is_candidate(scored):
                self._candidates.append(x)
        verdict = scored.verdict
        if verdict.prompt_flagged and verdict.category != SAFE and len(self._flagged) < self.settings.max_reference_sample:
            self._flagged.append(x)
            self._flagged_categories.append(verdict.category)

    def _fit_regions(self) -> None:
        dim = self._dim or 0
        flagged = np.stack(self._flagged) if self._flagged else np.zeros((0, dim), dtype=np.float32)
        self._regions = KnownRegions.fit(
            np.stack(self._sample),
            flagged,
            self._flagged_categories,
            n_components=self.settings.n_components,
            min_events=self.settings.min_category_events,
        )
        candidates = np.stack(self._candidates) if self._candidates else np.zeros((0, dim), dtype=np.float32)
        regions = self._regions
        self._gate = self._make_gate(ReferenceDensity.fit(regions.mean, regions.components[: self.settings.gate_components], candidates,
                                                          self._candidate_events))
        if not self._regions.categories:
            log.warning("emerging clusters: no category had %d flagged reference events; every unsafe-looking "
                        "event counts as novel", self.settings.min_category_events)
        self._sample, self._flagged, self._flagged_categories, self._candidates = [], [], [], []

    def _make_gate(self, reference: ReferenceDensity) -> DensityGate:
        return DensityGate(reference, radius=self.settings.gate_radius, surprise=self.settings.gate_surprise, window=self.settings.window_events,
                           duplicate_similarity=self.settings.duplicate_similarity, capacity=self.settings.window_capacity,
                           test_every=self.settings.gate_test_every)

    # ------------------------------------------------------------------ clustering
    def _add_novel(self, scope: str, st: _Scope, member: _Member) -> None:
        if st.clusters:
            ids = list(st.clusters)
            sims = unit_rows(np.stack([st.clusters[c].total for c in ids])) @ member.z
            best = int(np.argmax(sims))
            if sims[best] >= self.settings.join_similarity:
                cluster = st.clusters[ids[best]]
                self._absorb(st, cluster, member)
                self._observe(st, cluster)
                return
        st.buffer.append(member)
        st.since_recluster += 1
        if st.since_recluster >= self.settings.recluster_every:
            st.since_recluster = 0
            self._recluster(scope, st)

    def _recluster(self, scope: str, st: _Scope) -> None:
        """Average-linkage clustering of the buffer; groups big enough become or join clusters."""
        if len(st.buffer) < self.settings.min_cluster_size:
            return
        z = np.stack([m.z for m in st.buffer]).astype(np.float64)
        distances = squareform(np.clip(1.0 - z @ z.T, 0.0, 2.0), checks=False)  # rows are unit vectors
        labels = fcluster(linkage(distances, method="average"), t=1.0 - self.settings.link_similarity, criterion="distance")
        groups: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(int(label), []).append(i)
        taken: set[int] = set()
        members = list(st.buffer)
        for idx in groups.values():  # dict order = order of each group's first buffer entry
            if len(idx) >= self.settings.min_cluster_size and self._settle(scope, st, [members[i] for i in idx]):
                taken.update(idx)
        if taken:
            st.buffer = deque((m for i, m in enumerate(members) if i not in taken), maxlen=self.settings.buffer_size)

    def _settle(self, scope: str, st: _Scope, group: list[_Member]) -> bool:
        """Put a group into the cluster its centroid matches, else a new one; False when no slot is free."""
        centroid = unit_rows(np.stack([m.z for m in group]).sum(axis=0))
        cluster = self._matching_cluster(st, centroid) or self._new_cluster(scope, st, group[0])
        if cluster is None:
            return False
        for member in group:
            self._absorb(st, cluster, member)
        self._observe(st, cluster)
        return True

    def _matching_cluster(self, st: _Scope, centroid: np.ndarray) -> _Cluster | None:
        if not st.clusters:
            return None
        ids = list(st.clusters)
        sims = unit_rows(np.stack([st.clusters[c].total for c in ids])) @ centroid
        best = int(np.argmax(sims))
        return st.clusters[ids[best]] if sims[best] >= self.settings.join_similarity else None

    def _new_cluster(self, scope: str, st: _Scope, first: _Member) -> _Cluster | None:
        if len(st.clusters) >= self.settings.max_clusters:
            quiet = [c for c in st.clusters.values() if not c.active]
            if not quiet:
                return None  # every slot holds an alerting cluster: the group waits in the buffer
            # labelled clusters go last: evicting one would let its region alert again
            victim = min(quiet, key=lambda c: (c.label is not None, c.recent.get(st.clock, self.settings.window_events), c.last_seen, c.id))
            del st.clusters[victim.id]
        cid = "c" + hashlib.sha1(f"{scope}|{first.event_id}".encode()).hexdigest()[:10]
        cluster = _Cluster(cid, np.zeros_like(first.z), 0, first.at, first.at)
        st.clusters[cid] = cluster
        return cluster

    def _absorb(self, st: _Scope, cluster: _Cluster, member: _Member) -> None:
        cluster.total = cluster.total + member.z
        cluster.size += 1
        cluster.first_seen = min(cluster.first_seen, member.at)
        cluster.last_seen = max(cluster.last_seen, member.at)
        cluster.recent.add(st.clock, self.settings.window_events, member.weight, member.clock)
        cluster.baseline.add(st.clock, self.settings.baseline_events, member.weight, member.clock)
        cluster.rate.add(st.now, self.settings.rate_window_seconds, member.weight, member.at)
        cluster.exemplars.append(member)
        if len(cluster.exemplars) > 2 * self.settings.max_exemplars:
            sims = np.stack([m.z for m in cluster.exemplars]) @ cluster.centroid
            del cluster.exemplars[int(np.argmin(sims))]

    # ------------------------------------------------------------------ alerting
    def _recent(self, st: _Scope, cluster: _Cluster) -> tuple[float, float, float]:
        """(recent member weight, its share of recent traffic, growth = that share / the baseline share)."""
        recent = cluster.recent.get(st.clock, self.settings.window_events)
        share = recent / st.traffic if st.traffic > 0 else 0.0
        baseline = cluster.baseline.get(st.clock, self.settings.baseline_events)
        baseline_share = baseline / st.baseline_traffic if baseline > 0 else 0.0
        return recent, share, (share / baseline_share if baseline_share > 0 else 0.0)

    def threshold(self, scope: str = "global") -> float:
        """The share of traffic above which a cluster of ``scope`` alerts."""
        st = self._scopes.get(scope)
        return self._threshold(st) if st is not None else self.settings.min_share

    def _threshold(self, st: _Scope) -> float:
        return max(self.settings.min_share, self.settings.share_margin * st.calibration_max_share)

    def _observe(self, st: _Scope, cluster: _Cluster) -> None:
        """After a cluster grew: record its share while calibrating, or open its alert."""
        recent, share, growth = self._recent(st, cluster)
        if cluster.label is not None or recent < self.settings.min_recent or growth < self.settings.min_growth:
            return
        if self.phase == "calibration":
            st.calibration_max_share = max(st.calibration_max_share, share)
        elif self.phase == "detection" and not cluster.active and share >= self._threshold(st):
            cluster.active, cluster.changed, cluster.opened_at = True, True, st.now
            self._refresh_keywords(st)

    def _conditions(self, scope: str, st: _Scope) -> list[Condition]:
        threshold = self._threshold(st)
        out: list[Condition] = []
        for cluster in st.clusters.values():
            if cluster.active:
                recent, share, _ = self._recent(st, cluster)
                if share < threshold * self.settings.resolve_ratio or recent < self.settings.min_recent * self.settings.resolve_ratio:
                    cluster.active, cluster.changed = False, True
                elif cluster.size >= 2 * cluster.keywords_size:
                    self._refresh_keywords(st)
            if cluster.active or cluster.changed:
                at = cluster.opened_at if cluster.active and cluster.changed else st.now
                cluster.changed = False
                out.append(self._condition(scope, st, cluster, threshold, at))
        return out

    def _condition(self, scope: str, st: _Scope, cluster: _Cluster, threshold: float, at: float) -> Condition:
        summary = self._summary(scope, st, cluster, cluster.keywords)
        share = summary.share_of_traffic
        text = (
            f"new unsafe cluster {cluster.id} in {scope}: {cluster.size} events, {share:.2%} of recent traffic "
            f"(threshold {threshold:.2%}), nearest known category {summary.nearest_category} "
            f"at distance {_fmt(summary.distance_to_nearest)}; keywords: {', '.join(summary.keywords) or '-'}"
        )
        evidence = summary.to_dict()
        evidence["cluster_id"] = evidence.pop("id")
        evidence["share_threshold"] = threshold
        return Condition(KIND, scope, cluster.id, cluster.active, at=at, severity="warning", summary=text,
                         evidence=evidence)

    # ------------------------------------------------------------------ reading
    def _refresh_keywords(self, st: _Scope) -> None:
        words = self._keywords(st)
        for cid, cluster in st.clusters.items():
            cluster.keywords, cluster.keywords_size = tuple(words[cid]), cluster.size

    def _keywords(self, st: _Scope) -> dict[str, list[str]]:
        docs = {cid: [strip_placeholders(m.text) for m in c.exemplars] for cid, c in st.clusters.items()}
        docs[_BACKGROUND] = [strip_placeholders(m.text) for m in st.buffer]
        return class_tfidf_keywords(docs, top_k=self.settings.top_keywords)

    def _summary(self, scope: str, st: _Scope, cluster: _Cluster, keywords: Iterable[str], raw: bool = False) -> ClusterSummary:
        """``raw``: exemplars as sent where they were kept (``store_raw_text``), else redacted; for admins only."""
        centroid = cluster.centroid
        nearest: str | None = None
        distance: float | None = None
        if self._regions is not None and self._regions.categories:
            best, sim = self._regions.nearest(centroid[None, :])
            nearest, distance = self._regions.categories[int(best[0])], float(1.0 - sim[0])
        order = np.argsort(-(np.stack([m.z for m in cluster.exemplars]) @ centroid), kind="stable")
        recent, share, growth = self._recent(st, cluster)
        return ClusterSummary(
            id=cluster.id,
            scope=scope,
            size=cluster.size,
            growth_rate=cluster.rate.get(st.now, self.settings.rate_window_seconds) / self.settings.rate_window_seconds * 3600.0,
            share_of_traffic=share,
            growth=growth,
            nearest_category=nearest,
            distance_to_nearest=distance,
            keywords=tuple(keywords),
            exemplars=tuple(_exemplar(cluster.exemplars[i], raw) for i in order[: self.settings.max_exemplars]),
            first_seen=cluster.first_seen,
            last_seen=cluster.last_seen,
            status=self._status(cluster, recent),
            exemplar_ids=tuple(cluster.exemplars[i].event_id for i in order),
            label=cluster.label,
        )

    @staticmethod
    def _status(cluster: _Cluster, recent: float) -> ClusterStatus:
        return "emerging" if cluster.active else ("dormant" if recent < 1.0 else "tracking")

    def status_counts(self) -> dict[tuple[str, ClusterStatus], int]:
        """Clusters per (scope, status), cheap enough for every batch (no keywords): for metrics."""
        counts: dict[tuple[str, ClusterStatus], int] = {}
        for scope, st in self._scopes.items():
            for cluster in st.clusters.values():
                key = (scope, self._status(cluster, self._recent(st, cluster)[0]))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def clusters(self, scope: str = "global", raw: bool = False) -> list[ClusterSummary]:
        """Clusters of ``scope``, alerting first, then by share of traffic; keywords computed fresh.

        Exemplars are redacted; ``raw=True`` (the API layer decides who may ask) gives the raw
        texts where ``store_raw_text`` kept them. Keywords always come from redacted texts."""
        st = self._scopes.get(scope)
        if st is None or not st.clusters:
            return []
        words = self._keywords(st)
        out = [self._summary(scope, st, c, words[cid], raw) for cid, c in st.clusters.items()]
        return sorted(out, key=lambda s: (s.status != "emerging", -s.share_of_traffic, s.id))

    def cluster(self, cluster_id: str, scope: str = "global", raw: bool = False) -> ClusterSummary | None:
        return next((c for c in self.clusters(scope, raw) if c.id == cluster_id), None)

    def scopes(self) -> list[str]:
        return list(self._scopes)

    # ------------------------------------------------------------------ triage
    def label_cluster(self, cluster_id: str, label: str, explained: bool = False) -> list[Condition]:
        """A reviewer decided what cluster ``cluster_id`` is: it, and the clusters of other scopes whose
        centroid matches it (the same traffic forms one cluster per scope), become known regions that
        never alert again; their open alerts resolve (the returned conditions). ``explained``: ``label``
        is a category the judge was taught for this region, so events it files there stop being
        candidates at all. Raises ``KeyError`` for an unknown id."""
        found = next(((n, st, st.clusters[cluster_id]) for n, st in self._scopes.items() if cluster_id in st.clusters), None)
        if found is None:
            raise KeyError(cluster_id)
        centroid = found[2].centroid
        if explained:
            self._explained.add(label)
        out: list[Condition] = []
        for name, st in self._scopes.items():
            for cluster in st.clusters.values():
                if cluster is not found[2] and (cluster.label is not None or float(cluster.centroid @ centroid) < self.settings.join_similarity):
                    continue
                cluster.label = label
                if cluster.active:
                    cluster.active, cluster.changed = False, False
                    out.append(self._condition(name, st, cluster, self._threshold(st), st.now))
        return out

    def unlabel_cluster(self, cluster_id: str) -> None:
        """Triage reverted the label of ``cluster_id``: it, and the clusters of other scopes that took the
        label with it (:meth:`label_cluster`'s centroid rule), are watched again and may alert anew. An id
        no longer held (evicted, or not formed yet after a restart) is ignored."""
        found = next((st.clusters[cluster_id] for st in self._scopes.values() if cluster_id in st.clusters), None)
        if found is None or found.label is None:
            return
        label, centroid = found.label, found.centroid
        for st in self._scopes.values():
            for cluster in st.clusters.values():
                if cluster.label == label and (cluster is found or float(cluster.centroid @ centroid) >= self.settings.join_similarity):
                    cluster.label = None

    def retain_labels(self, labels: Collection[str]) -> None:
        """Keep only the cluster labels in ``labels`` (the taxonomy's, ``safe`` and the categories triage still
        teaches): a label triage reverted, or one a snapshot older than the triage state still held, no
        longer names a cluster, and its events are candidates again."""
        self._explained &= set(labels)
        for st in self._scopes.values():
            for cluster in st.clusters.values():
                if cluster.label is not None and cluster.label not in labels:
                    cluster.label = None

    def readings(self) -> list[Reading]:
        """Per scope: the largest cluster share against the alert threshold (no cluster ids as labels)."""
        out = []
        for scope, st in self._scopes.items():
            shares = [self._recent(st, c)[1] for c in st.clusters.values()]
            out.append(Reading(self.name, scope, "", max(shares, default=0.0), self.threshold(scope),
                               any(c.active for c in st.clusters.values())))
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "texts": "redacted" if self.redactor.enabled else "raw",
            "seen": self._seen,
            "dim": self._dim,
            "regions": self._regions.state_dict() if self._regions is not None else None,
            "reference_density": self._gate.reference.state_dict() if self._gate is not None else None,
            "sample": list(self._sample),
            "candidates": list(self._candidates),
            "candidate_events": self._candidate_events,
            "flagged": list(self._flagged),
            "flagged_categories": list(self._flagged_categories),
            "explained": sorted(self._explained),
            "scopes": {
                name: {
                    "buffer": [m.to_state() for m in st.buffer],
                    "clock": st.clock,
                    "judged": st.judged,
                    "traffic": st.traffic,
                    "baseline_traffic": st.baseline_traffic,
                    "now": st.now,
                    "since_recluster": st.since_recluster,
                    "calibration_max_share": st.calibration_max_share,
                    "clusters": [c.to_state() for c in st.clusters.values()],
                    "window": st.window.state_dict(lambda m: self._redacted(m).to_state()) if st.window is not None else None,
                }
                for name, st in self._scopes.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen = int(state["seen"])
        self._dim = state["dim"]
        self._regions = KnownRegions.from_state(state["regions"]) if state["regions"] is not None else None
        density = state["reference_density"]
        self._gate = self._make_gate(ReferenceDensity.from_state(density)) if density is not None else None
        self._sample = list(state["sample"])
        self._candidates = list(state["candidates"])
        self._candidate_events = int(state["candidate_events"])
        self._flagged = list(state["flagged"])
        self._flagged_categories = list(state["flagged_categories"])
        self._explained = set(state.get("explained", ()))
        self._scopes = {}
        member = self._member_loader(state.get("texts", "raw"))
        for name, s in state["scopes"].items():
            clusters = [_Cluster.from_state(c, member) for c in s["clusters"]]
            self._scopes[name] = _Scope(
                buffer=deque((member(m) for m in s["buffer"]), maxlen=self.settings.buffer_size),
                clock=s["clock"],
                judged=int(s.get("judged", round(s["clock"]))),  # snapshots before this field: the weighted clock
                traffic=s["traffic"],
                baseline_traffic=s["baseline_traffic"],
                now=s["now"],
                since_recluster=s["since_recluster"],
                calibration_max_share=s["calibration_max_share"],
                clusters={c.id: c for c in clusters},
                window=RecentWindow.from_state(s["window"], member) if s["window"] is not None else None,
            )

    def _member_loader(self, texts: str) -> Callable[[Sequence[Any]], _Member]:
        """Members from a snapshot; one written before redaction (or with it off) is redacted now, and
        its raw texts kept only with ``store_raw_text``."""
        if texts == "redacted" or not self.redactor.enabled:
            return lambda m: _Member(*m)

        def load(m: Sequence[Any]) -> _Member:
            member = _Member(*m)
            raw = member.raw_text if member.raw_text is not None else member.text
            return replace(member, text=self.redactor(member.text), raw_text=raw if self.store_raw_text else None)
        return load


def _exemplar(member: _Member, raw: bool) -> str:
    return member.raw_text if raw and member.raw_text is not None else member.text


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}: must be > 0, got {value}")


def _fraction(**values: float) -> None:
    for name, value in values.items():
        if not 0 < value < 1:
            raise ValueError(f"{name}: must be between 0 and 1 (exclusive), got {value}")


def _cosine(**values: float) -> None:
    for name, value in values.items():
        if not -1 < value < 1:
            raise ValueError(f"{name}: must be a cosine between -1 and 1 (exclusive), got {value}")
