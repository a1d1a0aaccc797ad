"""``judge train`` then ``judge eval`` end to end on the hand-written fixtures, with the real embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.judge.cli import judge_app
from monitor.judge.heads import HeadsJudge

FIXTURES = Path(__file__).parent / "fixtures" / "judge"
# Seed 6 puts positives of every small-taxonomy category in training and both classes in validation and test.
TRAIN_ARGS = ["--data", str(FIXTURES / "records.jsonl"), "--taxonomy", str(FIXTURES / "taxonomy-small.yaml"),
              "--seed", "6", "--test-fraction", "0.2", "--val-fraction", "0.3", "--holdout", "none",
              "--date", "2025-01-01", "--max-seq-length", "64"]


@pytest.mark.slow
def test_train_then_eval(tmp_path):
    runner = CliRunner()
    out = tmp_path / "artifact"
    result = runner.invoke(judge_app, ["train", "--kind", "heads", "--out", str(out), *TRAIN_ARGS])
    assert result.exit_code == 0, result.output
    judge = HeadsJudge.load(out)
    assert judge.manifest["created"] == "2025-01-01"
    assert judge.manifest["embedding"]["max_seq_length"] == 64
    card = (out / "model_card.md").read_text()
    assert "| records |" in card and "Validation metrics" in card
    vote = judge.heads["unsafe"].neighbours
    assert vote is not None and judge.manifest["heads"]["unsafe"]["neighbours"]["rows"] == len(vote.labels)
    assert "most similar of" in card

    plain = tmp_path / "plain"
    result = runner.invoke(judge_app, ["train", "--kind", "heads", "--neighbours", "0", "--out", str(plain), *TRAIN_ARGS])
    assert result.exit_code == 0, result.output
    assert HeadsJudge.load(plain).heads["unsafe"].neighbours is None
    assert "neighbours" not in HeadsJudge.load(plain).manifest["heads"]["unsafe"]

    report = tmp_path / "report.md"
    result = runner.invoke(judge_app, ["eval", "--data", str(FIXTURES / "records.jsonl"), "--artifact", str(out),
                                       "--taxonomy", str(FIXTURES / "taxonomy-small.yaml"), "--out", str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    # Same run compares the heads with both baselines.
    for name in (judge.version, "keyword-v1", "prototype-small-test-v1"):
        assert f"| unsafe (all files) | {name} |" in text
    assert "seeded prompt-hash split, seed 6" in text


@pytest.mark.slow
def test_train_then_eval_the_encoder(tmp_path):
    runner = CliRunner()
    out = tmp_path / "encoder"
    result = runner.invoke(judge_app, ["train", "--kind", "encoder", "--out", str(out), "--epochs", "1",
                                       "--frozen-layers", "5", *TRAIN_ARGS[:-2]])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "encoder-1" and manifest["encoder"]["frozen_layers"] == 5
    report = tmp_path / "report.md"
    result = runner.invoke(judge_app, ["eval", "--data", str(FIXTURES / "records.jsonl"), "--artifact", str(out),
                                       "--taxonomy", str(FIXTURES / "taxonomy-small.yaml"), "--out", str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    # The shipped heads scores another taxonomy, so only the keyword and prototype baselines join here.
    for name in (manifest["version"], "keyword-v1", "prototype-small-test-v1"):
        assert f"| unsafe (all files) | {name} |" in text
    assert "| FPR | AUROC | AUPRC |" in text and "ids sha256" in text


def test_bad_options_are_named(tmp_path):
    runner = CliRunner()
    result = runner.invoke(judge_app, ["train", "--out", str(tmp_path), "--data", str(tmp_path / "missing.jsonl")])
    assert result.exit_code != 0 and "data path not found" in result.output
    result = runner.invoke(judge_app, ["train", "--out", str(tmp_path), "--date", "yesterday"])
    assert result.exit_code != 0 and "--date" in result.output
    result = runner.invoke(judge_app, ["train", "--out", str(tmp_path), "--kind", "forest"])
    assert result.exit_code != 0 and "--kind" in result.output
    result = runner.invoke(judge_app, ["train", "--out", str(tmp_path), "--test-fraction", "0.5", "--val-fraction", "0.5"])
    assert result.exit_code != 0 and "--val-fraction" in result.output
