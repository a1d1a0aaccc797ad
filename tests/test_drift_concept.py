"""Concept-shift detectors: label disagreement, second-opinion disagreement, unsafe responses, over-refusal.

Each one fires on the synthetic change it exists to catch, stays quiet on a stationary stream of
fixed seed, and continues identically after a save/restore mid-stream.
"""

from __future__ import annotations

import pickle
import random
from typing import Callable, Iterator

import numpy as np
import pytest

from monitor.signals import Condition
from monitor.drift.base import Detector
from monitor.drift.over_refusal import OverRefusalDetector
from monitor.drift.unsafe_response_rate import UnsafeResponseRateDetector
from monitor.drift.feedback_disagreement import Feedback, FeedbackDisagreementDetector
from monitor.drift.rate_change import RateChangeConfig
from monitor.drift.judge_disagreement import SecondOpinionDisagreementDetector
from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.taxonomy import SAFE
from monitor.taxonomy import load_taxonomy
from tests.helpers.conditions import feed, opened
from tests.helpers.scored import verdict

HARM = load_taxonomy().harm_ids
VEC = np.zeros(384, dtype=np.float32)
SCOPES = ("global", "model=a")
BATCH = 64


def scored(i: int, v: Verdict, second: Verdict | None = None, scopes: tuple[str, ...] = SCOPES) -> ScoredEvent:
    """A judged event carrying ``v`` (and a second opinion); it has a response when ``v`` judged one."""
    has_response = v.response_flagged is not None or v.refused is not None
    event = Event(f"evt-{i}", 1_700_000_000.0 + i, "prompt", "response" if has_response else None)
    return ScoredEvent(event, 1.0, VEC, VEC if has_response else None, v, scopes, second)


def assert_restores_identically(make: Callable[[], Detector], events: list[ScoredEvent], cut: int) -> list[Condition]:
    whole = make()
    expected = feed(whole, events)
    first = make()
    got = feed(first, events[:cut])
    restored = make()
    restored.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    got += feed(restored, events[cut:])
    assert got == expected
    assert restored.readings() == whole.readings()
    assert restored.state_dict() == whole.state_dict()
    return expected


def test_every_detector_implements_the_protocol():
    for det in (FeedbackDisagreementDetector(HARM), SecondOpinionDisagreementDetector(), UnsafeResponseRateDetector(), OverRefusalDetector()):
        assert isinstance(det, Detector)


# --- second-opinion disagreement ---


def second_opinion_stream(rng: random.Random, start: int, n: int, disagree: dict[str, float]) -> list[ScoredEvent]:
    """Primary verdicts over a few categories; the second judge flips prompt harm at a per-category rate."""
    categories = list(disagree)
    events = []
    for i in range(start, start + n):
        category = categories[i % len(categories)]
        primary = verdict(category)
        flips = rng.random() < disagree[category]
        second = (verdict(HARM[0]) if category == SAFE else verdict(SAFE)) if flips else primary
        events.append(scored(i, primary, second if i % 2 == 0 else None))
    return events


STEADY_DISAGREEMENT = {SAFE: 0.02, "self_harm": 0.10, "privacy_violation": 0.05}


def test_second_opinion_quiet_on_a_stationary_stream():
    det = SecondOpinionDisagreementDetector()
    assert feed(det, second_opinion_stream(random.Random(0), 0, 100_000, STEADY_DISAGREEMENT)) == []
    keys = {(r.scope, r.key) for r in det.readings()}
    assert keys == {(s, k) for s in SCOPES for k in ("", *STEADY_DISAGREEMENT)}


def test_second_opinion_catches_a_rise_in_one_category():
    rng = random.Random(1)
    det = SecondOpinionDisagreementDetector()
    assert feed(det, second_opinion_stream(rng, 0, 30_000, STEADY_DISAGREEMENT)) == []
    shifted = dict(STEADY_DISAGREEMENT, self_harm=0.30)
    alarms = opened(feed(det, second_opinion_stream(rng, 30_000, 15_000, shifted)))
    assert {(c.kind, c.scope, c.key) for c in alarms} >= {("judge_disagreement", s, "self_harm") for s in SCOPES}
    assert all(c.key in ("", "self_harm") for c in alarms)
    ev = next(c for c in alarms if c.key == "self_harm").evidence
    assert ev["direction"] == "rise" and 0.07 < ev["reference_rate"] < 0.13 and ev["current_ci95"][0] > ev["reference_bound"]


def test_second_opinion_ignores_events_without_a_second_verdict():
    det = SecondOpinionDisagreementDetector()
    assert feed(det, [scored(i, verdict("self_harm")) for i in range(5_000)]) == []
    assert det.readings() == []


def test_second_opinion_restores_mid_stream():
    rng = random.Random(2)
    config = RateChangeConfig(warmup=300)
    events = second_opinion_stream(rng, 0, 6_000, STEADY_DISAGREEMENT)
    events += second_opinion_stream(rng, 6_000, 4_000, dict(STEADY_DISAGREEMENT, privacy_violation=0.4))
    conditions = assert_restores_identically(lambda: SecondOpinionDisagreementDetector(config), events, cut=64 * 100)
    assert opened(conditions)


# --- behaviour: unsafe responses per prompt category ---


def behaviour_stream(rng: random.Random, start: int, n: int, unsafe: dict[str, float], refusal: float = 0.03) -> list[ScoredEvent]:
    """Prompts cycle over categories; responses are unsafe at a per-category rate, safe prompts refused at ``refusal``."""
    categories = list(unsafe)
    events = []
    for i in range(start, start + n):
        category = categories[i % len(categories)]
        if i % 10 == 9:  # no response: says nothing about behaviour
            events.append(scored(i, verdict(category)))
            continue
        refuse_rate = refusal if category == SAFE else 0.6
        v = verdict(category, response_unsafe=rng.random() < unsafe[category], refused=rng.random() < refuse_rate)
        events.append(scored(i, v))
    return events


STEADY_UNSAFE = {SAFE: 0.01, "self_harm": 0.05, "violence_aiding_and_abetting_incitement": 0.15}


def test_unsafe_response_rate_quiet_on_a_stationary_stream():
    det = UnsafeResponseRateDetector()
    assert feed(det, behaviour_stream(random.Random(3), 0, 100_000, STEADY_UNSAFE)) == []
    assert {r.key for r in det.readings()} == set(STEADY_UNSAFE)


def test_unsafe_response_rate_catches_a_regression_as_critical():
    rng = random.Random(4)
    det = UnsafeResponseRateDetector()
    assert feed(det, behaviour_stream(rng, 0, 30_000, STEADY_UNSAFE)) == []
    alarms = opened(feed(det, behaviour_stream(rng, 30_000, 15_000, dict(STEADY_UNSAFE, self_harm=0.15))))
    assert {(c.scope, c.key) for c in alarms} == {(s, "self_harm") for s in SCOPES}
    assert all(c.kind == "unsafe_response_rate" and c.severity == "critical" for c in alarms)
    assert "[self_harm]" in alarms[0].summary and "rose" in alarms[0].summary


def test_unsafe_response_rate_reports_a_fall_as_info():
    rng = random.Random(5)
    det = UnsafeResponseRateDetector()
    feed(det, behaviour_stream(rng, 0, 30_000, STEADY_UNSAFE))
    falls = opened(feed(det, behaviour_stream(rng, 30_000, 15_000, dict(STEADY_UNSAFE, violence_aiding_and_abetting_incitement=0.03))))
    assert falls and all(c.severity == "info" and c.evidence["direction"] == "drop" for c in falls)
    assert {c.key for c in falls} == {"violence_aiding_and_abetting_incitement"}


def test_unsafe_response_rate_skips_events_without_a_response():
    det = UnsafeResponseRateDetector()
    feed(det, [scored(i, verdict("self_harm")) for i in range(3_000)])
    assert det.readings() == []


def test_unsafe_response_rate_restores_mid_stream():
    rng = random.Random(6)
    config = RateChangeConfig(warmup=300)
    events = behaviour_stream(rng, 0, 6_000, STEADY_UNSAFE) + behaviour_stream(rng, 6_000, 6_000, dict(STEADY_UNSAFE, self_harm=0.3))
    conditions = assert_restores_identically(lambda: UnsafeResponseRateDetector(config), events, cut=64 * 110)
    assert opened(conditions)


# --- behaviour: over-refusal ---


def test_over_refusal_quiet_on_a_stationary_stream():
    det = OverRefusalDetector()
    assert feed(det, behaviour_stream(random.Random(7), 0, 100_000, STEADY_UNSAFE)) == []
    assert {(r.scope, r.key) for r in det.readings()} == {(s, "") for s in SCOPES}


def test_over_refusal_catches_more_refusals_of_safe_prompts():
    rng = random.Random(8)
    det = OverRefusalDetector()
    assert feed(det, behaviour_stream(rng, 0, 30_000, STEADY_UNSAFE)) == []
    alarms = opened(feed(det, behaviour_stream(rng, 30_000, 15_000, STEADY_UNSAFE, refusal=0.08)))
    assert {(c.kind, c.scope, c.key) for c in alarms} == {("over_refusal", s, "") for s in SCOPES}
    ev = alarms[0].evidence
    assert 0.02 < ev["reference_rate"] < 0.04 and ev["current_ci95"][0] < 0.08 < ev["current_ci95"][1]


def test_over_refusal_ignores_refusals_of_harmful_prompts():
    rng = random.Random(9)
    det = OverRefusalDetector()
    feed(det, behaviour_stream(rng, 0, 30_000, STEADY_UNSAFE))
    always_refused = [scored(i, verdict("self_harm", response_unsafe=False, refused=True)) for i in range(30_000, 40_000)]
    assert feed(det, always_refused) == []


def test_over_refusal_restores_mid_stream():
    rng = random.Random(10)
    config = RateChangeConfig(warmup=300)
    events = behaviour_stream(rng, 0, 6_000, STEADY_UNSAFE) + behaviour_stream(rng, 6_000, 6_000, STEADY_UNSAFE, refusal=0.15)
    conditions = assert_restores_identically(lambda: OverRefusalDetector(config), events, cut=64 * 100)
    assert opened(conditions)


# --- feedback disagreement ---


def labelled_stream(rng: random.Random, start: int, n: int, wrong: dict[str, float]) -> Iterator[tuple[ScoredEvent, Feedback]]:
    """Judged events and a label for each: the label names the true category, the judge misses it at ``wrong[category]``."""
    categories = list(wrong)
    for i in range(start, start + n):
        truth = categories[i % len(categories)]
        judged = SAFE if truth != SAFE and rng.random() < wrong[truth] else truth
        yield scored(i, verdict(judged)), Feedback(f"evt-{i}", category=truth, source="review")


def feed_labelled(det: FeedbackDisagreementDetector, pairs) -> list[Condition]:
    """Judge a batch, then label it: labels trail their events, as they do in production."""
    out: list[Condition] = []
    pairs = list(pairs)
    for i in range(0, len(pairs), BATCH):
        chunk = pairs[i : i + BATCH]
        out.extend(det.update([e for e, _ in chunk]))
        for _, fb in chunk:
            status, conditions = det.observe(fb)
            assert status == "matched"
            out.extend(conditions)
    return out


STEADY_WRONG = {SAFE: 0.0, "self_harm": 0.05, "privacy_violation": 0.10, "child_abuse": 0.02}


def test_feedback_quiet_on_a_stationary_stream():
    det = FeedbackDisagreementDetector(HARM)
    assert feed_labelled(det, labelled_stream(random.Random(11), 0, 100_000, STEADY_WRONG)) == []
    assert det.counts == {"matched": 100_000, "unknown_event": 0, "duplicate": 0, "corrected": 0, "capped": 0}


def test_feedback_catches_the_judge_missing_one_category():
    rng = random.Random(12)
    det = FeedbackDisagreementDetector(HARM)
    assert feed_labelled(det, labelled_stream(rng, 0, 40_000, STEADY_WRONG)) == []
    alarms = opened(feed_labelled(det, labelled_stream(rng, 40_000, 20_000, dict(STEADY_WRONG, self_harm=0.25))))
    assert {(c.kind, c.scope, c.key) for c in alarms} >= {("feedback_disagreement", s, "self_harm") for s in SCOPES}
    assert all(c.key in ("", "self_harm") for c in alarms)
    ev = next(c for c in alarms if c.key == "self_harm").evidence
    assert 0.03 < ev["reference_rate"] < 0.07 and ev["current_ci95"][0] > ev["reference_bound"]


def test_feedback_time_is_the_label_time_or_else_the_event_time():
    det = FeedbackDisagreementDetector(HARM, config=RateChangeConfig(warmup=10, arl=100))
    det.update([scored(i, verdict(SAFE)) for i in range(200)])
    for i in range(20):
        det.observe(Feedback(f"evt-{i}", unsafe=False))
    labelled_late = [det.observe(Feedback(f"evt-{i}", unsafe=True, timestamp=2e9 + i))[1] for i in range(20, 40)]
    assert labelled_late[-1] and all(c.at == 2e9 + 39 for c in labelled_late[-1])
    unstamped = [c for i in range(40, 60) for c in det.observe(Feedback(f"evt-{i}", unsafe=True))[1]]
    assert unstamped[-1].at == 1_700_000_000.0 + 59


def test_feedback_for_unknown_evicted_or_already_labelled_events_is_counted_not_applied():
    det = FeedbackDisagreementDetector(HARM, memory=100)
    det.update([scored(i, verdict("self_harm")) for i in range(150)])
    assert det.observe(Feedback("evt-10", unsafe=True)) == ("unknown_event", [])  # evicted
    assert det.observe(Feedback("never-seen", unsafe=True)) == ("unknown_event", [])
    assert det.observe(Feedback("evt-120", category="self_harm"))[0] == "matched"
    assert det.observe(Feedback("evt-120", unsafe=False)) == ("duplicate", [])
    assert det.counts == {"matched": 1, "unknown_event": 2, "duplicate": 1, "corrected": 0, "capped": 0}
    assert len(det.state_dict()["judged"]) == 100


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "e", "unsafe": "yes"}, "unsafe"),
        ({"event_id": "e"}, "unsafe, category"),
        ({"event_id": "e", "unsafe": False, "category": "self_harm"}, "category"),
        ({"event_id": "e", "unsafe": True, "timestamp": float("nan")}, "timestamp"),
    ],
)
def test_bad_feedback_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Feedback(**kwargs)


def test_feedback_category_outside_the_taxonomy_is_rejected():
    det = FeedbackDisagreementDetector(HARM)
    det.update([scored(0, verdict("self_harm"))])
    with pytest.raises(ValueError, match="category"):
        det.observe(Feedback("evt-0", category="not_a_category"))
    assert det.counts["matched"] == 0


def test_feedback_restores_mid_stream_with_its_memory():
    rng = random.Random(13)
    config = RateChangeConfig(warmup=300)
    pairs = list(labelled_stream(rng, 0, 6_000, STEADY_WRONG)) + list(labelled_stream(rng, 6_000, 6_000, dict(STEADY_WRONG, child_abuse=0.5)))
    whole = FeedbackDisagreementDetector(HARM, memory=5_000, config=config)
    expected = feed_labelled(whole, pairs)
    assert opened(expected)
    cut = 64 * 110
    first = FeedbackDisagreementDetector(HARM, memory=5_000, config=config)
    got = feed_labelled(first, pairs[:cut])
    restored = FeedbackDisagreementDetector(HARM, memory=5_000, config=config)
    restored.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    got += feed_labelled(restored, pairs[cut:])
    assert got == expected
    assert restored.readings() == whole.readings() and restored.state_dict() == whole.state_dict()
