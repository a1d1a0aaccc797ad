"""The default judge: small calibrated heads on frozen sentence embeddings.

Four heads, each one or two matrix products, a Platt calibration and per-output thresholds, all
stored as plain numpy arrays (no pickles, so artifacts survive library upgrades):

- ``unsafe``: prompt embedding -> overall unsafe (one ReLU hidden layer: a linear head caps out
  when sources with different labelling conventions are mixed), plus the vote of the most similar
  labelled training prompts (:mod:`monitor.judge.neighbours`), added to the logit;
- ``categories``: prompt embedding -> one output per harm category (multi-label, linear);
- ``response``: [prompt, response, prompt * response, compliance] -> response harmful given the
  prompt, where compliance = P(prompt unsafe) * (1 - P(refusal)) from the other heads: the labelled
  response data (DiaSafety, DICES) is chit-chat, and without that feature the head misses an
  assistant that complies with a harmful request;
- ``refusal``: [response embedding, stock refusal phrases in the reply's opening] -> the reply
  refuses or deflects (fully or partly); see :mod:`monitor.judge.refusal_phrases` for why.

An artifact is a folder: ``manifest.json`` (version, taxonomy, embedding model, data summary),
``weights.npz`` and ``model_card.md``. ``monitor judge train`` writes one; the package ships
:data:`DEFAULT_ARTIFACT`.

Inputs with no response (or no response embedding, or a blank response) get ``None`` response and
refusal verdicts: not applicable, never guessed. A blank prompt carries no harm: probability 0.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from monitor.judge.artifact import check_categories, content_version, deterministic_npz, read_artifact, write_artifact
from monitor.judge.calibration import platt, uncertainty
from monitor.judge.neighbours import NeighbourVote
from monitor.judge.refusal_phrases import PhraseFeatures
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.taxonomy import SAFE
from monitor.taxonomy import Taxonomy

DEFAULT_ARTIFACT = Path(__file__).with_name("artifacts") / "default"
# Format 2 adds the unsafe head's neighbour vote. Code that reads only format 1 would load such an artifact
# without its vote and apply thresholds calibrated with it, so the format says which one a folder needs.
ARTIFACT_FORMAT = 1
NEIGHBOUR_FORMAT = 2
HEAD_NAMES = ("unsafe", "categories", "response", "refusal")
_FIELDS = ("weights", "bias", "scale", "shift", "threshold")
_HIDDEN = ("hidden_weights", "hidden_bias")
_NEIGHBOURS = ("neighbour_vectors", "neighbour_labels")


def response_features(prompt: np.ndarray, response: np.ndarray, compliance: np.ndarray) -> np.ndarray:
    """The response head's input: both embeddings, their elementwise product (their interaction) and
    the compliance score (unsafe prompt, reply not refusing)."""
    return np.hstack([prompt, response, prompt * response, np.asarray(compliance, np.float32)[:, None]])


def compliance(unsafe: np.ndarray, refusal: np.ndarray) -> np.ndarray:
    """Probability-like score that the reply goes along with an unsafe request."""
    return np.asarray(unsafe) * (1.0 - np.asarray(refusal))


def refusal_features(response: np.ndarray, texts: Sequence[str], phrases: PhraseFeatures) -> np.ndarray:
    """The refusal head's input: the response embedding and its opening's refusal-phrase indicators."""
    return np.hstack([response, phrases(texts)])


@dataclass(frozen=True)
class Head:
    """``k`` logistic outputs over ``d`` features, optionally through one ReLU hidden layer and (one
    output only) plus a neighbour vote, with Platt calibration and decision thresholds."""

    weights: np.ndarray  # (d or h, k)
    bias: np.ndarray  # (k,)
    scale: np.ndarray  # (k,) Platt slope on the logit
    shift: np.ndarray  # (k,) Platt intercept
    threshold: np.ndarray  # (k,) flag when probability >= threshold
    hidden_weights: np.ndarray | None = None  # (d, h)
    hidden_bias: np.ndarray | None = None  # (h,)
    neighbours: NeighbourVote | None = None

    def __post_init__(self) -> None:
        k = self.weights.shape[1]
        for name in _FIELDS[1:]:
            if getattr(self, name).shape != (k,):
                raise ValueError(f"head field {name!r} has shape {getattr(self, name).shape}, expected ({k},)")
        if (self.hidden_weights is None) != (self.hidden_bias is None):
            raise ValueError("a hidden layer needs both hidden_weights and hidden_bias")
        if self.hidden_weights is not None and self.hidden_weights.shape[1] != self.weights.shape[0]:
            raise ValueError("hidden_weights columns must match the output layer's rows")
        if self.neighbours is not None and (k != 1 or self.neighbours.dimension != self.dimension):
            raise ValueError("a neighbour vote needs a one-output head over the same features as its vectors")

    @property
    def dimension(self) -> int:
        first = self.hidden_weights if self.hidden_weights is not None else self.weights
        return int(first.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """What the artifact stores: float32 weights; a neighbour index as float16 vectors and bool labels
        (half the bytes; the vote moves by far less than its calibration's noise)."""
        names = _FIELDS + (_HIDDEN if self.hidden_weights is not None else ())
        out = {f: np.asarray(getattr(self, f), dtype=np.float32) for f in names}
        return out | (self.neighbours.stored() if self.neighbours is not None else {})

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], neighbours: Mapping | None = None) -> Head:
        """The inverse of :meth:`arrays`; ``neighbours`` holds the vote's settings (``k``, ``temperature``)."""
        vote = None
        if any(name in arrays for name in _NEIGHBOURS):
            if not neighbours or not all(name in arrays for name in _NEIGHBOURS):
                raise ValueError("a head's neighbour vote needs its vectors, its labels and, in the manifest, its settings")
            vote = NeighbourVote(arrays["neighbour_vectors"], arrays["neighbour_labels"], int(neighbours["k"]),
                                 float(neighbours["temperature"]))
        return cls(**{f: arrays[f] for f in _FIELDS + _HIDDEN if f in arrays}, neighbours=vote)

    def logits(self, x: np.ndarray, leave_out_identical: bool = False) -> np.ndarray:
        """``leave_out_identical``: see :meth:`NeighbourVote.logits` (training scores its own rows so)."""
        h = x
        if self.hidden_weights is not None:
            h = np.maximum(x @ self.hidden_weights + self.hidden_bias, 0.0)
        out = h @ self.weights + self.bias
        if self.neighbours is not None:
            out = out + self.neighbours.logits(x, leave_out_identical)[:, None]
        return out

    def probabilities(self, x: np.ndarray, leave_out_identical: bool = False) -> np.ndarray:
        return platt(self.logits(x, leave_out_identical), self.scale, self.shift)


class HeadsJudge:
    """Implements :class:`~monitor.judge.verdict.Judge` with four :class:`Head` s."""

    def __init__(self, heads: Mapping[str, Head], categories: Sequence[str], manifest: Mapping) -> None:
        missing = [h for h in HEAD_NAMES if h not in heads]
        if missing:
            raise ValueError(f"judge artifact lacks head(s): {', '.join(missing)}")
        if heads["categories"].weights.shape[1] != len(categories):
            raise ValueError("categories head must have one output per category")
        self.heads = dict(heads)
        self._categories = tuple(categories)
        self.manifest = dict(manifest)
        self._dim = heads["unsafe"].dimension
        self.phrases = PhraseFeatures.from_dict(manifest["heads"]["refusal"]["phrases"])
        if heads["refusal"].dimension != self._dim + len(self.phrases):
            raise ValueError("refusal head must take the response embedding plus one input per refusal phrase")

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    @property
    def embedding_model(self) -> str:
        """The embedding model the heads were trained on; serving with another one is meaningless."""
        return str(self.manifest["embedding"]["model"])

    @property
    def prompt_threshold(self) -> float:
        """The prompt-unsafe decision threshold (chosen on the validation split)."""
        return float(self.heads["unsafe"].threshold[0])

    @property
    def decision_thresholds(self) -> tuple[float, float]:
        """(prompt harm, response harm) decision thresholds, chosen on the validation split."""
        return self.prompt_threshold, float(self.heads["response"].threshold[0])

    @classmethod
    def load(cls, path: Path | str = DEFAULT_ARTIFACT, taxonomy: Taxonomy | None = None) -> HeadsJudge:
        """Load an artifact folder; with ``taxonomy``, also check the categories are its harm ids."""
        manifest, blob = read_artifact(path, (ARTIFACT_FORMAT, NEIGHBOUR_FORMAT), "heads")
        with np.load(io.BytesIO(blob)) as arrays:
            heads = {
                name: Head.from_arrays({f: arrays[f"{name}.{f}"] for f in _FIELDS + _HIDDEN + _NEIGHBOURS
                                        if f"{name}.{f}" in arrays}, manifest["heads"].get(name, {}).get("neighbours"))
                for name in HEAD_NAMES
            }
        if manifest["format"] != artifact_format(heads):
            raise ValueError(f"judge artifact {path}: format {manifest['format']} does not match its heads "
                             f"(a neighbour vote needs format {NEIGHBOUR_FORMAT}, none format {ARTIFACT_FORMAT})")
        judge = cls(heads, manifest["categories"], manifest)
        check_categories(path, judge.categories, taxonomy)
        return judge

    def save(self, path: Path | str, model_card: str) -> None:
        """Write the artifact folder (weights bytes depend only on the arrays: reproducible)."""
        write_artifact(path, weights_blob(self.heads), self.manifest, model_card)

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        if not batch:
            return []
        prompts = np.stack([self._vector(i, x.prompt_embedding, "prompt_embedding") for i, x in enumerate(batch)])
        unsafe = self.heads["unsafe"].probabilities(prompts)[:, 0]
        cat_probs = self.heads["categories"].probabilities(prompts)
        blank = np.array([not x.prompt.strip() for x in batch])
        unsafe[blank] = 0.0
        cat_probs[blank] = 0.0
        flagged = unsafe >= self.prompt_threshold
        cat_flags = cat_probs >= self.heads["categories"].threshold

        answered = [i for i, x in enumerate(batch) if _has_response(x)]
        response_probs = np.full(len(batch), np.nan)
        refusal_probs = np.full(len(batch), np.nan)
        if answered:
            responses = np.stack([self._vector(i, batch[i].response_embedding, "response_embedding") for i in answered])
            texts = [batch[i].response or "" for i in answered]
            refusal_probs[answered] = self.heads["refusal"].probabilities(
                refusal_features(responses, texts, self.phrases)
            )[:, 0]
            complies = compliance(unsafe[answered], refusal_probs[answered])
            response_probs[answered] = self.heads["response"].probabilities(
                response_features(prompts[answered], responses, complies)
            )[:, 0]
        return [
            self._verdict(unsafe[i], flagged[i], cat_probs[i], cat_flags[i], response_probs[i], refusal_probs[i])
            for i in range(len(batch))
        ]

    def _verdict(self, unsafe: float, flagged: bool, cat_probs: np.ndarray, cat_flags: np.ndarray,
                 response: float, refusal: float) -> Verdict:
        flagged = bool(flagged)
        answered = not np.isnan(response)
        return Verdict(
            judge_version=self.version,
            category=self._categories[int(np.argmax(cat_probs))] if flagged else SAFE,
            category_probs=dict(zip(self._categories, cat_probs.tolist())),
            prompt_unsafe=float(unsafe),
            prompt_flagged=flagged,
            response_unsafe=float(response) if answered else None,
            response_flagged=bool(response >= self.heads["response"].threshold[0]) if answered else None,
            refusal=float(refusal) if answered else None,
            refused=bool(refusal >= self.heads["refusal"].threshold[0]) if answered else None,
            categories=tuple(c for c, f in zip(self._categories, cat_flags) if f),
            uncertainty=uncertainty([(float(unsafe), self.prompt_threshold)]
                                    + ([(float(response), float(self.heads["response"].threshold[0]))] if answered else [])),
        )

    def _vector(self, index: int, value: object, field: str) -> np.ndarray:
        v = np.asarray(value, dtype=np.float32)
        if v.shape != (self._dim,):
            raise ValueError(f"batch[{index}].{field}: shape {v.shape}, expected ({self._dim},)")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"batch[{index}].{field}: contains NaN or infinity")
        return v


def _has_response(x: JudgeInput) -> bool:
    return x.response is not None and bool(x.response.strip()) and x.response_embedding is not None


def artifact_format(heads: Mapping[str, Head]) -> int:
    """The format an artifact of these heads is written in (see :data:`NEIGHBOUR_FORMAT`)."""
    return NEIGHBOUR_FORMAT if any(h.neighbours is not None for h in heads.values()) else ARTIFACT_FORMAT


def weights_blob(heads: Mapping[str, Head]) -> bytes:
    """The heads' arrays (see :meth:`Head.arrays`) in a reproducible ``.npz`` (see :func:`deterministic_npz`)."""
    return deterministic_npz({f"{name}.{f}": value for name in HEAD_NAMES for f, value in heads[name].arrays().items()})


def version_of(blob: bytes, categories: Sequence[str]) -> str:
    """``heads-<12 hex>``: a content hash of the weights and category order, so it names what judges."""
    return content_version("heads", blob, categories)
