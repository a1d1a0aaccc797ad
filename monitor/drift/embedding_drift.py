"""Embedding drift: has what people ask about moved away from the reference, as a whole distribution?

Statistic. The squared maximum mean discrepancy (MMD²) between the prompt embeddings of the last
``window_events`` events and a reference sample (the first ``reference_events`` of the scope),
under a Gaussian kernel on a PCA projection (``pca_dims`` components, plus the distance from the
PCA subspace as one more coordinate, so content in directions the reference barely used is not
invisible; bandwidth by the median heuristic). The PCA is fitted on the first third of the
reference and everything else (reference mean, bootstrap) uses the other two thirds: points a
PCA was fitted on sit closer to its subspace than new points do (by five standard errors of a
window mean on MiniLM embeddings of real prompts), and that bias alone fires false alarms. The
kernel is approximated with ``features`` random Fourier features (Rahimi & Recht, 2007), so MMD²
is the squared distance between the mean feature vectors of window and reference, and sliding
the window is a running sum instead of a kernel matrix. Live events are mapped in float32.

Online. Events are taken in blocks of ``block_events``; a full block is projected, mapped to
features and summed into a ring of ``window_events / block_events`` block sums, and the
statistic is tested once per block when the window is full. Blocks fix the arithmetic, so batch
boundaries never change a result; per event the cost is one projection and one feature map.

Calibration, after Cobb et al. (2021, arXiv 2108.00883): the threshold is set by simulating the
detector on bootstrap streams drawn from the reference, so it meets a target expected run time
(ERT, events between false alarms) instead of a per-test p-value (tests on overlapping windows
are strongly dependent). Each simulated stream is a sequence of windows assembled from blocks of
reference events drawn with replacement, plus an offset drawn by a multiplier bootstrap of the
reference mean: the live stream is compared with a finite reference whose error persists for the
whole stream, and ignoring it sets the threshold too low. With ``L`` tests per simulated stream,
the threshold is the quantile of the per-stream maxima that makes a false alarm within a stream
as likely as within ``L * block_events`` events at the target ERT: ``P(max > h) = 1 -
exp(-L * block_events / ERT)``. All randomness is seeded from ``seed`` and the scope name.

Alert life: active when the statistic reaches the threshold; resolved when it falls below the
``resolve_quantile`` of the simulated per-test statistics (hysteresis: a persisting shift keeps
the statistic far above that level, so the alert does not flap while it lasts).

Memory per scope: the reference sample until it is fitted, then the projection, the feature map,
a ``window_events / block_events`` x ``features`` ring and at most one block of raw embeddings.
Sampling weights are ignored (sampling does not depend on content).
"""

from __future__ import annotations

import logging
import math
import zlib
from typing import Any, Sequence

import numpy as np

from monitor.config import default
from monitor.signals import Condition, Reading
from monitor.drift.reference import rows_by_scope
from monitor.events import ScoredEvent

log = logging.getLogger(__name__)


class _ScopeWatch:
    """One scope: the reference sample while it fills, then the fitted test and its sliding window."""

    def __init__(self, reference_events: int, dim: int) -> None:
        self.sample = np.zeros((reference_events, dim), dtype=np.float32)
        self.filled = 0
        self.fitted = False
        self.pending = np.zeros((0, dim), dtype=np.float32)
        self.pending_at = np.zeros(0)
        self.active = False
        self.statistic = 0.0
        self.alarm_at = math.nan

    def fit(self, detector: EmbeddingMMDDetector, scope: str) -> None:
        """PCA, bandwidth, random features and the bootstrap threshold, all from the reference sample."""
        d = detector
        rng = np.random.default_rng([d.seed, zlib.crc32(scope.encode())])
        fit_part = self.sample[: len(self.sample) // 3].astype(np.float64)
        mean = fit_part.mean(axis=0)
        centred = fit_part - mean
        variances, vectors = np.linalg.eigh(centred.T @ centred)  # ascending; cheaper than an SVD of the sample
        # float32 mapping halves the cost per event; the reference goes through the same path
        self.mean = mean.astype(np.float32)
        self.components = np.ascontiguousarray(vectors[:, ::-1][:, : d.pca_dims].T, dtype=np.float32)
        self.explained = float(variances[::-1][: d.pca_dims].sum() / max(variances.sum(), 1e-300))
        coords = self._coordinates(self.sample[len(self.sample) // 3 :])
        proj = coords.astype(np.float64)
        self.coord_mean = proj.mean(axis=0)
        self.coord_scale = proj.std(axis=0) + 1e-12
        some = proj[rng.choice(len(proj), size=min(len(proj), 1000), replace=False)]
        sq = (some**2).sum(axis=1)
        dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * some @ some.T, 0.0)
        bandwidth = math.sqrt(float(np.median(dist2[np.triu_indices(len(some), 1)]))) or 1.0
        self.omega_t = rng.normal(0.0, 1.0 / bandwidth, size=(d.pca_dims + 1, d.features)).astype(np.float32)
        self.phase = rng.uniform(0.0, 2.0 * math.pi, size=d.features).astype(np.float32)
        self.feature_scale = math.sqrt(2.0 / d.features)
        feats = self._features(coords).astype(np.float64) * self.feature_scale
        self.ref_mean = feats.mean(axis=0)
        self.threshold, self.resolve_threshold = _calibrate(feats - self.ref_mean, d, rng)
        self.ring = np.zeros((d.blocks, d.features))
        self.ring_coords = np.zeros((d.blocks, d.pca_dims + 1))
        self.ring_start = np.full(d.blocks, math.nan)
        self.ring_end = np.full(d.blocks, math.nan)
        self.blocks_seen = 0
        self.fitted = True
        del self.sample

    def _coordinates(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 PCA coordinates and, last, the distance from the PCA subspace."""
        centred = embeddings - self.mean
        proj = centred @ self.components.T
        off = np.sqrt(np.maximum(np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", proj, proj), 0.0))
        return np.concatenate([proj, off[:, None]], axis=1)

    def _features(self, coords: np.ndarray) -> np.ndarray:
        """Random Fourier features, without their constant scale (applied to sums)."""
        return np.cos(coords @ self.omega_t + self.phase)

    def add_block(self, embeddings: np.ndarray, times: np.ndarray) -> bool:
        """Slide the window by one block; True when the window is full and the statistic was tested."""
        coords = self._coordinates(embeddings)
        slot = self.blocks_seen % len(self.ring)
        self.ring[slot] = self._features(coords).sum(axis=0, dtype=np.float64) * self.feature_scale
        self.ring_coords[slot] = coords.sum(axis=0, dtype=np.float64)
        self.ring_start[slot], self.ring_end[slot] = times[0], times[-1]
        self.blocks_seen += 1
        if self.blocks_seen < len(self.ring):
            return False
        events = len(self.ring) * len(embeddings)
        gap = self.ring.sum(axis=0) / events - self.ref_mean
        self.statistic = float(gap @ gap)
        return True

    def window_evidence(self, window_events: int, top: int = 3) -> dict[str, Any]:
        """Window span, and the coordinates whose mean moved most, in standard errors of a window mean.

        Coordinates are PCA component indices, or ``"off_subspace"`` for the distance from the PCA subspace.
        """
        mean = self.ring_coords.sum(axis=0) / window_events
        shift = (mean - self.coord_mean) / (self.coord_scale / math.sqrt(window_events))
        order = np.argsort(-np.abs(shift))[:top]
        names = [int(i) if i < len(shift) - 1 else "off_subspace" for i in order]
        return {
            "window_start_at": float(np.nanmin(self.ring_start)),
            "window_end_at": float(np.nanmax(self.ring_end)),
            "top_shifts": [[name, round(float(shift[i]), 2)] for name, i in zip(names, order)],
        }


def _calibrate(centred_feats: np.ndarray, d: EmbeddingMMDDetector, rng: np.random.Generator) -> tuple[float, float]:
    """(alarm threshold, resolve threshold) from bootstrap streams of the reference (see the module docstring)."""
    n, features = centred_feats.shape
    pool = np.zeros((d.bootstrap_pool, features))
    for _ in range(d.block_events):  # each pool entry: the feature sum of one block of reference events
        pool += centred_feats[rng.integers(0, n, size=d.bootstrap_pool)]
    pool = pool.astype(np.float32)  # halves the memory traffic of the simulation; sums stay exact to ~1e-6
    variances, vectors = np.linalg.eigh(centred_feats.T @ centred_feats)
    spread = np.sqrt(np.maximum(variances, 0.0))
    tests = d.bootstrap_tests
    maxima = np.empty(d.bootstrap_streams)
    per_test = []
    for start in range(0, d.bootstrap_streams, 100):
        streams = min(100, d.bootstrap_streams - start)
        # the reference mean's own error, N(0, cov / n): a Gaussian multiplier bootstrap via the feature covariance
        offset = (rng.standard_normal((streams, features)) * spread) @ vectors.T / n
        blocks = pool[rng.integers(0, d.bootstrap_pool, size=(streams, d.blocks + tests - 1))]
        cum = np.concatenate([np.zeros((streams, 1, features), dtype=np.float32), np.cumsum(blocks, axis=1)], axis=1)
        windows = (cum[:, d.blocks :] - cum[:, : tests]) / d.window_events + offset[:, None, :]
        stats = np.einsum("stf,stf->st", windows, windows)
        maxima[start : start + streams] = stats.max(axis=1)
        per_test.append(stats.ravel())
    p_stream_alarm = -math.expm1(-tests * d.block_events / d.expected_run_time)
    threshold = float(np.quantile(maxima, 1.0 - p_stream_alarm))
    resolve = float(np.quantile(np.concatenate(per_test), d.resolve_quantile))
    return threshold, resolve


class EmbeddingMMDDetector:
    """Online MMD drift of prompt embeddings per scope, with a bootstrap-calibrated expected run time.

    Parameters
    ----------
    reference_events
        Events of a scope that form its reference: the first third fits the PCA, the rest is the reference sample.
    window_events, block_events
        Sliding window compared with the reference, and how often it is tested (``window_events``
        must be a multiple of ``block_events``).
    pca_dims, features
        PCA components the kernel works on, and random Fourier features approximating it.
    expected_run_time
        Target events between false alarms in one scope.
    resolve_quantile
        An alert resolves when the statistic falls below this quantile of its no-drift distribution.
    bootstrap_streams, bootstrap_tests, bootstrap_pool
        Simulated streams, tests per stream and reference blocks drawn for the calibration.
    seed
        Seeds the PCA subsample, features and bootstrap (with the scope name).
    max_scopes
        Scopes tracked at most; events of further scopes are ignored.

    >>> rng = np.random.default_rng(0)
    >>> from monitor.events import Event
    >>> from monitor.judge.verdict import Verdict
    >>> def batch(mean, start, n=500):
    ...     emb = rng.normal(mean, 1.0, size=(n, 16)).astype(np.float32)
    ...     v = Verdict("j", "safe", {}, 0.0, False)
    ...     return [ScoredEvent(Event(str(start + i), float(start + i), "p"), 1.0, emb[i], None, v) for i in range(n)]
    >>> det = EmbeddingMMDDetector(reference_events=1000, window_events=200, block_events=20, pca_dims=8, features=64, expected_run_time=50_000, bootstrap_streams=200)
    >>> det.update(batch(0.0, 0, 1000)), det.update(batch(0.0, 1000, 2000))
    ([], [])
    >>> alarm = det.update(batch(0.5, 3000))[0]
    >>> alarm.kind, alarm.active, 3000 < alarm.at < 3300
    ('embedding_drift', True, True)
    """

    name = "embedding_drift"
    alert_kind = name
    uses_embeddings = True  # state is only comparable with embeddings from the same model and backend

    def __init__(
        self,
        *,
        reference_events: int = default("embedding_reference_events"),
        window_events: int = default("embedding_window_events"),
        block_events: int = 25,
        pca_dims: int = 24,
        features: int = 128,
        expected_run_time: float = default("embedding_expected_run_time"),
        resolve_quantile: float = 0.9,
        bootstrap_streams: int = 1_000,
        bootstrap_tests: int = 200,
        bootstrap_pool: int = 4_000,
        seed: int = 0,
        max_scopes: int = 64,
    ) -> None:
        if block_events < 1 or window_events < block_events or window_events % block_events:
            raise ValueError(f"window_events ({window_events}) must be a positive multiple of block_events ({block_events})")
        if pca_dims < 1 or reference_events < 3 * pca_dims:
            raise ValueError(f"need 1 <= pca_dims <= reference_events / 3, got pca_dims={pca_dims}, reference_events={reference_events}")
        if features < 2:
            raise ValueError(f"features must be at least 2, got {features}")
        if not expected_run_time > window_events:
            raise ValueError(f"expected_run_time must exceed window_events, got {expected_run_time}")
        if not 0.0 < resolve_quantile < 1.0:
            raise ValueError(f"resolve_quantile must be within (0, 1), got {resolve_quantile}")
        if bootstrap_streams < 100 or bootstrap_tests < 1 or bootstrap_pool < 100:
            raise ValueError("need bootstrap_streams >= 100, bootstrap_tests >= 1 and bootstrap_pool >= 100")
        self.reference_events = reference_events
        self.window_events = window_events
        self.block_events = block_events
        self.blocks = window_events // block_events
        self.pca_dims = pca_dims
        self.features = features
        self.expected_run_time = float(expected_run_time)
        self.resolve_quantile = resolve_quantile
        self.bootstrap_streams = bootstrap_streams
        self.bootstrap_tests = bootstrap_tests
        self.bootstrap_pool = bootstrap_pool
        self.seed = seed
        self.max_scopes = max_scopes
        self._scopes: dict[str, _ScopeWatch] = {}
        self._dim: int | None = None

    def update(self, batch: Sequence[ScoredEvent]) -> list[Condition]:
        if not batch:
            return []
        embeddings = self._embeddings(batch)
        times = np.fromiter((e.event.timestamp for e in batch), dtype=float, count=len(batch))
        out: list[tuple[int, Condition]] = []
        for scope, rows in rows_by_scope(batch).items():
            watch = self._scopes.get(scope)
            if watch is None:
                if len(self._scopes) >= self.max_scopes:
                    continue
                watch = self._scopes[scope] = _ScopeWatch(self.reference_events, embeddings.shape[1])
            out += self._advance(scope, watch, embeddings[rows], times[rows], rows)
        out.sort(key=lambda item: item[0])
        return [cond for _, cond in out]

    def _embeddings(self, batch: Sequence[ScoredEvent]) -> np.ndarray:
        try:
            emb = np.asarray([e.prompt_embedding for e in batch], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"prompt_embedding: every event needs a vector of one length ({exc})") from None
        if emb.ndim != 2:
            raise ValueError(f"prompt_embedding must be a 1-d vector per event, got shape {emb.shape[1:]}")
        if self._dim is None:
            self._dim = emb.shape[1]
        if emb.shape[1] != self._dim:
            raise ValueError(f"prompt_embedding has {emb.shape[1]} dimensions, expected {self._dim}")
        if not np.isfinite(emb).all():
            raise ValueError("prompt_embedding contains NaN or infinite values")
        return emb

    def _advance(self, scope: str, watch: _ScopeWatch, emb: np.ndarray, times: np.ndarray, rows: np.ndarray) -> list[tuple[int, Condition]]:
        start = 0
        if not watch.fitted:
            start = min(self.reference_events - watch.filled, len(emb))
            watch.sample[watch.filled : watch.filled + start] = emb[:start]
            watch.filled += start
            if watch.filled < self.reference_events:
                return []
            watch.fit(self, scope)
        out: list[tuple[int, Condition]] = []
        pending = np.concatenate([watch.pending, emb[start:]])
        pending_at = np.concatenate([watch.pending_at, times[start:]])
        carried = len(watch.pending)  # rows of ``pending`` that came from earlier batches
        k = self.block_events
        last_emitted = -1
        full = len(pending) // k
        for b in range(full):
            block = slice(b * k, (b + 1) * k)
            if not watch.add_block(pending[block], pending_at[block]):
                continue
            at = float(pending_at[block][-1])
            changed = watch.statistic >= watch.threshold if not watch.active else watch.statistic < watch.resolve_threshold
            if changed:
                watch.active = not watch.active
                if watch.active:
                    watch.alarm_at = at
                last_emitted = start + (b + 1) * k - 1 - carried  # the block's last row in this batch
                out.append((int(rows[last_emitted]), self._condition(scope, watch, at)))
        watch.pending = pending[full * k :].copy()
        watch.pending_at = pending_at[full * k :].copy()
        if watch.active and last_emitted != len(rows) - 1:
            out.append((int(rows[-1]), self._condition(scope, watch, float(times[-1]))))
        return out

    def _condition(self, scope: str, watch: _ScopeWatch, at: float) -> Condition:
        evidence = {
            "mmd2": watch.statistic,
            "threshold": watch.threshold,
            "resolve_threshold": watch.resolve_threshold,
            "alarm_at": None if math.isnan(watch.alarm_at) else watch.alarm_at,
            "window_events": self.window_events,
            **watch.window_evidence(self.window_events),
            "reference_events": self.reference_events - self.reference_events // 3,
            "pca_dims": self.pca_dims,
            "pca_explained_variance": round(watch.explained, 4),
            "expected_run_time_events": self.expected_run_time,
        }
        if watch.active:
            summary = (
                f"prompt content in {scope} drifted from its reference: MMD² = {watch.statistic:.3g} "
                f"over the last {self.window_events} events (threshold {watch.threshold:.3g})"
            )
        else:
            summary = f"prompt content in {scope} is back near its reference (MMD² = {watch.statistic:.3g})"
        return Condition(self.name, scope, "", watch.active, at, "warning" if watch.active else "info", summary, evidence)

    def readings(self) -> list[Reading]:
        """Per fitted scope: the last MMD² against the alarm threshold (no readings during the reference period)."""
        return [
            Reading(self.name, scope, "", w.statistic, w.threshold, w.active) for scope, w in self._scopes.items() if w.fitted
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "dim": self._dim,
            "scopes": {
                scope: {name: value.copy() if isinstance(value, np.ndarray) else value for name, value in vars(w).items()}
                for scope, w in self._scopes.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._dim = state["dim"]
        scopes = {}
        for scope, saved in state["scopes"].items():
            watch = _ScopeWatch.__new__(_ScopeWatch)
            for name, value in saved.items():
                setattr(watch, name, value.copy() if isinstance(value, np.ndarray) else value)
            scopes[scope] = watch
        self._scopes = scopes
