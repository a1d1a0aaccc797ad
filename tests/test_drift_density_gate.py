"""Density-ratio gate: admits a region that fills faster than the reference, not one that fills as usual."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.stats import binom

from monitor.drift.density_gate import DensityGate, RecentWindow, ReferenceDensity, _needed
from monitor.drift.known_regions import unit_rows

DIM = 16


def _around(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = 0.15) -> np.ndarray:
    return unit_rows(centre + spread * rng.normal(size=(n, DIM)))


def _world(seed: int = 0) -> tuple[np.random.Generator, np.ndarray, ReferenceDensity]:
    """Ten background topics; the reference holds 20 candidates of each over 4,000 events."""
    rng = np.random.default_rng(seed)
    topics = unit_rows(rng.normal(size=(10, DIM)))
    ref = np.vstack([_around(rng, t, 20) for t in topics])
    return rng, topics, ReferenceDensity.fit(np.zeros(DIM), np.eye(DIM), ref, events=4000)


def _feed(gate: DensityGate, window: RecentWindow, vectors: np.ndarray, start: int = 0, step: float = 1.0) -> list[int]:
    z = gate.reference.project(vectors)
    counts = gate.reference.counts(z, gate.radius)
    return [p for i in range(len(z)) for p in gate.add(window, z[i], ref_count=int(counts[i]), clock=(start + i) * step,
                                                       weight=1.0, payload=start + i)]


def test_needed_is_the_smallest_count_with_a_small_enough_tail():
    p, surprise = 0.2, 8.0
    needed = _needed(40, p, surprise)
    k_ref = np.arange(41)
    assert np.all(binom.sf(needed - 1, needed + k_ref, p) <= np.exp(-surprise))
    assert np.all(binom.sf(needed - 2, needed - 1 + k_ref, p) > np.exp(-surprise))
    assert np.all(np.diff(needed) >= 0)  # a busier reference region needs more recent neighbours


def test_a_new_region_passes_and_its_first_members_pass_late():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000)
    window = gate.new_window()
    new = unit_rows(rng.normal(size=DIM))
    z = gate.reference.project(_around(rng, new, 12))
    calls = [gate.add(window, z[i], ref_count=0, clock=float(i), weight=1.0, payload=i) for i in range(12)]
    # No single member is surprising alone: members pass once the group has filled in around them,
    # so the first ones are not lost, and each call returns its passes oldest first.
    assert calls[0] == [] and sorted(p for c in calls for p in c) == list(range(12))
    assert all(c == sorted(c) for c in calls) and any(len(c) > 1 for c in calls)


def test_a_region_as_busy_as_in_the_reference_stays_out():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000)
    window = gate.new_window()
    # 20 per topic per 4,000 events in the reference; the same rate now, over 8,000 events.
    rows = [(t, i * 200.0 + 20.0 * t) for i in range(40) for t in range(10)]
    vectors = np.vstack([_around(rng, topics[t], 1) for t, _ in rows])
    z = gate.reference.project(vectors)
    counts = gate.reference.counts(z, gate.radius)
    passed = [p for i, (_, clock) in enumerate(rows)
              for p in gate.add(window, z[i], ref_count=int(counts[i]), clock=clock, weight=1.0, payload=i)]
    assert passed == []


def test_the_same_region_passes_when_it_fills_ten_times_faster():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000)
    passed = _feed(gate, gate.new_window(), _around(rng, topics[3], 60), step=10.0)  # 100 per 1,000 events, was 5
    assert len(passed) > 40


def test_near_duplicates_are_not_neighbours():
    rng, _, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000)
    same = np.repeat(unit_rows(rng.normal(size=(1, DIM))), 30, axis=0)  # one prompt sent 30 times
    assert _feed(gate, gate.new_window(), same) == []


def test_neighbours_older_than_the_window_do_not_count():
    rng, _, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000)
    group = _around(rng, unit_rows(rng.normal(size=DIM)), 12)
    window = gate.new_window()
    assert _feed(gate, window, group, step=1001.0) == []  # each arrives after the previous one left
    assert len(window) == 1 and window.recent.max() == 0.0


def test_the_window_is_bounded_by_its_capacity():
    rng, _, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1e9, capacity=16)
    window = gate.new_window()
    _feed(gate, window, _around(rng, unit_rows(rng.normal(size=DIM)), 50))
    assert len(window) == 16 and sum(p is not None for p in window.payloads) == 16
    # Counts only cover live entries: at most the 15 others.
    assert window.recent.max() <= 15


def test_window_state_round_trip_continues_identically():
    rng, _, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000)
    vectors = _around(rng, unit_rows(rng.normal(size=DIM)), 30)
    whole = gate.new_window()
    expected = _feed(gate, whole, vectors)
    first = gate.new_window()
    got = _feed(gate, first, vectors[:7])
    restored = RecentWindow.from_state(pickle.loads(pickle.dumps(first.state_dict())))
    got += _feed(gate, restored, vectors[7:], start=7)
    assert got == expected and got
    restored_ref = ReferenceDensity.from_state(pickle.loads(pickle.dumps(ref.state_dict())))
    assert np.array_equal(restored_ref.points, ref.points) and restored_ref.events == ref.events


@pytest.mark.parametrize(("kwargs", "message"), [(dict(radius=0.0), "radius"), (dict(radius=0.99), "radius")])
def test_bad_settings_name_the_argument(kwargs, message):
    _, _, ref = _world()
    with pytest.raises(ValueError, match=message):
        DensityGate(ref, **kwargs)
