"""The heads judge, with prompt harm, response harm and refusal from its own and the fine-tuned encoder's verdicts combined.

Why a hybrid: on the validation split the two shipped judges are good at different things. The
heads on the drift embeddings separate harm categories and recognise refusals (phrase features);
the fine-tuned encoder reads ``prompt [SEP] reply`` together, which is what response harm needs (a
reply is harmful only relative to what was asked), while its category heads are weaker. On whether a
prompt is harmful, and whether a reply refuses, they are close and err differently. This judge takes
the categories from the heads, and prompt harm, response harm and refusal from both combined
(:mod:`monitor.judge.combiner`: on the validation split each combination ranked at least as well as
either judge alone; the refusal one, level in accuracy, is the better calibrated). It pays for up to
two encoder passes: the prompt (unless below the skip line), the pair on answered events, which gives
both reply verdicts; the heads read embeddings the service computes anyway.

``prompt_skip_below`` makes the prompt pass a cascade: where the heads are already sure a prompt is
harmless (their calibrated probability below the line), the encoder is not asked and the heads'
probability stands. Most real users' prompts are that plain, so most of the pass is saved; what it
costs is the combination's ranking among prompts the heads call harmless. The service runs the
cascade at :data:`~monitor.judge.defaults.DEFAULT_SKIP_LINE` unless told otherwise (README, "Safety judge").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np

from monitor.judge.calibration import uncertainty
from monitor.judge.combiner import OUTPUTS, VerdictCombiner
from monitor.judge.defaults import check_skip_line
from monitor.judge.encoder_judge import EncoderJudge
from monitor.judge.heads import HeadsJudge
from monitor.judge.verdict import SAFE, JudgeInput, Verdict


class HybridJudge:
    """Categories from ``heads``; prompt harm, response harm given the prompt and refusal from ``heads`` and
    ``encoder`` through ``combiners`` (one per output of :data:`~monitor.judge.combiner.OUTPUTS`, keyed by it).
    ``prompt_skip_below`` is the skip line itself (``None`` or 0: none, every prompt read by both); the service's
    default line is resolved from its settings before this (:func:`~monitor.judge.defaults.skip_line`)."""

    def __init__(self, heads: HeadsJudge, encoder: EncoderJudge, combiners: Mapping[str, VerdictCombiner],
                 prompt_skip_below: float | None = None) -> None:
        if list(heads.categories) != list(encoder.categories):
            raise ValueError(f"hybrid judge: the heads ({heads.version}) and encoder ({encoder.version}) judges "
                             "score different categories")
        check_same_split(heads, encoder)
        if sorted(combiners) != sorted(OUTPUTS):
            raise ValueError(f"hybrid judge: needs one combiner for each of {', '.join(OUTPUTS)}, "
                             f"was given {', '.join(combiners) or 'none'}")
        for output, combiner in combiners.items():
            if combiner.output != output:
                raise ValueError(f"hybrid judge: a {combiner.output} combiner was given for {output}")
            combiner.check(heads.version, encoder.artifact_version)
        self.heads = heads
        self.encoder = encoder
        self.combiners = {output: combiners[output] for output in OUTPUTS}
        self.prompt_skip_below = check_skip_line(prompt_skip_below)
        self._version = hybrid_version(heads.version, encoder.version, [c.version for c in self.combiners.values()],
                                       self.prompt_skip_below)

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

    @property
    def decision_thresholds(self) -> tuple[float, float]:
        """(prompt harm, response harm): the combiners' thresholds, chosen on the validation split."""
        return self.combiners["prompt"].threshold, self.combiners["response"].threshold

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        verdicts = self.heads.judge(batch)
        if not verdicts:
            return []
        prompt = self._prompt_probs(batch, np.array([v.prompt_unsafe for v in verdicts]))
        pair = self.encoder.pair_probs(batch)  # columns: response harm, refusal; NaN rows where there is no reply
        response = self.combiners["response"].probabilities(_reply_column(verdicts, "response_unsafe"), pair[:, 0])
        refusal = self.combiners["refusal"].probabilities(_reply_column(verdicts, "refusal"), pair[:, 1])
        return [self._verdict(v, float(p), float(r), float(f)) for v, p, r, f in zip(verdicts, prompt, response, refusal)]

    def _prompt_probs(self, batch: Sequence[JudgeInput], heads: np.ndarray) -> np.ndarray:
        """Combined prompt-harm probabilities; the heads' own where they fall below the skip line (no encoder pass)."""
        asked = np.array([bool(x.prompt.strip()) for x in batch], dtype=bool)
        passed = asked & ~skipped(heads, self.prompt_skip_below)
        prompt = np.where(asked, heads, 0.0)  # nothing asked, nothing unsafe
        if passed.any():
            rows = np.flatnonzero(passed)
            prompt[rows] = self.combiners["prompt"].probabilities(heads[rows], self.encoder.prompt_probs([batch[i].prompt for i in rows])[:, 0])
        return prompt

    def _verdict(self, heads: Verdict, prompt: float, response: float, refusal: float) -> Verdict:
        """The heads' verdict with the combined probabilities and their decisions; the heads' most likely
        category names a prompt the combination flags."""
        flagged = prompt >= self.combiners["prompt"].threshold
        answered = not np.isnan(response)
        threshold = self.combiners["response"].threshold
        category = max(heads.category_probs, key=heads.category_probs.__getitem__) if flagged and heads.category_probs else SAFE
        return replace(
            heads,
            judge_version=self._version,
            category=category,
            prompt_unsafe=prompt,
            prompt_flagged=bool(flagged),
            response_unsafe=response if answered else None,
            response_flagged=bool(response >= threshold) if answered else None,
            refusal=refusal if answered else None,
            refused=bool(refusal >= self.combiners["refusal"].threshold) if answered else None,
            uncertainty=uncertainty([(prompt, self.combiners["prompt"].threshold)] + ([(response, threshold)] if answered else [])),
        )


def _reply_column(verdicts: Sequence[Verdict], field: str) -> np.ndarray:
    """One reply output of the heads' verdicts as an array, NaN where there is no reply."""
    return np.array([np.nan if getattr(v, field) is None else getattr(v, field) for v in verdicts], dtype=float)


_SPLIT = ("seed", "test_fraction", "val_fraction", "holdout_origins")


def check_same_split(heads: HeadsJudge, encoder: EncoderJudge) -> None:
    """Both parts must come from one seeded split: else one's validation or test rows trained the other,
    and neither a combination fitted on validation rows nor a test report of the hybrid would mean anything."""
    if any(heads.manifest["training"][k] != encoder.manifest["training"][k] for k in _SPLIT):
        raise ValueError(f"hybrid judge: {heads.version} and {encoder.version} were trained on different splits, "
                         "so neither's validation or test rows are unseen by the other")


def hybrid_version(heads_version: str, encoder_version: str, combiner_versions: Sequence[str],
                   prompt_skip_below: float | None = None) -> str:
    """``heads-…+encoder-…[+backend]+mix-…+pmix-…+rmix-…[+pskip<x>]``: every part, so a dashboard shows when any changed
    (the combiners of response harm, prompt harm and refusal, in that order).

    >>> hybrid_version("heads-a", "encoder-b", ["mix-c", "pmix-d", "rmix-e"], 0.03)
    'heads-a+encoder-b+mix-c+pmix-d+rmix-e+pskip0.03'
    """
    skip = "" if prompt_skip_below is None else f"+pskip{float(prompt_skip_below)!r}"
    return "+".join([heads_version, encoder_version, *combiner_versions]) + skip


def skipped(heads: np.ndarray, line: float | None) -> np.ndarray:
    """Which prompts the encoder does not read: the heads' probability below the skip line (none when unset).

    >>> skipped(np.array([0.01, 0.03, 0.5]), 0.03).tolist(), skipped(np.array([0.01]), None).tolist()
    ([True, False, False], [False])
    """
    return np.zeros(len(heads), dtype=bool) if line is None else np.asarray(heads) < line
