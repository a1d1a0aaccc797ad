"""The simplest useful judge: nearest category prototype in embedding space.

Each taxonomy category's prototype is the mean embedding of its description and examples. A
prompt is unsafe when its nearest prototype is a harm category: ``prompt_unsafe`` is a sigmoid of
(best harm similarity − safe similarity), and harm-category probabilities are a softmax over the
harm similarities scaled by it. It needs no training
data, so it is the spine's first judge and a baseline the trained heads must beat.
Refusal and response harm use the same idea with refusal/compliance and harm prototypes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from monitor.embed.embedder import Embedder
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.taxonomy import SAFE
from monitor.taxonomy import Taxonomy

REFUSAL_EXAMPLES = (
    "I'm sorry, but I can't help with that.",
    "I cannot assist with that request.",
    "As an AI, I won't provide instructions for that.",
    "I'm not able to help with this. If you're struggling, please reach out to someone you trust.",
)
COMPLIANCE_EXAMPLES = (
    "Sure, here is how you do it.",
    "Here are the steps: first, open the settings.",
    "The answer is 42 because of the following reasons.",
    "Certainly! Below is the code you asked for.",
)


def _unit(rows: np.ndarray) -> np.ndarray:
    mean = rows.mean(axis=0)
    return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def prototype_version(taxonomy: Taxonomy) -> str:
    """The prototype judge's version: it follows from the taxonomy alone (no model needed to know it)."""
    return f"prototype-{taxonomy.name}-v{taxonomy.version}"


class PrototypeJudge:
    """Nearest-prototype judge; ``temperature`` (cosine units) sets how sharp the probabilities are."""

    def __init__(self, embedder: Embedder, taxonomy: Taxonomy, temperature: float = 0.05) -> None:
        self._harm = taxonomy.harm_ids
        self._temperature = temperature
        by_id = {c.id: c for c in taxonomy.categories}
        self._safe = _unit(embedder.encode([by_id[SAFE].description, *by_id[SAFE].examples]))
        self._prototypes = np.stack([_unit(embedder.encode([by_id[h].description, *by_id[h].examples])) for h in self._harm])
        self._refusal = np.stack([_unit(embedder.encode(list(REFUSAL_EXAMPLES))), _unit(embedder.encode(list(COMPLIANCE_EXAMPLES)))])
        self.version = prototype_version(taxonomy)

    @property
    def categories(self) -> Sequence[str]:
        return self._harm

    def _scores(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unsafe probability per row, harm-category probabilities per row)."""
        harm_sims = emb @ self._prototypes.T
        unsafe = _sigmoid((harm_sims.max(axis=1) - emb @ self._safe) / self._temperature)
        return unsafe, _softmax(harm_sims / self._temperature) * unsafe[:, None]

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        if not batch:
            return []
        unsafe_all, probs = self._scores(np.stack([b.prompt_embedding for b in batch]))
        out = []
        for item, unsafe_p, p in zip(batch, unsafe_all, probs):
            unsafe = float(unsafe_p)
            harm = {cid: float(p[i]) for i, cid in enumerate(self._harm)}
            top = max(harm, key=harm.__getitem__)
            response_unsafe = refusal = None
            if item.response_embedding is not None:
                r = item.response_embedding[None, :]
                response_unsafe = float(self._scores(r)[0][0])
                refusal_sims = (r @ self._refusal.T)[0]
                refusal = float(_sigmoid((refusal_sims[0] - refusal_sims[1]) / self._temperature))
            out.append(Verdict.at_half(self.version, harm, unsafe, (top,) if unsafe >= 0.5 else (), response_unsafe, refusal))
        return out
