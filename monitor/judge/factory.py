"""Build the judge named by configuration."""

from __future__ import annotations

import json
from pathlib import Path

from monitor.embed.embedder import Embedder
from monitor.judge.combiner import VerdictCombiner
from monitor.judge.defaults import DEFAULT_JUDGE, skip_line
from monitor.judge.encoder_judge import (DEFAULT_ENCODER_ARTIFACT, EncoderJudge, encoder_judge_version, is_encoder_artifact,
                                         load_encoder_judge)
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge
from monitor.judge.hybrid import HybridJudge, hybrid_version
from monitor.judge.prototype import PrototypeJudge, prototype_version
from monitor.judge.thresholds import RethresholdedJudge, Thresholds, unmovable
from monitor.judge.verdict import Judge
from monitor.taxonomy import Taxonomy

NAMED_ARTIFACTS = {"encoder": DEFAULT_ENCODER_ARTIFACT, "heads": DEFAULT_ARTIFACT}


def build_judge(spec: str, embedder: Embedder, taxonomy: Taxonomy, cache_dir: str | Path | None = None,
                threads: int | None = None, encoder_max_seq_length: int | None = None,
                thresholds: Thresholds = Thresholds(), prompt_skip_below: float | None = None) -> Judge:
    """``heads`` → the shipped v1 heads on the drift embeddings; ``encoder`` → judge v2 (fine-tuned encoder);
    ``hybrid`` → heads with prompt harm, response harm and refusal combined from theirs and the encoder's; ``default`` → :data:`DEFAULT_JUDGE`;
    ``prototype`` → nearest-prototype judge; else a path to an encoder or heads artifact.

    ``encoder_max_seq_length``: tokens an encoder judge keeps per input (the hybrid's is its prompt-and-reply
    pair); unset, the drift embedder's. Cutting pairs shorter than the artifact trained on is cheaper on long
    replies and shows in the version (``+seq<N>``). ``thresholds``: decision lines an operator moved
    (:mod:`monitor.judge.thresholds`; they show in the version too). ``prompt_skip_below``: the hybrid's
    prompt-pass cascade as the setting reads (unset: the default line; 0: off; :func:`~monitor.judge.defaults.skip_line`;
    ``+pskip<x>`` in the version)."""
    # Lines on the prototype judge: the settings refuse them before this; RethresholdedJudge refuses them here.
    spec = DEFAULT_JUDGE if spec == "default" else spec
    line = skip_line(prompt_skip_below, thresholds.prompt, spec)
    judge = _build_judge(spec, embedder, taxonomy, cache_dir, threads, encoder_max_seq_length, line)
    return judge if thresholds == Thresholds() else RethresholdedJudge(judge, thresholds)


def _build_judge(spec: str, embedder: Embedder, taxonomy: Taxonomy, cache_dir: str | Path | None, threads: int | None,
                 encoder_max_seq_length: int | None, prompt_skip_below: float | None) -> Judge:
    if spec == "prototype":
        return PrototypeJudge(embedder, taxonomy)
    length = encoder_max_seq_length or embedder.info.max_seq_length
    if spec == "hybrid":
        return HybridJudge(_heads(DEFAULT_ARTIFACT, embedder, taxonomy),
                           _encoder(DEFAULT_ENCODER_ARTIFACT, embedder, taxonomy, cache_dir, threads, length),
                           VerdictCombiner.load_all(), prompt_skip_below)
    path = _artifact(spec)
    if is_encoder_artifact(path):
        return _encoder(path, embedder, taxonomy, cache_dir, threads, length)
    return _heads(path, embedder, taxonomy)


def _encoder(path: Path, embedder: Embedder, taxonomy: Taxonomy, cache_dir: str | Path | None, threads: int | None,
             max_seq_length: int) -> EncoderJudge:
    # The judge's encoder runs on the drift embedder's backend, device and model cache.
    return load_encoder_judge(path, taxonomy, max_seq_length, embedder.backend.name,
                              embedder.backend.device, cache_dir, threads, planner=embedder)


def _heads(path: Path, embedder: Embedder, taxonomy: Taxonomy) -> HeadsJudge:
    heads = HeadsJudge.load(path, taxonomy)
    if heads.embedding_model != embedder.info.model:
        raise ValueError(f"judge artifact {path} was trained on embeddings of {heads.embedding_model!r}, but the "
                         f"service embeds with {embedder.info.model!r} (embedding_model): its verdicts would be "
                         "meaningless; set embedding_model to match or train heads for this model")
    return heads


def judge_version(spec: str, taxonomy: Taxonomy, backend: str = "torch", encoder_max_seq_length: int | None = None,
                  thresholds: Thresholds = Thresholds(), prompt_skip_below: float | None = None) -> str:
    """The version :func:`build_judge` would give, without loading the embedding model (the detector
    role labels its state and metrics with the judge its workers run); an encoder judge's version names
    its backend when that is not torch (``backend`` as resolved, e.g. ``onnx-int8``) and its pair length
    when that is not the trained one (``encoder_max_seq_length`` as resolved), the hybrid's skip line, and
    moved decision lines."""
    spec = DEFAULT_JUDGE if spec == "default" else spec
    line = skip_line(prompt_skip_below, thresholds.prompt, spec)
    if spec == "prototype":
        if thresholds != Thresholds():
            raise unmovable(prototype_version(taxonomy))
        return prototype_version(taxonomy)
    return _artifact_judge_version(spec, taxonomy, backend, encoder_max_seq_length, line) + thresholds.suffix


def _artifact_judge_version(spec: str, taxonomy: Taxonomy, backend: str, encoder_max_seq_length: int | None,
                            prompt_skip_below: float | None) -> str:
    if spec == "hybrid":
        heads = HeadsJudge.load(DEFAULT_ARTIFACT, taxonomy).version
        combiners = VerdictCombiner.load_all().values()
        for combiner in combiners:
            combiner.check(heads, _encoder_version(DEFAULT_ENCODER_ARTIFACT))
        return hybrid_version(heads, _encoder_version(DEFAULT_ENCODER_ARTIFACT, backend, encoder_max_seq_length),
                              [c.version for c in combiners], prompt_skip_below)
    path = _artifact(spec)
    if is_encoder_artifact(path):
        return _encoder_version(path, backend, encoder_max_seq_length)
    return HeadsJudge.load(path, taxonomy).version


def _encoder_version(path: Path, backend: str = "torch", max_seq_length: int | None = None) -> str:
    return encoder_judge_version(json.loads((path / "manifest.json").read_text()), backend, max_seq_length)


def _artifact(spec: str) -> Path:
    path = NAMED_ARTIFACTS.get(spec, Path(spec))
    if not path.is_dir():
        raise ValueError(f"judge: {spec!r} is not 'default', 'heads', 'encoder', 'hybrid', 'prototype' or a judge artifact folder")
    return path
