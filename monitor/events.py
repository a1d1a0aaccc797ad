"""Data that crosses stage boundaries: the normalised event and what the worker adds to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.judge.verdict import Verdict, setstate_with_defaults


@dataclass(frozen=True, slots=True)
class Event:
    """One prompt/response pair as the pipeline sees it, after validation and normalisation.

    ``timestamp`` is event time in epoch seconds (the gateway's, or arrival time when absent):
    every window and rate downstream is driven by it, never by the wall clock. ``sender`` is the
    name of the ingest token that sent it ("" without authentication): ids are unique per sender
    (:attr:`key`), so one client cannot make another's event a duplicate by sending its id first.
    ``metadata`` is None: normalisation drops the wire's metadata; the field stays so events that
    a release before it pickled or streamed (with metadata, fields in this order) still load.
    """

    event_id: str
    timestamp: float
    prompt: str
    response: str | None = None
    model: str | None = None
    route: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    metadata: Any = None
    truncated: bool = False
    sender: str = ""

    __setstate__ = setstate_with_defaults

    @property
    def key(self) -> str:
        """The idempotency key: ``sender:event_id`` (token names hold no ``:``), the id alone without a sender.

        >>> Event("req-1", 0.0, "hi", sender="gateway").key, Event("req-1", 0.0, "hi").key
        ('gateway:req-1', 'req-1')
        """
        return f"{self.sender}:{self.event_id}" if self.sender else self.event_id


@dataclass(slots=True)
class ScoredEvent:
    """An event after embedding and judging.

    ``weight`` is 1 / (sampling rate when it was admitted): summing weights estimates how many
    events of the full stream each judged event stands for. ``scopes`` lists every scope the
    event counts in ("global", "model=<name>", "route=<name>", with unlisted names as "other").
    ``second_opinion`` is a second judge's verdict when this event was sampled for one.
    """

    event: Event
    weight: float
    prompt_embedding: np.ndarray
    response_embedding: np.ndarray | None
    verdict: Verdict
    scopes: tuple[str, ...] = ("global",)
    second_opinion: Verdict | None = None
