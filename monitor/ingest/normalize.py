"""From the validated wire model to the pipeline's :class:`~monitor.events.Event`."""

from __future__ import annotations

import uuid
from typing import Iterable

from monitor.events import Event
from monitor.ingest.schema import EventIn


def to_event(item: EventIn, arrival_time: float, max_text_chars: int, sender: str = "") -> Event:
    """Fill defaults (id, arrival time) and truncate over-long texts, remembering that we did.

    ``metadata`` is validated with the rest of the item, then dropped: nothing downstream reads it,
    and held as parsed objects it costs many times the bytes ``queue_max_bytes`` would count (128
    KiB of ``[[],[],...]`` is megabytes of lists).

    >>> to_event(EventIn(prompt="hi", metadata=[[]] * 1000), 0.0, 100).metadata is None
    True
    """
    prompt = item.prompt_text() or ""
    response = item.response_text()
    truncated = len(prompt) > max_text_chars or (response is not None and len(response) > max_text_chars)
    return Event(
        event_id=item.event_id or uuid.uuid4().hex,
        timestamp=item.timestamp if item.timestamp is not None else arrival_time,
        prompt=prompt[:max_text_chars],
        response=response[:max_text_chars] if response is not None else None,
        model=item.model,
        route=item.route,
        labels=dict(item.labels),
        truncated=truncated,
        sender=sender,
    )


def unique_events(items: Iterable[EventIn], arrival_time: float, max_text_chars: int) -> tuple[dict[str, Event], int]:
    """One request's events by id (the first of each id kept) and how many repeated an id within the request.

    >>> events, repeated = unique_events([EventIn(event_id="a", prompt="x"), EventIn(event_id="a", prompt="y")], 0.0, 100)
    >>> [e.prompt for e in events.values()], repeated
    (['x'], 1)
    """
    events: dict[str, Event] = {}
    repeated = 0
    for item in items:
        event = to_event(item, arrival_time, max_text_chars)
        if event.event_id in events:
            repeated += 1
        else:
            events[event.event_id] = event
    return events, repeated


def event_sizes(event: Event) -> dict[str, int]:
    """UTF-8 bytes each part of ``event`` holds; their sum is what ``max_event_bytes`` and ``queue_max_bytes`` count.

    >>> event_sizes(Event("id", 0.0, "héllo", labels={"team": "a"}))
    {'prompt': 6, 'response': 0, 'labels': 5, 'other': 2}
    """
    return {
        "prompt": len(event.prompt.encode("utf-8", "surrogatepass")),
        "response": len(event.response.encode("utf-8", "surrogatepass")) if event.response else 0,
        "labels": sum(len(k) + len(v) for k, v in event.labels.items()),
        "other": len(event.event_id) + len(event.model or "") + len(event.route or ""),
    }


def oversize(event: Event, max_bytes: int) -> tuple[int, str | None]:
    """(bytes of ``event``, an error naming its largest part when it exceeds ``max_bytes``, else None)."""
    sizes = event_sizes(event)
    total = sum(sizes.values())
    if total <= max_bytes:
        return total, None
    part = max(sizes, key=lambda k: sizes[k])
    return total, f"{part}: the event is {total} bytes ({part} {sizes[part]}); the limit is max_event_bytes={max_bytes}"
