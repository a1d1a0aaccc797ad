"""Build judged events for detector tests without a model: verdicts from a category, embeddings from numpy."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.taxonomy import SAFE


def verdict(category: str = SAFE, *, response_unsafe: bool | None = None, refused: bool | None = None) -> Verdict:
    """A confident verdict: the prompt is flagged exactly when ``category`` is a harm category."""
    flagged = category != SAFE
    return Verdict(
        judge_version="test",
        category=category,
        category_probs={category: 0.95} if flagged else {},
        prompt_unsafe=0.95 if flagged else 0.05,
        prompt_flagged=flagged,
        response_unsafe=None if response_unsafe is None else float(response_unsafe),
        response_flagged=response_unsafe,
        refusal=None if refused is None else float(refused),
        refused=refused,
        categories=(category,) if flagged else (),
    )


def scored(
    timestamp: float,
    category: str = SAFE,
    *,
    embedding: np.ndarray | None = None,
    scopes: tuple[str, ...] = ("global",),
    weight: float = 1.0,
    event_id: str | None = None,
) -> ScoredEvent:
    """One judged event; the embedding defaults to a fixed 4-d unit vector."""
    emb = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32) if embedding is None else embedding
    return ScoredEvent(
        event=Event(event_id or f"e{timestamp:.3f}", float(timestamp), "prompt text"),
        weight=weight,
        prompt_embedding=emb,
        response_embedding=None,
        verdict=verdict(category),
        scopes=scopes,
    )


def category_stream(
    rng: np.random.Generator,
    n: int,
    shares: Mapping[str, float],
    *,
    start: float = 0.0,
    spacing: float = 1.0,
    scopes: tuple[str, ...] = ("global",),
    embeddings: np.ndarray | None = None,
) -> list[ScoredEvent]:
    """``n`` events ``spacing`` seconds apart whose category is drawn with ``shares`` (the rest safe)."""
    names: Sequence[str] = [*shares, SAFE]
    probs = [*shares.values(), 1.0 - sum(shares.values())]
    if probs[-1] < 0:
        raise ValueError(f"shares sum to more than 1: {dict(shares)}")
    picks = rng.choice(len(names), size=n, p=probs)
    return [
        scored(start + i * spacing, names[k], scopes=scopes, embedding=None if embeddings is None else embeddings[i])
        for i, k in enumerate(picks)
    ]
