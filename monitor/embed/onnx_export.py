"""Build an ONNX copy of a BERT-style encoder once, into a cache folder keyed by its weights.

Why a build step: ONNX Runtime with a fused graph and dynamic int8 weights embeds 2-3x faster than
torch on two CPU cores (docs: stack-notes), but the exported file must never be downloaded at run
time. It is built here, from the same weights the torch backend would load (the bundled model, a
local folder, or a model held in memory such as the judge's fine-tuned encoder), by
``monitor model export`` or on the first start that needs it.

Recipe (``RECIPE_VERSION`` for steps 1-3 and 5, :func:`recipe` per kind; bump it when any step changes,
so old caches are not reused):

1. ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``) of the encoder with *eager*
   attention: transformers' default SDPA attention exports a graph ONNX Runtime's BERT fusion
   cannot recognise. Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (so a text pair
   can be cross-encoded); output ``last_hidden_state``; batch and sequence axes dynamic.
2. onnxruntime's offline BERT fusion (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm ops).
3. ``onnx-int8`` only: ``quantize_dynamic`` with per-channel, *symmetric* int8 weights and float
   as the default tensor type. Default quantization settings lose too much (cosine 0.88 to fp32).
4. ``onnx-int8`` only: the activations' dynamic quantization becomes static, with ranges measured
   in the float graph on calibration texts shipped in the package (``activation_ranges``), so a
   text's vector does not depend on the texts that share its pass. That step's version and the
   calibration file's hash are part of the int8 recipe (:func:`recipe`), hence of its cache key.
5. Rewrites into ops ONNX Runtime's CPU kernels run faster, computing the same thing
   (``graph_rewrites``): the fused skip layer norms split back into adds and a standard layer
   norm; ``onnx-int8``'s integer products and their scaling fused into one op.

The folder holds ``model.onnx``, the tokenizer files and ``manifest.json`` (recipe, weights hash,
the model file's sha256). Deterministic: the same weights give the same bytes (tested) with the
same ONNX Runtime on the same kind of CPU; int8's activation ranges come from float arithmetic,
rounded to a coarse grid, so another CPU rarely moves them, but it may. A folder is written under a temporary name and
renamed when complete, so a crash mid-export never leaves a half folder under the final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from monitor.embed import activation_ranges, graph_rewrites
from monitor.embed.activation_ranges import calibration_digest, fix_activation_ranges
from monitor.embed.graph_rewrites import rewrite_for_cpu

log = logging.getLogger(__name__)

RECIPE_VERSION = f"bert-eager-fused-v1+{graph_rewrites.VERSION}"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
OPSET = 17
EXPORT_TIMEOUT_S = 1800.0  # a child exporting longer than this is stopped (an export takes under a minute)
REBUILD_HINT = "rebuild it with `monitor model export` (it replaces a broken folder), or delete the folder: the service rebuilds it on its next start"

UNUSED_PREFIXES = ("pooler.",)  # tensors that do not reach last_hidden_state
OnnxKind = Literal["onnx-int8", "onnx-fp32"]


class ExportedModelError(RuntimeError):
    """An exported model folder that is missing, incomplete or corrupt; the message names the path and the fix."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-safety-drift-monitor" / "models"


def weights_digest(state: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes (sorted by name), plus the model config.

    Identifies the weights, not the file they came from: the same model loaded from a folder or
    held in memory after fine-tuning hashes the same when its tensors are equal. The pooler is left
    out: the export stops at the last hidden state, and transformers initialises a pooler missing
    from a folder at random on every load, which would give a new key (and a new export) per start.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        if name.startswith(UNUSED_PREFIXES):
            continue
        value = state[name]
        arr = value.detach().cpu().contiguous().numpy() if hasattr(value, "detach") else np.ascontiguousarray(value)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        h.update(arr.tobytes())
    if config:
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
    return h.hexdigest()


def cache_key(model: Any, kind: OnnxKind) -> str:
    """Folder name for ``model`` exported as ``kind``: the weights hash and the recipe version."""
    config = _config_identity(model)
    digest = hashlib.sha256(f"{weights_digest(model.state_dict(), config)}|{recipe(kind)}|{kind}".encode()).hexdigest()
    return f"{config.get('model_type', 'model')}-{kind}-{digest[:20]}"


def _config_identity(model: Any) -> dict[str, Any]:
    """The config fields that shape the graph (not names or paths, which differ between copies of one model)."""
    c = model.config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "type_vocab_size", "vocab_size", "layer_norm_eps")
    return {k: getattr(c, k, None) for k in keys}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(model: Any, tokenizer: Any, out_dir: Path, quantize: bool) -> Path:
    """Export ``model`` (a transformers BERT-style encoder, in memory) to ``out_dir``; returns ``out_dir``.

    ``out_dir`` must not exist yet (callers pick a cache folder by :func:`cache_key`); it appears
    only once complete. The model is not modified (a CPU float32 copy is exported).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: already exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    kind = _kind(quantize)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        raw = work / "raw.onnx"
        fused = work / "fused.onnx"
        final = work / MODEL_FILE
        digest = weights_digest(model.state_dict(), _config_identity(model))
        _torch_export(model, raw)
        _fuse(raw, fused, num_heads=model.config.num_attention_heads, hidden_size=model.config.hidden_size)
        if quantize:
            _quantize(fused, final)
            fix_activation_ranges(final, fused, tokenizer, max_length=int(model.config.max_position_embeddings))
        else:
            fused.rename(final)
        rewrite_for_cpu(final, quantized=quantize)
        for leftover in (raw, fused):
            leftover.unlink(missing_ok=True)
        for extra in work.glob("*.data"):
            extra.unlink()
        tokenizer.save_pretrained(str(work))
        manifest = {
            "recipe": recipe(kind),
            "kind": kind,
            "weights_sha256": digest,
            "model_sha256": file_sha256(final),
            "hidden_size": int(model.config.hidden_size),
            "model_type": model.config.model_type,
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "output": "last_hidden_state",
        }
        if quantize:
            manifest["calibration_sha256"] = calibration_digest()
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        work.chmod(0o755)  # mkdtemp makes it 0700: an image exports as root and serves as another user
        work.rename(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("exported %s model to %s", kind, out_dir)
    return out_dir


def export_in_child(model: Any, tokenizer: Any, out_dir: Path, quantize: bool,
                    timeout_s: float = EXPORT_TIMEOUT_S) -> Path:
    """:func:`export_onnx` in a fresh (spawned) process, which hands its memory back when it exits.

    Why: tracing, onnxruntime's fusion and quantization need far more memory than serving does, and
    a Python process keeps most of what it once used: run inside the service, a first start with an
    empty model cache left it at the export's high-water mark for its whole life (README, "Fast
    inference"). The model travels as pickled bytes of a CPU copy, not through multiprocessing's
    tensor sharing, which would put every weight in ``/dev/shm`` (64 MB in a Docker build step or a
    pod by default) and leave the caller's model shared. Where no process can be started, the export
    runs here, with a warning. A child that dies (out of memory) or hangs past ``timeout_s`` becomes
    an :class:`ExportedModelError`; an error it raises comes back with its type. As with any spawned
    process, the caller's main module is imported again in the child: a script that builds an ONNX
    backend needs the usual ``if __name__ == "__main__":`` guard.
    """
    import multiprocessing

    out_dir = Path(out_dir)
    payload = pickle.dumps((_cpu(model), tokenizer))
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    started = time.time()
    try:
        child = context.Process(target=_export_child, args=(payload, str(out_dir), quantize, send),
                                name="onnx-export", daemon=True)
        child.start()
    except (OSError, RuntimeError, NotImplementedError, AssertionError) as exc:  # no processes here
        receive.close()
        send.close()
        log.warning("cannot start a process for the ONNX export (%s); exporting in this one", exc)
        return export_onnx(model, tokenizer, out_dir, quantize)
    send.close()
    try:
        if not receive.poll(timeout_s):
            child.terminate()
            child.join()
            raise ExportedModelError(f"exported model {out_dir}: the export ran over {timeout_s:.0f} s and was "
                                     f"stopped; {REBUILD_HINT}")
        try:
            error = receive.recv()
        except EOFError:
            child.join()
            raise ExportedModelError(
                f"exported model {out_dir}: the export process died (exit code {child.exitcode}); it needs about "
                f"1.6 GB of memory while it runs; {REBUILD_HINT}") from None
    except ExportedModelError:
        _remove_work_dirs(out_dir, since=started)
        raise
    finally:
        receive.close()
        child.join()
    if error is not None:
        raise error
    log.info("exported %s model to %s", _kind(quantize), out_dir)
    return out_dir


def _kind(quantize: bool) -> OnnxKind:
    return "onnx-int8" if quantize else "onnx-fp32"


def _cpu(model: Any) -> Any:
    """``model`` if it is on the CPU, else a CPU copy (the child must not start CUDA to unpickle it)."""
    import copy

    devices = {p.device.type for p in model.parameters()}
    return model if devices <= {"cpu"} else copy.deepcopy(model).to("cpu")


QUANTIZER_ADVICE = "Please consider to run pre-processing before quantization"  # onnxruntime's, on every run


def _export_child(payload: bytes, out_dir: str, quantize: bool, conn: Any) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s (onnx export): %(message)s")
    for handler in logging.getLogger().handlers:  # advice for static quantization; this recipe is fixed and tested
        handler.addFilter(lambda record: not record.getMessage().startswith(QUANTIZER_ADVICE))
    try:
        model, tokenizer = pickle.loads(payload)
        export_onnx(model, tokenizer, Path(out_dir), quantize)
        conn.send(None)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        try:
            conn.send(exc)
        except Exception:  # an exception that does not pickle
            conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _remove_work_dirs(out_dir: Path, since: float) -> None:
    """Work folders a killed export left behind (its own cleanup never ran); only those made since it began."""
    for work in out_dir.parent.glob(f".{out_dir.name}.*"):
        if work.is_dir() and work.stat().st_mtime >= since - 1:
            shutil.rmtree(work, ignore_errors=True)


def _torch_export(model: Any, path: Path) -> None:
    import copy

    import torch

    class _Encoder(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    bert = copy.deepcopy(model).to("cpu", torch.float32).eval()
    _use_eager_attention(bert)
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    types = torch.zeros((2, 8), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    # The tracer warns that transformers' mask code turns a shape comparison into a constant; the
    # graph stays correct for any batch and length (the backend tests compare it with torch at many).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        torch.onnx.export(
            _Encoder(bert),
            (ids, mask, types),
            str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _use_eager_attention(model: Any) -> None:
    """Switch a loaded transformers model to eager attention (the only kind the BERT fusion recognises)."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
    else:  # older transformers
        model.config._attn_implementation = "eager"


def _fuse(src: Path, dst: Path, num_heads: int, hidden_size: int) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: only the offline Python fusions, no ORT session in the loop (deterministic, and
    # ORT applies its own graph optimisations when the session loads anyway).
    optimized = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=False)
    fused_ops = optimized.get_fused_operator_statistics()
    if not fused_ops.get("Attention"):
        log.warning("ONNX export: no attention fusion happened (%s); the graph runs, but slower", fused_ops)
    optimized.save_model_to_file(str(dst), use_external_data_format=False)


def _quantize(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"WeightSymmetric": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def recipe(kind: OnnxKind) -> str:
    """How this code exports ``kind``: int8 adds its activation ranges' method and calibration texts."""
    if kind == "onnx-int8":
        return f"{RECIPE_VERSION}+{activation_ranges.VERSION}+cal-{calibration_digest()[:12]}"
    return RECIPE_VERSION


def export_revision(kind: str) -> str:
    """What, besides the backend's name, decides ``kind``'s vectors, for drift references and caches
    of vectors: int8's recipe (the release before fixed activation ranges gave other vectors under
    the same name, so a snapshot of them must refit, not alarm); "" for fp32, whose vectors are
    torch's to ~1e-6 under every recipe so far (the CPU rewrites moved them in the last bits only),
    and for torch."""
    return recipe(kind) if kind == "onnx-int8" else ""


def check_exported(folder: Path) -> dict[str, Any]:
    """The manifest of a complete, intact export; else :class:`ExportedModelError` naming the path and the fix."""
    folder = Path(folder)
    manifest_path, model_path = folder / MANIFEST_FILE, folder / MODEL_FILE
    if not folder.is_dir():
        raise ExportedModelError(f"exported model {folder}: not found; {REBUILD_HINT}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ExportedModelError(f"exported model {folder}: {manifest_path.name} missing (incomplete export); {REBUILD_HINT}") from None
    except (OSError, ValueError) as exc:
        raise ExportedModelError(f"exported model {folder}: {manifest_path} unreadable ({exc}); {REBUILD_HINT}") from None
    kind = manifest.get("kind")
    wanted = recipe(kind) if kind in ("onnx-int8", "onnx-fp32") else RECIPE_VERSION
    if manifest.get("recipe") != wanted:
        raise ExportedModelError(
            f"exported model {folder}: built by recipe {manifest.get('recipe')!r}, this version needs {wanted!r}; {REBUILD_HINT}"
        )
    if not model_path.is_file():
        raise ExportedModelError(f"exported model {model_path}: missing; {REBUILD_HINT}")
    if file_sha256(model_path) != manifest.get("model_sha256"):
        raise ExportedModelError(f"exported model {model_path}: corrupt (sha256 differs from {manifest_path.name}); {REBUILD_HINT}")
    return manifest
