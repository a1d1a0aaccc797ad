"""A nearest-neighbour vote over labelled training prompts, added to a head's logit.

Why: the unsafe head is one small MLP over a frozen 384-d embedding; it draws one smooth boundary
through sources with different labelling conventions. Near a training prompt, that prompt's own label
is better evidence than the boundary: jailbreak-wrapped *benign* requests (WildGuardTest) sit beside
jailbreak-wrapped harmful ones, and their labelled neighbours tell them apart where the MLP cannot.
The vote is similarity-weighted (``exp((cos - 1) / temperature)``, so the closest neighbours count
most) over the ``k`` most similar rows, turned into log-odds and added to the MLP's logit before
Platt calibration. The weights are normalised, so a query far from every training prompt still gets
the vote of the nearest ones: shrinking such votes towards the base rate scored worse on the
validation split (``docs/judge.md`` has the figures and the sweep that chose ``k`` and the temperature).

>>> import numpy as np
>>> vote = NeighbourVote(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), np.array([True, True, False]), k=2)
>>> bool(vote.logits(np.array([[1.0, 0.05]]))[0] > 0), bool(vote.logits(np.array([[0.1, 1.0]]))[0] < 0)
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monitor.embed.embedder import normalise

# Query rows per product: at 10k stored rows, 5 MB of float32 similarities (what bounds it). Each chunk reads
# every stored row again and pays the search's fixed steps, so a worker batch costs less in fewer chunks.
_CHUNK = 128
_BLOCK = 128  # stored rows per block when bounding each row's k-th similarity from below (see NeighbourVote._neighbours)
_PAIRS = 512  # (query, stored row) pairs per exact product: 1.5 MB of float64 per operand at 384 dimensions
_CLIP = 1e-3  # a unanimous vote is worth log(999) ~ 6.9 nats, not infinity
# Cosine at or above which a stored row counts as the query itself when leaving it out. Stored rows are
# rounded to float16, which moves a row's cosine with its own float32 embedding by up to ~1e-4.
_IDENTICAL = 1.0 - 1e-3
# How far a float32 product of two unit rows of dimension d may be from their exact cosine, per dimension:
# a float32 dot product's rounding error is at most d * 2^-24 * |x| |y| in any summation order, and 4x that
# leaves room for stored norms within 1% of 1 and the final rounding (at d = 384: ~9e-5).
_SLACK_PER_DIMENSION = 4 * 2.0**-24


@dataclass(frozen=True, eq=False)
class NeighbourVote:
    """Log-odds of the similarity-weighted label vote of the ``k`` nearest ``vectors`` (cosine)."""

    vectors: np.ndarray  # (n, d) reference prompt embeddings, as unit rows rounded to float16 values
    labels: np.ndarray  # (n,) bool
    k: int = 30
    temperature: float = 0.05
    _matrix: np.ndarray = field(init=False, repr=False)  # (d, n) float32, C-ordered: ``vectors`` is its transpose
    _rows: np.ndarray = field(init=False, repr=False)  # (n, d) float32, C-ordered: what exact cosines gather

    def __post_init__(self) -> None:
        given = np.asarray(self.vectors)
        if given.ndim != 2:
            raise ValueError(f"neighbours: vectors must be a (rows, dimension) array, got shape {given.shape}")
        if given.dtype != np.float16:  # fresh from training: a stored (float16) copy is already unit rows
            given = normalise(np.asarray(given, dtype=np.float32)).astype(np.float16)
        norms = np.linalg.norm(given.astype(np.float32), axis=1)
        if len(norms) and not np.all(np.abs(norms - 1.0) < 1e-2):
            raise ValueError("neighbours: stored vectors must be unit rows")
        # float16 -> float32 -> float64 is exact. Two float32 copies: (d, n) in C order for the products, which
        # read it row by row, about twice as fast as through the transpose of an (n, d) array (``vectors`` is that
        # transpose, a view); (n, d) in C order for the exact cosines, which gather whole stored rows.
        matrix = np.ascontiguousarray(given.T, dtype=np.float32)
        vectors = matrix.T
        labels = np.asarray(self.labels, dtype=bool)
        if labels.shape != (len(vectors),):
            raise ValueError(f"neighbours: {len(vectors)} vectors need as many labels, got shape {labels.shape}")
        if not 1 <= self.k <= len(vectors):
            raise ValueError(f"neighbours: k={self.k} must be between 1 and the {len(vectors)} reference rows")
        if self.temperature <= 0:
            raise ValueError(f"neighbours: temperature must be positive, got {self.temperature}")
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "_matrix", matrix)
        object.__setattr__(self, "_rows", np.ascontiguousarray(given, dtype=np.float32))

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def stored(self) -> dict[str, np.ndarray]:
        """What an artifact keeps: the vectors as float16 (half the bytes, exactly what this vote scores with)."""
        return {"neighbour_vectors": self.vectors.astype(np.float16, order="C"), "neighbour_labels": self.labels}

    def logits(self, x: np.ndarray, leave_out_identical: bool = False) -> np.ndarray:
        """One log-odds per row of ``x``; 0 (no evidence) for an all-zero row. ``leave_out_identical`` skips
        stored rows that are the query itself: training scores its own rows this way, so they are not their
        own witness."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"neighbours: queries must be (rows, {self.dimension}), got shape {x.shape}")
        out = np.zeros(len(x), dtype=np.float32)
        scored = np.flatnonzero(np.any(x, axis=1))  # an all-zero row stays 0
        queries = normalise(x[scored])
        for start in range(0, len(queries), _CHUNK):
            top, near = self._neighbours(queries[start:start + _CHUNK], leave_out_identical)
            # In the stored rows' order, so the vote (a float sum) does not depend on how they were found.
            order = np.argsort(top, axis=1)
            top, near = np.take_along_axis(top, order, 1), np.take_along_axis(near, order, 1)
            weight = np.exp((near - 1.0) / self.temperature)
            vote = (weight * self.labels[top]).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-30)
            vote = np.clip(vote, _CLIP, 1.0 - _CLIP)
            out[scored[start:start + _CHUNK]] = np.log(vote / (1.0 - vote))
        return out

    def _neighbours(self, q: np.ndarray, leave_out_identical: bool) -> tuple[np.ndarray, np.ndarray]:
        """Each query row's ``k`` nearest stored rows, largest cosine first (of equal cosines, the lowest
        column first), and those cosines: exact float64 sums rounded to float32.

        Why not one float32 product: its low bits depend on how many query rows share it (BLAS picks another
        kernel for one row than for many: on an AVX2 CPU most similarities of a row scored alone differed from
        the same row in a batch), and a verdict must not depend on its batch (replay gives the alerts live
        traffic gave). A float64 product of every pair costs about twice as much as a float32 one. So a float32
        product only finds candidates, and a few of them are recomputed exactly, pair by pair. The margin is
        twice the slack, which bounds a float32 cosine's error. The k-th largest of a row's block maxima is a
        floor under its k-th largest cosine (those maxima are k distinct entries at or above it); the stored
        rows within the margin of that floor are the candidates, a few dozen per row; those within the margin
        of the row's k-th largest float32 cosine among them, about k, are recomputed. Any other stored row is
        surely below that line less one slack, so a row whose k-th exact cosine clears it has its k nearest;
        a row that does not (a NaN query, a flat row, a row within the margin of the leave-out line that the
        exact cosine drops) has all its cosines recomputed.
        """
        n = self._matrix.shape[1]
        slack = _SLACK_PER_DIMENSION * self.dimension
        k = self.k + int(leave_out_identical)  # a spare, for the row itself
        rough = q @ self._matrix
        if leave_out_identical:
            rough[rough >= _IDENTICAL + slack] = -np.inf  # surely the row itself; closer calls are settled exactly
        floor = _block_floor(rough, k)
        candidates = rough >= floor[:, None] - 2 * slack
        counts = candidates.sum(axis=1)
        # A flat row lets nearly everything past its floor. (With fewer than k blocks there is no floor: every
        # column is a candidate, and the next step still recomputes only those near the k-th.)
        slow = np.isfinite(floor) & (counts > max(n // 4, 4 * k))
        counts[slow] = 0
        row, column = np.nonzero(candidates & ~slow[:, None])  # row-major: each row's candidates together, by column
        del candidates
        width = max(int(counts.max(initial=0)), k)
        values = np.full((len(q), width), -np.inf, dtype=np.float32)  # padding sorts after every candidate
        columns = np.zeros(values.shape, dtype=np.intp)
        slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
        values[row, slot] = rough[row, column]
        columns[row, slot] = column
        del rough
        # Of the candidates, only those within the margin of the row's k-th largest float32 cosine can be among
        # its k nearest: about k per row, and only their cosines are recomputed.
        lower = np.partition(values, width - k, axis=1)[:, width - k] - 2 * slack
        near_enough = values[row, slot] >= lower[row]
        values[:] = -np.inf
        values[row[near_enough], slot[near_enough]] = self._exact(q, row[near_enough], column[near_enough])
        top, near = _largest(values, columns, self.k, leave_out_identical)
        # Else a stored row not recomputed could be as near (or the row had no finite candidates: a NaN query).
        slow |= ~np.isfinite(lower) | ~(near[:, -1] >= lower + slack)
        everything = np.arange(n)
        for r in np.flatnonzero(slow):
            found, cosines = _largest(self._exact(q, np.full(n, r), everything)[None], everything[None], self.k,
                                      leave_out_identical)
            top[r], near[r] = found[0], cosines[0]
        return top, near

    def _exact(self, q: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The cosine of each pair (``q[rows[i]]``, stored row ``columns[i]``): a float64 sum over one
        C-ordered row per pair, rounded to float32, so a pair's value does not depend on the pairs beside it."""
        out = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), _PAIRS):
            part = slice(start, start + _PAIRS)
            out[part] = (q[rows[part]].astype(np.float64) * self._rows[columns[part]].astype(np.float64)).sum(axis=1)
        return out


def _block_floor(sims: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k-th largest of the maxima of ``_BLOCK`` consecutive columns: at or below the row's k-th
    largest value. -inf when there are fewer than ``k`` blocks.

    >>> _block_floor(np.arange(2 * _BLOCK, dtype=np.float32)[None], 2), _block_floor(np.zeros((1, 3)), 2)
    (array([127.], dtype=float32), array([-inf]))
    """
    rows, n = sims.shape
    if n // _BLOCK < k:
        return np.full(rows, -np.inf, dtype=sims.dtype)
    whole = n // _BLOCK * _BLOCK
    maxima = sims[:, :whole].reshape(rows, -1, _BLOCK).max(axis=2)
    if whole < n:  # the partial last block only tightens the floor
        maxima = np.hstack([maxima, sims[:, whole:].max(axis=1, keepdims=True)])
    return np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]


def _largest(values: np.ndarray, columns: np.ndarray, k: int, leave_out_identical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Of each row's (value, column) pairs, given in column order, the ``k`` largest values (ties to the lowest
    column) and their columns; with ``leave_out_identical``, values at the query itself count as -inf."""
    if leave_out_identical:
        values = np.where(values >= _IDENTICAL, np.float32(-np.inf), values)
    pick = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(columns, pick, 1), np.take_along_axis(values, pick, 1)
