"""Embed and judge a batch: the costly, stateless part of the pipeline (blocking; run off the event loop)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from monitor.embed.embedder import Embedder
from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Judge, JudgeInput
from monitor.scopes import ScopeResolver


@dataclass(frozen=True, slots=True)
class StageTimes:
    embed: float
    judge: float


class Scorer:
    def __init__(self, embedder: Embedder, judge: Judge, scopes: ScopeResolver, embed_responses: bool = True, batch_size: int = 64) -> None:
        self.embedder = embedder
        self.judge = judge
        self.scopes = scopes
        self.embed_responses = embed_responses
        self.batch_size = batch_size

    def score(self, items: Sequence[tuple[Event, float]]) -> tuple[list[ScoredEvent], StageTimes]:
        """Embed prompts and responses in one encoder call, then judge; order is preserved."""
        t0 = time.perf_counter()
        events = [e for e, _ in items]
        with_response = [i for i, e in enumerate(events) if e.response is not None and self.embed_responses]
        texts = [e.prompt for e in events] + [events[i].response or "" for i in with_response]
        vectors = self.embedder.encode(texts, batch_size=self.batch_size)
        prompt_vecs = vectors[: len(events)]
        response_vecs: list = [None] * len(events)
        for j, i in enumerate(with_response):
            response_vecs[i] = vectors[len(events) + j]
        t1 = time.perf_counter()
        verdicts = self.judge.judge(
            [JudgeInput(e.prompt, prompt_vecs[i], e.response if response_vecs[i] is not None else None, response_vecs[i]) for i, e in enumerate(events)]
        )
        t2 = time.perf_counter()
        scored = [
            ScoredEvent(
                event=e,
                weight=w,
                prompt_embedding=prompt_vecs[i],
                response_embedding=response_vecs[i],
                verdict=verdicts[i],
                scopes=self.scopes.scopes(e.model, e.route),
            )
            for i, (e, w) in enumerate(items)
        ]
        return scored, StageTimes(embed=t1 - t0, judge=t2 - t1)
