"""The hybrid judge's response-harm verdict: the heads' and the encoder's, combined.

Why: the two judges read a reply differently. The encoder cross-encodes ``prompt [SEP] reply`` and
is the better judge of QA-moderation pairs; the heads read the prompt verdict, the reply embedding
and stock refusal phrases, and are the better judge of WildGuardTest's adversarial replies. On the
validation split a weighted sum of their calibrated log-odds beats either alone where they err
differently (README, "Safety judge"), at no extra cost: the hybrid computes both anyway. The heads'
weight is one of a few fixed steps, the one whose sum ranks the validation replies best (a stronger
encoder needs less of the heads; a grid, not a free fit, so the choice is plain to read); a sum
double-counts the evidence both share, so it is recalibrated (Platt) and given its own F1-best
threshold on the same rows by ``monitor judge combine``, which writes the small JSON file this module
reads. The file names the two artifacts it was fitted for, and a judge built from others refuses it.

>>> import numpy as np
>>> c = ResponseCombiner("heads-a", "encoder-b", scale=0.5, shift=0.0, threshold=0.5)
>>> c.probabilities(np.array([0.9, 0.1, np.nan]), np.array([0.9, 0.1, 0.5])).round(3).tolist()
[0.9, 0.1, nan]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from monitor.judge.calibration import best_f1_threshold, fit_platt, logit, platt

DEFAULT_COMBINER = Path(__file__).with_name("artifacts") / "hybrid" / "response-combiner.json"
FORMAT = "response-combiner-1"
HEADS_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the steps `fit` chooses among; 1.0 is the plain sum


@dataclass(frozen=True)
class ResponseCombiner:
    """``platt(heads_weight * logit(heads) + logit(encoder))`` with a decision threshold, for one pair of artifacts."""

    heads_version: str
    encoder_version: str  # the artifact's, without a backend suffix
    scale: float
    shift: float
    threshold: float
    validation: dict = field(default_factory=dict)  # what the fit saw and scored, for the record
    heads_weight: float = 1.0  # files written before the weight existed hold the plain sum

    @property
    def version(self) -> str:
        """``mix-<8 hex>``: a hash of the fitted numbers, so a dashboard sees a refit."""
        numbers = [self.heads_version, self.encoder_version, self.scale, self.shift, self.threshold]
        numbers = json.dumps(numbers if self.heads_weight == 1.0 else [*numbers, self.heads_weight])
        return "mix-" + hashlib.sha256(numbers.encode()).hexdigest()[:8]

    def probabilities(self, heads: np.ndarray, encoder: np.ndarray) -> np.ndarray:
        """Combined probabilities; NaN where either judge has none (no reply)."""
        return platt(self.heads_weight * logit(heads) + logit(encoder), self.scale, self.shift)

    def check(self, heads_version: str, encoder_version: str) -> None:
        """Refuse to combine judges the numbers were not fitted for."""
        if (heads_version, encoder_version) != (self.heads_version, self.encoder_version):
            raise ValueError(f"response combiner was fitted for {self.heads_version} and {self.encoder_version}, "
                             f"not {heads_version} and {encoder_version}: run `monitor judge combine`")

    @classmethod
    def fit(cls, heads: np.ndarray, encoder: np.ndarray, y: np.ndarray, heads_version: str,
            encoder_version: str) -> ResponseCombiner:
        """The heads' weight (of :data:`HEADS_WEIGHTS`, by AUROC; ties go to the larger weight), then Platt
        scale and shift and the F1-best threshold of the weighted log-odds, all on the same labelled rows."""
        y = np.asarray(y, dtype=bool)
        if not (np.all(np.isfinite(heads)) and np.all(np.isfinite(encoder))):
            raise ValueError("response combiner: every fitted row needs both judges' probabilities (no NaN)")
        if not 0 < y.sum() < len(y):
            raise ValueError("response combiner: the rows need both harmful and harmless replies")
        zh, ze = logit(heads), logit(encoder)
        by_weight = {w: float(roc_auc_score(y, w * zh + ze)) for w in HEADS_WEIGHTS}
        weight = max(reversed(HEADS_WEIGHTS), key=by_weight.__getitem__)
        scale, shift = fit_platt(weight * zh + ze, y)
        fitted = cls(heads_version, encoder_version, scale, shift, 0.5, heads_weight=weight,
                     validation={"auroc_by_heads_weight": {f"{w:g}": round(a, 4) for w, a in by_weight.items()}})
        threshold = best_f1_threshold(y, fitted.probabilities(heads, encoder))
        return replace(fitted, threshold=threshold)

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = asdict(self)
        if self.heads_weight == 1.0:
            del fields["heads_weight"]  # the plain sum: a file older releases read too
        path.write_text(json.dumps({"format": FORMAT, **fields}, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path | str = DEFAULT_COMBINER) -> ResponseCombiner:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"response combiner {path} is missing: run `monitor judge combine`") from None
        if raw.pop("format", None) != FORMAT:
            raise ValueError(f"response combiner {path}: not format {FORMAT}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(f"response combiner {path}: {exc}") from None

