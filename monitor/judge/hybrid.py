"""The heads judge with response harm from the fine-tuned encoder's pair pass.

Why a hybrid: on the validation split the two shipped judges are good at different things. The
heads on the drift embeddings separate harm categories and recognise refusals (phrase features),
but judge a reply without reading it against the question; the fine-tuned encoder reads
``prompt [SEP] reply`` together, which is what response harm needs (a reply is harmful only
relative to what was asked), while its category heads and refusal head are weaker. This judge
takes each output from the judge that is better at it, and pays for one encoder pass (the pair)
on answered events only: the prompt verdicts come from embeddings the service computes anyway.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from monitor.judge.calibration import uncertainty
from monitor.judge.encoder_judge import EncoderJudge
from monitor.judge.heads import HeadsJudge
from monitor.judge.verdict import JudgeInput, Verdict


class HybridJudge:
    """Prompt harm, categories and refusal from ``heads``; response harm given the prompt from ``encoder``."""

    def __init__(self, heads: HeadsJudge, encoder: EncoderJudge) -> None:
        if list(heads.categories) != list(encoder.categories):
            raise ValueError(f"hybrid judge: the heads ({heads.version}) and encoder ({encoder.version}) judges "
                             "score different categories")
        self.heads = heads
        self.encoder = encoder
        self._version = hybrid_version(heads.version, encoder.version)

    @property
    def version(self) -> str:
        return self._version

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.heads.categories)

    @property
    def embedding_model(self) -> str:
        """The drift embeddings the heads read (checked against the service's at start-up)."""
        return self.heads.embedding_model

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        verdicts = self.heads.judge(batch)
        pair = self.encoder.pair_probs(batch)
        threshold = float(self.encoder.pair_thresholds[0])
        prompt_threshold = self.heads.prompt_threshold
        out = []
        for v, (response, _refusal) in zip(verdicts, pair):
            if np.isnan(response):
                out.append(replace(v, judge_version=self._version))
                continue
            out.append(replace(
                v,
                judge_version=self._version,
                response_unsafe=float(response),
                response_flagged=bool(response >= threshold),
                uncertainty=uncertainty([(v.prompt_unsafe, prompt_threshold), (float(response), threshold)]),
            ))
        return out


def hybrid_version(heads_version: str, encoder_version: str) -> str:
    """``heads-…+encoder-…[+backend]``: both artifacts, so a dashboard shows when either changed."""
    return f"{heads_version}+{encoder_version}"
