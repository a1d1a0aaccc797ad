"""Density-ratio gate: which unsafe-looking events sit where recent traffic is far denser than the reference.

Why: an emerging category is not "far from the known categories" (on real MiniLM embeddings the
prompts of a withheld category are no farther from the known centroids than the judge's false
positives on benign chat: AUROC 0.44-0.54), it is "a region that fills faster than the reference
ever did". So each unsafe-looking event (a *candidate*) is compared with the candidates of the
reference period in a small PCA space (the reference sample's top axes): within cosine ``radius`` it has ``k_ref``
reference neighbours and ``k_recent`` neighbours among the candidates of the last ``window``
units of traffic. Under no change both counts are Poisson with means in the ratio
``window : reference_events``, so given their sum ``k_recent`` is binomial with
``p = window / (window + reference_events)`` (the conditional test for two Poisson rates, which
also accounts for the noise of a small reference); a candidate passes when
``P(X >= k_recent)`` falls below ``exp(-surprise)``. The PCA axes come from reference events
that are not among the reference candidates (see :meth:`ReferenceDensity.fit`). Counts are
re-tested as neighbours arrive, so the first members of a new group pass once the group has
filled in around them. Near-duplicates (cosine above
``duplicate_similarity``) do not count as neighbours: a prompt sent again is not a new category.

Measured on ``bench/drift_scenarios.py --only emerging`` (real embeddings, a stand-in judge that
flags 10% of benign chat): with this gate the detector found 8 of 15 injected groups with 0.89
median exemplar purity and no false alarm in 330k stationary events, where the centroid-distance
gate it replaced found 4 of 15 with purity 0. A window of 1,000 events, radius 0.5 in 32
dimensions and ``surprise`` 8 are the defaults; an earlier variant with ``surprise`` 6 detected
sooner but raised 1 false alarm per 100k events.

>>> rng = np.random.default_rng(0)
>>> ref = ReferenceDensity.fit(np.zeros(8), np.eye(8), unit_rows(rng.normal(size=(400, 8))), events=4000)
>>> gate = DensityGate(ref, radius=0.5, surprise=6.0, window=1000)
>>> window = gate.new_window()
>>> spot = unit_rows(rng.normal(size=8))
>>> z = ref.project(unit_rows(spot + 0.15 * rng.normal(size=(12, 8))))
>>> passed = [p for i in range(12) for p in gate.add(window, z[i], ref_count=0, clock=float(i), weight=1.0, payload=i)]
>>> sorted(passed) == list(range(12)), len(window)
(True, 12)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from monitor.drift.known_regions import unit_rows

@dataclass(frozen=True)
class ReferenceDensity:
    """Reference candidates in a PCA space fitted on them, and the traffic they came from."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    points: np.ndarray  # (n, k) unit rows
    events: float  # traffic weight of the reference period the points were drawn from

    @classmethod
    def fit(cls, mean: np.ndarray, components: np.ndarray, candidates: np.ndarray, events: float) -> ReferenceDensity:
        """Reference ``candidates`` in the space of ``components`` (rows), which must be fitted on *other* events.

        Points that helped fit a PCA look more spread out in it than new points do (the axes follow
        their noise), so in-sample points would understate the reference density and let ordinary
        traffic pass; the detector fits the axes on its reference sample and keeps the candidates
        outside that sample here.
        """
        if not events > 0:
            raise ValueError(f"events: must be > 0, got {events}")
        ref = cls(np.asarray(mean, np.float32), np.asarray(components, np.float32), np.zeros((0, len(components)), np.float32),
                  float(events))
        points = ref.project(np.asarray(candidates, dtype=np.float32).reshape(-1, ref.mean.shape[0]))
        return cls(ref.mean, ref.components, points, ref.events)

    @property
    def dim(self) -> int:
        return len(self.components)

    def project(self, x: np.ndarray) -> np.ndarray:
        return unit_rows((np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T)

    def counts(self, z: np.ndarray, radius: float) -> np.ndarray:
        """Reference neighbours within cosine ``radius`` of each projected row."""
        return (z @ self.points.T >= radius).sum(axis=1)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "components": self.components, "points": self.points, "events": self.events}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReferenceDensity:
        return cls(*(np.asarray(state[k], dtype=np.float32) for k in ("mean", "components", "points")), float(state["events"]))


@dataclass(slots=True)
class RecentWindow:
    """One scope's candidates of the last ``window`` units of traffic, in ``capacity`` fixed slots (a ring).

    Live entries are slots ``tail .. arrivals - 1`` (mod capacity), oldest first; a free slot's
    vector is zero, so it is never within a positive radius of anything.
    """

    clock: np.ndarray  # (capacity,) the scope's traffic clock on arrival
    z: np.ndarray  # (capacity, k) projected
    weight: np.ndarray  # (capacity,)
    recent: np.ndarray  # (capacity,) weight of live neighbours, near-duplicates excluded
    needed: np.ndarray  # (capacity,) ``recent`` at which the entry passes
    passed: np.ndarray  # (capacity,) bool
    payloads: list[Any]
    arrivals: int = 0
    tail: int = 0  # arrival number of the oldest live entry

    @classmethod
    def empty(cls, dim: int, capacity: int) -> RecentWindow:
        return cls(np.zeros(capacity), np.zeros((capacity, dim), np.float32), np.zeros(capacity), np.zeros(capacity),
                   np.zeros(capacity), np.zeros(capacity, bool), [None] * capacity)

    def __len__(self) -> int:
        return self.arrivals - self.tail

    def state_dict(self, payload_state: Any = None) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name) for name in _ARRAYS}
        state["payloads"] = [p if p is None or payload_state is None else payload_state(p) for p in self.payloads]
        state["arrivals"], state["tail"] = self.arrivals, self.tail
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], payload: Any = None) -> RecentWindow:
        payloads = [p if payload is None or p is None else payload(p) for p in state["payloads"]]
        return cls(*(np.array(state[name]) for name in _ARRAYS), payloads, int(state["arrivals"]), int(state["tail"]))


_ARRAYS = ("clock", "z", "weight", "recent", "needed", "passed")


class DensityGate:
    """Admits candidates whose recent neighbourhood is improbably full given the reference (see module doc)."""

    def __init__(self, reference: ReferenceDensity, *, radius: float = 0.5, surprise: float = 8.0, window: float = 1000.0,
                 duplicate_similarity: float = 0.98, capacity: int = 512) -> None:
        if not 0 < radius < duplicate_similarity:
            raise ValueError(f"radius: must be > 0 and below duplicate_similarity ({duplicate_similarity}), got {radius}")
        self.reference = reference
        self.radius, self.surprise, self.window = radius, surprise, float(window)
        self.duplicate_similarity, self.capacity = duplicate_similarity, capacity
        self._needed = _needed(len(reference.points), self.window / (self.window + reference.events), surprise)

    def new_window(self) -> RecentWindow:
        return RecentWindow.empty(self.reference.dim, self.capacity)

    def add(self, window: RecentWindow, z: np.ndarray, *, ref_count: int, clock: float, weight: float,
            payload: Any) -> list[Any]:
        """Enter one candidate (``ref_count`` from :meth:`ReferenceDensity.counts`); payloads that pass now, oldest first."""
        cap = self.capacity
        while window.tail < window.arrivals and (
            window.clock[window.tail % cap] <= clock - self.window or window.arrivals - window.tail >= cap
        ):
            self._remove_oldest(window)
        slot = window.arrivals % cap
        s = window.z @ z
        near = np.flatnonzero((s >= self.radius) & (s <= self.duplicate_similarity))
        window.recent[near] += weight
        window.clock[slot], window.z[slot], window.weight[slot], window.passed[slot] = clock, z, weight, False
        window.recent[slot] = window.weight[near].sum()
        window.needed[slot] = self._needed[ref_count]
        window.payloads[slot] = payload
        window.arrivals += 1
        touched = np.append(near, slot)
        fire = touched[~window.passed[touched] & (window.recent[touched] >= window.needed[touched])]
        if not len(fire):
            return []
        fire = sorted(fire.tolist(), key=lambda i: (i - window.tail) % cap)  # oldest first
        window.passed[fire] = True
        return [window.payloads[i] for i in fire]

    def _remove_oldest(self, window: RecentWindow) -> None:
        """Take the oldest entry out of the window and out of its neighbours' counts."""
        slot = window.tail % self.capacity
        s = window.z @ window.z[slot]
        window.recent[(s >= self.radius) & (s <= self.duplicate_similarity)] -= window.weight[slot]
        window.z[slot] = 0.0
        window.payloads[slot] = None
        window.tail += 1


def _needed(max_ref: int, p: float, surprise: float) -> np.ndarray:
    """``out[k_ref]``: the smallest ``k`` with ``P(Binomial(k + k_ref, p) >= k) <= exp(-surprise)``, for k_ref = 0..max_ref.

    That tail falls as ``k`` grows (it is the chance of ``k`` successes before ``k_ref + 1`` failures),
    so a vectorised bisection finds every entry at once.
    """
    k_ref = np.arange(max_ref + 1)
    lo = np.zeros(max_ref + 1)  # fails (k = 0 always "passes" nothing)
    hi = np.full(max_ref + 1, 1.0)
    while True:  # grow hi until it passes everywhere
        bad = binom.sf(hi - 1, hi + k_ref, p) > np.exp(-surprise)
        if not bad.any():
            break
        lo, hi = np.where(bad, hi, lo), np.where(bad, 2 * hi, hi)
    while (hi - lo > 1).any():
        mid = np.floor((lo + hi) / 2)
        ok = binom.sf(mid - 1, mid + k_ref, p) <= np.exp(-surprise)
        active = hi - lo > 1
        hi, lo = np.where(active & ok, mid, hi), np.where(active & ~ok, mid, lo)
    return hi
