"""The hybrid judge's prompt-harm, response-harm and refusal verdicts: the heads' and the encoder's, combined.

Why: the two judges read a text differently and err differently. For a reply, the encoder
cross-encodes ``prompt [SEP] reply`` and is the better judge of QA-moderation pairs; the heads read
the prompt verdict, the reply embedding and stock refusal phrases, and are the better judge of
WildGuardTest's adversarial replies. For a prompt, the encoder (fine-tuned in every layer) is the
better judge of OpenAI-moderation rows and of XSTest's safe look-alikes, the heads (with their
neighbour vote) of real-user chat and adversarial prompts. On refusal the two are level on the validation
split, the heads reading stock refusal phrases, the encoder the reply against its question. For each
output, on the validation split a weighted sum of
their calibrated log-odds beats either alone (README, "Safety judge"). The heads' weight is one of a
few fixed steps (a grid, not a free fit, so the choice is plain to read): the one whose sum ranks the
validation rows best, pooled, or as the mean over named groups of rows (the prompt combination is
ranked on the files that look like a gateway's traffic, so that thousands of templated rows do not
outvote them; the refusal combination on the mean over its files, each one model's or one set of
models' replies, since what matters is how it reads a model it never saw). A sum double-counts the evidence both share, so it is recalibrated (Platt) and given
its own F1-best threshold on the same rows by ``monitor judge combine``, which writes the small JSON
files this module reads. A file names the two artifacts it was fitted for, and a judge built from
others refuses it.

>>> import numpy as np
>>> c = VerdictCombiner("heads-a", "encoder-b", scale=0.5, shift=0.0, threshold=0.5)
>>> c.probabilities(np.array([0.9, 0.1, np.nan]), np.array([0.9, 0.1, 0.5])).round(3).tolist()
[0.9, 0.1, nan]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from monitor.judge.calibration import best_f1_threshold, fit_platt, logit, platt

COMBINER_FOLDER = Path(__file__).with_name("artifacts") / "hybrid"
# what a combiner judges: response harm given the prompt, prompt harm, or whether the reply refuses
OUTPUTS = ("response", "prompt", "refusal")
VERSION_PREFIXES = {"response": "mix-", "prompt": "pmix-", "refusal": "rmix-"}
LABEL_NAMES = {"response": ("harmful", "harmless"), "prompt": ("harmful", "harmless"), "refusal": ("refusing", "complying")}
DEFAULT_COMBINERS = {output: COMBINER_FOLDER / f"{output}-combiner.json" for output in OUTPUTS}
HEADS_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the steps `fit` chooses among; 1.0 is the plain sum


def combiner_format(output: str) -> str:
    return f"{output}-combiner-1"


@dataclass(frozen=True)
class VerdictCombiner:
    """``platt(heads_weight * logit(heads) + logit(encoder))`` with a decision threshold, for one output of one
    pair of artifacts."""

    heads_version: str
    encoder_version: str  # the artifact's, without a backend suffix
    scale: float
    shift: float
    threshold: float
    validation: dict = field(default_factory=dict)  # what the fit saw and scored, for the record
    heads_weight: float = 1.0  # files written before the weight existed hold the plain sum
    output: str = "response"

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"combiner output {self.output!r} is not one of {', '.join(OUTPUTS)}")

    @property
    def version(self) -> str:
        """``mix-<8 hex>`` (response harm), ``pmix-<8 hex>`` (prompt harm) or ``rmix-<8 hex>`` (refusal): a hash
        of the fitted numbers, so a dashboard sees a refit."""
        numbers = [self.heads_version, self.encoder_version, self.scale, self.shift, self.threshold]
        numbers = numbers if self.heads_weight == 1.0 else [*numbers, self.heads_weight]
        numbers = numbers if self.output == "response" else [*numbers, self.output]
        return VERSION_PREFIXES[self.output] + hashlib.sha256(json.dumps(numbers).encode()).hexdigest()[:8]

    def probabilities(self, heads: np.ndarray, encoder: np.ndarray) -> np.ndarray:
        """Combined probabilities; NaN where either judge has none (no reply)."""
        return platt(self.heads_weight * logit(heads) + logit(encoder), self.scale, self.shift)

    def check(self, heads_version: str, encoder_version: str) -> None:
        """Refuse to combine judges the numbers were not fitted for."""
        if (heads_version, encoder_version) != (self.heads_version, self.encoder_version):
            raise ValueError(f"{self.output} combiner was fitted for {self.heads_version} and {self.encoder_version}, "
                             f"not {heads_version} and {encoder_version}: run `monitor judge combine`")

    @classmethod
    def fit(cls, heads: np.ndarray, encoder: np.ndarray, y: np.ndarray, heads_version: str, encoder_version: str,
            output: str = "response", groups: Sequence[np.ndarray] | None = None) -> VerdictCombiner:
        """The heads' weight (of :data:`HEADS_WEIGHTS`; ties go to the larger weight), then Platt scale and shift
        and the F1-best threshold of the weighted log-odds, all on the same labelled rows.

        The weight ranks by AUROC over all rows, or, with ``groups`` (boolean masks of rows, each with both
        labels), by the mean of the groups' AUROCs."""
        y = np.asarray(y, dtype=bool)
        if not (np.all(np.isfinite(heads)) and np.all(np.isfinite(encoder))):
            raise ValueError(f"{output} combiner: every fitted row needs both judges' probabilities (no NaN)")
        both = " and ".join(LABEL_NAMES[output])
        if not 0 < y.sum() < len(y):
            raise ValueError(f"{output} combiner: the rows need both {both} examples")
        masks = [np.ones(len(y), dtype=bool)] if groups is None else [np.asarray(g, dtype=bool) for g in groups]
        if not masks or any(not 0 < y[m].sum() < m.sum() for m in masks):
            raise ValueError(f"{output} combiner: every ranking group needs both {both} examples")
        zh, ze = logit(heads), logit(encoder)
        by_weight = {w: float(np.mean([roc_auc_score(y[m], (w * zh + ze)[m]) for m in masks])) for w in HEADS_WEIGHTS}
        weight = max(reversed(HEADS_WEIGHTS), key=by_weight.__getitem__)
        scale, shift = fit_platt(weight * zh + ze, y)
        fitted = cls(heads_version, encoder_version, scale, shift, 0.5, heads_weight=weight, output=output,
                     validation={"auroc_by_heads_weight": {f"{w:g}": round(a, 4) for w, a in by_weight.items()}})
        threshold = best_f1_threshold(y, fitted.probabilities(heads, encoder))
        return replace(fitted, threshold=threshold)

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = asdict(self)
        del fields["output"]  # the format names it
        if self.heads_weight == 1.0:
            del fields["heads_weight"]  # the plain sum: a file older releases read too
        path.write_text(json.dumps({"format": combiner_format(self.output), **fields}, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_all(cls) -> dict[str, VerdictCombiner]:
        """The shipped combiner of every output, keyed by output, in :data:`OUTPUTS` order."""
        return {output: cls.load(output) for output in OUTPUTS}

    @classmethod
    def load(cls, output: str, path: Path | str | None = None) -> VerdictCombiner:
        """The ``output`` combiner at ``path`` (default: the shipped one)."""
        if output not in OUTPUTS:
            raise ValueError(f"combiner output {output!r} is not one of {', '.join(OUTPUTS)}")
        path = Path(path or DEFAULT_COMBINERS[output])
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{output} combiner {path} is missing: run `monitor judge combine`") from None
        if raw.pop("format", None) != combiner_format(output):
            raise ValueError(f"{output} combiner {path}: not format {combiner_format(output)}")
        try:
            return cls(**raw, output=output)
        except TypeError as exc:
            raise ValueError(f"{output} combiner {path}: {exc}") from None
