"""Baseline category-share detector: river's ADWIN on each key's 0/1 stream, per scope.

It is the yardstick the calibrated CUSUM (:mod:`monitor.drift.category_share`) is measured against
(bench/drift_scenarios.py), watching the same keys with the same indicators. ADWIN keeps an
adaptive window and reports when two sub-windows differ, at confidence ``delta`` per check; it
has no notion of a reference or of a false-alarm rate per stream, and needs about 660 events to
catch a 5% -> 10% rise at its defaults.

Alert life: every change ADWIN detects (after the reference is known) re-decides the key. A
change that moves the window's share away from the reference share (compared with the share just
before the cut) turns the key active; one that moves it back towards the reference resolves it;
between detections the key holds. This is ADWIN's own opinion with no extra test on top, so its
false alarms are about half its false detections. ADWIN sees every event from the first (warm-up
included), so its window is full when monitoring starts.

Cost: one ADWIN update per key and event in Python, about 15x the CUSUM detector's.

>>> import random
>>> from monitor.events import Event, ScoredEvent
>>> from monitor.judge.verdict import Verdict
>>> def scored(t, flagged):
...     v = Verdict("j", "self_harm" if flagged else "safe", {}, float(flagged), flagged, categories=("self_harm",) if flagged else ())
...     return ScoredEvent(Event(str(t), float(t), "p"), 1.0, None, None, v)
>>> rng = random.Random(1)
>>> det = AdwinShareDetector(["self_harm"], warmup_events=5000)
>>> det.update([scored(t, rng.random() < 0.05) for t in range(10_000)])
[]
>>> alarm = det.update([scored(t, rng.random() < 0.15) for t in range(10_000, 12_000)])[0]
>>> alarm.key, alarm.active, 10_000 < alarm.at < 11_000
('unsafe', True, True)
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

import numpy as np
from river.drift import ADWIN

from monitor.config import default
from monitor.signals import Condition, Reading
from monitor.drift.rate_change import wilson_interval
from monitor.drift.reference import ShareKeys, ShareReference, ShareWarmUp, rows_by_scope
from monitor.events import ScoredEvent

log = logging.getLogger(__name__)

class _AdwinScope:
    def __init__(self, keys: Sequence[str], delta: float, warmup: ShareWarmUp | None, reference: ShareReference | None) -> None:
        self.adwins = [ADWIN(delta=delta) for _ in keys]
        self.warmup = warmup
        self.reference = reference
        self.active = [False] * len(keys)
        self.detected_at: list[float | None] = [None] * len(keys)
        self.before_cut = [0.0] * len(keys)  # the window share just before the last detected change


class AdwinShareDetector:
    """ADWIN per scope and key (``unsafe`` plus each harm category), against a warm-up or given reference.

    Parameters
    ----------
    categories
        Harm category ids to watch (default: the taxonomy's).
    delta
        ADWIN's confidence per check (river's default 0.002).
    warmup_events
        Events of a scope that form its reference, when no ``reference`` is given.
    reference
        A fixed reference for every scope.
    max_scopes
        Scopes tracked at most; events of further scopes are ignored.
    """

    name = "category_share_adwin"
    alert_kind = name
    uses_verdicts = True  # rates of the judge's decisions: not comparable across judges or decision lines

    def __init__(
        self,
        categories: Sequence[str] | None = None,
        *,
        delta: float = default("adwin_delta"),
        warmup_events: int = default("share_warmup_events"),
        reference: ShareReference | None = None,
        max_scopes: int = 64,
    ) -> None:
        if categories is None:
            from monitor.taxonomy import load_taxonomy

            categories = load_taxonomy().harm_ids
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be within (0, 1), got {delta}")
        if warmup_events < 1:
            raise ValueError(f"warmup_events must be at least 1, got {warmup_events}")
        self.share_keys = ShareKeys(categories)
        self.keys = self.share_keys.keys
        self.delta = delta
        self.warmup_events = warmup_events
        self.reference = reference
        self.max_scopes = max_scopes
        self._scopes: dict[str, _AdwinScope] = {}

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        if not batch:
            return []
        indicators = self.share_keys.indicators(batch)
        out: list[tuple[int, Condition]] = []
        for scope, rows in rows_by_scope(batch).items():
            state = self._scopes.get(scope)
            if state is None:
                if len(self._scopes) >= self.max_scopes:
                    continue
                warm = None if self.reference is not None else ShareWarmUp(self.warmup_events, self.keys)
                state = self._scopes[scope] = _AdwinScope(self.keys, self.delta, warm, self.reference)
            out += self._advance(scope, state, indicators[rows], [batch[i] for i in rows], rows)
        out.sort(key=lambda item: item[0])
        return [cond for _, cond in out]

    def _advance(self, scope: str, state: _AdwinScope, x: np.ndarray, events: list[ScoredEvent], rows: np.ndarray) -> list[tuple[int, Condition]]:
        monitored_from = 0
        if state.warmup is not None:
            monitored_from = state.warmup.absorb(x, np.fromiter((e.event.timestamp for e in events), dtype=float, count=len(events)))
            if state.warmup.done:
                state.reference, state.warmup = state.warmup.reference(), None
            else:
                monitored_from = len(x)
        out: list[tuple[int, Condition]] = []
        emitted_last = set()
        adwins = state.adwins
        for i, values in enumerate(x.tolist()):
            for j, value in enumerate(values):
                adwin = adwins[j]
                before = adwin.estimation
                adwin.update(value)
                if adwin.drift_detected and i >= monitored_from:
                    state.detected_at[j] = events[i].event.timestamp
                    state.before_cut[j] = before
                    ref = state.reference.share(self.keys[j])
                    now = abs(adwin.estimation - ref) > abs(before - ref)
                    if now != state.active[j]:
                        state.active[j] = now
                        out.append((int(rows[i]), self._condition(scope, state, j, events[i].event.timestamp)))
                        if i == len(x) - 1:
                            emitted_last.add(j)
        for j, active in enumerate(state.active):
            if active and j not in emitted_last:
                out.append((int(rows[-1]), self._condition(scope, state, j, events[-1].event.timestamp)))
        return out

    def _condition(self, scope: str, state: _AdwinScope, j: int, at: float) -> Condition:
        assert state.reference is not None
        key = self.keys[j]
        adwin = state.adwins[j]
        share, width = float(adwin.estimation), int(adwin.width)
        ref = state.reference
        evidence = {
            "reference_share": ref.share(key),
            "reference_ci95": list(wilson_interval(ref.count(key), ref.events)),
            "reference_events": ref.events,
            "reference_start": ref.start,
            "reference_end": ref.end,
            "share_before_change": state.before_cut[j],
            "current_share": share,
            "current_ci95": list(wilson_interval(round(share * width), width)),
            "current_events": width,
            "detected_at": state.detected_at[j],
            "delta": self.delta,
        }
        active = state.active[j]
        verb = "moved away from" if active else "moved back towards"
        summary = f"ADWIN: share of {key} in {scope} {verb} its reference {ref.share(key):.2%}: now {share:.2%} over {width} events"
        return Condition(self.name, scope, key, active, at, "warning" if active else "info", summary, evidence)

    def readings(self) -> list[Reading]:
        """Per key: ADWIN's window share as the statistic, next to the reference share it is compared with."""
        return [
            Reading(self.name, scope, key, float(state.adwins[j].estimation), state.reference.share(key), state.active[j])
            for scope, state in self._scopes.items()
            if state.reference is not None
            for j, key in enumerate(self.keys)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "scopes": {
                scope: {
                    "adwins": copy.deepcopy(state.adwins),
                    "warmup": None if state.warmup is None else state.warmup.state_dict(),
                    "reference": None if state.reference is None else (
                        state.reference.events, dict(state.reference.counts), state.reference.start, state.reference.end
                    ),
                    "active": list(state.active),
                    "detected_at": list(state.detected_at),
                    "before_cut": list(state.before_cut),
                }
                for scope, state in self._scopes.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["keys"]) != list(self.keys):
            raise ValueError(f"saved state watches keys {state['keys']}, this detector watches {list(self.keys)}")
        scopes = {}
        for scope, saved in state["scopes"].items():
            warm = None
            if saved["warmup"] is not None:
                warm = ShareWarmUp(self.warmup_events, self.keys)
                warm.load_state_dict(saved["warmup"])
            ref = None if saved["reference"] is None else ShareReference(*saved["reference"])
            st = _AdwinScope(self.keys, self.delta, warm, ref)
            st.adwins = copy.deepcopy(saved["adwins"])
            st.active = list(saved["active"])
            st.detected_at = list(saved["detected_at"])
            st.before_cut = list(saved["before_cut"])
            scopes[scope] = st
        self._scopes = scopes
