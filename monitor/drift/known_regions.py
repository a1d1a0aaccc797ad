"""Where the known harm categories live in embedding space, learned from reference traffic.

Why: an emerging cluster's evidence names the known category it sits nearest to, and its
exemplars are ranked in the same space. Distances are measured after centring on the reference
prompts (which removes the direction every MiniLM embedding shares) and an optional PCA
projection, against one centroid per category built from the prompts the judge flagged with that
category. Which events are new is decided elsewhere (:mod:`monitor.drift.density_gate`): on real
data, distance to these centroids did not separate unseen categories from the judge's false
positives.

On real data (``bench/drift_scenarios.py``, emerging scenarios) 64 components merged unrelated background prompts
into clusters that looked as coherent as a new category, so the detector keeps all dimensions by
default (``n_components`` = the embedding size: centring only, distances unchanged).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> axes = np.eye(8, dtype=np.float32)
>>> sample = rng.normal(size=(200, 8)).astype(np.float32)
>>> flagged = np.repeat(axes[:2], 20, axis=0) + 0.1 * rng.normal(size=(40, 8)).astype(np.float32)
>>> regions = KnownRegions.fit(sample, flagged, ["a"] * 20 + ["b"] * 20, n_components=8)
>>> regions.categories
('a', 'b')
>>> category, similarity = regions.nearest(regions.project(axes[[0, 1]]))
>>> [regions.categories[c] for c in category], bool(similarity.min() > 0.9)
(['a', 'b'], True)
>>> KnownRegions.fit(sample, np.zeros((0, 8)), [], n_components=8).categories  # benign-only reference
()
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
    """A projection plus one unit centroid per known category (none when no category had
    ``min_events`` flagged reference prompts)."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    categories: tuple[str, ...]
    centroids: np.ndarray  # (n_categories, k), unit rows

    @classmethod
    def fit(
        cls,
        sample: np.ndarray,
        flagged: np.ndarray,
        flagged_categories: Sequence[str],
        n_components: int = 64,
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
        components = vectors[:, ::-1][:, : min(n_components, len(sample) - 1, sample.shape[1])].T  # largest first

        labels = np.asarray(flagged_categories, dtype=object)
        # reshape to the sample's width, not -1: with no flagged prompt (benign-only reference) the
        # array is empty and numpy cannot infer a -1 dimension of size 0
        z = unit_rows((np.asarray(flagged, dtype=np.float64).reshape(len(labels), sample.shape[1]) - mean) @ components.T)
        names = tuple(sorted(c for c in set(labels.tolist()) if (labels == c).sum() >= min_events))
        centroids = np.stack([z[labels == c].sum(axis=0) for c in names]) if names else np.zeros((0, len(components)))
        return cls(mean.astype(np.float32), components.astype(np.float32), names, unit_rows(centroids).astype(np.float32))

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
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KnownRegions:
        return cls(
            np.asarray(state["mean"], dtype=np.float32),
            np.asarray(state["components"], dtype=np.float32),
            tuple(state["categories"]),
            np.asarray(state["centroids"], dtype=np.float32),
        )
