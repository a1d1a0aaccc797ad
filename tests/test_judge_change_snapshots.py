"""A snapshot restored under another judge (artifact, backend or decision line) refits what counts its verdicts
instead of alerting: a moved line changes every rate the detectors watch, and that is not drift in the traffic.

No model: the judges are version labels, and what a lower response line does to the stream is simulated by
more replies flagged.
"""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import numpy as np

from monitor.config import ALL_DETECTORS, Settings
from monitor.drift.registry import build_detectors
from monitor.drift.rate_change import RateChangeConfig
from monitor.drift.suite import DetectorSuite
from monitor.drift.unsafe_response_rate import UnsafeResponseRateDetector
from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.pipeline.builder import attach_reservoir
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.service import MonitorService
from monitor.scopes import ScopeResolver
from monitor.triage.online import OnlineModel, TriageJudge
from tests.helpers.probes import make_prober
from tests.helpers.snapshots import restore_resolves_the_alert

REFERENCE = 3000
T_DAY = 1767225600.0  # a UTC midnight


def service(judge: str, backend: str = "torch") -> MonitorService:
    scorer = Scorer(None, SimpleNamespace(version=judge), ScopeResolver([], []))
    return MonitorService(Settings(embedding_backend=backend), scorer,
                          DetectorSuite([UnsafeResponseRateDetector(RateChangeConfig(warmup=200, arl=10_000))]))


def feed(svc: MonitorService, n: int, flagged_share: float, start: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(start, start + n, 100):
        batch = []
        for j in range(i, i + 100):
            flagged = rng.random() < flagged_share
            v = Verdict(svc.scorer.judge.version, "self_harm", {}, 0.9, True, float(flagged), flagged, 0.0, False)
            batch.append(ScoredEvent(Event(f"e{j}", float(j), "...", "..."), 1.0, np.zeros(2), np.zeros(2), v, ("global",)))
        svc.process_scored(batch)


def state_after_reference(judge: str = "judge-a") -> dict:
    before = service(judge)
    feed(before, REFERENCE, 0.1, 0, seed=0)
    assert before.detectors.readings() and not before.alerts("firing")
    return before.state_dict()


def test_the_same_judge_restores_and_the_moved_line_alone_would_alarm():
    """The control: without the judge check, more replies flagged by a lower line is a rise to the detector."""
    after = service("judge-a")
    after.load_state_dict(state_after_reference())
    assert after.detectors.readings()
    feed(after, 500, 0.4, REFERENCE, seed=1)
    assert [a.kind for a in after.alerts("firing")] == ["unsafe_response_rate"]


def test_another_judge_refits_with_a_log_line_and_no_alert(caplog):
    after = service("judge-a+rthr0.3")
    with caplog.at_level(logging.WARNING, logger="monitor.pipeline.service"):
        after.load_state_dict(state_after_reference())
    [line] = [r.getMessage() for r in caplog.records if "refitting" in r.getMessage()]
    assert "judge judge-a," in line and "judge-a+rthr0.3" in line and "unsafe_response_rate" in line
    assert after.counts.processed == REFERENCE  # the rest of the snapshot is restored
    feed(after, 500, 0.4, REFERENCE, seed=1)
    assert not after.alerts("all")
    feed(after, 3000, 0.4, REFERENCE + 500, seed=2)
    assert after.detectors.readings() and not after.alerts("all")  # refitted on the new line's rate
    assert after.state_dict()["verdicts_from"] == "judge-a+rthr0.3"


def test_other_embeddings_refit_the_verdicts_too():
    """A judge whose version does not name the backend (the heads) still decides on the new backend's vectors."""
    after = service("judge-a", backend="onnx-int8")
    after.load_state_dict(state_after_reference())
    assert not after.detectors.readings()


def test_an_open_alert_resolves_when_its_reference_is_refitted():
    fired = service("judge-a")
    fired.load_state_dict(state_after_reference())
    feed(fired, 500, 0.4, REFERENCE, seed=1)
    resolved = restore_resolves_the_alert(fired, service("judge-b"))
    assert "reference refitted, verdicts now come from judge judge-b" in resolved.summary


def test_triage_revisions_are_the_same_judge():
    """The online layer's revisions (``+triage-N``) are learned on top of the same judge and restored with triage's
    own state: the detectors keep theirs."""
    state = state_after_reference()
    state["judge_version"] = "judge-a+triage-2"  # as written while triage had learned two revisions
    after = service("judge-a")
    after.load_state_dict(state)
    assert after.detectors.readings()


def test_a_snapshot_from_before_the_record_is_judged_by_its_judge_version():
    state = state_after_reference()
    del state["verdicts_from"]
    state["judge_version"] = "judge-a+triage-2"
    same, moved = service("judge-a"), service("judge-a+pthr0.9")
    same.load_state_dict(state)
    moved.load_state_dict(state)
    assert same.detectors.readings() and not moved.detectors.readings()


def test_a_triage_revision_saved_and_restored_is_the_same_judge():
    """Saved with the online layer at revision 1 (as the embedded service runs after triage learned once), restored
    into a fresh service (the layer attaches after the restore): the detectors keep their state."""
    before = service("judge-a")
    before.scorer.judge = TriageJudge(SimpleNamespace(version="judge-a", categories=()))
    before.scorer.judge.install(OnlineModel(1, ()))
    feed(before, REFERENCE, 0.1, 0, seed=0)
    state = before.state_dict()
    assert state["judge_version"] == "judge-a+triage-1"
    after = service("judge-a")
    after.load_state_dict(state)
    assert after.detectors.readings()


def test_what_counts_verdicts_is_every_detector_and_component_that_does():
    """The parts a judge change refits, on the full detector set with the report reservoir and a canary prober."""
    svc = MonitorService(Settings(), Scorer(None, SimpleNamespace(version="judge-a"), ScopeResolver([], [])),
                         build_detectors(Settings(detectors=list(ALL_DETECTORS))))
    attach_reservoir(svc)
    svc.stateful["probes"] = make_prober("http://127.0.0.1:9")
    assert sorted(svc._parts_that("uses_verdicts")) == sorted(
        ["category_share", "category_share_adwin", "feedback_disagreement", "judge_disagreement", "unsafe_response_rate",
         "over_refusal", "report_reservoir", "probes"])


def test_a_refitted_prober_keeps_the_days_spending():
    """Its references go (they are the old judge's verdicts), its token budgets stay: a restart must not let it
    spend a day's tokens twice."""
    spent = make_prober("http://127.0.0.1:9", daily_tokens=1000)
    [budget] = spent._budgets.values()
    assert budget.reserve(600, at=T_DAY)
    state = spent.state_dict()
    refitted = make_prober("http://127.0.0.1:9", daily_tokens=1000)
    refitted.refit_from(state)
    [kept] = refitted._budgets.values()
    assert kept.remaining(T_DAY) == 400
