"""Operator decision lines (judge_prompt_threshold, judge_response_threshold): the shipped judges' probabilities,
flagged where the operator says, with the version saying so."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

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


@pytest.fixture(scope="module", params=["heads", "encoder", "hybrid"])
def named(request, embedder):
    """(the setting that names a judge, the judge); the hybrid reads every prompt (its skip line is tested apart)"""
    return request.param, build_judge(request.param, embedder, load_taxonomy(), prompt_skip_below=0)


def test_the_judges_own_lines_reproduce_its_decisions(named, batch):
    """Moving a line to where it was changes nothing but the version: the wrapper decides as the judges do."""
    _, judge = named
    prompt, response = judge.decision_thresholds
    same = RethresholdedJudge(judge, Thresholds(prompt=prompt, response=response))
    assert same.version == f"{judge.version}+pthr{prompt!r}+rthr{response!r}"
    for own, moved in zip(judge.judge(batch), same.judge(batch)):
        assert moved == replace(own, judge_version=same.version)


@pytest.mark.parametrize("direction", ["higher", "lower"])
def test_a_moved_line_re_decides_and_says_so(named, batch, direction):
    """A higher prompt line flags some of the judge's flagged prompts no more (they turn ``safe``); a lower one flags
    some it passed (they get their most likely category). The response line moves the reply flags alike."""
    taxonomy = load_taxonomy()
    name, judge = named
    own = judge.judge(batch)
    prompt_line, response_line = judge.decision_thresholds
    side = [v.prompt_unsafe for v in own if v.prompt_flagged == (direction == "higher")]
    line = float(np.median(side))  # half of that side crosses it
    replies = sorted(v.response_unsafe for v in own if v.response_unsafe is not None)
    reply_line = float(np.median(replies))
    thresholds = Thresholds(prompt=line, response=reply_line)
    moved = RethresholdedJudge(judge, thresholds).judge(batch)
    # The version the detector role computes without a model is the moved judge's.
    assert moved[0].judge_version == judge_version(name, taxonomy, thresholds=thresholds, prompt_skip_below=0)
    flipped = [b for b, a in zip(own, moved) if a.prompt_flagged != b.prompt_flagged]
    assert flipped and all(b.prompt_flagged == (direction == "higher") for b in flipped)
    for before, after in zip(own, moved):
        assert after.prompt_unsafe == before.prompt_unsafe and after.category_probs == before.category_probs
        assert after.prompt_flagged == (after.prompt_unsafe >= line)
        if after.prompt_flagged:
            assert after.category == max(before.category_probs, key=before.category_probs.__getitem__) != SAFE
        else:
            assert after.category == SAFE
        if after.response_unsafe is None:
            assert after.response_flagged is None
        else:
            assert after.response_flagged == (after.response_unsafe >= reply_line)
        lines = [(after.prompt_unsafe, line)] + ([(after.response_unsafe, reply_line)] if after.response_unsafe is not None else [])
        assert after.uncertainty == pytest.approx(uncertainty(lines))
        assert (after.refusal, after.refused, after.categories) == (before.refusal, before.refused, before.categories)
    assert any(a.response_flagged != b.response_flagged for a, b in zip(moved, own) if b.response_unsafe is not None)
    assert prompt_line != line and response_line != reply_line


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
    for bad in ("1.5", "0", "nan", "abc"):
        monkeypatch.setenv("MONITOR_JUDGE_PROMPT_THRESHOLD", bad)
        with pytest.raises(ValidationError, match="judge_prompt_threshold"):
            Settings()
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_THRESHOLD", "0.7")
    with pytest.raises(ValidationError, match="judge_prompt_threshold: the prototype judge has no decision thresholds"):
        Settings(judge="prototype")  # refused with the settings, before any model loads
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_THRESHOLD", "0.7")
    settings = Settings(judge="heads")
    scorer = build_scorer(settings, embedder)
    assert scorer.judge.version.endswith("+pthr0.7") and scorer.judge.decision_thresholds[0] == 0.7
    assert workers_judge_version(settings) == scorer.judge.version  # what the detector role labels its state with
    assert build_scorer(Settings(judge="heads", judge_prompt_threshold=None), embedder).judge.version == \
        build_judge("heads", embedder, load_taxonomy()).version
    # The hybrid's skip line reaches the workers' judge and the version the detector role computes, before a moved line.
    settings = Settings(judge="hybrid", judge_prompt_skip_below=0.03, judge_prompt_threshold=0.5, embedding_backend="torch")
    version = build_scorer(settings, embedder).judge.version
    assert version.endswith("+pskip0.03+pthr0.5") and workers_judge_version(settings) == version
    with pytest.raises(ValidationError, match=r"judge_prompt_skip_below \(0.5\) must lie below judge_prompt_threshold \(0.5\)"):
        Settings(judge="hybrid", judge_prompt_skip_below=0.5, judge_prompt_threshold=0.5)
    # Unset, the default skip line runs, unless the prompt line is moved below 0.3 (where skipped prompts' full-hybrid
    # probabilities could reach it); 0 turns it off.
    monkeypatch.delenv("MONITOR_JUDGE_PROMPT_THRESHOLD")
    full = judge_version("hybrid", load_taxonomy(), prompt_skip_below=0)
    assert "+pskip" not in full and "+pthr" not in full
    for settings, expected in ((Settings(embedding_backend="torch"), full + "+pskip0.03"),
                               (Settings(judge_prompt_threshold=0.3, embedding_backend="torch"), full + "+pskip0.03+pthr0.3"),
                               (Settings(judge_prompt_threshold=0.29, embedding_backend="torch"), full + "+pthr0.29"),
                               (Settings(judge_prompt_skip_below=0, embedding_backend="torch"), full)):
        assert workers_judge_version(settings) == expected == build_scorer(settings, embedder).judge.version
