"""Embed and judge a batch: the costly, stateless part of the pipeline (blocking; run off the event loop)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Sequence

from monitor.embed.embedder import Embedder
from monitor.events import Event, ScoredEvent
from monitor.judge.second_opinion import SecondOpinion
from monitor.judge.verdict import Judge, JudgeInput, Verdict
from monitor.scopes import ScopeResolver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StageTimes:
    embed: float
    judge: float
    second_judge: float = 0.0


class Scorer:
    def __init__(
        self,
        embedder: Embedder | None,
        judge: Judge,
        scopes: ScopeResolver,
        embed_responses: bool = True,
        second_opinion: SecondOpinion | None = None,
        second_opinion_deadline_s: float = 5.0,
    ) -> None:
        self.embedder = embedder
        self.judge = judge
        self.second_opinion = second_opinion
        self.second_opinion_deadline_s = second_opinion_deadline_s
        self.second_opinion_timeouts = 0  # batches that went on without their second opinions
        self.scopes = scopes
        self.embed_responses = embed_responses

    async def _second_opinions(self, event_ids: list[str], inputs: list[JudgeInput], verdicts: list[Verdict]) -> list[Verdict | None]:
        """The second judge's verdicts, or none at all once the batch's deadline passes: a slow or
        failing optional judge must not hold up the primary pipeline for more than the deadline."""
        assert self.second_opinion is not None
        try:
            run = self.second_opinion.run(event_ids, inputs, [v.uncertainty for v in verdicts])
            return await asyncio.wait_for(run, self.second_opinion_deadline_s)
        except TimeoutError:
            self.second_opinion_timeouts += 1
            return [None] * len(inputs)

    def score(self, items: Sequence[tuple[Event, float]]) -> tuple[list[ScoredEvent], StageTimes]:
        """Embed prompts and responses in one encoder call, then judge; order is preserved."""
        if self.embedder is None:
            raise RuntimeError("this scorer embeds nothing (the detector role: worker processes embed and judge)")
        t0 = time.perf_counter()
        events = [e for e, _ in items]
        with_response = [i for i, e in enumerate(events) if e.response is not None and self.embed_responses]
        texts = [e.prompt for e in events] + [events[i].response or "" for i in with_response]
        # One array per text, not row views of the batch's matrix: a consumer keeping one event (a
        # sampled reference, a reservoir, the triage buffer) would otherwise keep its whole batch alive,
        # and a sample spread over the stream keeps one row of very many batches.
        vectors = [row.copy() for row in self.embedder.encode(texts)]
        prompt_vecs = vectors[: len(events)]
        response_vecs: list = [None] * len(events)
        for j, i in enumerate(with_response):
            response_vecs[i] = vectors[len(events) + j]
        t1 = time.perf_counter()
        inputs = [JudgeInput(e.prompt, prompt_vecs[i], e.response if response_vecs[i] is not None else None, response_vecs[i]) for i, e in enumerate(events)]
        verdicts = self.judge.judge(inputs)
        t2 = time.perf_counter()
        second: list = [None] * len(events)
        if self.second_opinion is not None:
            # The worker thread has no event loop of its own; the judge's calls run concurrently inside this one.
            second = asyncio.run(self._second_opinions([e.event_id for e in events], inputs, verdicts))
        t3 = time.perf_counter()
        scored = [
            ScoredEvent(
                event=e,
                weight=w,
                prompt_embedding=prompt_vecs[i],
                response_embedding=response_vecs[i],
                verdict=verdicts[i],
                scopes=self.scopes.scopes(e.model, e.route),
                second_opinion=second[i],
            )
            for i, (e, w) in enumerate(items)
        ]
        return scored, StageTimes(embed=t1 - t0, judge=t2 - t1, second_judge=t3 - t2)

    def score_isolating_poison(self, items: Sequence[tuple[Event, float]]) -> tuple[list[ScoredEvent], list[Event], StageTimes | None]:
        """Score a batch; if that raises, score its events one by one and set apart those that still
        raise (poison: skipped, never retried forever). Times are None when the batch failed."""
        try:
            scored, times = self.score(items)
            return scored, [], times
        except Exception:
            log.exception("batch of %d failed; retrying its events one by one", len(items))
        scored, poison = [], []
        for item in items:
            try:
                scored.extend(self.score([item])[0])
            except Exception:
                log.exception("poison event %s skipped", item[0].event_id)
                poison.append(item[0])
        return scored, poison, None
