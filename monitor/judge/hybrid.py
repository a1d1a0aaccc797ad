"""The heads judge, with response harm from its own and the fine-tuned encoder's verdicts combined.

Why a hybrid: on the validation split the two shipped judges are good at different things. The
heads on the drift embeddings separate harm categories and recognise refusals (phrase features),
but judge a reply without reading it against the question; the fine-tuned encoder reads
``prompt [SEP] reply`` together, which is what response harm needs (a reply is harmful only
relative to what was asked), while its category heads and refusal head are weaker. This judge
takes prompt harm, categories and refusal from the heads, and response harm from both combined
(:mod:`monitor.judge.combiner`: on the validation split the combination beat either alone). It pays
for one encoder pass (the pair) on answered events only: the prompt verdicts come from embeddings the
service computes anyway.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from monitor.judge.calibration import uncertainty
from monitor.judge.combiner import ResponseCombiner
from monitor.judge.encoder_judge import EncoderJudge
from monitor.judge.heads import HeadsJudge
from monitor.judge.verdict import JudgeInput, Verdict


class HybridJudge:
    """Prompt harm, categories and refusal from ``heads``; response harm given the prompt from ``heads`` and
    ``encoder`` through ``combiner``."""

    def __init__(self, heads: HeadsJudge, encoder: EncoderJudge, combiner: ResponseCombiner) -> None:
        if list(heads.categories) != list(encoder.categories):
            raise ValueError(f"hybrid judge: the heads ({heads.version}) and encoder ({encoder.version}) judges "
                             "score different categories")
        check_same_split(heads, encoder)
        combiner.check(heads.version, encoder.artifact_version)
        self.heads = heads
        self.encoder = encoder
        self.combiner = combiner
        self._version = hybrid_version(heads.version, encoder.version, combiner.version)

    @property
    def manifest(self) -> dict:
        """What evaluation reads of a judge's artifact: the split its parts were trained on (one split: see
        :func:`check_same_split`)."""
        return {"training": self.encoder.manifest["training"]}

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
        heads_response = np.array([np.nan if v.response_unsafe is None else v.response_unsafe for v in verdicts])
        combined = self.combiner.probabilities(heads_response, self.encoder.pair_probs(batch)[:, 0])
        threshold = self.combiner.threshold
        prompt_threshold = self.heads.prompt_threshold
        out = []
        for v, response in zip(verdicts, combined):
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


_SPLIT = ("seed", "test_fraction", "val_fraction", "holdout_origins")


def check_same_split(heads: HeadsJudge, encoder: EncoderJudge) -> None:
    """Both parts must come from one seeded split: else one's validation or test rows trained the other,
    and neither a combination fitted on validation rows nor a test report of the hybrid would mean anything."""
    if any(heads.manifest["training"][k] != encoder.manifest["training"][k] for k in _SPLIT):
        raise ValueError(f"hybrid judge: {heads.version} and {encoder.version} were trained on different splits, "
                         "so neither's validation or test rows are unseen by the other")


def hybrid_version(heads_version: str, encoder_version: str, combiner_version: str) -> str:
    """``heads-…+encoder-…[+backend]+mix-…``: every part, so a dashboard shows when any changed."""
    return f"{heads_version}+{encoder_version}+{combiner_version}"
