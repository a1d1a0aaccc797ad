"""Scored events own their vectors: keeping one event must not keep its whole batch's matrix alive
(a sample spread over the stream would then hold one row of very many batches: a soak grew by
~2 KB per event until this held)."""

from __future__ import annotations

import numpy as np

from monitor.config import Settings
from monitor.events import Event
from monitor.pipeline.builder import build_scorer


def test_each_scored_event_owns_its_embeddings(embedder):
    scorer = build_scorer(Settings(judge="prototype"), embedder)
    batch = [(Event(f"m{i}", float(i), f"prompt number {i}", f"reply {i}"), 1.0) for i in range(8)]
    scored, _ = scorer.score(batch)
    for s in scored:
        for vector in (s.prompt_embedding, s.response_embedding):
            assert vector.base is None and vector.nbytes == vector.shape[-1] * vector.itemsize
    assert not np.shares_memory(scored[0].prompt_embedding, scored[1].prompt_embedding)
