"""The detector interface every drift signal implements."""

from __future__ import annotations

from typing import Any, Collection, Protocol, Sequence, runtime_checkable

from monitor.signals import Condition, Reading
from monitor.events import ScoredEvent


@runtime_checkable
class Detector(Protocol):
    """An online detector driven by event time.

    ``update`` sees each judged event exactly once, in pipeline order, and returns the conditions
    whose state it has an opinion on after this batch (typically only keys that changed or are
    active). State must round-trip through ``state_dict``/``load_state_dict`` (picklable values)
    so a restored detector continues exactly as an uninterrupted one.
    """

    name: str
    alert_kind: str  # the ``kind`` of the alerts it raises (usually its name)

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]: ...

    def readings(self) -> list[Reading]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class ClusterQueries(Protocol):
    """A detector that keeps clusters a person can look at (``/v1/clusters``, cluster metrics).

    The service finds it by this capability, not by class, so another clustering detector can
    serve the same routes. Callers hold the service's state lock.
    """

    def scopes(self) -> list[str]: ...

    def status_counts(self) -> dict[tuple[str, str], int]: ...

    def clusters(self, scope: str, raw: bool = False) -> Any: ...

    def cluster(self, cluster_id: str, scope: str, raw: bool = False) -> Any: ...


# Capabilities beyond the Detector protocol. The service, the triage console and the UI find
# detectors by these, never by class, so a second detector with the same capability serves the
# same routes and actions. Callers hold the service's state lock.


@runtime_checkable
class ClusterLabels(Protocol):
    """Clusters a reviewer can name: a labelled region is known from then on (no more alerts)."""

    def label_cluster(self, cluster_id: str, label: str, explained: bool = False) -> list[Condition]: ...

    def unlabel_cluster(self, cluster_id: str) -> None: ...

    def retain_labels(self, labels: Collection[str]) -> None: ...


@runtime_checkable
class CategoryReferences(Protocol):
    """Keeps a reference share per category: learns a reviewer's new category, shows its references."""

    def add_category(self, key: str) -> bool: ...

    def retain_categories(self, keys: Collection[str], at: float) -> list[Condition]: ...

    def references(self) -> dict[str, dict[str, float]]: ...


@runtime_checkable
class Resettable(Protocol):
    """Restarts one key's test (after a reviewer dismissed its alert as a false alarm), so the
    evidence it already had does not fire it again. Detectors of the suite that have it are found
    by their type; anything else (the canary prober) registers in ``MonitorService.resettables``."""

    alert_kind: str

    def reset(self, scope: str, key: str) -> bool: ...


@runtime_checkable
class FeedbackSink(Protocol):
    """Takes ground-truth labels (``/v1/feedback``); returns the label's status and any conditions."""

    def observe(self, feedback: Any) -> tuple[str, list[Condition]]: ...
