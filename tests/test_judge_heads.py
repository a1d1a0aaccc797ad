"""HeadsJudge on synthetic heads and embeddings: verdict semantics, bad input, artifact round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.judge.heads import HeadsJudge, LinearHead, version_of, weights_blob
from monitor.judge.verdict import SAFE, Judge, JudgeInput
from monitor.taxonomy import load_taxonomy

DIM = 8
CATS = ("drugs", "hate", "self_harm")


def head(weights, threshold) -> LinearHead:
    w = np.asarray(weights, dtype=np.float32)
    k = w.shape[1]
    return LinearHead(w, np.zeros(k, np.float32), np.ones(k, np.float32), np.zeros(k, np.float32),
                      np.asarray(threshold, np.float32))


def make_judge() -> HeadsJudge:
    # Prompt: dim 0 drives 'unsafe', dims 1-3 the categories. Refusal reads response dim 4.
    wp = np.zeros((DIM, 4))
    wp[0, 0], wp[1, 1], wp[2, 2], wp[3, 3] = 10, 10, 10, 10
    wr = np.zeros((3 * DIM, 1))
    wr[DIM + 5, 0] = 10  # response dim 5 -> harmful response
    wf = np.zeros((DIM, 1))
    wf[4, 0] = 10
    heads = {"prompt": head(wp, [0.5] * 4), "response": head(wr, [0.5]), "refusal": head(wf, [0.5])}
    manifest = {"format": 1, "version": version_of(weights_blob(heads), CATS), "categories": list(CATS),
                "embedding": {"model": "synthetic", "dimension": DIM, "max_seq_length": 8}}
    return HeadsJudge(heads, CATS, manifest)


def vec(*hot: int) -> np.ndarray:
    v = np.full(DIM, -0.2, np.float32)
    v[list(hot)] = 1.0
    return v


@pytest.fixture(scope="module")
def judge() -> HeadsJudge:
    return make_judge()


def test_implements_the_judge_protocol(judge):
    assert isinstance(judge, Judge)
    assert judge.categories == CATS and judge.version.startswith("heads-")


def test_flagged_prompt_gets_top_category_and_all_categories_above_threshold(judge):
    v = judge.judge([JudgeInput("bad", vec(0, 1, 2))])[0]
    assert v.prompt_flagged and v.prompt_unsafe > 0.99
    assert v.category in ("drugs", "hate") and set(v.categories) == {"drugs", "hate"}
    assert set(v.category_probs) == set(CATS)
    assert v.judge_version == judge.version


def test_unflagged_prompt_is_safe(judge):
    v = judge.judge([JudgeInput("fine", vec())])[0]
    assert not v.prompt_flagged and v.category == SAFE and v.categories == ()


def test_missing_response_gives_none_not_a_guess(judge):
    no_text = JudgeInput("q", vec(), None, None)
    no_embedding = JudgeInput("q", vec(), "an answer", None)  # service configured not to embed responses
    blank = JudgeInput("q", vec(), "   ", vec(4))
    for v in judge.judge([no_text, no_embedding, blank]):
        assert v.response_unsafe is None and v.response_flagged is None
        assert v.refusal is None and v.refused is None and not v.has_response


def test_response_verdicts_when_there_is_a_response(judge):
    refusal, harmful = judge.judge([JudgeInput("q", vec(), "no", vec(4)), JudgeInput("q", vec(), "ok", vec(5))])
    assert refusal.refused is True and refusal.response_flagged is False
    assert harmful.refused is False and harmful.response_flagged is True


def test_blank_prompt_is_a_valid_safe_verdict(judge):
    v = judge.judge([JudgeInput("", vec(0, 1))])[0]
    assert v.prompt_unsafe == 0.0 and v.category == SAFE and set(v.category_probs.values()) == {0.0}


def test_empty_batch(judge):
    assert judge.judge([]) == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (JudgeInput("p", np.zeros(3)), r"batch\[1\].prompt_embedding: shape \(3,\), expected \(8,\)"),
        (JudgeInput("p", np.full(DIM, np.nan)), r"batch\[1\].prompt_embedding: contains NaN"),
        (JudgeInput("p", vec(), "r", np.zeros(2)), r"batch\[1\].response_embedding: shape \(2,\)"),
    ],
)
def test_bad_embeddings_raise_naming_the_field(judge, item, message):
    with pytest.raises(ValueError, match=message):
        judge.judge([JudgeInput("ok", vec()), item])


def test_save_load_round_trip_gives_identical_verdicts(judge, tmp_path):
    judge.save(tmp_path / "a", "# card\n")
    loaded = HeadsJudge.load(tmp_path / "a")
    batch = [JudgeInput("x", vec(0, 3), "r", vec(4, 5)), JudgeInput("y", vec(1))]
    assert loaded.version == judge.version
    assert loaded.judge(batch) == judge.judge(batch)


def test_weights_bytes_are_reproducible(judge, tmp_path):
    judge.save(tmp_path / "a", "")
    make_judge().save(tmp_path / "b", "")
    assert (tmp_path / "a" / "weights.npz").read_bytes() == (tmp_path / "b" / "weights.npz").read_bytes()


def test_load_rejects_tampered_weights_and_missing_files(judge, tmp_path):
    judge.save(tmp_path / "a", "")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest["version"] = "heads-000000000000"
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="does not match the manifest's version"):
        HeadsJudge.load(tmp_path / "a")
    with pytest.raises(ValueError, match="missing manifest.json"):
        HeadsJudge.load(tmp_path / "empty")


def test_load_checks_categories_against_the_taxonomy(judge, tmp_path):
    judge.save(tmp_path / "a", "")
    with pytest.raises(ValueError, match="scores categories"):
        HeadsJudge.load(tmp_path / "a", taxonomy=load_taxonomy())
