"""The default judge: calibrated linear heads on frozen sentence embeddings.

Three heads, each a matrix product, a Platt calibration and per-output thresholds, all stored as
plain numpy arrays (no pickles, so artifacts survive library upgrades):

- ``prompt``: prompt embedding -> [overall unsafe, one output per harm category] (multi-label);
- ``response``: [prompt, response, prompt * response] -> response harmful given the prompt;
- ``refusal``: response embedding -> the reply refuses or deflects (fully or partly).

An artifact is a folder: ``manifest.json`` (version, taxonomy, embedding model, data summary),
``weights.npz`` and ``model_card.md``. ``monitor judge train`` writes one; the package ships
:data:`DEFAULT_ARTIFACT`.

Inputs with no response (or no response embedding, or a blank response) get ``None`` response and
refusal verdicts: not applicable, never guessed. A blank prompt carries no harm: probability 0.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from monitor.judge.calibration import platt
from monitor.judge.verdict import SAFE, JudgeInput, Verdict
from monitor.taxonomy import Taxonomy

DEFAULT_ARTIFACT = Path(__file__).with_name("artifacts") / "default"
ARTIFACT_FORMAT = 1
HEAD_NAMES = ("prompt", "response", "refusal")
_FIELDS = ("weights", "bias", "scale", "shift", "threshold")


def response_features(prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
    """The response head's input: both embeddings and their elementwise product (their interaction)."""
    return np.hstack([prompt, response, prompt * response])


@dataclass(frozen=True)
class LinearHead:
    """``k`` logistic outputs over ``d`` features, with Platt calibration and decision thresholds."""

    weights: np.ndarray  # (d, k)
    bias: np.ndarray  # (k,)
    scale: np.ndarray  # (k,) Platt slope on the logit
    shift: np.ndarray  # (k,) Platt intercept
    threshold: np.ndarray  # (k,) flag when probability >= threshold

    def __post_init__(self) -> None:
        d, k = self.weights.shape
        for name in _FIELDS[1:]:
            if getattr(self, name).shape != (k,):
                raise ValueError(f"head field {name!r} has shape {getattr(self, name).shape}, expected ({k},)")

    @property
    def dimension(self) -> int:
        return int(self.weights.shape[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weights + self.bias

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return platt(self.logits(x), self.scale, self.shift)


class HeadsJudge:
    """Implements :class:`~monitor.judge.verdict.Judge` with three :class:`LinearHead` s."""

    def __init__(self, heads: Mapping[str, LinearHead], categories: Sequence[str], manifest: Mapping) -> None:
        missing = [h for h in HEAD_NAMES if h not in heads]
        if missing:
            raise ValueError(f"judge artifact lacks head(s): {', '.join(missing)}")
        if heads["prompt"].weights.shape[1] != 1 + len(categories):
            raise ValueError("prompt head must have one output for 'unsafe' plus one per category")
        self.heads = dict(heads)
        self._categories = tuple(categories)
        self.manifest = dict(manifest)
        self._dim = heads["prompt"].dimension

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

    @classmethod
    def load(cls, path: Path | str = DEFAULT_ARTIFACT, taxonomy: Taxonomy | None = None) -> HeadsJudge:
        """Load an artifact folder; with ``taxonomy``, also check the categories are its harm ids."""
        path = Path(path)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
            blob = (path / "weights.npz").read_bytes()
        except FileNotFoundError as exc:
            raise ValueError(f"judge artifact {path}: missing {Path(exc.filename).name}") from None
        if manifest.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"judge artifact {path}: format {manifest.get('format')!r}, expected {ARTIFACT_FORMAT}")
        if manifest.get("version") != version_of(blob, manifest["categories"]):
            raise ValueError(f"judge artifact {path}: weights.npz does not match the manifest's version")
        with np.load(io.BytesIO(blob)) as arrays:
            heads = {
                name: LinearHead(**{f: arrays[f"{name}.{f}"] for f in _FIELDS}) for name in HEAD_NAMES
            }
        judge = cls(heads, manifest["categories"], manifest)
        if taxonomy is not None and list(judge.categories) != taxonomy.harm_ids:
            raise ValueError(
                f"judge artifact {path} scores categories {list(judge.categories)}, "
                f"but taxonomy {taxonomy.name!r} has {taxonomy.harm_ids}"
            )
        return judge

    def save(self, path: Path | str, model_card: str) -> None:
        """Write the artifact folder (weights bytes depend only on the arrays: reproducible)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "weights.npz").write_bytes(weights_blob(self.heads))
        (path / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        (path / "model_card.md").write_text(model_card)

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        if not batch:
            return []
        prompts = np.stack([self._vector(i, x.prompt_embedding, "prompt_embedding") for i, x in enumerate(batch)])
        prompt_probs = self.heads["prompt"].probabilities(prompts)
        blank = np.array([not x.prompt.strip() for x in batch])
        prompt_probs[blank] = 0.0
        prompt_flags = prompt_probs >= self.heads["prompt"].threshold

        answered = [i for i, x in enumerate(batch) if _has_response(x)]
        response_probs = np.full(len(batch), np.nan)
        refusal_probs = np.full(len(batch), np.nan)
        if answered:
            responses = np.stack([self._vector(i, batch[i].response_embedding, "response_embedding") for i in answered])
            response_probs[answered] = self.heads["response"].probabilities(
                response_features(prompts[answered], responses)
            )[:, 0]
            refusal_probs[answered] = self.heads["refusal"].probabilities(responses)[:, 0]
        return [
            self._verdict(prompt_probs[i], prompt_flags[i], response_probs[i], refusal_probs[i])
            for i in range(len(batch))
        ]

    def _verdict(self, probs: np.ndarray, flags: np.ndarray, response: float, refusal: float) -> Verdict:
        cat_probs = probs[1:]
        flagged = bool(flags[0])
        answered = not np.isnan(response)
        return Verdict(
            judge_version=self.version,
            category=self._categories[int(np.argmax(cat_probs))] if flagged else SAFE,
            category_probs=dict(zip(self._categories, cat_probs.tolist())),
            prompt_unsafe=float(probs[0]),
            prompt_flagged=flagged,
            response_unsafe=float(response) if answered else None,
            response_flagged=bool(response >= self.heads["response"].threshold[0]) if answered else None,
            refusal=float(refusal) if answered else None,
            refused=bool(refusal >= self.heads["refusal"].threshold[0]) if answered else None,
            categories=tuple(c for c, f in zip(self._categories, flags[1:]) if f),
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


def weights_blob(heads: Mapping[str, LinearHead]) -> bytes:
    """An ``.npz`` archive with fixed entry timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in HEAD_NAMES:
            for f in _FIELDS:
                arr = io.BytesIO()
                np.lib.format.write_array(arr, np.ascontiguousarray(getattr(heads[name], f), dtype=np.float32))
                info = zipfile.ZipInfo(f"{name}.{f}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, arr.getvalue())
    return buf.getvalue()


def version_of(blob: bytes, categories: Sequence[str]) -> str:
    """``heads-<12 hex>``: a content hash of the weights and category order, so it names what judges."""
    h = hashlib.sha256(blob)
    h.update("\x00".join(categories).encode())
    return f"heads-{h.hexdigest()[:12]}"
