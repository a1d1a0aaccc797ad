"""Build the judge named by configuration."""

from __future__ import annotations

from monitor.embed.embedder import Embedder
from monitor.judge.prototype import PrototypeJudge
from monitor.judge.verdict import Judge
from monitor.taxonomy import Taxonomy


def build_judge(spec: str, embedder: Embedder, taxonomy: Taxonomy) -> Judge:
    """``prototype`` → nearest-prototype judge; ``default`` → shipped classifier heads; else a path to a heads artifact."""
    if spec == "prototype":
        return PrototypeJudge(embedder, taxonomy)
    raise ValueError(f"judge: unknown judge {spec!r} (use 'prototype', 'default' or a path to a judge artifact)")
