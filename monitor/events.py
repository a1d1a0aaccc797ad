"""Data that crosses stage boundaries: the normalised event and what the worker adds to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.judge.verdict import Verdict


@dataclass(frozen=True, slots=True)
class Event:
    """One prompt/response pair as the pipeline sees it, after validation and normalisation.

    ``timestamp`` is event time in epoch seconds (the gateway's, or arrival time when absent):
    every window and rate downstream is driven by it, never by the wall clock.
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
