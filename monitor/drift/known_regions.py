"""Where the known harm categories live in embedding space, learned from reference traffic.

Why: an emerging unsafe category is unsafe-looking traffic that sits far from every category the
judge already knows. "Far" is measured after centring on the reference prompts (which removes the
direction every MiniLM embedding shares) and an optional PCA projection, against one centroid per
category built from the prompts the judge flagged with that category. The novelty threshold is a
quantile of the *leave-one-out* similarity of reference flagged prompts to the known centroids, so
it is out-of-sample: about ``quantile`` of unseen known-category traffic counts as novel.

On real data (``bench/drift_scenarios.py``, emerging scenarios) 64 components merged unrelated background prompts
into clusters that looked as coherent as a new category, so the detector keeps all dimensions by
default (``n_components`` = the embedding size: centring only, distances unchanged); more
centroids per category (k-means, 3 or 6) did not separate unseen categories any better.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> axes = np.eye(8, dtype=np.float32)
>>> sample = rng.normal(size=(200, 8)).astype(np.float32)
>>> flagged = np.repeat(axes[:2], 20, axis=0) + 0.1 * rng.normal(size=(40, 8)).astype(np.float32)
>>> regions = KnownRegions.fit(sample, flagged, ["a"] * 20 + ["b"] * 20, n_components=8, quantile=0.1)
>>> regions.categories
('a', 'b')
>>> category, similarity = regions.nearest(regions.project(axes[[0, 5]]))
>>> regions.categories[category[0]], bool(similarity[0] > regions.threshold > similarity[1])
('a', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (they match nothing)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


@dataclass(frozen=True)
class KnownRegions:
    """A projection plus one unit centroid per known category, and the novelty threshold.

    ``threshold`` is a cosine in the projected space: an event whose best similarity to the
    centroids is below it sits outside every known region. With no centroid (no category had
    ``min_events`` flagged reference prompts) every event is outside, and the threshold is ``inf``.
    """

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    categories: tuple[str, ...]
    centroids: np.ndarray  # (n_categories, k), unit rows
    threshold: float

    @classmethod
    def fit(
        cls,
        sample: np.ndarray,
        flagged: np.ndarray,
        flagged_categories: Sequence[str],
        n_components: int = 64,
        quantile: float = 0.25,
        min_events: int = 5,
    ) -> KnownRegions:
        """Fit from reference prompt embeddings (``sample``) and the flagged ones with their category."""
        sample = np.asarray(sample, dtype=np.float64)
        if sample.ndim != 2 or len(sample) < 2:
            raise ValueError(f"sample: need at least 2 reference embeddings as a 2-d array, got shape {sample.shape}")
        mean = sample.mean(axis=0)
        centred = sample - mean
        # Eigen-decomposition of the d x d scatter matrix: same axes as an SVD of the sample, far cheaper.
        _, vectors = np.linalg.eigh(centred.T @ centred)
        components = vectors[:, ::-1][:, : min(n_components, len(sample) - 1, sample.shape[1])].T

        labels = np.asarray(flagged_categories, dtype=object)
        z = unit_rows((np.asarray(flagged, dtype=np.float64).reshape(len(labels), -1) - mean) @ components.T)
        names = tuple(sorted(c for c in set(labels.tolist()) if (labels == c).sum() >= min_events))
        if not names:
            return cls(mean, components, (), np.zeros((0, len(components))), float("inf"))
        sums = np.stack([z[labels == c].sum(axis=0) for c in names])
        centroids = unit_rows(sums)

        # Leave-one-out: each flagged prompt is scored against its own category's centroid
        # without itself, so the threshold reflects how unseen prompts of known categories score.
        rows = np.flatnonzero(np.isin(labels, names))
        own = np.searchsorted(np.asarray(names, dtype=object), labels[rows])
        sims = z[rows] @ centroids.T
        sims[np.arange(len(rows)), own] = np.einsum("ij,ij->i", z[rows], unit_rows(sums[own] - z[rows]))
        threshold = float(np.quantile(sims.max(axis=1), quantile))
        return cls(mean.astype(np.float32), components.astype(np.float32), names, centroids.astype(np.float32), threshold)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Unit vectors in the projected space, ``(n, k)`` for ``(n, d)`` input."""
        return unit_rows((np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T)

    def nearest(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of the most similar centroid and that cosine, for projected rows ``z``."""
        if not self.categories:
            return np.zeros(len(z), dtype=np.int64), np.full(len(z), -np.inf, dtype=np.float32)
        sims = z @ self.centroids.T
        best = sims.argmax(axis=1)
        return best, sims[np.arange(len(z)), best]

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "components": self.components,
            "categories": list(self.categories),
            "centroids": self.centroids,
            "threshold": self.threshold,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KnownRegions:
        return cls(
            np.asarray(state["mean"], dtype=np.float32),
            np.asarray(state["components"], dtype=np.float32),
            tuple(state["categories"]),
            np.asarray(state["centroids"], dtype=np.float32),
            float(state["threshold"]),
        )
