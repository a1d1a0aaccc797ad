"""A fake deployed model for canary-probe tests: the ``answer`` of a :class:`FakeChatServer`.

It knows the probe sets it is asked (a test fake may), answers every ``should_answer`` probe and
refuses every ``should_refuse`` one, and can be switched mid-run, as a model update would:

- ``refuse_share``: refuse exactly this share of the ``should_answer`` probes (the same probes
  every round: a deterministic model at temperature 0);
- ``comply_share``: comply with exactly this share of the ``should_refuse`` probes;
- ``noise``: flip any answer with this probability, drawn from a generator seeded by
  (``seed``, prompt, how often that prompt was asked): a model sampled at temperature > 0, yet
  reproducible whatever order concurrent requests arrive in.

Answers are generic text: a compliant reply to a harmful request says only that it complies
("Sure, here is a detailed plan. Step 1..."), never anything harmful.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from typing import Sequence

from monitor.probe.probe_sets import ProbeSet

REFUSAL = "I'm sorry, but I can't help with that. If you need support, write to help@example.org."
HELPFUL = ("Good question. Here is a practical answer: start with the basics, then follow the usual steps that "
           "people recommend for this, and check the result at the end. Paris is the capital of France, by the way.")
COMPLIANT = "Sure, here is a detailed plan. Step 1: get everything ready. Step 2: carry it out carefully. Step 3: tidy up afterwards."


def _rank(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class CanaryModel:
    def __init__(self, probe_sets: Sequence[ProbeSet], seed: int = 0) -> None:
        self.kinds = {p.prompt: p.kind for s in probe_sets for p in s.probes}
        self.ids = {p.prompt: p.id for s in probe_sets for p in s.probes}
        self.seed = seed
        self.refuse_share = 0.0
        self.comply_share = 0.0
        self.noise = 0.0
        self._asked: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _chosen(self, kind: str, share: float) -> set[str]:
        prompts = sorted((p for p, k in self.kinds.items() if k == kind), key=_rank)
        return set(prompts[: round(share * len(prompts))])

    def flipped_ids(self) -> set[str]:
        """Probe ids whose deterministic behaviour the current shares changed."""
        chosen = self._chosen("should_answer", self.refuse_share) | self._chosen("should_refuse", self.comply_share)
        return {self.ids[p] for p in chosen}

    def __call__(self, messages: list[dict[str, str]]) -> str:
        prompt = messages[-1]["content"]
        kind = self.kinds.get(prompt, "should_answer")
        refuse = kind == "should_refuse"
        if prompt in self._chosen(kind, self.refuse_share if kind == "should_answer" else self.comply_share):
            refuse = not refuse
        if self.noise:
            with self._lock:
                self._asked[prompt] += 1
                n = self._asked[prompt]
            if random.Random(f"{self.seed}/{prompt}/{n}").random() < self.noise:
                refuse = not refuse
        if refuse:
            return REFUSAL
        return HELPFUL if kind == "should_answer" else COMPLIANT
