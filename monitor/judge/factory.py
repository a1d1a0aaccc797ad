"""Build the judge named by configuration."""

from __future__ import annotations

from pathlib import Path

from monitor.embed.embedder import Embedder
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge
from monitor.judge.prototype import PrototypeJudge, prototype_version
from monitor.judge.verdict import Judge
from monitor.taxonomy import Taxonomy


def build_judge(spec: str, embedder: Embedder, taxonomy: Taxonomy) -> Judge:
    """``default`` → the shipped classifier heads; ``prototype`` → nearest-prototype judge; else a path to a heads artifact."""
    if spec == "prototype":
        return PrototypeJudge(embedder, taxonomy)
    return HeadsJudge.load(_artifact(spec), taxonomy)


def judge_version(spec: str, taxonomy: Taxonomy) -> str:
    """The version :func:`build_judge` would give, without loading the embedding model (the detector
    role labels its state and metrics with the judge its workers run)."""
    if spec == "prototype":
        return prototype_version(taxonomy)
    return HeadsJudge.load(_artifact(spec), taxonomy).version


def _artifact(spec: str) -> Path:
    path = DEFAULT_ARTIFACT if spec == "default" else Path(spec)
    if not path.is_dir():
        raise ValueError(f"judge: {spec!r} is not 'default', 'prototype' or a judge artifact folder")
    return path
