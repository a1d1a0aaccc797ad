"""``POST /v1/feedback`` in scale-out mode: labels go to the detector partitions through Redis.

Any replica (api or detector role) takes labels; the owners of the partitions hold the judged
events they match. A replica cannot know an event's scopes (only the partition that judged it
remembers them), so every label is appended to every partition's feedback stream in one Lua call
(all or nothing, refused whole with 503 when a stream already holds ``queue_capacity`` labels);
each owner matches it against the events of its own scopes, and partition 0 (``global``, which
has every event) counts the outcome in ``llmsafety_feedback_total{status}``. The answer is 202
``{"queued": n, "rejected": [...]}``: matching happens later, on the owners. A resent label is
harmless: a second label for the same event is counted as ``duplicate`` and ignored.
"""

from __future__ import annotations

from typing import Sequence

import redis

from monitor.backend import NotReady
from monitor.drift.feedback_disagreement import Feedback, FeedbackDisagreementDetector, check_category
from monitor.ingest.parsing import Rejection
from monitor.taxonomy import SAFE
from monitor.scale.streams import StreamKeys, encode_feedback
from monitor.state.redis_store import UNAVAILABLE_ERRORS
from monitor.state.store import StoreUnavailable

# KEYS: every partition's feedback stream; ARGV[1] capacity, then the labels. 0: a stream is full, nothing taken.
_FORWARD = """
for _, key in ipairs(KEYS) do
  if redis.call('XLEN', key) + #ARGV - 1 > tonumber(ARGV[1]) then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  for i = 2, #ARGV do
    redis.call('XADD', key, '*', 'f', ARGV[i])
  end
end
return 1
"""


class FeedbackForwarder:
    def __init__(
        self, client: redis.Redis, keys: StreamKeys, partitions: int, categories: Sequence[str], enabled: bool, capacity: int, retry_after: int
    ) -> None:
        self.streams = [keys.partition(p).feedback for p in range(partitions)]
        self.categories = frozenset(categories) | {SAFE}
        self.enabled = enabled
        self.capacity = capacity
        self.retry_after = retry_after
        self._forward = client.register_script(_FORWARD)

    def forward(self, labels: list[tuple[int, Feedback]]) -> tuple[dict[str, int], list[Rejection]]:
        """Queue valid labels for the owners; returns ``{"queued": n}`` and the labels refused here."""
        if not self.enabled:
            raise LookupError(f"feedback: the {FeedbackDisagreementDetector.name} detector is not configured")
        queued: list[bytes] = []
        invalid: list[Rejection] = []
        for index, label in labels:
            try:
                check_category(label, self.categories)
            except ValueError as exc:
                invalid.append(Rejection(index, str(exc)))
                continue
            queued.append(encode_feedback(label))
        if queued:
            try:
                taken = self._forward(keys=self.streams, args=[self.capacity, *queued])
            except UNAVAILABLE_ERRORS as exc:
                raise StoreUnavailable(f"redis: forwarding feedback failed: {type(exc).__name__}: {exc}") from exc
            if not taken:
                raise NotReady(f"feedback backlog full ({self.capacity} labels waiting for a detector owner); nothing was taken", self.retry_after)
        return {"queued": len(queued)}, invalid
