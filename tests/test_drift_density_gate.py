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


def _unseen(topics: np.ndarray) -> np.ndarray:
    """A direction orthogonal to every topic: a region the reference never used."""
    return unit_rows(np.linalg.svd(topics)[2][-1])


def _feed(gate: DensityGate, window: RecentWindow, vectors: np.ndarray, start: int = 0, step: float = 1.0) -> list[int]:
    z = gate.reference.project(vectors)
    return [p for i in range(len(z)) for region in gate.add(window, z[i], clock=(start + i) * step, payload=start + i)
            for p in region]


def test_needed_is_the_smallest_count_with_a_small_enough_tail():
    p, surprise = 0.2, 8.0
    needed = _needed(40, p, surprise)
    k_ref = np.arange(41)
    assert np.all(binom.sf(needed - 1, needed + k_ref, p) <= np.exp(-surprise))
    assert np.all(binom.sf(needed - 2, needed - 1 + k_ref, p) > np.exp(-surprise))
    assert np.all(np.diff(needed) >= 0)  # a busier reference region needs more recent neighbours


def test_a_new_region_passes_once_it_has_filled_in_and_takes_its_first_members_along():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000, test_every=2)
    window = gate.new_window()
    z = gate.reference.project(_around(rng, _unseen(topics), 12))
    calls = [sum(gate.add(window, z[i], clock=float(i), payload=i), []) for i in range(12)]
    # p = 0.2: five in a region the reference never used are needed (0.2^5 < e^-8 < 0.2^4), so the
    # round after the sixth arrival is the first to pass; it takes the first members along, oldest
    # first, and every later member passes at the next round.
    assert calls[:5] == [[]] * 5 and calls[5] == [0, 1, 2, 3, 4, 5]
    assert sorted(p for c in calls for p in c) == list(range(12))
    assert all(c == sorted(c) for c in calls) and all(calls[i] == [] for i in range(0, 12, 2))


def test_rounds_run_every_test_every_arrivals():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000, test_every=5)
    window = gate.new_window()
    passed = [gate.add(window, v, clock=float(i), payload=i)
              for i, v in enumerate(gate.reference.project(_around(rng, _unseen(topics), 20)))]
    assert [i for i, p in enumerate(passed) if p] == [4, 9, 14, 19]


def test_a_region_as_busy_as_in_the_reference_stays_out():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000, test_every=1)
    window = gate.new_window()
    # 20 per topic per 4,000 events in the reference; the same rate now, over 8,000 events.
    rows = [(t, i * 200.0 + 20.0 * t) for i in range(40) for t in range(10)]
    z = gate.reference.project(np.vstack([_around(rng, topics[t], 1) for t, _ in rows]))
    passed = [p for i, (_, clock) in enumerate(rows) for r in gate.add(window, z[i], clock=clock, payload=i) for p in r]
    assert passed == []


def test_the_same_region_passes_when_it_fills_ten_times_faster():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000)
    passed = _feed(gate, gate.new_window(), _around(rng, topics[3], 64), step=10.0)  # 100 per 1,000 events, was 5
    assert len(passed) > 40


def test_near_duplicates_count_once():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000, test_every=1)
    same = np.repeat(_unseen(topics)[None, :], 30, axis=0)  # one prompt sent 30 times, where five distinct ones would pass
    assert _feed(gate, gate.new_window(), same) == []


def test_candidates_older_than_the_window_do_not_count():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000, test_every=1)
    group = _around(rng, _unseen(topics), 12)  # passes when it arrives within one window (test above)
    window = gate.new_window()
    assert _feed(gate, window, group, step=1001.0) == []  # each arrives after the previous one left
    assert len(window) == 1 and sum(p is not None for p in window.payloads) == 1


def test_the_window_is_bounded_by_its_capacity():
    rng, _, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1e9, capacity=16, test_every=1)
    window = gate.new_window()
    _feed(gate, window, _around(rng, unit_rows(rng.normal(size=DIM)), 50))
    assert len(window) == 16 and sum(p is not None for p in window.payloads) == 16
    assert np.count_nonzero(window.z.any(axis=1)) == 16


def test_window_state_round_trip_continues_identically():
    rng, _, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000, test_every=3)
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


@pytest.mark.parametrize(("kwargs", "message"), [(dict(radius=0.0), "radius"), (dict(radius=0.99), "radius"),
                                                 (dict(test_every=0), "test_every")])
def test_bad_settings_name_the_argument(kwargs, message):
    _, _, ref = _world()
    with pytest.raises(ValueError, match=message):
        DensityGate(ref, **kwargs)


def test_two_new_regions_in_one_round_pass_as_two_groups():
    rng, topics, ref = _world()
    gate = DensityGate(ref, radius=0.5, surprise=8.0, window=1000, test_every=12)
    a, b = (unit_rows(v) for v in np.linalg.svd(topics)[2][-2:])  # orthogonal to each other and to every topic
    z = gate.reference.project(np.vstack([_around(rng, a, 6), _around(rng, b, 6)])[[0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]])
    calls = [gate.add(gate_window, z[i], clock=float(i), payload=i)
             for gate_window in [gate.new_window()] for i in range(12)]
    assert calls[:11] == [[]] * 11
    assert sorted(sorted(region) for region in calls[11]) == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]]
