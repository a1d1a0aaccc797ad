"""The hybrid's combiners (response harm, prompt harm): fitted on labelled rows one beats either judge when they
err differently, keeps 'no reply' as NaN, round-trips through its file, and refuses judges it was not fitted for."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monitor.judge.combiner import VerdictCombiner


def two_judges(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two calibrated-looking judges that each see half of the evidence, with independent noise."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = a + b > 0.3
    return _sigmoid(2 * a + rng.normal(scale=0.5, size=n)), _sigmoid(2 * b + rng.normal(scale=0.5, size=n)), y


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_the_combination_beats_each_judge_alone():
    h, e, y = two_judges(3000, seed=1)
    combiner = VerdictCombiner.fit(h, e, y, "heads-x", "encoder-y")
    h2, e2, y2 = two_judges(3000, seed=2)  # fresh rows
    combined = combiner.probabilities(h2, e2)
    assert roc_auc_score(y2, combined) > max(roc_auc_score(y2, h2), roc_auc_score(y2, e2)) + 0.05
    assert 0 < combiner.threshold < 1 and ((combined >= combiner.threshold) == y2).mean() > 0.8


def test_no_reply_stays_nan():
    combiner = VerdictCombiner.fit(*two_judges(500, seed=3), "heads-x", "encoder-y")
    p = combiner.probabilities(np.array([np.nan, 0.7]), np.array([0.2, np.nan]))
    assert np.isnan(p).all()


def test_file_round_trip_and_clear_errors(tmp_path):
    combiner = VerdictCombiner.fit(*two_judges(500, seed=4), "heads-x", "encoder-y")
    combiner.save(tmp_path / "c.json")
    loaded = VerdictCombiner.load("response", tmp_path / "c.json")
    assert loaded == combiner and loaded.version == combiner.version and loaded.version.startswith("mix-")
    loaded.check("heads-x", "encoder-y")
    with pytest.raises(ValueError, match="fitted for heads-x and encoder-y, not heads-z and encoder-y"):
        loaded.check("heads-z", "encoder-y")
    with pytest.raises(ValueError, match="missing: run `monitor judge combine`"):
        VerdictCombiner.load("response", tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not format response-combiner-1"):
        VerdictCombiner.load("response", tmp_path / "bad.json")
    with pytest.raises(ValueError, match="both harmful and harmless"):
        VerdictCombiner.fit(np.array([0.2, 0.3]), np.array([0.1, 0.9]), np.array([True, True]), "h", "e")
    with pytest.raises(ValueError, match="no NaN"):
        VerdictCombiner.fit(np.array([0.2, np.nan]), np.array([0.1, 0.9]), np.array([True, False]), "h", "e")
    (tmp_path / "extra.json").write_text(json.dumps({"format": "response-combiner-1", "heads_version": "h",
                                                     "encoder_version": "e", "scale": 1, "shift": 0, "threshold": 0.5, "x": 1}))
    with pytest.raises(ValueError, match="unexpected keyword argument 'x'"):
        VerdictCombiner.load("response", tmp_path / "extra.json")


def test_a_refit_changes_the_version():
    a = VerdictCombiner.fit(*two_judges(500, seed=5), "heads-x", "encoder-y")
    b = VerdictCombiner.fit(*two_judges(500, seed=6), "heads-x", "encoder-y")
    assert a.version != b.version


def test_a_judge_that_adds_nothing_gets_little_or_no_weight():
    rng = np.random.default_rng(107)  # a seed of its own: two_judges' first draw with seed 7 is half the label
    _, e, y = two_judges(3000, seed=7)
    noise = _sigmoid(rng.normal(size=3000))  # a "heads" verdict unrelated to the label
    combiner = VerdictCombiner.fit(noise, e, y, "heads-x", "encoder-y")
    assert combiner.heads_weight <= 0.25
    _, e2, y2 = two_judges(3000, seed=8)
    noise2 = _sigmoid(rng.normal(size=3000))
    assert roc_auc_score(y2, combiner.probabilities(noise2, e2)) >= roc_auc_score(y2, e2) - 0.005
    # Equally good judges that see different evidence keep the plain sum.
    assert VerdictCombiner.fit(*two_judges(3000, seed=1), "heads-x", "encoder-y").heads_weight == 1.0
    # Every weight ranks rows alike when the heads say the same for all: the tie goes to the plain sum.
    tied = VerdictCombiner.fit(np.full(3000, 0.3), e, y, "heads-x", "encoder-y")
    assert tied.heads_weight == 1.0 and len(set(tied.validation["auroc_by_heads_weight"].values())) == 1
    assert set(combiner.validation["auroc_by_heads_weight"]) == {"0", "0.25", "0.5", "0.75", "1"}


def test_a_file_from_before_the_weight_reads_as_the_plain_sum(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"format": "response-combiner-1", "heads_version": "h",
                                                   "encoder_version": "e", "scale": 0.5, "shift": 0.1, "threshold": 0.4}))
    old = VerdictCombiner.load("response", tmp_path / "old.json")
    assert old.heads_weight == 1.0
    h, e = np.array([0.8, 0.3]), np.array([0.6, 0.2])
    z = np.log(h / (1 - h)) + np.log(e / (1 - e))
    np.testing.assert_allclose(old.probabilities(h, e), _sigmoid(0.5 * z + 0.1))
    assert old.version != VerdictCombiner("h", "e", 0.5, 0.1, 0.4, heads_weight=0.5).version
    old.save(tmp_path / "again.json")  # a plain sum is written without the weight, as before it existed
    assert "heads_weight" not in json.loads((tmp_path / "again.json").read_text())
    VerdictCombiner("h", "e", 0.5, 0.1, 0.4, heads_weight=0.5).save(tmp_path / "weighted.json")
    assert VerdictCombiner.load("response", tmp_path / "weighted.json").heads_weight == 0.5


def test_a_prompt_combiner_has_its_own_file_format_and_version(tmp_path):
    response = VerdictCombiner.fit(*two_judges(500, seed=9), "heads-x", "encoder-y")
    prompt = VerdictCombiner.fit(*two_judges(500, seed=9), "heads-x", "encoder-y", output="prompt")
    assert (response.scale, response.threshold) == (prompt.scale, prompt.threshold)  # the same numbers...
    assert prompt.version.startswith("pmix-") and prompt.version[1:] != response.version  # ...named apart
    prompt.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["format"] == "prompt-combiner-1"
    assert VerdictCombiner.load("prompt", tmp_path / "p.json") == prompt
    with pytest.raises(ValueError, match="not format response-combiner-1"):  # a prompt file is not a response one
        VerdictCombiner.load("response", tmp_path / "p.json")
    with pytest.raises(ValueError, match="prompt combiner was fitted for heads-x"):
        prompt.check("heads-z", "encoder-y")
    with pytest.raises(ValueError, match="'category' is not one of response, prompt, refusal"):
        VerdictCombiner.load("category", tmp_path / "p.json")
    refusal = replace(prompt, output="refusal")
    assert refusal.version.startswith("rmix-") and refusal.version[1:] != prompt.version[1:]
    refusal.save(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["format"] == "refusal-combiner-1"
    assert VerdictCombiner.load("refusal", tmp_path / "r.json") == refusal
    with pytest.raises(ValueError, match="not format prompt-combiner-1"):
        VerdictCombiner.load("prompt", tmp_path / "r.json")


def test_groups_rank_the_weight_by_their_mean_not_by_the_pooled_rows():
    """Many easy rows where the encoder alone is best, and two small groups where the heads add what the
    encoder misses: pooled, the encoder alone wins; ranked by the groups, the plain sum does."""
    rng = np.random.default_rng(11)
    y_easy = rng.random(4000) < 0.5
    e_easy = _sigmoid(np.where(y_easy, 1.5, -1.5) + rng.normal(size=4000))
    h_easy = _sigmoid(rng.normal(scale=3.0, size=4000))  # the heads know nothing about these rows, loudly
    h_hard, e_hard, y_hard = two_judges(600, seed=12)
    h, e, y = np.r_[h_easy, h_hard], np.r_[e_easy, e_hard], np.r_[y_easy, y_hard]
    hard = np.r_[np.zeros(4000, bool), np.ones(600, bool)]
    halves = [hard & (np.arange(len(y)) % 2 == 0), hard & (np.arange(len(y)) % 2 == 1)]
    assert VerdictCombiner.fit(h, e, y, "h", "e").heads_weight == 0.0
    grouped = VerdictCombiner.fit(h, e, y, "h", "e", output="prompt", groups=halves)
    assert grouped.heads_weight == 1.0
    by_weight = grouped.validation["auroc_by_heads_weight"]
    expected = np.mean([roc_auc_score(y[m], np.log(h[m] / (1 - h[m])) + np.log(e[m] / (1 - e[m]))) for m in halves])
    assert by_weight["1"] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="every ranking group needs both"):
        VerdictCombiner.fit(h, e, y, "h", "e", groups=[hard & y])
