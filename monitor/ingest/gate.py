"""The ingest gate of the embedded service: screen, deduplicate, sample, admit, count.

Everything here runs on the event loop and never waits for the model: an event either enters the
bounded queue or is counted where it went instead (duplicate, rejected, sampled out, shed,
refused). The batch worker (:mod:`monitor.pipeline.worker`) is the queue's only consumer.

The queue is bounded three ways: ``queue_capacity`` events, ``queue_max_bytes`` bytes, and, once
the worker's drain rate is measured, ``max_queue_delay_seconds`` of work at that rate, so that no
accepted event waits longer than that. Sampling sheds before the queue: the admission rate falls
from 1 to ``sampling_min_rate`` as the queue fills towards its bound, and events that would
overfill it are accepted but not judged (``dropped{reason="overload"}``); only ``sampling: off``
answers a full queue with 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from monitor.config import Settings
from monitor.events import Event
from monitor.ingest.counts import IngestCounter, Tally
from monitor.ingest.dedup import IdMemory, IdsUnavailable
from monitor.ingest.parsing import ParsedBody
from monitor.ingest.request import IngestOutcome, IngestRequest
from monitor.ingest.sampling import AdaptiveSampler

log = logging.getLogger(__name__)

QueueItem = tuple[Event, float]  # an admitted event and its sampling weight (1 / admission rate)


class IngestGate:
    def __init__(self, settings: Settings, ids: IdMemory, counter: IngestCounter) -> None:
        self.settings = settings
        self.ids = ids
        self.counter = counter
        self._sampler = AdaptiveSampler(
            settings.sampling_start_fill, settings.sampling_min_rate, seed=settings.seed, enabled=settings.sampling == "auto"
        )
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=settings.queue_capacity)
        self._sizes: deque[int] = deque()  # bytes of each queued event, in queue order (one consumer: FIFO)
        self.queued_bytes = 0
        self.drain_rate: float | None = None  # events/s the worker takes while busy (EWMA); None until measured
        self.collecting = False  # next_batch holds events taken off the queue and not yet handed over

    # ---------------------------------------------------------------- admission (event loop)
    def ingest(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        """Screen, deduplicate (per ``sender``), admit. With an in-memory id store nothing here blocks."""
        request = IngestRequest.screen(parsed, arrival_time, self.settings, sender)
        discard = self._admit(request, self._remember(request))
        if discard:
            self._forget(discard)
        return request.outcome

    async def ingest_async(self, parsed: ParsedBody, arrival_time: float, sender: str = "") -> IngestOutcome:
        """:meth:`ingest` with the id store's calls in a worker thread (Redis: a slow or paused server
        must not hold up ``/healthz`` and other requests); the queue and counts stay on the loop."""
        if self.ids.backend == "memory":
            return self.ingest(parsed, arrival_time, sender)
        request = IngestRequest.screen(parsed, arrival_time, self.settings, sender)
        discard = self._admit(request, await asyncio.to_thread(self._remember, request))
        if discard:
            await asyncio.to_thread(self._forget, discard)
        return request.outcome

    def _remember(self, request: IngestRequest) -> list[bool] | IdsUnavailable:
        """Which candidates are new (the store's one round trip), or why the store cannot say."""
        try:
            return self.ids.add_ids(list(request.candidates))
        except IdsUnavailable as exc:
            return exc

    def _forget(self, event_ids: list[str]) -> None:
        try:
            self.ids.discard_ids(event_ids)
        except IdsUnavailable:  # a resend then counts as a duplicate: logged, not fatal
            log.warning("could not forget %d event ids after a full queue", len(event_ids))

    def _admit(self, request: IngestRequest, new: list[bool] | IdsUnavailable) -> list[str]:
        """Sample, enqueue and count; returns the ids to forget when the request is refused whole."""
        n_received, outcome = request.n_received, request.outcome
        if isinstance(new, IdsUnavailable):
            outcome.unavailable, outcome.duplicates = str(new), 0
            self.counter.record(Tally.of_request(n_received, outcome, 0, refused=("store_unavailable", request.refused)))
            return []
        fresh = [event for event, is_new in zip(request.candidates.values(), new) if is_new]
        outcome.duplicates += len(request.candidates) - len(fresh)

        admitted: list[tuple[Event, float, int]] = []
        sampled_out = shed = 0
        admitted_bytes = 0
        sampling = self.settings.sampling == "auto"
        for event in fresh:
            size = request.sizes.get(event.key, 0)
            weight = self._sampler.admit(self._fill(len(admitted), admitted_bytes))
            if weight is None:
                sampled_out += 1
            elif sampling and self._fill(len(admitted) + 1, admitted_bytes + size) > 1.0:
                shed += 1  # past the bound even at the lowest rate: shed here, never queued
            else:
                admitted.append((event, weight, size))
                admitted_bytes += size
        if not sampling and admitted and self._fill(len(admitted), admitted_bytes) > 1.0:  # sampling off: push back, take nothing
            outcome.queue_full = True
            outcome.duplicates = 0
            self.counter.record(Tally.of_request(n_received, outcome, 0, refused=("queue_full", request.refused)))
            return [e.key for e in fresh]

        for event, weight, size in admitted:
            self._queue.put_nowait((event, weight))
            self._sizes.append(size)
        self.queued_bytes += admitted_bytes
        outcome.accepted = len(fresh) + outcome.duplicates
        tally = Tally.of_request(n_received, outcome, len(fresh), truncated=sum(1 for e in fresh if e.truncated))
        tally.sampled_out, tally.processed = sampled_out, sampled_out + shed
        if shed:
            tally.dropped["overload"] = shed
        self.counter.record(tally)
        return []

    # ---------------------------------------------------------------- the bound
    def queue_bound(self) -> int:
        """Most events the queue may hold now: ``queue_capacity``, or fewer once the worker's rate is
        measured, so that no event waits longer than ``max_queue_delay_seconds`` (at that rate)."""
        rate = self.drain_rate
        if rate is None:
            return self.settings.queue_capacity
        by_delay = int(rate * self.settings.max_queue_delay_seconds)
        return max(1, min(self.settings.queue_capacity, max(2 * self.settings.batch_size, by_delay)))

    def _fill(self, extra_events: int = 0, extra_bytes: int = 0) -> float:
        by_count = (self._queue.qsize() + extra_events) / self.queue_bound()
        by_bytes = (self.queued_bytes + extra_bytes) / self.settings.queue_max_bytes
        return max(by_count, by_bytes)

    def sampling_rate(self) -> float:
        """The admission rate at the queue's fill now (not at the last ingest: it recovers as the queue drains)."""
        return self._sampler.rate(self._fill())

    def depth(self) -> int:
        return self._queue.qsize()

    def observe_drain(self, n: int, seconds: float) -> None:
        """Fold one batch into the worker's measured rate (events per busy second), which bounds the queue."""
        if seconds <= 0:
            return
        rate = n / seconds
        self.drain_rate = rate if self.drain_rate is None else 0.8 * self.drain_rate + 0.2 * rate

    # ---------------------------------------------------------------- the consumer's side
    def _take(self, item: QueueItem) -> QueueItem:
        self.queued_bytes -= self._sizes.popleft() if self._sizes else 0
        return item

    async def next_batch(self) -> list[QueueItem]:
        """Wait for one event, then take up to ``batch_size`` within ``batch_max_wait_ms``.

        While it collects, ``collecting`` is true: events are off the queue but in no batch yet, so
        a stop must wait for them (the caller marks the batch held before its next ``await``)."""
        batch = [self._take(await self._queue.get())]
        self.collecting = True
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.batch_max_wait_ms / 1000.0
            while len(batch) < self.settings.batch_size:
                if not self._queue.empty():
                    batch.append(self._take(self._queue.get_nowait()))
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._take(await asyncio.wait_for(self._queue.get(), remaining)))
                except TimeoutError:
                    break
            return batch
        finally:
            self.collecting = False

    def clear(self) -> int:
        """Empty the queue (the worker has stopped); returns how many events it held."""
        lost = 0
        while not self._queue.empty():
            self._take(self._queue.get_nowait())
            lost += 1
        return lost
