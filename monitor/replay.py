"""Send a JSONL file of events to a running monitor, honouring event timestamps.

Events go in batches. With ``speed`` the gaps between event timestamps are replayed scaled
(2.0 = twice as fast), each wait capped at ``max_pause_s`` wall-clock seconds (like tcpreplay's
``--maxsleep``), so a recording with a far-past first timestamp or a quiet night in it does not
stall the replay; with ``speed=None`` as fast as the service accepts. A 503 answer
(queue full, or sampling off and the worker behind) is waited out for its ``Retry-After`` and
the same batch resent, so nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx

from monitor.client import bearer_headers

from monitor.ingest.schema import parse_timestamp


@dataclass(slots=True)
class ReplayResult:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0


def line_event_id(name: str, lineno: int, line: bytes) -> str:
    """The id of an event without one: ``<file name>:<line>:<sha256 of the line, 12 hex>``. The same
    line of the same file always gets the same id, so a replay that resends after a 503 or a
    timeout, or a second replay of the file, is deduplicated and picks the same events for the
    seeded second opinion; the content hash keeps another recording of the same name
    (``day1/events.jsonl``, ``day2/events.jsonl``) from being dropped as duplicates.

    >>> line_event_id("events.jsonl", 1, b'{"prompt": "hi"}')
    'events.jsonl:1:bbab304eadd0'
    """
    return f"{name}:{lineno}:{hashlib.sha256(line.strip()).hexdigest()[:12]}"


def read_events(path: Path) -> Iterator[dict]:
    """Events of a JSONL file; one without ``event_id`` gets ``line_event_id``."""
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from None
                if isinstance(event, dict) and "event_id" not in event:
                    event["event_id"] = line_event_id(path.name, lineno, line)
                yield event


@dataclass(slots=True)
class Pacer:
    """When each event is due on the monotonic clock: the gap to the newest timestamp seen so far,
    scaled by ``speed`` and capped at ``max_pause_s``. Pacing from the running maximum makes an
    event older than one already sent (out of order, or a far-past outlier) due at once, and the
    next in-order event is paced from the newest timestamp, not from the outlier.

    >>> pacer = Pacer(speed=2.0, max_pause_s=10.0, due=100.0)
    >>> [pacer.due_at(t) for t in (1000.0, 1004.0, 0.0, 1006.0, 90000.0)]
    [100.0, 102.0, 102.0, 103.0, 113.0]
    """

    speed: float
    max_pause_s: float
    due: float
    newest: float | None = None

    def due_at(self, t: float) -> float:
        if self.newest is not None and t > self.newest:
            self.due += min((t - self.newest) / self.speed, self.max_pause_s)
        self.newest = t if self.newest is None else max(self.newest, t)
        return self.due


def _event_time(event: dict) -> float | None:
    try:
        return parse_timestamp(event.get("timestamp"))
    except ValueError:
        return None


def replay(
    events: Iterator[dict],
    url: str,
    speed: float | None = None,
    batch_size: int = 200,
    on_progress: Callable[[int], None] | None = None,
    client: httpx.Client | None = None,
    max_wait_s: float = 300.0,
    token: str | None = None,
    pace: bool = False,
    max_pause_s: float = 10.0,
) -> ReplayResult:
    """``token``: bearer token of scope ingest (default ``$MONITOR_TOKEN``). ``pace``: before each
    batch, wait until the service samples no more (``sampling_rate`` 1 in ``/v1/status``, which
    needs scope read too), so every event is judged instead of shed under the overload bound.
    ``max_pause_s``: with ``speed``, the longest wait before one event (see ``Pacer``);
    ``max_wait_s`` is how long a 503 or a sampling service is waited out before giving up."""
    result = ReplayResult()
    own = client is None
    client = client or httpx.Client(timeout=30.0, headers=bearer_headers(token))
    endpoint = url.rstrip("/") + "/v1/events"
    pacer = Pacer(speed, max_pause_s, time.monotonic()) if speed is not None else None
    batch: list[dict] = []

    def wait_for_room() -> None:
        """Until the service samples no more; gives up after ``max_wait_s`` without progress (processed not growing)."""
        deadline, processed = time.monotonic() + max_wait_s, -1
        while time.monotonic() < deadline:
            status = client.get(url.rstrip("/") + "/v1/status").json()
            if not status.get("ready", True) or status.get("sampling_rate", 1.0) >= 1.0:
                return
            if status.get("processed", 0) > processed:
                deadline, processed = time.monotonic() + max_wait_s, status.get("processed", 0)
            time.sleep(0.2)

    def flush() -> None:
        if pace:
            wait_for_room()
        deadline = time.monotonic() + max_wait_s
        while True:
            resp = client.post(endpoint, json={"events": batch})
            if resp.status_code in (408, 503) and time.monotonic() < deadline:  # busy, or the body was too slow
                result.retries += 1
                time.sleep(float(resp.headers.get("Retry-After", "1")))
                continue
            if resp.status_code not in (202, 422):
                raise RuntimeError(f"ingest answered {resp.status_code}: {resp.text[:300]}")
            body = resp.json()
            result.sent += len(batch)
            result.accepted += body.get("accepted", 0)
            result.duplicates += body.get("duplicates", 0)
            result.rejected += len(body.get("rejected", []))
            if on_progress:
                on_progress(len(batch))
            batch.clear()
            return

    try:
        for event in events:
            if pacer is not None:
                t = _event_time(event)
                if t is not None:
                    delay = pacer.due_at(t) - time.monotonic()
                    if delay > 0:
                        if batch:
                            flush()
                        time.sleep(delay)
            batch.append(event)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    finally:
        if own:
            client.close()
    return result


def wait_until_processed(url: str, timeout_s: float = 600.0, client: httpx.Client | None = None, token: str | None = None) -> dict:
    """Poll ``/v1/status`` (a read token: ``token`` or ``$MONITOR_TOKEN``) until every accepted event has left the pipeline."""
    own = client is None
    client = client or httpx.Client(timeout=10.0, headers=bearer_headers(token))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            resp = client.get(url.rstrip("/") + "/v1/status")
            if resp.status_code in (401, 403):
                raise PermissionError(f"/v1/status answered {resp.status_code}: {resp.json().get('error')}")
            status = resp.json()
            if status.get("ready") and status["processed"] >= status["accepted"]:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"not processed within {timeout_s}s: {status.get('processed')}/{status.get('accepted')}")
            time.sleep(0.2)
    finally:
        if own:
            client.close()
