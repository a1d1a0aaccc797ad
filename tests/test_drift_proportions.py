"""Category-share drift: the calibrated CUSUM detector, its run-length calibration, and the ADWIN baseline."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from monitor.drift.category_share_adwin import AdwinShareDetector
from monitor.drift.base import Detector
from monitor.drift.bernoulli_cusum import average_run_length, calibrate_threshold, llr_steps, odds_shift
from monitor.drift.category_share import SCALE, CategoryShareDetector
from monitor.drift.reference import ShareKeys, ShareReference
from tests.helpers.conditions import feed
from tests.helpers.scored import category_stream

CATS = ["self_harm", "privacy_violation"]
BASE = {"self_harm": 0.05, "privacy_violation": 0.02}
RISEN = {"self_harm": 0.10, "privacy_violation": 0.02}


def stream(seed, phases, start=0.0, scopes=("global",)):
    """Concatenate (n, shares) phases into one stream of consecutive timestamps."""
    rng = np.random.default_rng(seed)
    events, t = [], start
    for n, shares in phases:
        events += category_stream(rng, n, shares, start=t, scopes=scopes)
        t += n
    return events


# ---------------------------------------------------------------------- run-length calibration


def simulated_arl(step_one, step_zero, rate, h, streams=3000, steps=12_000, seed=0):
    """Mean first alarm time of independent CUSUMs (censored at ``steps``, exponential MLE)."""
    rng = np.random.default_rng(seed)
    s = np.zeros(streams)
    first = np.zeros(streams)
    for t in range(1, steps + 1):
        s = np.maximum(0.0, s + np.where(rng.random(streams) < rate, step_one, step_zero))
        new = (s >= h) & (first == 0)
        first[new] = t
    done = first > 0
    return (first[done].sum() + (~done).sum() * steps) / done.sum()


@pytest.mark.parametrize("p0, h", [(0.05, 3.0), (0.01, 2.5)])
def test_average_run_length_matches_simulation(p0, h):
    one, zero = llr_steps(p0, odds_shift(p0, 2.0))
    exact = average_run_length(one, zero, p0, h)
    sim = simulated_arl(one, zero, p0, h)
    assert abs(exact - sim) / sim < 0.08, (exact, sim)


def test_calibrated_threshold_hits_target_and_widens_for_thin_references():
    one, zero = llr_steps(0.05, odds_shift(0.05, 2.0))
    h = calibrate_threshold(one, zero, 5_000, 100_000, 1e6)
    assert abs(math.log(average_run_length(one, zero, 0.05, h)) - math.log(1e6)) < 0.1
    thin = calibrate_threshold(one, zero, 50, 1_000, 1e6)  # same share, 100x fewer reference events
    assert thin > h + 0.5
    assert h < math.log(1e6) - 2  # far below Lorden's conservative ln(ARL)


# ---------------------------------------------------------------------- the detector


def test_is_a_detector_and_rejects_bad_configuration():
    assert isinstance(CategoryShareDetector(CATS), Detector)
    with pytest.raises(ValueError, match="unsafe"):
        CategoryShareDetector(["unsafe"])
    with pytest.raises(ValueError, match="ratio"):
        CategoryShareDetector(CATS, ratio=1.0)
    with pytest.raises(ValueError, match="unknown key"):
        CategoryShareDetector(CATS, reference=ShareReference(100, {"hate": 3}))
    with pytest.raises(ValueError, match=r"counts\['unsafe'\]"):
        ShareReference(100, {"unsafe": 101})
    with pytest.raises(ValueError, match="shares\\['self_harm'\\]"):
        ShareReference.from_shares({"self_harm": 1.5}, 100)


def test_fires_on_category_rise_with_evidence_and_resolves_when_it_returns():
    det = CategoryShareDetector(CATS, warmup_events=20_000)
    conditions = feed(det, stream(1, [(40_000, BASE), (3_000, RISEN), (12_000, BASE)]))
    fired = [c for c in conditions if c.key == "self_harm" and c.active]
    assert fired, "5% -> 10% rise of self_harm not detected"
    first = fired[0]
    assert 40_000 < first.at < 41_000  # detected within 1000 events of the change
    ev = first.evidence
    assert ev["direction"] == "rise" and first.severity == "warning"
    assert abs(ev["reference_share"] - 0.05) < 0.005
    assert ev["current_ci95"][0] > ev["reference_ci95"][1]
    assert 39_000 < ev["change_point_at"] <= first.at
    assert ev["statistic"] >= ev["threshold"]
    assert "self_harm" in first.summary and "rose" in first.summary
    # the share at the alarm is biased up by the stopping rule; while active it converges on the new share
    later = [c for c in fired if c.at > 42_500][0].evidence
    lo, hi = later["current_ci95"]
    assert lo < 0.10 < hi and later["change_point_at"] == ev["change_point_at"]
    resolved = [c for c in conditions if c.key == "self_harm" and not c.active]
    assert len(resolved) == 1 and 43_000 < resolved[0].at < 55_000
    lo, hi = resolved[0].evidence["current_ci95"]
    assert lo < 0.05 < hi
    assert {c.key for c in conditions} <= {"self_harm", "unsafe"}  # privacy_violation never moved
    reading = {(r.scope, r.key): r for r in det.readings()}[("global", "self_harm")]
    assert reading.threshold == 1.0 and not reading.active


def test_detects_a_drop_of_the_unsafe_share():
    det = CategoryShareDetector(CATS, warmup_events=20_000)
    conditions = feed(det, stream(2, [(30_000, BASE), (6_000, {"self_harm": 0.01, "privacy_violation": 0.01})]))
    drops = [c for c in conditions if c.key == "unsafe" and c.active]
    assert drops and drops[0].evidence["direction"] == "drop" and drops[0].severity == "info"
    assert drops[0].at > 30_000


def test_quiet_on_a_stationary_stream():
    det = CategoryShareDetector(CATS, warmup_events=20_000, expected_run_time=1_000_000)
    assert feed(det, stream(3, [(120_000, BASE)]), batch=500) == []
    readings = det.readings()
    assert len(readings) == 3 and all(0.0 <= r.statistic < 1.0 and not r.active for r in readings)


def test_scopes_are_independent():
    det = CategoryShareDetector(CATS, warmup_events=5_000)
    a = stream(4, [(10_000, BASE), (3_000, RISEN)], scopes=("global", "model=a"))
    b = stream(5, [(13_000, BASE)], scopes=("global", "model=b"))
    mixed = [e for pair in zip(a, b) for e in pair]
    fired = {(c.scope, c.key) for c in feed(det, mixed) if c.active}
    assert ("model=a", "self_harm") in fired
    assert not any(scope == "model=b" for scope, _ in fired)


def test_given_reference_skips_the_warm_up():
    ref = ShareReference.from_shares({"unsafe": 0.07, **BASE}, 200_000)
    det = CategoryShareDetector(CATS, reference=ref)
    fired = [c for c in feed(det, stream(6, [(2_000, RISEN)])) if c.key == "self_harm" and c.active]
    assert fired and fired[0].evidence["reference_events"] == 200_000


def test_cusum_matches_a_per_event_reference_implementation():
    """The vectorised batch update equals the textbook recursion, event by event."""
    det = CategoryShareDetector(CATS, warmup_events=2_000, expected_run_time=20_000)
    events = stream(7, [(2_000, BASE), (4_000, RISEN), (4_000, BASE)])
    det.update(events[:2_000])
    tests = det._tests["global"]
    one, zero, h = tests.step_one.copy(), tests.step_zero.copy(), tests.threshold.copy()
    x = ShareKeys(CATS).indicators(events[2_000:])[:, tests.key_of]
    stat = np.zeros(len(h), dtype=np.int64)
    back = np.zeros(len(h), dtype=np.int64)
    alarmed = np.zeros(len(h), dtype=bool)
    expected = []
    for row, xs in enumerate(x):
        step = np.where(xs, one, zero)
        stat = np.maximum(0, stat + step)
        back = np.where(alarmed, np.maximum(0, back - step), 0)
        for c in range(len(h)):
            if not alarmed[c] and stat[c] >= h[c]:
                alarmed[c], back[c] = True, 0
                expected.append((row, c))
            elif alarmed[c] and back[c] >= h[c]:
                alarmed[c], stat[c], back[c] = False, 0, 0
                expected.append((row, c))
    got = list(tests.advance(ShareKeys(CATS).indicators(events[2_000:]), np.arange(8_000.0)))
    assert got == expected and expected
    assert np.array_equal(tests.stat, stat) and np.array_equal(tests.alarmed, alarmed)


def test_save_restore_mid_stream_continues_identically():
    events = stream(8, [(25_000, BASE), (3_000, RISEN), (10_000, BASE)])
    whole = CategoryShareDetector(CATS, warmup_events=20_000)
    expected = feed(whole, events)
    assert any(c.active for c in expected) and any(not c.active for c in expected)
    for cut in (9_984, 25_088, 26_944):  # in warm-up, just after the change, while the alert is active
        first = CategoryShareDetector(CATS, warmup_events=20_000)
        got = feed(first, events[:cut])
        second = CategoryShareDetector(CATS, warmup_events=20_000)
        second.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
        got += feed(second, events[cut:])
        assert got == expected, cut
        assert second.readings() == whole.readings()


def test_batch_boundaries_do_not_change_alarms_or_state():
    """Only the per-batch refresh of open alerts depends on batching; alarms, resolves and state do not."""
    events = stream(8, [(25_000, BASE), (3_000, RISEN), (10_000, BASE)])
    runs = []
    for batch in (1_000, 97, 64):
        det = CategoryShareDetector(CATS, warmup_events=20_000)
        conditions = feed(det, events, batch=batch)
        state = det.state_dict()["tests"]["global"]
        changes, last = [], {}
        for c in conditions:
            if last.get(c.key) != c.active:
                changes.append(c)
                last[c.key] = c.active
        runs.append((changes, {k: v for k, v in state.items() if isinstance(v, np.ndarray)}))
    for changes, arrays in runs[1:]:
        assert changes == runs[0][0]
        assert all(np.array_equal(arrays[k], runs[0][1][k], equal_nan=True) for k in arrays)


def test_restore_refuses_state_of_other_keys():
    det = CategoryShareDetector(CATS, warmup_events=1_000)
    det.update(stream(9, [(1_500, BASE)]))
    with pytest.raises(ValueError, match="keys"):
        CategoryShareDetector(["self_harm"]).load_state_dict(det.state_dict())


def test_statistics_are_exact_integers():
    det = CategoryShareDetector(CATS, warmup_events=1_000)
    det.update(stream(10, [(1_500, BASE)]))
    tests = det._tests["global"]
    assert tests.stat.dtype == np.int64 and tests.threshold.dtype == np.int64
    assert np.all(tests.threshold > 2 * SCALE)


# ---------------------------------------------------------------------- ADWIN baseline


def test_adwin_baseline_fires_on_rise_and_quiet_before():
    det = AdwinShareDetector(CATS, warmup_events=5_000)
    assert isinstance(det, Detector)
    conditions = feed(det, stream(11, [(20_000, BASE), (4_000, RISEN)]))
    fired = [c for c in conditions if c.key == "self_harm" and c.active]
    assert fired and fired[0].at > 20_000 and fired[0].kind == "category_share_adwin"
    assert fired[0].evidence["current_share"] > fired[0].evidence["reference_share"]


def test_adwin_baseline_save_restore_continues_identically():
    events = stream(12, [(8_000, BASE), (3_000, RISEN)])
    whole = AdwinShareDetector(CATS, warmup_events=5_000)
    expected = feed(whole, events)
    first = AdwinShareDetector(CATS, warmup_events=5_000)
    got = feed(first, events[:8_960])
    second = AdwinShareDetector(CATS, warmup_events=5_000)
    second.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    got += feed(second, events[8_960:])
    assert got == expected and any(c.active for c in expected)
    assert second.readings() == whole.readings()


def test_category_absent_from_the_reference_is_watched_without_false_alarms():
    """A category never seen in the warm-up used to make calibration fail for the whole scope."""
    det = CategoryShareDetector(CATS, warmup_events=1500, expected_run_time=200_000)
    quiet = feed(det, stream(11, [(1500, {"self_harm": 0.05}), (40_000, {"self_harm": 0.05})]))
    assert quiet == []
    risen = feed(det, stream(12, [(3000, {"self_harm": 0.05, "privacy_violation": 0.02})], start=41_500.0))
    fired = [c for c in risen if c.active and c.key == "privacy_violation"]
    assert fired and fired[0].at < 41_500 + 1000
    assert fired[0].evidence["reference_share"] < 0.001


def _rise_budget(det: CategoryShareDetector) -> dict[str, tuple[float, float]]:
    """Per key: (target run length, threshold in nats) of its rise test, after a warm-up on BASE."""
    feed(det, stream(13, [(20_000, BASE)]))
    tests = det._tests["global"]
    return {det.keys[int(tests.key_of[c])]: (float(tests.target_arl[c]), float(tests.threshold[c] / SCALE))
            for c in range(len(tests.key_of)) if tests.rising[c]}


def test_share_weighting_moves_rise_sensitivity_to_common_keys_within_the_same_budget():
    equal = _rise_budget(CategoryShareDetector(CATS, warmup_events=20_000, drop_budget=0.0, share_weighting=0.0))
    weighted = _rise_budget(CategoryShareDetector(CATS, warmup_events=20_000, drop_budget=0.0, share_weighting=1.0))
    budget = 1.0 / 125_000
    for rises in (equal, weighted):  # Bonferroni: the rise tests' alarm rates add up to the scope's budget
        assert sum(1.0 / arl for arl, _ in rises.values()) == pytest.approx(budget)
    assert len({round(arl) for arl, _ in equal.values()}) == 1
    # in proportion to share: unsafe (7%) : self_harm (5%) : privacy_violation (2%)
    assert weighted["self_harm"][0] / weighted["privacy_violation"][0] == pytest.approx(0.02 / 0.05, rel=0.1)
    assert weighted["self_harm"][1] < equal["self_harm"][1]  # the commoner key: lower threshold, shorter delay
    assert weighted["privacy_violation"][1] > equal["privacy_violation"][1]
    with pytest.raises(ValueError, match="share_weighting"):
        CategoryShareDetector(CATS, share_weighting=1.5)
