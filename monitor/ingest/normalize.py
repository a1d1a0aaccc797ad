"""From the validated wire model to the pipeline's :class:`~monitor.events.Event`."""

from __future__ import annotations

import uuid
from typing import Iterable

from monitor.events import Event
from monitor.ingest.schema import EventIn


def to_event(item: EventIn, arrival_time: float, max_text_chars: int) -> Event:
    """Fill defaults (id, arrival time) and truncate over-long texts, remembering that we did."""
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
        metadata=item.metadata,
        truncated=truncated,
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
