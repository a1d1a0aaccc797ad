"""RateChange: quiet and calibrated on stationary rates, catches rises and falls, resolves, restores exactly."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from monitor.drift.rate_change import RateChange, RateChangeConfig, wilson_interval
from tests.helpers.conditions import feed, opened


def bernoulli(rng: random.Random, rate: float, start: int, n: int, scope: str = "global", key: str = ""):
    return [(scope, key, rng.random() < rate, float(t)) for t in range(start, start + n)]


def test_stationary_rates_stay_quiet_with_default_settings():
    rng = random.Random(11)
    rates = {"rare": 0.002, "low": 0.03, "mid": 0.25, "high": 0.8}
    rc = RateChange("k", "rate", direction="both")
    trials = [("global", key, rng.random() < p, float(t)) for t in range(50_000) for key, p in rates.items()]
    assert feed(rc, trials) == []
    assert all(not r.active and r.statistic < r.threshold for r in rc.readings("k"))


@pytest.mark.parametrize("rate", [0.02, 0.2, 0.6])
def test_false_alarms_stay_within_the_arl_target(rate):
    # a small arl makes false alarms frequent enough to count; the target is one per arl trials per key
    rng = random.Random(5)
    config = RateChangeConfig(warmup=100, arl=300)
    rc = RateChange("k", "rate", config, direction="both")
    keys = [str(i) for i in range(10)]
    trials = [("global", key, rng.random() < rate, float(t)) for t in range(20_000) for key in keys]
    alarms = opened(feed(rc, trials))
    assert len(alarms) <= len(trials) / config.arl


def test_rise_is_caught_with_evidence_of_the_numbers():
    rng = random.Random(1)
    rc = RateChange("over_refusal", "refusal rate", direction="rise")
    assert feed(rc, bernoulli(rng, 0.05, 0, 20_000)) == []
    conditions = feed(rc, bernoulli(rng, 0.10, 20_000, 10_000))
    first = opened(conditions)[0]
    assert first.kind == "over_refusal" and first.scope == "global" and first.key == "" and first.severity == "warning"
    assert 20_000 <= first.at < 25_000
    ev = first.evidence
    assert ev["direction"] == "rise"
    assert 0.045 < ev["reference_rate"] < 0.055 and ev["reference_trials"] >= 4_000
    assert ev["reference_rate"] < ev["reference_bound"] < ev["design_rate"]
    lo, hi = ev["current_ci95"]
    assert lo < ev["current_rate"] < hi and lo < 0.10 < hi
    assert ev["current_trials"] > 100 and ev["statistic"] == pytest.approx(ev["threshold"])
    assert 15_000 < ev["change_point_at"] <= ev["alarm_at"] == first.at
    assert f"rose from {ev['reference_rate']:.2%} to {ev['current_rate']:.2%}" in first.summary
    assert json.loads(json.dumps(ev)) == ev
    # while the rate stays high, every batch re-states the alert at its latest event time
    assert conditions[-1].active and conditions[-1].at == 29_999.0


def test_drop_is_caught_only_when_watched():
    rng = random.Random(2)
    before, after = bernoulli(rng, 0.3, 0, 10_000), bernoulli(rng, 0.12, 10_000, 3_000)
    both = RateChange("k", "rate", direction="both", severity_drop="info")
    up_only = RateChange("k", "rate", direction="rise")
    assert feed(both, before) == [] and feed(up_only, before) == []
    first = opened(feed(both, after))[0]
    assert first.evidence["direction"] == "drop" and first.severity == "info" and "fell from" in first.summary
    assert feed(up_only, after) == []
    resolved = [c for c in feed(both, bernoulli(rng, 0.3, 13_000, 5_000)) if not c.active]
    assert len(resolved) == 1 and resolved[0].evidence["direction"] == "drop" and resolved[0].severity == "info"


def test_alert_resolves_when_the_rate_returns():
    rng = random.Random(3)
    rc = RateChange("k", "rate")
    feed(rc, bernoulli(rng, 0.05, 0, 10_000))
    raised = feed(rc, bernoulli(rng, 0.2, 10_000, 2_000))
    assert opened(raised) and rc.active("global", "")
    back = feed(rc, bernoulli(rng, 0.05, 12_000, 10_000))
    resolved = [c for c in back if not c.active]
    assert len(resolved) == 1 and "back at its reference" in resolved[0].summary
    assert not rc.active("global", "") and back[-1] is resolved[0]


def test_keys_and_scopes_are_independent():
    rng = random.Random(4)
    rc = RateChange("k", "rate")
    steady = [t for s in ("global", "model=a") for t in bernoulli(rng, 0.1, 0, 5_000, s, "x")]
    feed(rc, steady)
    mixed = bernoulli(rng, 0.4, 5_000, 1_000, "model=a", "x") + bernoulli(rng, 0.1, 5_000, 1_000, "global", "x")
    fired = {c.fingerprint for c in feed(rc, mixed)}
    assert fired == {"k/model=a/x"}


def test_a_reference_without_successes_still_catches_a_rise_and_never_goes_below_zero():
    rng = random.Random(6)
    rc = RateChange("k", "rate", direction="both")
    assert feed(rc, [("global", "", False, float(t)) for t in range(20_000)]) == []
    assert opened(feed(rc, bernoulli(rng, 0.05, 20_000, 2_000)))


def test_a_rate_of_one_cannot_rise_and_does_not_crash():
    rc = RateChange("k", "rate", direction="both")
    assert feed(rc, [("global", "", True, float(t)) for t in range(5_000)]) == []
    assert opened(feed(rc, [("global", "", t % 2 == 0, float(t)) for t in range(5_000, 7_000)]))


def test_save_restore_mid_stream_continues_identically():
    rng = random.Random(7)
    trials = (
        bernoulli(rng, 0.05, 0, 6_000)
        + bernoulli(rng, 0.06, 6_000, 3_000, "model=a", "y")
        + bernoulli(rng, 0.25, 9_000, 3_000)
        + bernoulli(rng, 0.05, 12_000, 8_000)
    )
    config = RateChangeConfig(warmup=500)
    whole = RateChange("k", "rate", config, direction="both")
    expected = feed(whole, trials)
    assert opened(expected)

    for cut in (320, 9_216, 9_984):  # in warm-up, as the rise begins, during the alert (batch-aligned)
        first = RateChange("k", "rate", config, direction="both")
        got = feed(first, trials[:cut])
        restored = RateChange("k", "rate", config, direction="both")
        restored.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
        got += feed(restored, trials[cut:])
        assert got == expected
        assert restored.readings("k") == whole.readings("k")
        assert restored.state_dict() == whole.state_dict()


def test_config_errors_name_the_field():
    for field, value in [("warmup", 5), ("arl", 1), ("ratio", 1.0), ("reference_z", 1.0)]:
        with pytest.raises(ValueError, match=field):
            RateChangeConfig(**{field: value})
    with pytest.raises(ValueError, match="direction"):
        RateChange("k", "rate", direction="sideways")  # type: ignore[arg-type]


def test_watching_both_ways_splits_the_false_alarm_budget():
    rng = random.Random(8)
    trials = bernoulli(rng, 0.1, 0, 2_000)
    up, both = RateChange("k", "rate"), RateChange("k", "rate", direction="both")
    feed(up, trials), feed(both, trials)
    [r_up], [r_both] = up.readings("k"), both.readings("k")
    assert r_both.threshold > r_up.threshold > 0


def test_wilson_interval_is_exact_at_the_edges():
    lo, hi = wilson_interval(0, 100)
    assert lo == 0.0 and 0.03 < hi < 0.04
    lo, hi = wilson_interval(100, 100)
    assert hi == 1.0 and 0.96 < lo < 0.97
