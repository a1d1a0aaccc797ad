"""The triage actions: a reviewer labels a cluster or acts on an alert, and the monitor learns from it.

Every action is validated first (a bad field is a :class:`TriageError` naming it, answered as a
4xx), then applied to a copy of the triage state, saved to the state store, and only then swapped
in and applied to the running judge and detectors: a store that is down (503) leaves nothing
half-done. One action runs at a time. Every action appends an audit entry (who: the token's name,
when: wall time, why: the reviewer's reason, redacted like every stored text).

Cluster actions: ``new_category`` (a validated id, added to the taxonomy at run time, at most
``max_categories``), ``existing_category``, ``benign`` (a false positive: label ``safe``) and
``split`` (label individual exemplars). The cluster's exemplars become labelled examples, the
online layer is refitted (a new ``judge_version``), and the emerging-cluster detector treats the
region as known: it resolves the open alert and never alerts on it again. A new category is
also watched by the category-share detector against a fresh reference. Alert actions:
``acknowledge``, ``silence`` (for a duration; pushed to Alertmanager when configured) and
``false_alarm`` (resolve now; detectors that can restart the key's test do). A silence also mutes
the monitor's own webhooks and Slack (:meth:`Triage.silences`). ``revert`` drops the
newest online-model revision, the labels it added and the categories it created; the clusters that
revision named are watched again, and the share detector stops watching the categories it created.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol, Sequence

from monitor.signals import Condition
from monitor.alerts.engine import Alert, Transition
from monitor.alerts.notice import Notice
from monitor.drift.base import CategoryReferences, ClusterLabels, Resettable
from monitor.drift.emerging_clusters import KIND as EMERGING_KIND, ClusterSummary
from monitor.config import Settings
from monitor.drift.suite import DetectorSuite
from monitor.export.metrics import MonitorMetrics
from monitor.taxonomy import SAFE
from monitor.privacy.redact import Redactor
from monitor.state.store import StateStore
from monitor.triage.alertmanager import Silencer
from monitor.triage.online import Example, TriageJudge, fit_model
from monitor.triage.recent import RecentEvents, Seen
from monitor.triage.state import Labelled, Limits, TriageState

CLUSTER_ACTIONS: tuple[str, ...] = ("new_category", "existing_category", "benign", "split")
ALERT_ACTIONS: tuple[str, ...] = ("acknowledge", "silence", "false_alarm")
NAME = re.compile(r"^[a-z][a-z0-9_]{2,47}$")
MAX_REASON = 500
MIN_SILENCE_S, MAX_SILENCE_S = 60.0, 30 * 86400.0
MAX_SPLIT = 100


class TriageError(Exception):
    """A refused action: HTTP ``status`` and ``message`` = ``"<field>: <what is wrong>"``, and ``headers`` to send
    along (a 503's ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class TriageHost(Protocol):
    """What triage needs from the running service (:class:`~monitor.pipeline.service.MonitorService`)."""

    settings: Settings
    store: StateStore
    metrics: MonitorMetrics
    detectors: DetectorSuite
    resettables: list[Resettable]
    event_time: float | None

    def apply(self, change: Callable[[], list[Condition]]) -> list[Transition]: ...

    def alert(self, alert_id: str) -> Alert | None: ...

    def find_cluster(self, cluster_id: str, raw: bool = False) -> ClusterSummary | None: ...


@dataclass(frozen=True, slots=True)
class SplitLabel:
    event_id: str
    category: str


class Triage:
    """The actions, on one service. ``base_categories`` are the harm categories the shipped judge scores."""

    def __init__(self, host: TriageHost, judge: TriageJudge, recent: RecentEvents, base_categories: Sequence[str],
                 redactor: Redactor, store_raw_text: bool = False, silencer: Silencer | None = None,
                 limits: Limits = Limits(), clock: Callable[[], float] = time.time) -> None:
        self.host, self.judge, self.recent = host, judge, recent
        self.base_categories = tuple(base_categories)
        self.redactor, self.store_raw_text, self.silencer = redactor, store_raw_text, silencer
        self.clock = clock
        self._lock = threading.Lock()
        self.state = TriageState.load(host.store, limits)
        self._silenced = self.state.silence_ends()
        self._install(self.state, TriageState(limits), relabel_clusters=True)

    # ------------------------------------------------------------------ reads
    @property
    def categories(self) -> list[str]:
        """Every category a label may name: the shipped harm ids, then those learned at run time."""
        return [*self.base_categories, *self.state.categories]

    def silences(self, notice: Notice) -> bool:
        """Whether a reviewer's silence covers ``notice`` now (wall time, as the silence's duration is).

        Alert delivery asks before it sends to the monitor's own webhooks and Slack, which have no
        silences of their own: a silence covers its alert and any later one with the same kind, scope
        and key, as the silence pushed to Alertmanager does. Reads the committed state without the
        lock: an action swaps in a new state (and its silences' index) and never changes a committed one.
        Delivery asks for every held notice with every batch, under the service's state lock: two lookups.
        """
        now, (by_alert, by_fingerprint) = self.clock(), self._silenced
        return by_alert.get(notice.id, 0.0) > now or by_fingerprint.get(notice.fingerprint, 0.0) > now

    def audit(self, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self.state.audit[-limit:]))

    # ------------------------------------------------------------------ cluster actions
    def label_cluster(self, who: str, cluster_id: str, action: str, *, name: str | None = None, category: str | None = None,
                      description: str | None = None, labels: Sequence[SplitLabel] = (), reason: str = "") -> dict[str, Any]:
        reason = self._reason(reason)
        if action not in CLUSTER_ACTIONS:
            raise TriageError(422, f"action: must be one of {', '.join(CLUSTER_ACTIONS)}, got {action!r}")
        with self._lock:
            cluster = self.host.find_cluster(cluster_id)
            if cluster is None:
                raise TriageError(404, f"cluster_id: no cluster {cluster_id!r}")
            if cluster.label is not None and action != "split":
                raise TriageError(409, f"cluster_id: cluster {cluster_id} is already labelled {cluster.label!r}")
            state = self.state.copy()
            detail: dict[str, Any] = {}
            if action == "split":
                pairs = self._split(cluster, labels)
                detail["labels"] = [asdict(p) for p in pairs]
            else:
                label = {"new_category": lambda: self._new_category(state, name, description, who),
                         "existing_category": lambda: self._existing(category),
                         "benign": lambda: SAFE}[action]()
                pairs = [SplitLabel(e, label) for e in cluster.exemplar_ids]
                detail["label"] = label
                state.clusters[cluster_id] = label
                state.cluster_revisions[cluster_id] = state.next_revision  # the revision _commit fits
            seen = self._reachable(pairs)
            for pair in pairs:
                if pair.event_id in seen:
                    state.add_label(self._labelled(seen[pair.event_id], pair.category, who, cluster_id, state.next_revision))
            detail["examples"] = len(seen)
            return self._commit(state, who, f"cluster.{action}", cluster_id, detail, reason)

    def _new_category(self, state: TriageState, name: str | None, description: str | None, who: str) -> str:
        if not name or not NAME.match(name):
            raise TriageError(422, f"name: 3-48 characters, lower-case letters, digits and '_', starting with a letter; got {name!r}")
        if name in (SAFE, "unsafe") or name in self.categories:
            raise TriageError(409, f"name: category {name!r} already exists")
        if len(state.categories) >= state.limits.max_categories:
            raise TriageError(409, f"name: at most {state.limits.max_categories} categories can be learned at run time; revert one first")
        if description is not None and len(description) > MAX_REASON:
            raise TriageError(422, f"description: at most {MAX_REASON} characters")
        state.categories[name] = {"description": self.redactor(description or ""), "by": who, "at": self.clock(),
                                  "revision": state.next_revision}
        return name

    def _existing(self, category: str | None) -> str:
        if not category or category not in self.categories:
            raise TriageError(422, f"category: {category!r} is not a category (one of {', '.join(self.categories)})")
        return category

    def _split(self, cluster: ClusterSummary, labels: Sequence[SplitLabel]) -> list[SplitLabel]:
        if not labels:
            raise TriageError(422, "labels: split needs at least one {event_id, category}")
        if len(labels) > MAX_SPLIT:
            raise TriageError(413, f"labels: at most {MAX_SPLIT} per request")
        allowed = [SAFE, *self.categories]
        first: dict[str, int] = {}
        for i, item in enumerate(labels):
            if item.event_id not in cluster.exemplar_ids:
                raise TriageError(422, f"labels[{i}].event_id: {item.event_id!r} is not an exemplar of cluster {cluster.id}")
            if item.category not in allowed:
                raise TriageError(422, f"labels[{i}].category: {item.category!r} is not 'safe' or a category")
            if item.event_id in first:  # two labels for one event: neither may silently win
                raise TriageError(422, f"labels[{i}].event_id: {item.event_id!r} is labelled in labels[{first[item.event_id]}] already")
            first[item.event_id] = i
        return list(labels)

    def _reachable(self, pairs: Sequence[SplitLabel]) -> dict[str, Seen]:
        seen = {p.event_id: s for p in pairs if (s := self.recent.get(p.event_id)) is not None}
        if not seen:
            raise TriageError(409, "cluster_id: none of its exemplars is among the recent events any more (recent_events bound); "
                                   "wait for new members")
        return seen

    def _labelled(self, seen: Seen, label: str, who: str, cluster_id: str | None, revision: int) -> Labelled:
        return Labelled(seen.event_id, label, seen.timestamp, seen.embedding, self.redactor(seen.prompt),
                        None if seen.response is None else self.redactor(seen.response), seen.scopes[-1] if seen.scopes else "global", seen.category,
                        seen.response_flagged, seen.refused, who, self.clock(), cluster_id, revision,
                        seen.prompt if self.store_raw_text else None, seen.response if self.store_raw_text else None)

    # ------------------------------------------------------------------ alert actions
    def act_on_alert(self, who: str, alert_id: str, action: str, *, seconds: float | None = None, reason: str = "") -> dict[str, Any]:
        reason = self._reason(reason)
        if action not in ALERT_ACTIONS:
            raise TriageError(422, f"action: must be one of {', '.join(ALERT_ACTIONS)}, got {action!r}")
        if action == "silence" and (seconds is None or not MIN_SILENCE_S <= seconds <= MAX_SILENCE_S):
            raise TriageError(422, f"duration_seconds: a silence lasts {MIN_SILENCE_S:.0f} s to {MAX_SILENCE_S:.0f} s, got {seconds!r}")
        with self._lock:
            alert = self.host.alert(alert_id)
            if alert is None:
                raise TriageError(404, f"alert_id: no alert {alert_id!r}")
            if action == "false_alarm" and alert.status == "resolved":
                raise TriageError(409, f"alert_id: alert {alert_id} is already resolved")
            state = self.state.copy()
            now = self.clock()
            mark = state.mark(alert_id, now)
            detail: dict[str, Any] = {"kind": alert.kind, "scope": alert.scope, "key": alert.key}
            if action == "acknowledge":
                mark.acknowledged_by, mark.acknowledged_at = who, now
            elif action == "silence":
                assert seconds is not None
                mark.silenced_until, mark.silenced_fingerprint = now + seconds, alert.fingerprint
                results = self.silencer.silence(alert, seconds, who, reason) if self.silencer is not None else []
                mark.silence_ids += [r.silence_id for r in results if r.silence_id]
                detail.update(duration_seconds=seconds, alertmanager=[asdict(r) for r in results])
            else:
                mark.false_alarm_by = who
                if alert.kind == EMERGING_KIND:
                    state.clusters[alert.key] = SAFE  # the region is known (benign) from now on, also after a restart
            out = self._commit(state, who, f"alert.{action}", alert_id, detail, reason)
            if action == "false_alarm":
                self.host.apply(lambda: self._dismiss(alert, who))
            return out

    def _dismiss(self, alert: Alert, who: str) -> list[Condition]:
        """The condition that resolves ``alert`` now (state lock held); the category-share detector and the
        canary prober first restart the key's test, so a false alarm does not fire again on the evidence it
        already had (for a probe alert: the model's new behaviour becomes the reference)."""
        for detector in [*self.host.detectors.having(Resettable), *self.host.resettables]:
            if detector.alert_kind == alert.kind:
                detector.reset(alert.scope, alert.key)
        at = self.host.event_time if self.host.event_time is not None else alert.updated_at
        return [Condition(alert.kind, alert.scope, alert.key, False, at, alert.severity, f"resolved as a false alarm by {who}")]

    # ------------------------------------------------------------------ revert
    def revert(self, who: str, reason: str = "") -> dict[str, Any]:
        """Restore the judge of the revision before the newest: its labels and new categories go too."""
        reason = self._reason(reason)
        with self._lock:
            if not self.state.models:
                raise TriageError(409, "revert: nothing to revert, the judge is the shipped one")
            state = self.state.copy()
            dropped = state.models.pop().revision
            for event_id in [k for k, v in state.labels.items() if v.revision == dropped]:
                del state.labels[event_id]
            for name in [k for k, v in state.categories.items() if v["revision"] == dropped]:
                del state.categories[name]
            unnamed = [k for k, r in state.cluster_revisions.items() if r == dropped]
            for cluster_id in unnamed:  # watched again: a wrong label must not leave the monitor blind to the cluster
                del state.cluster_revisions[cluster_id]
                state.clusters.pop(cluster_id, None)
            return self._commit(state, who, "judge.revert", f"triage-{dropped}",
                                {"reverted_revision": dropped, "clusters_unlabelled": unnamed}, reason, refit=False)

    # ------------------------------------------------------------------ commit
    def _commit(self, state: TriageState, who: str, action: str, target: str, detail: dict[str, Any], reason: str,
                refit: bool = True) -> dict[str, Any]:
        """Refit (label actions), record, save, then swap the state in and apply it. Lock held."""
        before = self.judge.version
        if refit and action.startswith("cluster."):
            examples = [Example(v.label, v.embedding, v.timestamp) for v in state.labels.values()]
            state.push_model(fit_model(state.next_revision, examples, self.recent.background))
        state.seq += 1
        entry = {"seq": state.seq, "at": self.clock(), "who": who, "action": action, "target": target, "reason": reason,
                 "judge_version_before": before, "detail": detail}
        entry["judge_version_after"] = self.judge.version_of(state.model)
        state.record(entry)
        state.save(self.host.store)  # StoreUnavailable: nothing was applied
        previous, self.state, self._silenced = self.state, state, state.silence_ends()
        self._install(state, previous)
        return entry

    def _install(self, state: TriageState, previous: TriageState, relabel_clusters: bool = False) -> None:
        """Put ``state``'s model into the judge and its categories and cluster labels into the detectors."""
        old_version = self.judge.version
        self.judge.install(state.model, list(state.categories))
        learned = set(state.categories)
        labelling = self.host.detectors.having(ClusterLabels)
        references = self.host.detectors.having(CategoryReferences)
        fresh = {k: v for k, v in state.clusters.items() if relabel_clusters or previous.clusters.get(k) != v}
        unlabelled = [k for k in previous.clusters if k not in state.clusters]
        labels = {SAFE, *self.base_categories, *learned}

        def change() -> list[Condition]:
            # Detectors keep only what the triage state teaches: after a revert, and after a restart from a
            # detector snapshot written before the triage state's last action.
            out: list[Condition] = []
            at = self.host.event_time if self.host.event_time is not None else 0.0  # no event yet: no alarm to resolve
            for share in references:
                for name in learned:
                    share.add_category(name)
                out += share.retain_categories(learned, at)
            for clusters in labelling:
                clusters.retain_labels(labels)
                for cluster_id in unlabelled:
                    clusters.unlabel_cluster(cluster_id)
                for cluster_id, label in fresh.items():
                    try:
                        out += clusters.label_cluster(cluster_id, label, explained=label in learned)
                    except KeyError:
                        pass  # evicted, or not formed yet after a restart: nothing left to resolve
            return out

        self.host.apply(change)
        if self.judge.version != old_version:
            self.host.metrics.judge_info.remove(old_version)
            self.host.metrics.judge_info.labels(judge_version=self.judge.version).set(1)
            self.host.metrics.set_build_info(self.judge.version, self.host.settings.embedding_model)

    def _reason(self, reason: str | None) -> str:
        reason = (reason or "").strip()
        if len(reason) > MAX_REASON:
            raise TriageError(422, f"reason: at most {MAX_REASON} characters, got {len(reason)}")
        return self.redactor(reason)
