"""A bounded, seeded sample of processed events per event-time window: the raw material of reports.

Alerts say that something moved; a report shows a person what. Reports compare two windows of
the stream, long after the events went by, so the service keeps a uniform sample of each
``window_seconds`` of event time (windows aligned to multiples of it): at most
``per_window`` events each (reservoir sampling, Algorithm R), and only the ``max_windows``
newest windows. An event older than every kept window, once all are in use, is not kept (counted in
``late_dropped``). Each kept row holds what a report needs: verdict fields, category, lengths of the
original texts, bounded model/route labels, float16 embeddings and, per ``texts``, the texts
(``off``, ``redacted`` or ``full``, cut to ``text_chars``). Per event the cost is O(1): one
random draw, and a row write only when the event is kept.

Memory is bounded by ``max_windows * per_window`` rows of about ``4 * dim`` bytes of embeddings
plus up to ``2 * text_chars`` characters of text.

>>> import numpy as np
>>> from monitor.events import Event, ScoredEvent
>>> from monitor.judge.verdict import Verdict
>>> def scored(i):
...     v = Verdict("t", "safe", {}, 0.1, False)
...     return ScoredEvent(Event(f"e{i}", 100.0 * i, "hi"), 1.0, np.ones(4, np.float32) / 2, None, v)
>>> r = WindowReservoir(window_seconds=3600, per_window=10, max_windows=2, seed=0)
>>> r([scored(i) for i in range(100)])   # 100 events over 3 windows of event time
>>> [(w.start, w.seen, w.kept) for w in r.windows()]   # the oldest window was evicted
[(3600.0, 36, 10), (7200.0, 28, 10)]
>>> s = r.sample(TimeWindow(3600.0, 10800.0))
>>> s.rows, s.events, s.columns["prompt_embedding"].shape
(18, 64.0, (18, 4))
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

from monitor.events import ScoredEvent
from monitor.privacy.redact import REDACT_ON, Redactor
from monitor.export.windows import TimeWindow
from monitor.scopes import GLOBAL, ScopeResolver


TextPolicy = Literal["off", "redacted", "full"]
Labels = Callable[[str | None, str | None], tuple[str, str]]

STATE_VERSION = 1
# Per-row numeric fields; optional booleans (no response) are NaN.
_NUMERIC = {
    "timestamp": np.float64,
    "weight": np.float32,
    "prompt_unsafe": np.float32,
    "prompt_flagged": np.float32,
    "response_unsafe": np.float32,
    "response_flagged": np.float32,
    "refusal": np.float32,
    "refused": np.float32,
    "prompt_chars": np.int32,
    "response_chars": np.int32,
    "has_response": np.bool_,
}
# The judge's outputs a report compares (names from ``Verdict.outputs``; a new judge output is one more line above).
VERDICT_COLUMNS = ("prompt_unsafe", "prompt_flagged", "response_unsafe", "response_flagged", "refusal", "refused")
_OBJECT = ("event_id", "category", "model", "route", "prompt_text", "response_text")
_EMBEDDING = ("prompt_embedding", "response_embedding")


@dataclass(frozen=True, slots=True)
class WindowInfo:
    start: float
    end: float
    seen: int
    kept: int


@dataclass(frozen=True)
class WindowSample:
    """Rows sampled from one report window, self-weighting: every row stands for ``events / rows`` events.

    ``events`` is the (sampling-weighted) number of judged events in the window, estimated from the
    sample where the window cuts a reservoir window. ``columns`` holds one array per field (see
    :data:`FIELDS`), embeddings as ``(rows, dim)`` float32.
    """

    start: float
    end: float
    events: float
    columns: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.columns["timestamp"])

    def limit(self, max_rows: int, seed: int = 0) -> WindowSample:
        """A uniform subsample of at most ``max_rows`` rows (in time order), or this sample when it fits."""
        if self.rows <= max_rows:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(self.rows, size=max_rows, replace=False))
        return WindowSample(self.start, self.end, self.events, {k: v[keep] for k, v in self.columns.items()})


FIELDS: tuple[str, ...] = (*_NUMERIC, *_OBJECT, *_EMBEDDING)


class _Window:
    """One event-time window's reservoir: preallocated columns, ``kept`` rows in use."""

    __slots__ = ("seen", "weight", "kept", "numeric", "objects", "embeddings")

    def __init__(self, capacity: int, dim: int) -> None:
        self.seen = 0
        self.weight = 0.0
        self.kept = 0
        self.numeric = {name: np.zeros(capacity, dtype) for name, dtype in _NUMERIC.items()}
        self.objects: dict[str, list[Any]] = {name: [None] * capacity for name in _OBJECT}
        self.embeddings = {name: np.zeros((capacity, dim), np.float16) for name in _EMBEDDING}


class WindowReservoir:
    """Keeps the sample; call it with each judged batch (it is a ``service.batch_listeners`` entry).

    Thread-safe: the worker thread writes, report requests read through :meth:`sample`.
    """

    uses_embeddings = True  # windows from another embedding backend are not restored (reports would compare the two)
    uses_verdicts = True  # nor windows judged by another judge or at another decision line

    def __init__(
        self,
        window_seconds: float = 3600.0,
        per_window: int = 1000,
        max_windows: int = 24,
        texts: TextPolicy = "redacted",
        text_chars: int = 300,
        labels: Labels | None = None,
        seed: int = 0,
        redactor: Redactor = REDACT_ON,
    ) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        if per_window < 1 or max_windows < 1:
            raise ValueError(f"per_window and max_windows must be >= 1, got {per_window} and {max_windows}")
        if texts not in ("off", "redacted", "full"):
            raise ValueError(f"texts must be 'off', 'redacted' or 'full', got {texts!r}")
        if text_chars < 0:
            raise ValueError(f"text_chars must be >= 0, got {text_chars}")
        self.window_seconds = float(window_seconds)
        self.per_window = per_window
        self.max_windows = max_windows
        self.texts = texts
        self.text_chars = text_chars
        self.labels = labels or ScopeResolver([], []).labels
        self.seed = seed
        self.redactor = redactor  # ``texts="redacted"`` masks with it (and keeps raw texts when it is off)
        self.late_dropped = 0
        self.newest_event_time: float | None = None
        self._rng = random.Random(seed)
        self._windows: dict[int, _Window] = {}
        self._dim: int | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing (worker thread)
    def __call__(self, batch: Sequence[ScoredEvent]) -> None:
        with self._lock:
            for scored in batch:
                self._offer(scored)

    def _offer(self, scored: ScoredEvent) -> None:
        t = scored.event.timestamp
        if self.newest_event_time is None or t > self.newest_event_time:
            self.newest_event_time = t
        window = self._window_for(math.floor(t / self.window_seconds), scored)
        if window is None:
            self.late_dropped += 1
            return
        window.seen += 1
        window.weight += scored.weight
        if window.kept < self.per_window:
            slot = window.kept
            window.kept += 1
        else:
            slot = self._rng.randrange(window.seen)
            if slot >= self.per_window:
                return
        self._write(window, slot, scored)

    def _window_for(self, key: int, scored: ScoredEvent) -> _Window | None:
        window = self._windows.get(key)
        if window is not None:
            return window
        if len(self._windows) >= self.max_windows:
            oldest = min(self._windows)
            if key < oldest:
                return None
            del self._windows[oldest]
        if self._dim is None:
            self._dim = int(np.asarray(scored.prompt_embedding).shape[-1])
        window = self._windows[key] = _Window(self.per_window, self._dim)
        return window

    def _text(self, text: str | None) -> str | None:
        if text is None or self.texts == "off":
            return None
        return self.redactor.cut(text, self.text_chars) if self.texts == "redacted" else text[: self.text_chars]

    def _write(self, w: _Window, i: int, s: ScoredEvent) -> None:
        e, v = s.event, s.verdict
        has_response = e.response is not None and s.response_embedding is not None
        nan = math.nan
        num = w.numeric
        num["timestamp"][i] = e.timestamp
        num["weight"][i] = s.weight
        outputs = v.outputs()
        for name in VERDICT_COLUMNS:
            num[name][i] = outputs.get(name, nan)
        num["prompt_chars"][i] = len(e.prompt)
        num["response_chars"][i] = len(e.response) if e.response is not None else -1
        num["has_response"][i] = has_response
        obj = w.objects
        obj["event_id"][i] = e.event_id
        obj["category"][i] = v.category
        obj["model"][i], obj["route"][i] = self.labels(e.model, e.route)
        obj["prompt_text"][i] = self._text(e.prompt)
        obj["response_text"][i] = self._text(e.response)
        w.embeddings["prompt_embedding"][i] = s.prompt_embedding
        w.embeddings["response_embedding"][i] = s.response_embedding if has_response else 0.0

    # ------------------------------------------------------------------ reading (report requests)
    def windows(self) -> list[WindowInfo]:
        """The kept windows, oldest first."""
        with self._lock:
            return [
                WindowInfo(k * self.window_seconds, (k + 1) * self.window_seconds, w.seen, w.kept)
                for k, w in sorted(self._windows.items())
            ]

    def sample(self, window: TimeWindow, scope: str = GLOBAL, seed: int | None = None) -> WindowSample:
        """A self-weighting sample of the events in ``window`` (and ``scope``: global, model=X or route=X).

        Reservoir windows that saw more events per kept row are under-represented among the kept rows,
        so rows are subsampled per reservoir window in proportion to the events each stands for.
        """
        field = scope_filter(scope)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        parts: list[tuple[_Window, np.ndarray, float]] = []
        with self._lock:
            first = math.floor(window.start / self.window_seconds)
            for key in sorted(self._windows):
                w = self._windows[key]
                if key < first or key * self.window_seconds >= window.end or w.kept == 0:
                    continue
                t = w.numeric["timestamp"][: w.kept]
                mask = (t >= window.start) & (t < window.end)
                if field is not None:
                    mask &= np.asarray(w.objects[field[0]][: w.kept], dtype=object) == field[1]
                rows = np.flatnonzero(mask)
                if len(rows):
                    parts.append((w, rows, w.weight * len(rows) / w.kept))
            rows_per_event = min((len(rows) / events for _, rows, events in parts), default=0.0)
            chosen = []
            for w, rows, events in parts:
                k = min(len(rows), round(rows_per_event * events))
                chosen.append((w, np.sort(rng.choice(rows, size=k, replace=False))))
            columns = _gather(chosen, self._dim or 0)
        order = np.argsort(columns["timestamp"], kind="stable")
        columns = {k: v[order] for k, v in columns.items()}
        return WindowSample(window.start, window.end, float(sum(events for _, _, events in parts)), columns)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Picklable state; a restored reservoir continues exactly like an uninterrupted one."""
        with self._lock:
            return {
                "version": STATE_VERSION,
                "window_seconds": self.window_seconds,
                "per_window": self.per_window,
                "rng": self._rng.getstate(),
                "late_dropped": self.late_dropped,
                "newest_event_time": self.newest_event_time,
                "dim": self._dim,
                "windows": {
                    key: {
                        "seen": w.seen,
                        "weight": w.weight,
                        "kept": w.kept,
                        "numeric": {n: a[: w.kept].copy() for n, a in w.numeric.items()},
                        "objects": {n: list(a[: w.kept]) for n, a in w.objects.items()},
                        "embeddings": {n: a[: w.kept].copy() for n, a in w.embeddings.items()},
                    }
                    for key, w in self._windows.items()
                },
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"version: reservoir state version {state.get('version')!r} is not {STATE_VERSION}")
        for name in ("window_seconds", "per_window"):
            if state[name] != getattr(self, name):
                raise ValueError(f"{name}: saved reservoir has {state[name]}, this one {getattr(self, name)}")
        windows: dict[int, _Window] = {}
        for key in sorted(state["windows"])[-self.max_windows :]:
            saved = state["windows"][key]
            w = windows[key] = _Window(self.per_window, state["dim"])
            w.seen, w.weight, w.kept = saved["seen"], saved["weight"], saved["kept"]
            for group, target in (("numeric", w.numeric), ("embeddings", w.embeddings)):
                for name, values in saved[group].items():
                    target[name][: w.kept] = values
            for name, values in saved["objects"].items():
                w.objects[name][: w.kept] = values
        with self._lock:
            self._windows = windows
            self._dim = state["dim"]
            self._rng.setstate(state["rng"])
            self.late_dropped = state["late_dropped"]
            self.newest_event_time = state["newest_event_time"]


def scope_filter(scope: str) -> tuple[str, str] | None:
    """``(column, value)`` that rows of ``scope`` have, None for global; ValueError for anything else."""
    if scope == GLOBAL:
        return None
    name, sep, value = scope.partition("=")
    if not sep or name not in ("model", "route") or not value:
        raise ValueError(f"scope: must be 'global', 'model=NAME' or 'route=NAME', got {scope!r}")
    return name, value


def _gather(chosen: list[tuple[_Window, np.ndarray]], dim: int) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for name, dtype in _NUMERIC.items():
        columns[name] = np.concatenate([w.numeric[name][rows] for w, rows in chosen] or [np.zeros(0, dtype)])
    for name in _OBJECT:
        values = [w.objects[name][i] for w, rows in chosen for i in rows]
        columns[name] = np.empty(len(values), dtype=object)
        columns[name][:] = values
    for name in _EMBEDDING:
        parts = [w.embeddings[name][rows].astype(np.float32) for w, rows in chosen]
        columns[name] = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return columns
