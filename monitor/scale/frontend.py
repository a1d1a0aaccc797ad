"""The api role: validate, deduplicate and append events to the stream; answer reads from Redis.

An API replica loads no model and keeps no state, so replicas scale freely behind a load
balancer. Checking each id (``SET NX EX``) and appending the new events (``XADD``) happen in one
Lua script, atomically: an id is remembered if and only if its event is in the stream, so a
client's resend after any failure is safe, and two replicas never both take the same id. The
script also enforces the backlog bound: when the stream holds ``queue_capacity`` unprocessed
events the request is refused whole (503, nothing taken). Events stamped more than
``max_future_skew_seconds`` after arrival are rejected, as in the embedded mode.

It offers what the HTTP routes use of :class:`~monitor.pipeline.service.MonitorService`
(``ingest_async``, ``status``, ``alerts``, ``alert``, ``metrics``, ``observe_feedback``, ...):
``/v1/status`` and ``/v1/alerts`` answer from what the partition owners publish
(:class:`~monitor.scale.published.PublishedState`), so every replica answers the same, and
feedback is forwarded to them (:class:`~monitor.scale.feedback.FeedbackForwarder`). Every Redis
call of a request runs in a worker thread, never on the event loop: a slow Redis cannot delay
``/healthz``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from monitor.backend import NotReady
from monitor.config import Settings
from monitor.drift.feedback_disagreement import FeedbackDisagreementDetector
from monitor.export.metrics import MonitorMetrics
from monitor.ingest.counts import IngestCounter, Tally
from monitor.ingest.parsing import ParsedBody
from monitor.ingest.request import IngestOutcome, IngestRequest
from monitor.scale.feedback import FeedbackForwarder
from monitor.scale.published import COUNTERS, PublishedReads, PublishedState
from monitor.scale.streams import StreamKeys, encode_event
from monitor.state.redis_store import UNAVAILABLE_ERRORS
from monitor.taxonomy import load_taxonomy

# KEYS[1] events stream; ARGV[1] dedup key prefix, ARGV[2] ttl, ARGV[3] capacity, then id, payload pairs.
# Returns {0} when the backlog is full (nothing taken), else {1, new_1, new_2, ...} (1 = appended, 0 = seen).
_INGEST = """
local new = {}
local n_new = 0
for i = 4, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    new[i] = true
    n_new = n_new + 1
  end
end
if n_new > 0 and redis.call('XLEN', KEYS[1]) + n_new > tonumber(ARGV[3]) then
  return {0}
end
local out = {1}
for i = 4, #ARGV, 2 do
  if new[i] then
    redis.call('SET', ARGV[1] .. ARGV[i], '1', 'EX', ARGV[2])
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""


class StreamFrontend(PublishedReads):
    role = "api"

    def __init__(self, settings: Settings, client: redis.Redis, metrics: MonitorMetrics | None = None) -> None:
        self.settings = settings
        self.client = client
        self.keys = StreamKeys(settings.state_key_prefix)
        self.metrics = metrics or MonitorMetrics()
        # Reports come from the detector role's reservoir; nothing is judged here.
        self.report_reservoir = None
        self._ingest = client.register_script(_INGEST)
        self.published = PublishedState(client, self.keys, settings.detector_partitions, settings.queue_capacity)
        self.feedback = forwarder(settings, client)
        self.metrics.queue_capacity.set(settings.queue_capacity)
        self.metrics.sampling_rate.set(1.0)
        self.metrics.watch_queue(self.published.watched_backlog())
        self.counter = IngestCounter(self.metrics, SharedCounts(client, self.keys))

    # ---------------------------------------------------------------- ingest
    async def ingest_async(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        """:meth:`ingest` in a worker thread: its Redis round trip never blocks the event loop."""
        return await asyncio.to_thread(self.ingest, parsed, arrival_time, sender)

    def ingest(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        request = IngestRequest.screen(parsed, arrival_time, self.settings, sender)
        received, outcome, candidates = request.n_received, request.outcome, request.candidates
        args: list[Any] = [self.keys.event_id(""), self.settings.dedup_ttl_seconds, self.settings.queue_capacity]
        for key, event in candidates.items():
            args += [key, encode_event(event)]
        try:
            reply = self._ingest(keys=[self.keys.events], args=args) if candidates else [1]
        except UNAVAILABLE_ERRORS as exc:
            outcome.unavailable, outcome.duplicates = f"redis: appending events failed: {type(exc).__name__}: {exc}", 0
            self.counter.record(Tally.of_request(received, outcome, 0, refused=("store_unavailable", request.refused)))
            return outcome
        if reply[0] == 0:
            outcome.queue_full, outcome.duplicates = True, 0
            self.counter.record(Tally.of_request(received, outcome, 0, refused=("queue_full", request.refused)))
            return outcome
        appended = [e for e, flag in zip(candidates.values(), reply[1:]) if flag]
        outcome.duplicates += len(candidates) - len(appended)
        outcome.accepted = len(appended) + outcome.duplicates
        self.counter.record(Tally.of_request(received, outcome, len(appended), truncated=sum(e.truncated for e in appended)))
        return outcome

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        return None

    async def stop(self, drain_timeout: float = 0.0) -> None:
        self.client.close()

    @property
    def running(self) -> bool:
        return True

    # ---------------------------------------------------------------- reads (StoreUnavailable, a 503, while Redis is down)
    @property
    def judge_version(self) -> str:
        return self.published.owners()[0].get("judge_version") or "unknown (no detector owner yet)"

    def status(self) -> dict[str, Any]:
        return {"role": self.role, **self.published.status()}

    # ---------------------------------------------------------------- detector-only features
    def _detector_only(self, what: str) -> NotReady:
        return NotReady(f"{what} is served by the detector role (monitor serve --role detector), not by api replicas", self.settings.retry_after_seconds)

    def clusters(self, scope: str, raw: bool = False) -> Any:
        raise self._detector_only("/v1/clusters")

    def find_cluster(self, cluster_id: str, raw: bool = False) -> Any:
        raise self._detector_only("/v1/clusters")


class SharedCounts:
    """The ingest counts every api replica adds to in Redis (``/v1/status`` reads their sum)."""

    def __init__(self, client: redis.Redis, keys: StreamKeys) -> None:
        self.client = client
        self.keys = keys

    def record(self, tally: Tally) -> None:
        if tally.refused:
            return  # Redis refused or is down: the shared counters need not (cannot) hear of it
        pipe = self.client.pipeline(transaction=False)
        for name in COUNTERS:
            if getattr(tally, name):
                pipe.hincrby(self.keys.counts, name, getattr(tally, name))
        try:
            pipe.execute()
        except UNAVAILABLE_ERRORS:
            pass  # the events are in; only the shared counters miss this request


def forwarder(settings: Settings, client: redis.Redis) -> FeedbackForwarder:
    """The feedback path of the api and detector roles."""
    return FeedbackForwarder(
        client,
        StreamKeys(settings.state_key_prefix),
        settings.detector_partitions,
        load_taxonomy().ids,
        enabled=FeedbackDisagreementDetector.name in settings.detectors,
        capacity=settings.queue_capacity,
        retry_after=settings.retry_after_seconds,
    )
