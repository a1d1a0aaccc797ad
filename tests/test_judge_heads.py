"""HeadsJudge on synthetic heads and embeddings: verdict semantics, bad input, artifact round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.judge.heads import Head, HeadsJudge, version_of, weights_blob
from monitor.judge.refusal_phrases import PhraseFeatures
from monitor.judge.verdict import Judge, JudgeInput
from monitor.taxonomy import SAFE
from monitor.taxonomy import load_taxonomy

DIM = 8
CATS = ("drugs", "hate", "self_harm")


def head(weights, threshold, hidden=None, bias=0.0) -> Head:
    w = np.asarray(weights, dtype=np.float32)
    k = w.shape[1]
    extra = {} if hidden is None else {"hidden_weights": hidden[0].astype(np.float32), "hidden_bias": hidden[1].astype(np.float32)}
    return Head(w, np.full(k, bias, np.float32), np.ones(k, np.float32), np.zeros(k, np.float32),
                np.asarray(threshold, np.float32), **extra)


def make_judge() -> HeadsJudge:
    # Prompt: dim 0 drives 'unsafe' (through a ReLU layer), dims 1-3 the categories. Refusal reads
    # response dim 4 or a phrase.
    hidden = (np.eye(DIM)[:, :2] * [1, -1], np.zeros(2))  # relu(x0), relu(-x0)
    wu = np.array([[10.0], [-10.0]])
    wc = np.zeros((DIM, 3))
    wc[1, 0], wc[2, 1], wc[3, 2] = 10, 10, 10
    wr = np.zeros((3 * DIM + 1, 1))
    wr[DIM + 5, 0] = 10  # response dim 5 -> harmful response
    wr[3 * DIM, 0] = 10  # compliance with an unsafe prompt -> harmful response
    phrases = PhraseFeatures(["no way"], prefix_chars=20)
    wf = np.zeros((DIM + 1, 1))
    wf[4, 0] = 10
    wf[DIM, 0] = 10
    heads = {"unsafe": head(wu, [0.5], hidden), "categories": head(wc, [0.5] * 3), "response": head(wr, [0.5], bias=-5.0),
             "refusal": head(wf, [0.5])}
    manifest = {"format": 1, "version": version_of(weights_blob(heads), CATS), "categories": list(CATS),
                "embedding": {"model": "synthetic", "dimension": DIM, "max_seq_length": 8},
                "heads": {"refusal": {"phrases": phrases.to_dict()}}}
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


def test_complying_with_an_unsafe_prompt_is_a_harmful_response(judge):
    complied, refused = judge.judge([JudgeInput("bad", vec(0), "ok, here goes", vec()),
                                     JudgeInput("bad", vec(0), "no", vec(4))])
    assert complied.response_flagged is True and complied.refused is False
    assert refused.response_flagged is False and refused.refused is True


def test_refusal_phrase_counts_only_in_the_reply_opening(judge):
    early, late = judge.judge([JudgeInput("q", vec(), "No way. Not doing it.", vec()),
                               JudgeInput("q", vec(), "Here is a long answer... no way", vec())])
    assert early.refused is True and late.refused is False


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
