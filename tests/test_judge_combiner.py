"""The hybrid's response-harm combiner: fitted on labelled rows it beats either judge when they err
differently, keeps 'no reply' as NaN, round-trips through its file, and refuses judges it was not fitted for."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monitor.judge.combiner import ResponseCombiner


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
    combiner = ResponseCombiner.fit(h, e, y, "heads-x", "encoder-y")
    h2, e2, y2 = two_judges(3000, seed=2)  # fresh rows
    combined = combiner.probabilities(h2, e2)
    assert roc_auc_score(y2, combined) > max(roc_auc_score(y2, h2), roc_auc_score(y2, e2)) + 0.05
    assert 0 < combiner.threshold < 1 and ((combined >= combiner.threshold) == y2).mean() > 0.8


def test_no_reply_stays_nan():
    combiner = ResponseCombiner.fit(*two_judges(500, seed=3), "heads-x", "encoder-y")
    p = combiner.probabilities(np.array([np.nan, 0.7]), np.array([0.2, np.nan]))
    assert np.isnan(p).all()


def test_file_round_trip_and_clear_errors(tmp_path):
    combiner = ResponseCombiner.fit(*two_judges(500, seed=4), "heads-x", "encoder-y")
    combiner.save(tmp_path / "c.json")
    loaded = ResponseCombiner.load(tmp_path / "c.json")
    assert loaded == combiner and loaded.version == combiner.version and loaded.version.startswith("mix-")
    loaded.check("heads-x", "encoder-y")
    with pytest.raises(ValueError, match="fitted for heads-x and encoder-y, not heads-z and encoder-y"):
        loaded.check("heads-z", "encoder-y")
    with pytest.raises(ValueError, match="missing: run `monitor judge combine`"):
        ResponseCombiner.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not format response-combiner-1"):
        ResponseCombiner.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="both harmful and harmless"):
        ResponseCombiner.fit(np.array([0.2, 0.3]), np.array([0.1, 0.9]), np.array([True, True]), "h", "e")
    with pytest.raises(ValueError, match="no NaN"):
        ResponseCombiner.fit(np.array([0.2, np.nan]), np.array([0.1, 0.9]), np.array([True, False]), "h", "e")
    (tmp_path / "extra.json").write_text(json.dumps({"format": "response-combiner-1", "heads_version": "h",
                                                     "encoder_version": "e", "scale": 1, "shift": 0, "threshold": 0.5, "x": 1}))
    with pytest.raises(ValueError, match="unexpected keyword argument 'x'"):
        ResponseCombiner.load(tmp_path / "extra.json")


def test_a_refit_changes_the_version():
    a = ResponseCombiner.fit(*two_judges(500, seed=5), "heads-x", "encoder-y")
    b = ResponseCombiner.fit(*two_judges(500, seed=6), "heads-x", "encoder-y")
    assert a.version != b.version


def test_a_judge_that_adds_nothing_gets_little_or_no_weight():
    rng = np.random.default_rng(107)  # a seed of its own: two_judges' first draw with seed 7 is half the label
    _, e, y = two_judges(3000, seed=7)
    noise = _sigmoid(rng.normal(size=3000))  # a "heads" verdict unrelated to the label
    combiner = ResponseCombiner.fit(noise, e, y, "heads-x", "encoder-y")
    assert combiner.heads_weight <= 0.25
    _, e2, y2 = two_judges(3000, seed=8)
    noise2 = _sigmoid(rng.normal(size=3000))
    assert roc_auc_score(y2, combiner.probabilities(noise2, e2)) >= roc_auc_score(y2, e2) - 0.005
    # Equally good judges that see different evidence keep the plain sum.
    assert ResponseCombiner.fit(*two_judges(3000, seed=1), "heads-x", "encoder-y").heads_weight == 1.0
    # Every weight ranks rows alike when the heads say the same for all: the tie goes to the plain sum.
    tied = ResponseCombiner.fit(np.full(3000, 0.3), e, y, "heads-x", "encoder-y")
    assert tied.heads_weight == 1.0 and len(set(tied.validation["auroc_by_heads_weight"].values())) == 1
    assert set(combiner.validation["auroc_by_heads_weight"]) == {"0", "0.25", "0.5", "0.75", "1"}


def test_a_file_from_before_the_weight_reads_as_the_plain_sum(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"format": "response-combiner-1", "heads_version": "h",
                                                   "encoder_version": "e", "scale": 0.5, "shift": 0.1, "threshold": 0.4}))
    old = ResponseCombiner.load(tmp_path / "old.json")
    assert old.heads_weight == 1.0
    h, e = np.array([0.8, 0.3]), np.array([0.6, 0.2])
    z = np.log(h / (1 - h)) + np.log(e / (1 - e))
    np.testing.assert_allclose(old.probabilities(h, e), _sigmoid(0.5 * z + 0.1))
    assert old.version != ResponseCombiner("h", "e", 0.5, 0.1, 0.4, heads_weight=0.5).version
    old.save(tmp_path / "again.json")  # a plain sum is written without the weight, as before it existed
    assert "heads_weight" not in json.loads((tmp_path / "again.json").read_text())
    ResponseCombiner("h", "e", 0.5, 0.1, 0.4, heads_weight=0.5).save(tmp_path / "weighted.json")
    assert ResponseCombiner.load(tmp_path / "weighted.json").heads_weight == 0.5
