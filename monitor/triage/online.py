"""The online judge layer: what reviewers labelled, learned on top of the shipped judge without a restart.

Why this shape: the service already computes one prompt embedding per event, and the shipped heads
are linear or one-hidden-layer models on it; a reviewer labels tens of events, not thousands. So
each label (a new category, an existing one, or ``safe`` for a false positive) gets one
L2-regularised, class-balanced logistic head on unit embeddings, refitted from all labels on
every label batch (seconds at most; deterministic: L-BFGS from zero). Its positives are the
labelled events; its negatives are the other labels' events plus the *background*: prompts
sampled from traffic before the labelled events first appeared (the region was not there yet,
so this is what the head must leave alone). Each head's decision threshold is set on that
background so that at most ``fp_rate`` (1%) of it would be relabelled; a head also fires only at
probability 0.5 or more. The background holds known unsafe traffic too, which is where a head's
false positives concentrate: on the browser test's stream, 1% of the background let 84% of the
held-back rest of a new source through and 0 of 400 benign prompts (0.3% let 70% through).

An event whose best head (by margin over its threshold) fires takes that head's label: a
category label makes the prompt flagged with that category alone (so share detectors count it
there and only there), ``safe`` clears the flag. Every verdict carries the layer's version,
``<shipped version>+triage-<revision>``, so dashboards see when the judge changed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence

import numpy as np
from scipy.optimize import minimize

from monitor.judge.verdict import Judge, JudgeInput, Verdict
from monitor.taxonomy import SAFE


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


@dataclass(frozen=True)
class Head:
    """One label's logistic head: fires when ``x @ weights + bias >= threshold`` (a logit, >= 0)."""

    label: str
    weights: np.ndarray  # (d,)
    bias: float
    threshold: float
    positives: int

    def to_state(self) -> dict:
        return {"label": self.label, "weights": self.weights.astype(np.float32).tolist(), "bias": self.bias,
                "threshold": self.threshold, "positives": self.positives}

    @classmethod
    def from_state(cls, s: dict) -> Head:
        return cls(s["label"], np.asarray(s["weights"], dtype=np.float64), float(s["bias"]), float(s["threshold"]), int(s["positives"]))


@dataclass(frozen=True)
class OnlineModel:
    """One revision of the layer: its heads (none: the shipped judge as it is)."""

    revision: int
    heads: tuple[Head, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(h.label for h in self.heads)

    def decide(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For rows ``x``: the winning head's index (-1: none fires) and its probability."""
        if not self.heads or not len(x):
            return np.full(len(x), -1), np.zeros(len(x))
        w = np.stack([h.weights for h in self.heads], axis=1)
        logits = unit(x) @ w + np.array([h.bias for h in self.heads])
        margin = logits - np.array([h.threshold for h in self.heads])
        best = margin.argmax(axis=1)
        rows = np.arange(len(x))
        fired = margin[rows, best] >= 0
        return np.where(fired, best, -1), 1.0 / (1.0 + np.exp(-logits[rows, best]))

    def to_state(self) -> dict:
        return {"revision": self.revision, "heads": [h.to_state() for h in self.heads]}

    @classmethod
    def from_state(cls, s: dict) -> OnlineModel:
        return cls(int(s["revision"]), tuple(Head.from_state(h) for h in s["heads"]))


class Background(Protocol):
    """Where a fit takes its background from (the recent-events reservoir): prompt embeddings from before an event time."""

    def __call__(self, before: float) -> np.ndarray: ...


@dataclass(frozen=True)
class Example:
    """A labelled prompt embedding and its event time (the background is taken from before it)."""

    label: str
    embedding: np.ndarray
    timestamp: float


def fit_head(label: str, positives: np.ndarray, others: np.ndarray, background: np.ndarray, fp_rate: float, l2: float) -> Head:
    """Fit one head; ``others`` are other labels' examples, ``background`` the traffic it must leave alone."""
    negatives = np.vstack([a for a in (others, background) if len(a)]) if len(others) + len(background) else np.zeros((0, positives.shape[1]))
    x = unit(np.vstack([positives, negatives]))
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    weight = np.where(y == 1, 0.5 / max(len(positives), 1), 0.5 / max(len(negatives), 1))  # balanced classes

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(weight * (np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * (w @ w)
        g = weight * (p - y)
        return float(nll), np.r_[x.T @ g + l2 * w, g.sum()]

    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    w, b = theta[:-1], float(theta[-1])
    threshold = 0.0
    if len(background):
        threshold = max(threshold, float(np.quantile(unit(background) @ w + b, 1.0 - fp_rate)))
    return Head(label, w, b, threshold, len(positives))


def fit_model(revision: int, examples: Sequence[Example], background_before: Background, fp_rate: float = 0.01,
              l2: float = 1e-2) -> OnlineModel:
    """One head per label of ``examples`` (labels in first-seen order, so the model is deterministic)."""
    labels = list(dict.fromkeys(e.label for e in examples))
    heads = []
    for label in labels:
        mine = [e for e in examples if e.label == label]
        positives = np.stack([e.embedding for e in mine])
        others = np.stack([e.embedding for e in examples if e.label != label]) if len(mine) < len(examples) else np.zeros((0, positives.shape[1]))
        background = background_before(min(e.timestamp for e in mine))
        heads.append(fit_head(label, positives, others, background if background.size else np.zeros((0, positives.shape[1])), fp_rate, l2))
    return OnlineModel(revision, tuple(heads))


TRIAGE_TAG = "+triage-"  # what an online revision adds to the shipped judge's version


def shipped_version(version: str) -> str:
    """The judge under the online layer, from a version :class:`TriageJudge` reported.

    >>> shipped_version("heads-1a2b+pthr0.6+triage-3"), shipped_version("heads-1a2b")
    ('heads-1a2b+pthr0.6', 'heads-1a2b')
    """
    head, tag, revision = version.rpartition(TRIAGE_TAG)
    return head if tag and revision.isdigit() else version


class TriageJudge:
    """The shipped judge with the online layer on top; implements :class:`~monitor.judge.verdict.Judge`.

    ``install`` swaps the model in one assignment, so the worker thread sees the old or the new
    layer for a whole batch, never a mix."""

    def __init__(self, inner: Judge) -> None:
        self.inner = inner
        self._model = OnlineModel(0, ())
        self._categories: tuple[str, ...] = tuple(inner.categories)

    @property
    def model(self) -> OnlineModel:
        return self._model

    @property
    def base_version(self) -> str:
        return self.inner.version

    @property
    def version(self) -> str:
        return self.version_of(self._model)

    def version_of(self, model: OnlineModel) -> str:
        """``<shipped version>+triage-<revision>``; the shipped version alone at revision 0."""
        return self.inner.version if model.revision == 0 else f"{self.inner.version}{TRIAGE_TAG}{model.revision}"

    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    def install(self, model: OnlineModel, learned: Sequence[str] = ()) -> None:
        self._categories = tuple(self.inner.categories) + tuple(c for c in learned if c not in self.inner.categories)
        self._model = model

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        verdicts = self.inner.judge(batch)
        model = self._model  # one read: the whole batch sees one revision
        version = self.version_of(model)
        if model.revision == 0:
            return verdicts
        winners, probs = model.decide(np.stack([b.prompt_embedding for b in batch])) if batch else (np.zeros(0), np.zeros(0))
        return [relabel(v, model.heads[w].label if w >= 0 else None, float(p), version) for v, w, p in zip(verdicts, winners, probs)]


def relabel(v: Verdict, label: str | None, p: float, version: str) -> Verdict:
    """A verdict as the layer decides it: unchanged (but versioned) when no head fired."""
    if label is None:
        return replace(v, judge_version=version)
    if label == SAFE:
        return replace(v, judge_version=version, category=SAFE, prompt_flagged=False, prompt_unsafe=min(v.prompt_unsafe, 1.0 - p),
                       categories=())
    return replace(v, judge_version=version, category=label, prompt_flagged=True, prompt_unsafe=max(v.prompt_unsafe, p),
                   categories=(label,), category_probs={**v.category_probs, label: p})

