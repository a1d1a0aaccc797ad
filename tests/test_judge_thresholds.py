"""Operator decision lines (judge_prompt_threshold, judge_response_threshold): the shipped judges' probabilities,
flagged where the operator says, with the version saying so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.config import Settings
from monitor.judge.calibration import uncertainty
from monitor.judge.factory import build_judge, judge_version
from monitor.judge.prototype import PrototypeJudge
from monitor.judge.thresholds import RethresholdedJudge, Thresholds
from monitor.judge.verdict import JudgeInput
from monitor.pipeline.builder import build_scorer, workers_judge_version
from monitor.taxonomy import SAFE, load_taxonomy

FIXTURE = Path(__file__).parent / "fixtures" / "judge" / "records.jsonl"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batch(embedder) -> list[JudgeInput]:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    prompts = embedder.encode([r["prompt"] for r in rows])
    replies = embedder.encode([r["response"] or "" for r in rows])
    return [JudgeInput(r["prompt"], p, r["response"], e if r["response"] else None) for r, p, e in zip(rows, prompts, replies)]


@pytest.mark.parametrize("name", ["heads", "encoder", "hybrid"])
def test_the_judges_own_lines_reproduce_its_decisions(name, embedder, batch):
    """Moving a line to where it was changes nothing but the version: the wrapper decides as the judges do."""
    judge = build_judge(name, embedder, load_taxonomy())
    prompt, response = judge.decision_thresholds
    same = RethresholdedJudge(judge, Thresholds(prompt=prompt, response=response))
    assert same.version == f"{judge.version}+pthr{prompt:g}+rthr{response:g}"
    for own, moved in zip(judge.judge(batch), same.judge(batch)):
        assert (moved.category, moved.prompt_flagged, moved.response_flagged) == (own.category, own.prompt_flagged, own.response_flagged)
        assert moved.uncertainty == pytest.approx(own.uncertainty, abs=1e-4)  # the printed line rounds the threshold
        assert (moved.prompt_unsafe, moved.response_unsafe, moved.refused) == (own.prompt_unsafe, own.response_unsafe, own.refused)


def test_a_higher_line_flags_fewer_and_says_so(embedder, batch):
    taxonomy = load_taxonomy()
    judge = build_judge("heads", embedder, taxonomy)
    own = judge.judge(batch)
    probs = sorted(v.prompt_unsafe for v in own if v.prompt_flagged)
    line = (probs[len(probs) // 2] + probs[len(probs) // 2 - 1]) / 2  # half the flagged prompts fall below it
    strict = build_judge("heads", embedder, taxonomy, thresholds=Thresholds(prompt=line, response=0.99))
    assert strict.version == judge_version("heads", taxonomy, thresholds=Thresholds(prompt=line, response=0.99))
    assert strict.version.startswith(judge.version + "+pthr") and strict.version.endswith("+rthr0.99")
    moved = strict.judge(batch)
    assert 0 < sum(v.prompt_flagged for v in moved) < sum(v.prompt_flagged for v in own)
    for before, after in zip(own, moved):
        assert after.prompt_unsafe == before.prompt_unsafe and after.category_probs == before.category_probs
        assert after.prompt_flagged == (after.prompt_unsafe >= line)
        assert (after.category == SAFE) == (not after.prompt_flagged)
        if after.prompt_flagged:
            assert after.category == before.category
        if after.response_unsafe is None:
            assert after.response_flagged is None
        else:
            assert after.response_flagged == (after.response_unsafe >= 0.99)
        lines = [(after.prompt_unsafe, line)] + ([(after.response_unsafe, 0.99)] if after.response_unsafe is not None else [])
        assert after.uncertainty == pytest.approx(uncertainty(lines))


def test_a_judge_without_lines_refuses_them(embedder):
    taxonomy = load_taxonomy()
    with pytest.raises(ValueError, match="no decision thresholds to move"):
        RethresholdedJudge(PrototypeJudge(embedder, taxonomy), Thresholds(prompt=0.5))
    with pytest.raises(ValueError, match="no decision thresholds to move"):
        judge_version("prototype", taxonomy, thresholds=Thresholds(response=0.5))
    with pytest.raises(ValueError, match="prompt threshold 1.0 must lie strictly between 0 and 1"):
        Thresholds(prompt=1.0)


def test_the_settings_reach_the_service_judge(embedder, monkeypatch):
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_THRESHOLD", "1.5")
    with pytest.raises(ValidationError, match="judge_prompt_threshold"):
        Settings()
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_THRESHOLD", "0.7")
    settings = Settings(judge="heads")
    scorer = build_scorer(settings, embedder)
    assert scorer.judge.version.endswith("+pthr0.7") and scorer.judge.decision_thresholds[0] == 0.7
    assert workers_judge_version(settings) == scorer.judge.version  # what the detector role labels its state with
    assert build_scorer(Settings(judge="heads", judge_prompt_threshold=None), embedder).judge.version == \
        build_judge("heads", embedder, load_taxonomy()).version
