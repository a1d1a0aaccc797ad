"""The hybrid judge's response-harm verdict: the heads' and the encoder's, combined.

Why: the two judges read a reply differently. The encoder cross-encodes ``prompt [SEP] reply`` and
is the better judge of QA-moderation pairs; the heads read the prompt verdict, the reply embedding
and stock refusal phrases, and are the better judge of WildGuardTest's adversarial replies. On the
validation split the sum of their calibrated log-odds beat either alone (README, "Safety judge"),
at no extra cost: the hybrid computes both anyway. A sum double-counts the evidence both share, so
it is recalibrated (Platt) and given its own F1-best threshold on the validation rows by
``monitor judge combine``, which writes the small JSON file this module reads. The file names the
two artifacts it was fitted for, and a judge built from others refuses it.

>>> import numpy as np
>>> c = ResponseCombiner("heads-a", "encoder-b", scale=0.5, shift=0.0, threshold=0.5)
>>> c.probabilities(np.array([0.9, 0.1, np.nan]), np.array([0.9, 0.1, 0.5])).round(3).tolist()
[0.9, 0.1, nan]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from monitor.judge.calibration import best_f1_threshold, fit_platt, logit, platt

DEFAULT_COMBINER = Path(__file__).with_name("artifacts") / "hybrid" / "response-combiner.json"
FORMAT = "response-combiner-1"


@dataclass(frozen=True)
class ResponseCombiner:
    """``platt(logit(heads) + logit(encoder))`` with a decision threshold, for one pair of artifacts."""

    heads_version: str
    encoder_version: str  # the artifact's, without a backend suffix
    scale: float
    shift: float
    threshold: float
    validation: dict = field(default_factory=dict)  # what the fit saw and scored, for the record

    @property
    def version(self) -> str:
        """``mix-<8 hex>``: a hash of the fitted numbers, so a dashboard sees a refit."""
        numbers = json.dumps([self.heads_version, self.encoder_version, self.scale, self.shift, self.threshold])
        return "mix-" + hashlib.sha256(numbers.encode()).hexdigest()[:8]

    def probabilities(self, heads: np.ndarray, encoder: np.ndarray) -> np.ndarray:
        """Combined probabilities; NaN where either judge has none (no reply)."""
        return platt(logit(heads) + logit(encoder), self.scale, self.shift)

    def check(self, heads_version: str, encoder_version: str) -> None:
        """Refuse to combine judges the numbers were not fitted for."""
        if (heads_version, encoder_version) != (self.heads_version, self.encoder_version):
            raise ValueError(f"response combiner was fitted for {self.heads_version} and {self.encoder_version}, "
                             f"not {heads_version} and {encoder_version}: run `monitor judge combine`")

    @classmethod
    def fit(cls, heads: np.ndarray, encoder: np.ndarray, y: np.ndarray, heads_version: str,
            encoder_version: str) -> ResponseCombiner:
        """Platt scale and shift, and the F1-best threshold, of the summed log-odds on labelled rows."""
        y = np.asarray(y, dtype=bool)
        if not (np.all(np.isfinite(heads)) and np.all(np.isfinite(encoder))):
            raise ValueError("response combiner: every fitted row needs both judges' probabilities (no NaN)")
        if not 0 < y.sum() < len(y):
            raise ValueError("response combiner: the rows need both harmful and harmless replies")
        scale, shift = fit_platt(logit(heads) + logit(encoder), y)
        fitted = cls(heads_version, encoder_version, scale, shift, 0.5)
        threshold = best_f1_threshold(y, fitted.probabilities(heads, encoder))
        return cls(heads_version, encoder_version, scale, shift, threshold)

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n")

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

