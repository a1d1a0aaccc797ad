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

_CHUNK = 32  # query rows per product: at 10k stored rows, about 2.6 MB of float64 similarities and 1.3 MB once
# rounded to float32 (2.6 MB more for the indices of rows sorted whole, at most)
_BLOCK = 128  # stored rows per block when bounding each row's k-th similarity from below (see _nearest)
_CLIP = 1e-3  # a unanimous vote is worth log(999) ~ 6.9 nats, not infinity
# Cosine at or above which a stored row counts as the query itself when leaving it out. Stored rows are
# rounded to float16, which moves a row's cosine with its own float32 embedding by up to ~1e-4.
_IDENTICAL = 1.0 - 1e-3


@dataclass(frozen=True, eq=False)
class NeighbourVote:
    """Log-odds of the similarity-weighted label vote of the ``k`` nearest ``vectors`` (cosine)."""

    vectors: np.ndarray  # (n, d) reference prompt embeddings, as unit rows rounded to float16 values
    labels: np.ndarray  # (n,) bool
    k: int = 30
    temperature: float = 0.05
    _matrix: np.ndarray = field(init=False, repr=False)  # (d, n) float64, C-ordered: ``vectors`` is its transpose

    def __post_init__(self) -> None:
        given = np.asarray(self.vectors)
        if given.ndim != 2:
            raise ValueError(f"neighbours: vectors must be a (rows, dimension) array, got shape {given.shape}")
        if given.dtype != np.float16:  # fresh from training: a stored (float16) copy is already unit rows
            given = normalise(np.asarray(given, dtype=np.float32)).astype(np.float16)
        norms = np.linalg.norm(given.astype(np.float32), axis=1)
        if len(norms) and not np.all(np.abs(norms - 1.0) < 1e-2):
            raise ValueError("neighbours: stored vectors must be unit rows")
        # float16 -> float64 is exact, so one float64 copy is all that is kept and float16 is rebuilt losslessly.
        # float64 because a float32 product's low bits depend on how many query rows share it (BLAS picks
        # another kernel for one row than for many: on an AVX2 CPU most similarities of a row scored alone
        # differed from the same row scored in a batch), and a verdict must not depend on its batch (replay
        # gives the alerts live traffic gave); the float64 sums, rounded to float32, agree. It is kept as
        # (d, n) in C order: the products read it row by row, about twice as fast as through the transpose of
        # an (n, d) array, and ``vectors`` is that transpose, a view.
        matrix = np.ascontiguousarray(given.T, dtype=np.float64)
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
        empty = ~np.any(x, axis=1)
        x = normalise(x)
        out = np.zeros(len(x), dtype=np.float32)
        n = self._matrix.shape[1]
        k = min(self.k + int(leave_out_identical), n)  # one spare neighbour, for the row itself
        for start in range(0, len(x), _CHUNK):
            sims = (x[start:start + _CHUNK].astype(np.float64) @ self._matrix).astype(np.float32)
            if leave_out_identical:
                sims[sims >= _IDENTICAL] = -np.inf
            top, near = _nearest(sims, k)
            del sims
            # Largest first, so this drops the least similar: the spare, or the row itself where it was skipped.
            top, near = top[:, :self.k], near[:, :self.k]
            # In the stored rows' order, so the vote (a float sum) does not depend on how they were found.
            order = np.argsort(top, axis=1)
            top, near = np.take_along_axis(top, order, 1), np.take_along_axis(near, order, 1)
            weight = np.exp((near - 1.0) / self.temperature)
            vote = (weight * self.labels[top]).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-30)
            vote = np.clip(vote, _CLIP, 1.0 - _CLIP)
            out[start:start + _CHUNK] = np.log(vote / (1.0 - vote))
        out[empty] = 0.0
        return out


def _nearest(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's ``k`` largest ``sims``, largest first (of equal values, the
    lowest column first).

    Why not sort or partition whole rows: at 10k stored rows that costs as much as the product itself. The
    k-th largest of a row's block maxima is a floor under its k-th largest value (those k maxima are k
    distinct entries at or above it), and only a few dozen entries of a row clear it: sorting those is
    cheap. A row the floor does not thin out (constant, mostly equal values, NaN), or every row when there
    are fewer than ``k`` blocks, is sorted whole. Ties go to the lowest column either way, so the neighbours
    a row gets never depend on the rows scored beside it.
    """
    rows, n = sims.shape
    top = np.empty((rows, k), dtype=np.intp)
    whole = n // _BLOCK * _BLOCK
    slow = np.ones(rows, dtype=bool)
    if whole // _BLOCK >= k:
        maxima = sims[:, :whole].reshape(rows, -1, _BLOCK).max(axis=2)
        if whole < n:  # the partial last block only tightens the floor
            maxima = np.hstack([maxima, sims[:, whole:].max(axis=1, keepdims=True)])
        floor = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
        passing = sims >= floor[:, None]
        counts = passing.sum(axis=1)
        slow = (counts < k) | (counts > n // 4)  # a NaN floor lets nothing through, a flat row nearly all
        fast = np.flatnonzero(~slow)
        if len(fast):
            counts = counts[fast]
            row, column = np.nonzero(passing[fast])  # row-major: each row's candidates together, by column
            slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
            values = np.full((len(fast), int(counts.max())), -np.inf, dtype=sims.dtype)  # padding sorts last
            values[row, slot] = sims[fast[row], column]
            columns = np.zeros(values.shape, dtype=np.intp)
            columns[row, slot] = column
            pick = np.argsort(-values, axis=1, kind="stable")[:, :k]
            top[fast] = np.take_along_axis(columns, pick, axis=1)
    if slow.any():
        top[slow] = np.argsort(-sims[slow], axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(sims, top, axis=1)
