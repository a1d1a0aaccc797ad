"""How the worker and detector-owner loops ride out Redis trouble: one step at a time, never fatal.

An outage (connection refused, timeout, a failover in progress) is logged and waited out; a consumer
group that vanished (Redis restarted without its data) is recreated so the loop carries on.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

import redis

from monitor.scale.streams import ensure_group, group_missing
from monitor.state.redis_store import UNAVAILABLE_ERRORS


def step_through_outages(
    step: Callable[[], object],
    stop: threading.Event,
    client: redis.Redis,
    groups: Sequence[tuple[str, str]],
    who: str,
    pause_s: float,
    log: logging.Logger,
) -> None:
    """Run ``step()`` once; on an outage wait ``pause_s`` (less if ``stop`` is set), on a lost group
    recreate every ``(stream, group)`` in ``groups``. Other errors propagate. ``who`` names the caller in ``log``."""
    try:
        step()
    except UNAVAILABLE_ERRORS as exc:
        log.warning("%s: redis unavailable, retrying: %s", who, exc)
        stop.wait(pause_s)
    except redis.exceptions.ResponseError as exc:
        if not group_missing(exc):
            raise
        log.warning("%s: consumer group gone (Redis restarted without its data?): recreating", who)
        for stream, group in groups:
            ensure_group(client, stream, group)
