"""Embed many texts once: duplicates within a call are embedded once, and an optional cache file keeps
vectors across runs (training and evaluation re-embed the same prompts; XSTest's sit in four files).

>>> import numpy as np
>>> calls = []
>>> def fake(texts):
...     calls.append(list(texts))
...     return np.ones((len(texts), 2), dtype=np.float32)
>>> enc = CachedEncoder(fake)
>>> enc(["a", "b", "a"]).shape, calls
((3, 2), [['a', 'b']])
>>> _ = enc(["b"]); calls
[['a', 'b']]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from monitor.judge.dataset import Record

if TYPE_CHECKING:
    from monitor.embed.embedder import Embedder

Encode = Callable[[Sequence[str]], np.ndarray]


def vectors_name(model: str, backend: str = "torch", revision: str = "") -> str:
    """What a cache of vectors is named after: torch's keeps the name it always had; another
    backend's vectors differ, and an ONNX export's with its ``revision``.

    >>> vectors_name("m"), vectors_name("m", "onnx-int8", "r2+cal-3e24")
    ('m', 'm@onnx-int8@r2+cal-3e24')
    """
    return model if backend == "torch" else "@".join(part for part in (model, backend, revision) if part)


def cache_file_for(cache_dir: Path, model: str, max_seq_length: int) -> Path:
    """One cache file per (model, max_seq_length): vectors differ when either changes."""
    tag = hashlib.sha256(f"{model}\x00{max_seq_length}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"embeddings-{tag}.npz"


class CachedEncoder:
    """Wraps an ``encode(texts) -> (n, d) array`` function with dedup and an optional on-disk cache."""

    chunk = 1024

    def __init__(self, encode: Encode, cache_file: Path | None = None) -> None:
        self._encode = encode
        self._cache_file = Path(cache_file) if cache_file else None
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        if self._cache_file and self._cache_file.exists():
            with np.load(self._cache_file) as data:
                self._vectors = dict(zip(data["keys"].tolist(), data["vectors"]))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        keys = [_key(t) for t in texts]
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in self._vectors:
                missing.setdefault(k, t)
        todo = list(missing.items())
        for start in range(0, len(todo), self.chunk):
            part = todo[start : start + self.chunk]
            fresh = np.asarray(self._encode([t for _, t in part]), dtype=np.float32)
            self._vectors.update(zip((k for k, _ in part), fresh))
            self._dirty = True
            self.save()  # per chunk, so an interrupted run resumes where it stopped
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def save(self) -> None:
        if not (self._cache_file and self._dirty):
            return
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(list(self._vectors)), vectors=np.stack(list(self._vectors.values())))
        tmp.replace(self._cache_file)
        self._dirty = False


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class EmbeddedRecords:
    """Records with their prompt and response embeddings; response rows are NaN where there is none."""

    records: list[Record]
    prompts: np.ndarray
    responses: np.ndarray

    def has_response(self) -> np.ndarray:
        return ~np.isnan(self.responses[:, 0]) if len(self.records) else np.zeros(0, dtype=bool)


def embed_records(records: Sequence[Record], encode: Encode) -> EmbeddedRecords:
    """Embed every prompt, and every non-blank response."""
    records = list(records)
    prompts = encode([r.prompt for r in records])
    answered = [i for i, r in enumerate(records) if r.response is not None and r.response.strip()]
    responses = np.full((len(records), prompts.shape[1] if len(records) else 0), np.nan, dtype=np.float32)
    if answered:
        responses[answered] = encode([records[i].response for i in answered])
    return EmbeddedRecords(records, prompts, responses)


def embedder_encoder(embedder: "Embedder", cache_dir: Path | None = None) -> CachedEncoder:
    """A :class:`CachedEncoder` over a real embedder, caching per (model, backend, max_seq_length) under ``cache_dir``."""
    info = embedder.info
    cache = cache_file_for(cache_dir, vectors_name(info.model, info.backend, info.revision), info.max_seq_length) if cache_dir else None
    return CachedEncoder(embedder.encode, cache)
