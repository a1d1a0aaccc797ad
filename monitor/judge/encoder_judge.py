"""Judge v2: verdicts from the fine-tuned safety encoder (:mod:`monitor.judge.encoder_model`).

The judge reads texts, not the service's drift embeddings: it runs its own encoder twice per batch, once
over the prompts and once over the ``prompt [SEP] reply`` pairs of the events that have a reply. The
encoder runs through :mod:`monitor.embed.backends`, so ONNX int8 speeds it up exactly as it speeds up
the drift embedder. Heads are numpy matrix products with Platt calibration, as in the heads judge.

An artifact folder holds ``manifest.json`` (format ``encoder-1``, version, base model and the hash of
its weights, calibration), ``weights.npz`` (the fine-tuned top layers as float16, the heads as float32)
and ``model_card.md``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

import numpy as np

from monitor.judge.artifact import check_categories, content_version, deterministic_npz, read_artifact, write_artifact
from monitor.judge.calibration import platt, uncertainty
from monitor.judge.encoder_model import PAIR_OUTPUTS
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.taxonomy import SAFE
from monitor.taxonomy import Taxonomy

if TYPE_CHECKING:
    from monitor.embed.embedder import Embedder

ENCODER_FORMAT = "encoder-1"
DEFAULT_ENCODER_ARTIFACT = Path(__file__).with_name("artifacts") / "encoder"


class PooledEncoder(Protocol):
    """What the judge needs from an inference backend: mean-pooled last-layer states, in input order."""

    def pooled(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray: ...


def is_encoder_artifact(path: Path) -> bool:
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("format") == ENCODER_FORMAT
    except (OSError, ValueError):
        return False


def read_encoder_artifact(path: Path | str) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and arrays of an artifact folder, checked against the manifest's version."""
    manifest, blob = read_artifact(path, (ENCODER_FORMAT,), "encoder")
    with np.load(io.BytesIO(blob)) as npz:
        return manifest, {k: npz[k] for k in npz.files}


class EncoderJudge:
    """Implements :class:`~monitor.judge.verdict.Judge` on a :class:`PooledEncoder` and two linear heads."""

    def __init__(self, encoder: PooledEncoder, arrays: Mapping[str, np.ndarray], manifest: Mapping,
                 backend: str = "torch", max_seq_length: int | None = None) -> None:
        self.encoder = encoder
        self.manifest = dict(manifest)
        self._categories = tuple(manifest["categories"])
        self._version = encoder_judge_version(manifest, backend, max_seq_length)
        self._prompt = (np.asarray(arrays["prompt_head.weight"], np.float32).T, np.asarray(arrays["prompt_head.bias"], np.float32))
        self._pair = (np.asarray(arrays["pair_head.weight"], np.float32).T, np.asarray(arrays["pair_head.bias"], np.float32))
        if self._prompt[0].shape[1] != 1 + len(self._categories):
            raise ValueError("prompt head must have one output for 'unsafe' and one per category")
        calib = manifest["calibration"]
        names = ["unsafe", *self._categories]
        self._prompt_calib = tuple(np.array([calib[n][k] for n in names]) for k in ("scale", "shift", "threshold"))
        self._pair_calib = tuple(np.array([calib[n][k] for n in PAIR_OUTPUTS]) for k in ("scale", "shift", "threshold"))

    @property
    def version(self) -> str:
        """See :func:`encoder_judge_version`."""
        return self._version

    @property
    def artifact_version(self) -> str:
        """The artifact's content hash alone (what a combiner fitted on its verdicts names)."""
        return str(self.manifest["version"])

    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    @property
    def embedding_model(self) -> str:
        return str(self.manifest["embedding"]["model"])

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        if not batch:
            return []
        probs = self.prompt_probs([x.prompt for x in batch])
        flags = probs >= self._prompt_calib[2]
        pair = self.pair_probs(batch)
        return [self._verdict(probs[i], flags[i], pair[i]) for i in range(len(batch))]

    def prompt_probs(self, prompts: Sequence[str]) -> np.ndarray:
        """Calibrated (unsafe, then one per category) per prompt from the prompt pass; 0 for a blank prompt.
        A judge that borrows this one's prompt verdict pays for this pass."""
        probs = self._probs(self.encoder.pooled(prompts), self._prompt, self._prompt_calib)
        probs[np.array([not p.strip() for p in prompts], dtype=bool)] = 0.0
        return probs

    def pair_probs(self, batch: Sequence[JudgeInput]) -> np.ndarray:
        """Calibrated (response harm, refusal) per input from the cross-encoded ``prompt [SEP] reply``
        pass; a row of NaN where there is no reply. The only pass a judge that borrows this one's
        response verdict pays for."""
        answered = [i for i, x in enumerate(batch) if x.response is not None and x.response.strip()]
        pair = np.full((len(batch), len(PAIR_OUTPUTS)), np.nan)
        if answered:
            pooled = self.encoder.pooled([batch[i].prompt for i in answered], [batch[i].response or "" for i in answered])
            pair[answered] = self._probs(pooled, self._pair, self._pair_calib)
        return pair

    @property
    def decision_thresholds(self) -> tuple[float, float]:
        """(prompt harm, response harm) decision thresholds, chosen on the validation split."""
        return float(self._prompt_calib[2][0]), float(self._pair_calib[2][0])

    def _probs(self, pooled: np.ndarray, head: tuple[np.ndarray, np.ndarray], calib: tuple) -> np.ndarray:
        return platt(pooled.astype(np.float32) @ head[0] + head[1], calib[0], calib[1])

    def _verdict(self, prompt: np.ndarray, flags: np.ndarray, pair: np.ndarray) -> Verdict:
        flagged = bool(flags[0])
        cat_probs = prompt[1:]
        answered = not np.isnan(pair[0])
        thresholds = self._pair_calib[2]
        return Verdict(
            judge_version=self.version,
            category=self._categories[int(np.argmax(cat_probs))] if flagged else SAFE,
            category_probs=dict(zip(self._categories, cat_probs.tolist())),
            prompt_unsafe=float(prompt[0]),
            prompt_flagged=flagged,
            response_unsafe=float(pair[0]) if answered else None,
            response_flagged=bool(pair[0] >= thresholds[0]) if answered else None,
            refusal=float(pair[1]) if answered else None,
            refused=bool(pair[1] >= thresholds[1]) if answered else None,
            categories=tuple(c for c, f in zip(self._categories, flags[1:]) if f),
            uncertainty=uncertainty([(float(prompt[0]), float(self._prompt_calib[2][0]))]
                                    + ([(float(pair[0]), float(thresholds[0]))] if answered else [])),
        )


def encoder_judge_version(manifest: Mapping, backend: str = "torch", max_seq_length: int | None = None) -> str:
    """The artifact's content hash, plus the inference backend when it is not plain torch, plus ``+seq<N>``
    when pairs are cut at another length than the artifact trained on: int8 weights and shorter inputs
    move scores, and a dashboard must show when either changed.

    >>> manifest = {"version": "encoder-abc", "encoder": {"max_pair_tokens": 256}}
    >>> encoder_judge_version(manifest), encoder_judge_version(manifest, "onnx-int8", 256)
    ('encoder-abc', 'encoder-abc+onnx-int8')
    >>> encoder_judge_version(manifest, "onnx-int8", 128)
    'encoder-abc+onnx-int8+seq128'
    """
    version = str(manifest["version"]) + ("" if backend == "torch" else f"+{backend}")
    trained = manifest["encoder"]["max_pair_tokens"]
    return version if max_seq_length in (None, trained) else f"{version}+seq{max_seq_length}"


def encoder_version(blob: bytes, categories: Sequence[str]) -> str:
    """``encoder-<12 hex>``: a content hash of the shipped weights and the category order."""
    return content_version("encoder", blob, categories)


def save_encoder_artifact(path: Path | str, arrays: Mapping[str, np.ndarray], manifest: Mapping, card: str) -> None:
    write_artifact(path, deterministic_npz(dict(sorted(arrays.items()))), manifest, card)


def load_encoder_judge(path: Path | str, taxonomy: Taxonomy | None = None, max_seq_length: int = 256,
                       backend: str = "torch", device: str = "auto", cache_dir: str | Path | None = None,
                       threads: int | None = None, planner: Embedder | None = None) -> EncoderJudge:
    """Load an artifact on its base model and run it on ``backend`` (torch, onnx-int8, onnx-fp32, auto: the
    ONNX kinds export the assembled encoder once into ``cache_dir``, as for the drift embedder); with
    ``taxonomy``, also check the categories are its harm ids. ``planner`` (the drift embedder) lends its
    pass settings (size, overhead, memory cap), so the operator's limits bound the judge's passes too."""
    from monitor.embed.backends import make_backend, resolve_model_path
    from monitor.embed.embedder import Embedder
    from monitor.judge.encoder_model import assemble, load_base
    from monitor.judge.encoder_training import base_weights_digest

    manifest, arrays = read_encoder_artifact(path)
    check_categories(path, manifest["categories"], taxonomy)
    base, tokenizer = load_base(resolve_model_path(manifest["embedding"]["model"]))
    want = manifest["embedding"]["base_weights_sha256"]
    if base_weights_digest(base) != want:
        raise ValueError(f"judge artifact {path} was trained on a base model whose weights hash to {want}; "
                         f"{manifest['embedding']['model']!r} here differs (another model or package release)")
    layers = {k: v for k, v in arrays.items() if not k.startswith(("prompt_head.", "pair_head."))}
    model = assemble(base, manifest["encoder"]["frozen_layers"], layers)
    runner = make_backend(backend, model, tokenizer, max_seq_length, device, cache_dir, threads)
    limits = {} if planner is None else dict(pass_size=planner.pass_size, pass_overhead_tokens=planner.pass_overhead_tokens,
                                             pass_max_cells=planner.pass_max_cells)
    encoder = Embedder(manifest["version"], max_seq_length, encoder=runner, **limits)  # the drift embedder's pass planner
    return EncoderJudge(encoder, arrays, manifest, runner.name, max_seq_length)
