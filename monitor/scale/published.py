"""What ``/v1/status`` and ``/v1/alerts`` answer in scale-out mode: what the API replicas count and
what every partition's owner publishes, read from Redis, so every replica answers the same.

Pipeline counts (``processed``, ``judged``, ``dropped``, event time) come from partition 0, the
``global`` scope's, which sees every event; alerts are the union of every partition's (their
scopes are disjoint, so their ids are too). When Redis cannot be read these raise
:class:`~monitor.state.store.StoreUnavailable` and the app answers 503: nothing stale is served
as if it were current.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, TypeVar

import redis

from monitor.alerts.engine import Alert
from monitor.drift.feedback_disagreement import Feedback
from monitor.ingest.parsing import Rejection
from monitor.scale.feedback import FeedbackForwarder
from monitor.scale.streams import StreamKeys
from monitor.state.redis_store import UNAVAILABLE_ERRORS
from monitor.state.store import StoreUnavailable

COUNTERS = ("received", "accepted", "duplicates", "rejected", "truncated")
ALERT_FIELDS = frozenset(f.name for f in dataclasses.fields(Alert))
T = TypeVar("T")


class PublishedState:
    def __init__(self, client: redis.Redis, keys: StreamKeys, partitions: int, queue_capacity: int) -> None:
        self.client = client
        self.keys = keys
        self.partitions = [keys.partition(p) for p in range(partitions)]
        self.queue_capacity = queue_capacity

    def _read(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"redis: reading {what} failed: {type(exc).__name__}: {exc}") from exc

    def owners(self) -> list[dict[str, Any]]:
        """Each partition's published status ({} while it has had no owner)."""
        raw = self._read("detector status", lambda: self.client.mget([p.status for p in self.partitions]))
        return [json.loads(data) if data else {} for data in raw]

    def backlog(self) -> int:
        """Events in the stream not yet trimmed (``XLEN``): the scale-out queue depth."""
        return int(self._read("backlog", lambda: self.client.xlen(self.keys.events)))

    def watched_backlog(self) -> Callable[[], float]:
        """:meth:`backlog` for a scrape-time gauge: while Redis is down a scrape shows the last value read."""
        last = [0.0]

        def read() -> float:
            try:
                last[0] = float(self.backlog())
            except StoreUnavailable:
                pass
            return last[0]

        return read

    def status(self) -> dict[str, Any]:
        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.counts)
            pipe.xlen(self.keys.events)
            pipe.mget([p.status for p in self.partitions])
            return pipe.execute()

        counts, depth, raw = self._read("status", read)
        counts = {k.decode(): int(v) for k, v in counts.items()}
        owners = [json.loads(data) if data else {} for data in raw]
        main = owners[0]
        return {
            **{name: counts.get(name, 0) for name in COUNTERS},
            "processed": main.get("processed", 0),
            "judged": main.get("judged", 0),
            "sampled_out": 0,
            "dropped": main.get("dropped", {}),
            "redelivered": main.get("redelivered", 0),
            "queue_depth": depth,
            "queue_capacity": self.queue_capacity,
            "sampling": "off",
            "sampling_rate": 1.0,
            "event_time": main.get("event_time"),
            "judge_version": main.get("judge_version"),
            "detector_owners": [o.get("owner") for o in owners],
            "worker_running": True,
            "latency": {},
        }

    def alerts(self, status: str = "all") -> list[Alert]:
        raw = self._read("alerts", lambda: self.client.mget([p.alerts for p in self.partitions]))
        # Fields a newer release publishes are ignored, so replicas of mixed versions keep answering.
        alerts = [Alert(**{k: v for k, v in d.items() if k in ALERT_FIELDS}) for data in raw if data for d in json.loads(data)]
        alerts = [a for a in alerts if status == "all" or a.status == status]
        return sorted(alerts, key=lambda a: (a.started_at, a.id), reverse=True)

    def alert(self, alert_id: str) -> Alert | None:
        return next((a for a in self.alerts("all") if a.id == alert_id), None)


class PublishedReads:
    """The reads every scale-out process answers alike: alerts from what the owners publish, and
    feedback forwarded to them (api replicas and detector processes both mix this in)."""

    published: PublishedState
    feedback: FeedbackForwarder

    def alerts(self, status: str = "all") -> list[Alert]:
        return self.published.alerts(status)

    def alert(self, alert_id: str) -> Alert | None:
        return self.published.alert(alert_id)

    def observe_feedback(self, labels: list[tuple[int, Feedback]]) -> tuple[dict[str, int], list[Rejection]]:
        return self.feedback.forward(labels)
