"""A snapshot restored under another embedding backend refits embedding references instead of alerting.

No model: the "backends" are labels in the settings (a service without an embedder takes its
embedding identity from them) and the backend's effect on vectors is a fixed small distortion,
as int8 vs fp32 moves MiniLM's vectors (cosine ~0.98-0.99, enough for a drift detector to fire).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np

from monitor.config import Settings
from monitor.drift.embedding_drift import EmbeddingMMDDetector
from monitor.embed.embedder import EmbedderInfo
from monitor.embed.onnx_export import export_revision
from monitor.drift.suite import DetectorSuite
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.service import MonitorService
from monitor.scopes import ScopeResolver
from tests.helpers.scored import scored
from tests.helpers.snapshots import restore_resolves_the_alert

DIM = 16
REFERENCE = 600


def service(backend: str, revision: str = "") -> MonitorService:
    """A service on ``backend``; with a ``revision``, one whose embedder says which export it runs."""
    detector = EmbeddingMMDDetector(
        reference_events=REFERENCE, window_events=100, block_events=20, pca_dims=8, features=64, expected_run_time=50_000, bootstrap_streams=200
    )
    embedder = SimpleNamespace(info=EmbedderInfo("bundled:all-MiniLM-L6-v2", DIM, "cpu", 256, backend, revision)) if revision else None
    scorer = Scorer(embedder, SimpleNamespace(version="test-judge"), ScopeResolver([], []))
    return MonitorService(Settings(embedding_backend=backend), scorer, DetectorSuite([detector]))


def vectors(rng: np.random.Generator, n: int, distortion: np.ndarray | None = None) -> np.ndarray:
    x = rng.normal(0.0, 1.0, size=(n, DIM)) + 2.0
    if distortion is not None:
        x = x @ distortion
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def feed(svc: MonitorService, emb: np.ndarray, start: float) -> None:
    for i in range(0, len(emb), 50):
        svc.process_scored([scored(start + i + j, embedding=emb[i + j]) for j in range(min(50, len(emb) - i))])


def other_backend(seed: int = 1) -> np.ndarray:
    """A fixed near-identity linear map: what changing the backend does to every vector."""
    return np.eye(DIM) + 0.35 * np.random.default_rng(seed).normal(size=(DIM, DIM)) / np.sqrt(DIM)


def state_after_reference(rng: np.random.Generator) -> dict:
    before = service("torch")
    feed(before, vectors(rng, REFERENCE + 300), 0)
    assert before.detectors.readings() and not before.alerts("firing")
    return before.state_dict()


def test_same_backend_restores_and_the_distortion_alone_would_alarm():
    """The control: without the backend check, a backend's distortion is drift to the detector."""
    rng = np.random.default_rng(0)
    state = state_after_reference(rng)
    assert state["embedding"] == {"model": "bundled:all-MiniLM-L6-v2", "backend": "torch"}
    after = service("torch")
    after.load_state_dict(state)
    assert after.detectors.readings()  # restored, fitted
    feed(after, vectors(rng, 400, other_backend()), 10_000)
    assert [a.kind for a in after.alerts("firing")] == ["embedding_drift"]


def test_another_backend_refits_with_a_log_line_and_no_alert(caplog):
    rng = np.random.default_rng(0)
    state = state_after_reference(rng)
    after = service("onnx-int8")
    with caplog.at_level(logging.WARNING, logger="monitor.pipeline.service"):
        after.load_state_dict(state)
    [line] = [r.getMessage() for r in caplog.records if "refitting" in r.getMessage()]
    assert "backend torch" in line and "backend onnx-int8" in line and "embedding_drift" in line
    assert not after.detectors.readings()  # reference refilling from new traffic
    assert after.counts.processed == REFERENCE + 300  # the rest of the snapshot is restored
    feed(after, vectors(rng, REFERENCE + 400, other_backend()), 10_000)
    assert after.detectors.readings()  # refitted on the new backend's vectors
    assert not after.alerts("all")
    assert after.state_dict()["embedding"]["backend"] == "onnx-int8"


def test_an_int8_snapshot_of_another_export_recipe_refits():
    """int8 vectors moved when activation ranges became fixed: a snapshot of the release before
    (no ``revision``) or of another calibration is another backend to the drift references."""
    rng = np.random.default_rng(0)
    earlier = service("onnx-int8")
    feed(earlier, vectors(rng, REFERENCE + 300), 0)
    state = earlier.state_dict()
    assert state["embedding"] == {"model": "bundled:all-MiniLM-L6-v2", "backend": "onnx-int8", "revision": export_revision("onnx-int8")}
    del state["embedding"]["revision"]  # as the release before wrote it
    for revision in (export_revision("onnx-int8"), "bert-eager-fused-v1+static-ranges-v1+cal-000000000000"):
        after = service("onnx-int8", revision)
        after.load_state_dict(state)
        assert not after.detectors.readings()  # refitting from new traffic
        state = after.state_dict()
        assert state["embedding"]["revision"] == revision
    same = service("onnx-int8", revision)
    feed(after, vectors(rng, REFERENCE + 300), 20_000)
    same.load_state_dict(after.state_dict())
    assert same.detectors.readings()  # the same export: restored, not refitted


def test_an_open_embedding_alert_resolves_when_its_reference_is_refitted():
    rng = np.random.default_rng(0)
    fired = service("torch")
    fired.load_state_dict(state_after_reference(rng))
    feed(fired, vectors(rng, 400, other_backend()), 10_000)
    resolved = restore_resolves_the_alert(fired, service("onnx-fp32"))
    assert "reference refitted, embeddings now come from backend onnx-fp32" in resolved.summary


def test_a_snapshot_from_before_backends_were_recorded_counts_as_torch():
    rng = np.random.default_rng(0)
    state = state_after_reference(rng)
    del state["embedding"]
    on_torch, on_int8 = service("torch"), service("onnx-int8")
    on_torch.load_state_dict(state)
    on_int8.load_state_dict(state)
    assert on_torch.detectors.readings() and not on_int8.detectors.readings()
