"""Embedding drift: online MMD on a PCA projection with a bootstrap-calibrated expected run time."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from monitor.drift.base import Detector
from monitor.drift.embedding_drift import EmbeddingMMDDetector
from monitor.privacy.redact import redact
from tests.helpers.conditions import feed
from tests.helpers.scored import scored

DIM = 32
SMALL = dict(reference_events=1_000, window_events=200, block_events=20, pca_dims=8, features=64, bootstrap_streams=200)
_CENTRES = np.random.default_rng(99).normal(size=(7, DIM))
_CENTRES /= np.linalg.norm(_CENTRES, axis=1, keepdims=True)


def embeddings(rng, n, new_topic_share=0.0):
    """Unit vectors around six topic centres, like sentence embeddings; a share of them from a seventh, new topic."""
    topic = rng.integers(0, 6, size=n)
    topic[rng.random(n) < new_topic_share] = 6
    x = _CENTRES[topic] + rng.normal(scale=0.8 / np.sqrt(DIM), size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def stream(seed, phases, scopes=("global",)):
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    for n, share in phases:
        emb = embeddings(rng, n, share)
        out += [scored(t + i, embedding=emb[i], scopes=scopes) for i in range(n)]
        t += n
    return out


def test_is_a_detector_and_rejects_bad_configuration_and_input():
    det = EmbeddingMMDDetector(**SMALL)
    assert isinstance(det, Detector)
    with pytest.raises(ValueError, match="multiple of block_events"):
        EmbeddingMMDDetector(window_events=210, block_events=20)
    with pytest.raises(ValueError, match="pca_dims"):
        EmbeddingMMDDetector(reference_events=10, pca_dims=16)
    det.update([scored(0.0, embedding=np.ones(DIM, dtype=np.float32))])
    with pytest.raises(ValueError, match="prompt_embedding has 5 dimensions"):
        det.update([scored(1.0, embedding=np.ones(5, dtype=np.float32))])
    with pytest.raises(ValueError, match="prompt_embedding contains NaN"):
        det.update([scored(2.0, embedding=np.full(DIM, np.nan, dtype=np.float32))])


def test_fires_on_a_new_topic_and_resolves_when_it_goes():
    det = EmbeddingMMDDetector(**SMALL, expected_run_time=100_000)
    conditions = feed(det, stream(1, [(6_000, 0.0), (2_000, 0.3), (3_000, 0.0)]))
    fired = [c for c in conditions if c.active]
    assert fired, "a new topic taking 30% of prompts was not detected"
    first = fired[0]
    assert first.kind == "embedding_drift" and first.key == ""
    assert 6_000 < first.at < 6_400  # within two windows of the change
    ev = first.evidence
    assert ev["mmd2"] >= ev["threshold"] > ev["resolve_threshold"] > 0
    assert ev["window_end_at"] == first.at and ev["window_end_at"] - ev["window_start_at"] == 199
    assert ev["pca_dims"] == 8 and 0 < ev["pca_explained_variance"] <= 1
    resolved = [c for c in conditions if not c.active]
    assert len(resolved) == 1 and 8_000 < resolved[0].at < 8_600
    (reading,) = det.readings()
    assert reading.key == "" and not reading.active and reading.threshold == ev["threshold"]
    # Summaries leave the process redacted (alerts, the triage page): the statistic must not read as PII.
    assert redact(first.summary) == first.summary and redact(resolved[0].summary) == resolved[0].summary


def test_quiet_on_a_stationary_stream():
    det = EmbeddingMMDDetector(**SMALL, expected_run_time=1_000_000)
    assert feed(det, stream(2, [(40_000, 0.0)]), batch=500) == []


def test_statistic_on_stationary_data_sits_at_the_simulated_null():
    """The bootstrap's per-test null distribution (with the reference-error offset) matches live tests."""
    det = EmbeddingMMDDetector(**SMALL, resolve_quantile=0.5)
    events = stream(3, [(1_000, 0.0)])
    det.update(events)
    above, rng = [], np.random.default_rng(4)
    for t in range(1_000, 41_000, 20):
        emb = embeddings(rng, 20)
        det.update([scored(t + i, embedding=emb[i]) for i in range(20)])
        above.append(det.readings()[0].statistic > det._scopes["global"].resolve_threshold)
    share = np.mean(above[10:])
    assert 0.2 < share < 0.8, share  # the median of the simulated null; a fixed reference draw moves it


def test_scopes_are_independent():
    det = EmbeddingMMDDetector(**SMALL)
    a = stream(5, [(3_000, 0.0), (1_500, 0.35)], scopes=("global", "model=a"))
    b = stream(6, [(4_500, 0.0)], scopes=("global", "model=b"))
    mixed = [e for pair in zip(a, b) for e in pair]
    fired = {c.scope for c in feed(det, mixed) if c.active}
    assert "model=a" in fired and "model=b" not in fired


def test_save_restore_mid_stream_continues_identically():
    events = stream(7, [(3_000, 0.0), (1_000, 0.35), (1_000, 0.0)])
    whole = EmbeddingMMDDetector(**SMALL)
    expected = feed(whole, events)
    assert any(c.active for c in expected)
    for cut in (640, 3_008, 3_520):  # reference period, mid-block after the change, during the alert
        first = EmbeddingMMDDetector(**SMALL)
        got = feed(first, events[:cut])
        second = EmbeddingMMDDetector(**SMALL)
        second.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
        got += feed(second, events[cut:])
        assert got == expected, cut
        assert second.readings() == whole.readings()


def test_batch_boundaries_do_not_change_results():
    events = stream(8, [(3_000, 0.0), (1_000, 0.35)])
    runs = []
    for batch in (64, 37, 1_000):
        det = EmbeddingMMDDetector(**SMALL)
        changes = [(c.at, c.active, c.evidence["mmd2"]) for c in feed(det, events, batch=batch)]
        first_changes = [c for i, c in enumerate(changes) if i == 0 or c[1] != changes[i - 1][1]]
        runs.append((first_changes, det.readings()))
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0]
