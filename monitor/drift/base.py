"""The detector interface every drift signal implements."""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

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
