"""Event-time windows named in report requests: ``START/END`` or ``last:DURATION``.

A window is half-open, ``[start, end)`` in epoch seconds of *event* time. Each end point is an
ISO-8601 time (``2026-01-01T00:00Z``; no zone means UTC), epoch seconds, ``now`` or
``now-DURATION``, where ``now`` is the end of the second holding the newest event the monitor has
seen (never the wall clock, so a replayed day reports like the live one), so ``now`` includes it.
``last:1h`` is short for ``now-1h/now``. Durations are a number with ``s``, ``m``, ``h`` or ``d``.

>>> w = parse_window("2026-01-01T00:00Z/2026-01-01T01:30Z")
>>> w.start, w.end - w.start
(1767225600.0, 5400.0)
>>> w = parse_window("now-2h/now-1h", now=1767232799.5)
>>> format_time(w.start), format_time(w.end)
('2026-01-01T00:00:00Z', '2026-01-01T01:00:00Z')
>>> parse_window("last:90m", now=1767232799.5).start
1767227400.0
>>> parse_window("1767225600/1767225000")
Traceback (most recent call last):
...
monitor.export.windows.WindowError: window start 2026-01-01T00:00:00Z is not before its end 2025-12-31T23:50:00Z
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


class WindowError(ValueError):
    """A window that cannot be parsed or is empty; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    start: float
    end: float

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def spec(self) -> str:
        """The absolute form, usable as a request parameter (links stay valid as time moves on)."""
        return f"{format_time(self.start)}/{format_time(self.end)}"


def format_time(t: float) -> str:
    """ISO-8601 UTC with a ``Z``; whole seconds unless the time has a fraction."""
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    text = dt.isoformat(timespec="seconds" if t == int(t) else "microseconds")
    return text.replace("+00:00", "Z")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise WindowError(f"duration {text!r} must be a positive number with s, m, h or d (e.g. 90m, 1h)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _parse_point(text: str, now: float | None) -> float:
    text = text.strip()
    point = _point(text, now)
    if not 0.0 <= point <= _LATEST:  # also what datetime can format back (spec(), error messages)
        raise WindowError(f"{text!r} is outside 1970-01-01T00:00Z to 9999-12-31T23:59:59Z")
    return point


def _point(text: str, now: float | None) -> float:
    if text == "now" or text.startswith("now-"):
        if now is None:
            raise WindowError(f"{text!r} is relative to the newest event, and no event has been seen yet")
        end = math.floor(now) + 1.0  # windows are half-open: `now` must include the newest event
        return end if text == "now" else end - parse_duration(text[4:])
    if _NUMBER.match(text):
        return float(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise WindowError(f"{text!r} is not an ISO-8601 time, epoch seconds, 'now' or 'now-DURATION'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+14:00: before year 1 in UTC
        return -math.inf


def parse_window(spec: str, now: float | None = None) -> TimeWindow:
    """Parse ``START/END`` or ``last:DURATION``; ``now`` is the newest event time (None before any event)."""
    spec = spec.strip()
    if spec.startswith("last:"):
        spec = f"now-{spec[5:]}/now"
    parts = spec.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise WindowError(f"{spec!r} must be START/END (e.g. 2026-01-01T00:00Z/2026-01-01T01:00Z, now-2h/now-1h) or last:DURATION (e.g. last:1h)")
    start, end = (_parse_point(p, now) for p in parts)
    if not start < end:
        raise WindowError(f"window start {format_time(start)} is not before its end {format_time(end)}")
    return TimeWindow(start, end)
