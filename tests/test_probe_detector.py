"""The probe detector on synthetic rounds: alerts on a rate change within 3 rounds, names the flipped
probes, reports a single flip without alerting, stays quiet on unchanged and on noisy behaviour, and
replays identically from saved state."""

from __future__ import annotations

import random

from monitor.probe.detector import Observation, ProbeDetector

N_ANSWER, N_REFUSE = 38, 31
START = 1_800_000_000.0
ROUND = 900.0


def round_of(t: int, refused_answer: set[int] = frozenset(), complied_refuse: set[int] = frozenset(), noise: float = 0.0,
             rng: random.Random | None = None) -> list[Observation]:
    out = []
    for kind, n, flipped in (("should_answer", N_ANSWER, refused_answer), ("should_refuse", N_REFUSE, complied_refuse)):
        for i in range(n):
            refused = kind == "should_refuse"
            if i in flipped:
                refused = not refused
            if noise and rng is not None and rng.random() < noise:
                refused = not refused
            out.append(Observation(
                target="canary", probe_set="benign@v1" if kind == "should_answer" else "harmful@v1", probe_id=f"{kind}-{i}",
                kind=kind, prompt=f"prompt {i}", answer="I'm sorry" if refused else "Sure", refused=refused, harmful=None,
                at=START + t * ROUND,
            ))
    return out


def run(detector: ProbeDetector, rounds):
    history = []
    for t, obs in rounds:
        history.append(detector.observe_round(obs, START + t * ROUND))
    return history


def active(conditions):
    return [c for c in conditions if c.active]


def test_quiet_over_200_unchanged_deterministic_rounds_then_alerts_on_30pct_over_refusal():
    detector = ProbeDetector()
    history = run(detector, ((t, round_of(t)) for t in range(200)))
    assert not any(active(c) for c in history)
    flipped = set(range(0, N_ANSWER, 3))  # 13 of 38: about 30%
    after = run(detector, ((200 + t, round_of(200 + t, refused_answer=flipped)) for t in range(3)))
    fired = [i for i, conds in enumerate(after) if active(conds)]
    assert fired and fired[0] <= 2, "alert within 3 rounds"
    [cond] = active(after[fired[0]])
    assert (cond.kind, cond.scope, cond.key, cond.severity) == ("probe_over_refusal", "model=canary", "benign@v1", "warning")
    named = {f["probe_id"] for f in cond.evidence["flipped"]}
    assert named <= {f"should_answer-{i}" for i in flipped} and len(named) == 10  # evidence is bounded (max_evidence)
    assert cond.evidence["flipped_count"] == len(flipped)
    assert cond.evidence["flipped"][0]["before"] == "Sure" and cond.evidence["flipped"][0]["after"] == "I'm sorry"
    assert cond.at == START + (200 + fired[0]) * ROUND  # event time, not wall time
    # Behaviour restored: the alert condition goes inactive again.
    back = run(detector, ((203 + t, round_of(203 + t)) for t in range(3)))
    assert not active(back[-1]) and any(c.kind == "probe_over_refusal" for c in back[-1])


def test_unsafe_compliance_of_20pct_alerts_as_critical_within_3_rounds():
    detector = ProbeDetector()
    run(detector, ((t, round_of(t)) for t in range(10)))
    complied = set(range(0, N_REFUSE, 5))  # 7 of 31: about 20%
    after = run(detector, ((10 + t, round_of(10 + t, complied_refuse=complied)) for t in range(3)))
    fired = [i for i, conds in enumerate(after) if active(conds)]
    assert fired and fired[0] <= 2
    [cond] = active(after[fired[0]])
    assert (cond.kind, cond.severity) == ("probe_unsafe_compliance", "critical")
    assert {f["probe_id"] for f in cond.evidence["flipped"]} == {f"should_refuse-{i}" for i in complied}


def test_a_single_flipped_probe_is_evidence_not_an_alert():
    detector = ProbeDetector()
    run(detector, ((t, round_of(t)) for t in range(5)))
    history = run(detector, ((5 + t, round_of(5 + t, refused_answer={4})) for t in range(50)))
    assert not any(active(c) for c in history)
    last = next(c for c in history[-1] if c.kind == "probe_over_refusal")
    assert [f["probe_id"] for f in last.evidence["flipped"]] == ["should_answer-4"]
    [reading] = [r for r in detector.readings() if r.signal == "over_refusal"]
    assert reading.flipped == 1 and not reading.active


def test_quiet_over_200_rounds_of_a_noisy_model_at_a_fixed_rate():
    """A model that flips each answer with probability 5% (seeded): no alert in 200 rounds, over 10 seeds."""
    alarms = 0
    for seed in range(10):
        rng = random.Random(seed)
        detector = ProbeDetector()
        history = run(detector, ((t, round_of(t, noise=0.05, rng=rng)) for t in range(200)))
        alarms += sum(bool(active(c)) for c in history)
    assert alarms == 0


def test_state_round_trip_replays_identically():
    rng_a, rng_b = random.Random(7), random.Random(7)
    rounds_a = [(t, round_of(t, refused_answer=set(range(12)) if t >= 8 else set(), noise=0.05, rng=rng_a)) for t in range(12)]
    rounds_b = [(t, round_of(t, refused_answer=set(range(12)) if t >= 8 else set(), noise=0.05, rng=rng_b)) for t in range(12)]
    whole = ProbeDetector()
    expected = run(whole, rounds_a)
    first = ProbeDetector()
    run(first, rounds_b[:6])
    resumed = ProbeDetector()
    resumed.load_state_dict(first.state_dict())
    assert run(resumed, rounds_b[6:]) == expected[6:]
    assert any(active(c) for c in expected)


def test_reset_makes_the_new_behaviour_the_reference():
    """A reviewer accepts an intended change: the key warms up again on the new answers and stays quiet."""
    detector = ProbeDetector()
    run(detector, ((t, round_of(t)) for t in range(5)))
    refusing = set(range(0, N_ANSWER, 3))  # 13 of 38 safe questions refused from now on
    fired = run(detector, ((5 + t, round_of(5 + t, refused_answer=refusing)) for t in range(3)))
    assert active(fired[-1])
    assert detector.reset("probe_over_refusal", "model=canary", "benign@v1")
    assert not detector.reset("probe_over_refusal", "model=canary", "benign@v1")  # gone already
    assert not detector.reset("probe_unsafe_compliance", "model=other", "harmful@v1")
    after = run(detector, ((8 + t, round_of(8 + t, refused_answer=refusing)) for t in range(20)))
    assert all(c.kind != "probe_over_refusal" for conds in after[:3] for c in conds)  # warming up on the new answers
    assert not any(active(c) for c in after)
    [reading] = [r for r in detector.readings() if r.signal == "over_refusal"]
    assert abs(reading.reference_rate - len(refusing) / N_ANSWER) < 1e-9
    # The other signal's test was left alone.
    assert [r.reference_rate for r in detector.readings() if r.signal == "unsafe_compliance"] == [0.0]
