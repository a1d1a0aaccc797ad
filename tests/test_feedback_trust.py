"""Feedback one client cannot take over: admin tokens only, the token names the source, a rate limit
per source, a cap on one source's share of a category's trials, and corrections instead of
"first label wins"."""

from __future__ import annotations

import time

import numpy as np

from monitor.config import Settings
from monitor.drift.feedback_disagreement import Feedback, FeedbackDisagreementDetector
from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

ADMIN, OTHER = "ops-secret-0123456789abcd", "lead-secret-0123456789abcd"


def judged(i: int) -> ScoredEvent:
    verdict = Verdict("v", "self_harm", {"self_harm": 0.9}, 0.9, True)
    return ScoredEvent(Event(f"e{i}", float(i), "..."), 1.0, np.zeros(2), None, verdict)


def test_one_source_cannot_supply_more_than_its_share_once_others_label():
    det = FeedbackDisagreementDetector(["self_harm"], memory=10_000, max_source_share=0.5, share_warmup=100)
    det.update([judged(i) for i in range(4000)])
    for i in range(1500):
        assert det.observe(Feedback(f"e{i}", category="self_harm", source="reviewers"))[0] == "matched"
    statuses = [det.observe(Feedback(f"e{i}", unsafe=False, source="mallory"))[0] for i in range(1500, 4000)]
    assert statuses.count("capped") >= 2500 - 1501
    tested = det._by_source[""]
    assert tested["mallory"] <= 0.5 * sum(tested.values()) + 1
    assert det.counts["capped"] == statuses.count("capped")


def test_a_single_source_is_not_capped():
    """With one labeller, its labels are all the ground truth there is: never capped."""
    det = FeedbackDisagreementDetector(["self_harm"], memory=10_000, max_source_share=0.5, share_warmup=100)
    det.update([judged(i) for i in range(500)])
    assert {det.observe(Feedback(f"e{i}", unsafe=True, source="reviewers"))[0] for i in range(500)} == {"matched"}


def test_a_later_label_from_another_source_corrects_instead_of_duplicate():
    det = FeedbackDisagreementDetector(["self_harm"], memory=100)
    det.update([judged(i) for i in range(100)])
    for i in range(100):  # an attacker labels predictable ids first
        det.observe(Feedback(f"e{i}", unsafe=False, source="mallory"))
    genuine = [det.observe(Feedback(f"e{i}", category="self_harm", source="reviewers"))[0] for i in range(100)]
    assert genuine == ["corrected"] * 100
    assert det.observe(Feedback("e1", category="self_harm", source="reviewers"))[0] == "duplicate"  # a retry stays harmless
    assert det._by_source[""] == {"mallory": 100, "reviewers": 100}


def test_sources_survive_a_restart():
    det = FeedbackDisagreementDetector(["self_harm"], memory=100, max_source_share=0.5, share_warmup=10)
    det.update([judged(i) for i in range(20)])
    det.observe(Feedback("e1", unsafe=True, source="a"))
    again = FeedbackDisagreementDetector(["self_harm"], memory=100, max_source_share=0.5, share_warmup=10)
    again.load_state_dict(det.state_dict())
    assert again._by_source == det._by_source
    assert again.observe(Feedback("e1", unsafe=True, source="a"))[0] == "duplicate"
    legacy = det.state_dict()
    legacy["judged"] = [(k, (*v[:4], v[4] is not None)) for k, v in legacy["judged"]]  # a snapshot from before sources
    legacy["counts"] = {"matched": 1, "unknown_event": 0, "duplicate": 0}
    legacy.pop("by_source")
    old = FeedbackDisagreementDetector(["self_harm"], memory=100)
    old.load_state_dict(legacy)
    assert old.observe(Feedback("e1", unsafe=True))[0] == "duplicate" and old.observe(Feedback("e2", unsafe=True))[0] == "matched"


def test_over_http_the_token_names_the_source_and_the_rate_is_limited(embedder):
    settings = Settings(
        judge="prototype",
        admin_tokens=f"ops:{ADMIN},lead:{OTHER}",
        feedback_rate_per_source=1.0,
        feedback_burst_per_source=20,
    )
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        auth = {"Authorization": f"Bearer {ADMIN}"}
        srv.client.post("/v1/events", json=[{"event_id": f"fb-{i}", "prompt": f"feedback trust {i}"} for i in range(30)], headers=auth)
        deadline = time.monotonic() + 120
        while srv.client.get("/v1/status", headers=auth).json()["processed"] < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        first = srv.client.post("/v1/feedback", json=[{"event_id": f"fb-{i}", "unsafe": True, "source": "claims-to-be-lead"} for i in range(15)], headers=auth)
        assert first.status_code == 202 and first.json()["matched"] == 15
        detector = srv.service.detectors.get("feedback_disagreement")
        assert detector._by_source[""] == {"ops": 15}  # the token's name, not the body's claim

        limited = srv.client.post("/v1/feedback", json=[{"event_id": f"fb-{i}", "unsafe": True} for i in range(15, 30)], headers=auth)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "feedback_rate_per_source" in limited.json()["error"]
        assert detector._by_source[""] == {"ops": 15}  # nothing of the refused request was taken

        other = {"Authorization": f"Bearer {OTHER}"}  # another source has its own bucket, and corrects
        fixed = srv.client.post("/v1/feedback", json=[{"event_id": f"fb-{i}", "unsafe": False} for i in range(5)], headers=other)
        assert fixed.status_code == 202 and fixed.json()["corrected"] == 5
        too_big = srv.client.post("/v1/feedback", json=[{"event_id": "x", "unsafe": True}] * 21, headers=other)
        assert too_big.status_code == 413 and "feedback_burst_per_source" in too_big.json()["error"]
        bad = srv.client.post("/v1/feedback", json=[{"event_id": "fb-5", "unsafe": "yes"}, {"event_id": "fb-6", "category": "nope"}], headers=other)
        assert bad.status_code == 422 and len(bad.json()["rejected"]) == 2

        def counted(status: str) -> float:
            return srv.service.metrics.registry.get_sample_value("llmsafety_feedback_total", {"status": status}) or 0.0

        # Refused labels reach no detector: each is counted once, by why it was refused.
        assert (counted("matched"), counted("corrected")) == (15, 5)
        assert (counted("rate_limited"), counted("too_many"), counted("invalid")) == (15, 21, 2)
