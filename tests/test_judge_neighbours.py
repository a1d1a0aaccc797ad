"""The neighbour vote added to the unsafe head: follows nearby labels, leaves a row out of its own vote,
round-trips through an artifact exactly, and lifts a head on data a smooth boundary cannot separate."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monitor.judge.heads import Head
from monitor.judge.neighbours import _IDENTICAL, NeighbourVote
from monitor.judge.training import TrainConfig, Targets, _fit_output


def interleaved(n_clusters: int, per_cluster: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters on a sphere, labelled at random per cluster: a checkerboard no small MLP learns from
    a few rows each, but every point's neighbours share its label (as jailbreak-wrapped benign and harmful
    requests sit in their own tight groups)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, 16))
    labels = rng.random(n_clusters) < 0.5
    x = np.repeat(centres, per_cluster, axis=0) + 0.15 * rng.normal(size=(n_clusters * per_cluster, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(labels, per_cluster)


def test_vote_follows_the_nearest_labels():
    x, y = interleaved(40, 10, seed=1)
    vote = NeighbourVote(x, y, k=5)
    probe, truth = interleaved(40, 1, seed=1)  # same cluster centres and labels, fresh noise
    assert ((vote.logits(probe) > 0) == truth).mean() > 0.95


def test_a_row_is_not_its_own_witness_when_left_out():
    x = np.array([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2], [0.0, 1.0]], np.float32)
    y = np.array([True, False, False, True])
    vote = NeighbourVote(x, y, k=2, temperature=0.01)
    assert vote.logits(x[:1])[0] > 0  # its own label dominates at similarity 1
    assert vote.logits(x[:1], leave_out_identical=True)[0] < 0  # its neighbours say otherwise


def test_left_out_rows_get_only_their_neighbours_vote_despite_float16_storage():
    # Random labels on random 384-d rows: with the row itself left out, its vote agrees with its own
    # label only by chance. (Stored rows are float16, so "itself" is a cosine just under 1, not 1.)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, 384)).astype(np.float32)
    y = rng.random(2000) < 0.5
    vote = NeighbourVote(x, y, k=5)
    assert ((vote.logits(x) > 0) == y).mean() > 0.99  # without leave-out each row is its own witness
    agree = ((vote.logits(x, leave_out_identical=True) > 0) == y).mean()
    assert 0.45 < agree < 0.55, agree


def test_scoring_in_chunks_equals_scoring_row_by_row():
    x, y = interleaved(40, 10, seed=5)
    vote = NeighbourVote(x, y, k=7)
    probe, _ = interleaved(40, 3, seed=6)  # 120 rows: several chunks and a partial one
    whole = vote.logits(probe)
    assert np.allclose(whole, np.concatenate([vote.logits(row[None]) for row in probe]), atol=1e-5)
    assert np.allclose(vote.logits(probe, True), np.concatenate([vote.logits(row[None], True) for row in probe]), atol=1e-5)


@pytest.mark.parametrize("case", ["whole blocks", "a partial last block", "fewer blocks than k", "left-out rows",
                                  "just below the line", "copies left out", "flat rows", "NaN rows"])
def test_the_nearest_are_the_k_largest_exact_cosines_of_each_row(case):
    # A float32 product only picks candidates and a row's own check sends it to a whole recomputation when it
    # must; whichever path a row takes, it gets exactly its k largest float64 cosines (rounded to float32), ties
    # to the lowest column, as a brute-force float64 product gives them.
    rng = np.random.default_rng(3)
    n, k = {"fewer blocks than k": (1_000, 30), "whole blocks": (10_240, 30)}.get(case, (10_059, 30))
    stored = rng.normal(size=(n, 16)).astype(np.float32)
    queries = rng.normal(size=(64, 16)).astype(np.float32)
    leave_out = case in ("left-out rows", "just below the line", "copies left out")
    if leave_out:
        queries[:32] = stored[:32]
    if case == "copies left out":  # stored rows twice (training sets hold duplicates)
        stored[1:16:2] = stored[0:16:2]
    if case == "flat rows":  # many stored rows equal: a query near them lets all of them through
        stored[: n // 2] = stored[:1]
        queries[:8] = stored[:1] + 0.01 * rng.normal(size=(8, 16)).astype(np.float32)
    vote = NeighbourVote(stored, rng.random(n) < 0.5, k=k)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if case == "just below the line":  # a hair short of it: the float32 product puts some of them past it
        unit[:64] = [_at_cosine(vote.vectors[i], float(np.float32(_IDENTICAL)) - 4e-8, seed=i) for i in range(64)]
    if case == "copies left out":  # each query a hair past the leave-out line from a row stored twice: with both
        unit[:8] = [_at_cosine(vote.vectors[2 * i], _IDENTICAL + 1e-6) for i in range(8)]  # left out, the spare is not enough
    if case == "NaN rows":
        unit[:3] = np.nan
    top, values = vote._neighbours(unit, leave_out)
    truth = (unit.astype(np.float64) @ vote.vectors.T.astype(np.float64)).astype(np.float32)
    if leave_out:
        truth[truth >= _IDENTICAL] = -np.inf
    expected = np.argsort(-truth, axis=1, kind="stable")[:, :k]
    assert np.array_equal(top, expected)
    assert np.array_equal(values, np.take_along_axis(truth, expected, axis=1), equal_nan=True)


def _at_cosine(row: np.ndarray, cosine: float, seed: int = 1) -> np.ndarray:
    """A unit query whose exact cosine with a stored ``row`` is ``cosine``: near the leave-out line, too close
    to it for the float32 product to settle."""
    row = row.astype(np.float64)
    side = np.random.default_rng(seed).normal(size=row.shape)
    side -= (side @ row) * row / (row @ row)
    side /= np.linalg.norm(side)
    along = cosine / np.linalg.norm(row)
    return (along * row / np.linalg.norm(row) + np.sqrt(1 - along**2) * side).astype(np.float32)


def test_a_rows_neighbours_do_not_depend_on_the_rows_scored_beside_it():
    # Stored rows duplicated with opposite labels tie exactly: which of a tied pair a row's vote counts must not
    # change with the chunk it is scored in, nor with a zero query or a flat row sharing that chunk.
    rng = np.random.default_rng(11)
    base = rng.normal(size=(2_000, 16)).astype(np.float32)
    vote = NeighbourVote(np.vstack([base, base]), np.r_[np.ones(2_000, bool), np.zeros(2_000, bool)], k=31)
    probe = base[:100] + 0.05 * rng.normal(size=(100, 16)).astype(np.float32)
    alone = np.concatenate([vote.logits(row[None]) for row in probe])
    assert np.array_equal(vote.logits(probe), alone)
    assert np.array_equal(vote.logits(np.vstack([np.zeros((1, 16), np.float32), probe]))[1:], alone)


def test_a_zero_query_is_no_evidence_and_a_bad_shape_is_named():
    x, y = interleaved(5, 4, seed=0)
    vote = NeighbourVote(x, y, k=3)
    scores = vote.logits(np.vstack([np.zeros(16, np.float32), x[0]]))
    assert scores[0] == 0.0 and scores[1] != 0.0
    with pytest.raises(ValueError, match=r"\(rows, 16\)"):
        vote.logits(x[0])
    with pytest.raises(ValueError, match="unit rows"):
        NeighbourVote((2 * x).astype(np.float16), y, k=3)


def test_scoring_memory_is_bounded_by_the_chunk_not_the_batch():
    rng = np.random.default_rng(0)
    vote = NeighbourVote(rng.normal(size=(10_000, 384)).astype(np.float32), rng.random(10_000) < 0.4, k=30)
    queries = rng.normal(size=(1024, 384)).astype(np.float32)
    queries[::64] = 0.0
    tracemalloc.start()
    try:
        vote.logits(queries)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 128 query rows x 10k stored rows: 5.1 MB of float32 similarities and 1.3 MB of candidate flags, pairs
    # recomputed exactly 512 at a time (1.5 MB of float64 per operand), plus the batch's own unit copy (1.5 MB):
    # far below one similarity block for the whole batch (41 MB). A zero query is skipped.
    assert peak < 14_000_000, peak


def test_bad_settings_are_clear_errors():
    x, y = interleaved(2, 3, seed=0)
    with pytest.raises(ValueError, match="k=7"):
        NeighbourVote(x, y, k=7)
    with pytest.raises(ValueError, match="labels"):
        NeighbourVote(x, y[:-1], k=2)
    with pytest.raises(ValueError, match="temperature"):
        NeighbourVote(x, y, k=2, temperature=0.0)
    head = Head(np.zeros((16, 2), np.float32), *(np.zeros(2, np.float32) for _ in range(4)))
    with pytest.raises(ValueError, match="one-output"):
        Head(head.weights, head.bias, head.scale, head.shift, head.threshold, neighbours=NeighbourVote(x, y, k=2))


def test_artifact_round_trip_scores_identically():
    x, y = interleaved(30, 8, seed=2)
    head = Head(np.ones((16, 1), np.float32), np.zeros(1, np.float32), np.full(1, 0.7, np.float32),
                np.full(1, -0.2, np.float32), np.full(1, 0.5, np.float32), neighbours=NeighbourVote(x, y, k=9))
    stored = head.arrays()
    assert stored["neighbour_vectors"].dtype == np.float16 and stored["neighbour_vectors"].flags.c_contiguous
    loaded = Head.from_arrays(stored, {"k": 9, "temperature": 0.05})
    probe, _ = interleaved(30, 2, seed=3)
    assert np.array_equal(loaded.probabilities(probe), head.probabilities(probe))
    with pytest.raises(ValueError, match="its settings"):
        Head.from_arrays(stored)
    with pytest.raises(ValueError, match="its labels"):
        Head.from_arrays({k: v for k, v in stored.items() if k != "neighbour_labels"}, {"k": 9, "temperature": 0.05})


def test_the_vote_lifts_the_unsafe_head_where_the_mlp_alone_cannot_separate():
    x_tr, y_tr = interleaved(300, 5, seed=4)
    x_va, y_va = interleaved(300, 2, seed=4)  # the same clusters: rows the training never saw
    auroc = {}
    for k in (0, 10):
        config = TrainConfig(unsafe_hidden_units=8, unsafe_neighbours=k)
        col, report = _fit_output("unsafe", x_tr, Targets(np.arange(len(y_tr)), y_tr),
                                  x_va, Targets(np.arange(len(y_va)), y_va), config, hidden=8)
        assert (col.neighbours is not None) == bool(k) and ("neighbours" in report.model) == bool(k)
        auroc[k] = report.auroc
        head = Head(col.weights[:, None], np.array([col.bias], np.float32), np.array([col.scale], np.float32),
                    np.array([col.shift], np.float32), np.array([col.threshold], np.float32),
                    col.hidden_weights, col.hidden_bias, col.neighbours)
        assert roc_auc_score(y_va, head.probabilities(x_va)[:, 0]) == pytest.approx(report.auroc, abs=1e-4)
    assert auroc[10] > 0.95 and auroc[10] > auroc[0] + 0.1, auroc
