"""From the validated wire model to the pipeline's :class:`~monitor.events.Event`."""

from __future__ import annotations

import uuid

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
