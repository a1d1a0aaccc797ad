"""Score judges against labelled records: precision, recall, F1, AUROC, calibration error, confusion counts.

Every judge is run on the same embedded records, so their rows in the printed tables compare directly.
Sections: overall prompt harm (all rows, then per file), per harm category (rows whose category is
known), response harm given the prompt, and refusal (accuracy per file: the held-out model's is the
figure that counts).

>>> import numpy as np
>>> prob = np.array([0.9, 0.4, 0.6, 0.1])
>>> m = binary_metrics(np.array([1, 1, 0, 0]), prob, prob >= 0.5)
>>> (m.tp, m.fp, m.fn, m.tn), m.f1, m.auroc, m.fpr
((1, 1, 1, 1), 0.5, 0.75, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from monitor.config import default
from monitor.judge.calibration import expected_calibration_error
from monitor.judge.dataset import LabelMapper
from monitor.judge.text_embeddings import EmbeddedRecords
from monitor.judge.second_opinion import UNCERTAIN, stratum
from monitor.judge.verdict import Judge, JudgeInput, Verdict


@dataclass(frozen=True)
class BinaryMetrics:
    n: int
    positives: int
    tp: int
    fp: int
    fn: int
    tn: int
    auroc: float | None
    auprc: float | None
    ece: float | None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.positives if self.positives else None

    @property
    def f1(self) -> float | None:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else None

    @property
    def fpr(self) -> float | None:
        """Share of negatives flagged at the judge's own threshold (benign traffic wrongly called unsafe)."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else None

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None


def binary_metrics(y: np.ndarray, prob: np.ndarray, flag: np.ndarray) -> BinaryMetrics:
    """Metrics of one output from labels, probabilities and the judge's own decisions."""
    y = np.asarray(y, dtype=bool)
    prob = np.asarray(prob, dtype=np.float64)
    flag = np.asarray(flag, dtype=bool)
    both = 0 < y.sum() < len(y)
    return BinaryMetrics(
        n=len(y),
        positives=int(y.sum()),
        tp=int((flag & y).sum()),
        fp=int((flag & ~y).sum()),
        fn=int((~flag & y).sum()),
        tn=int((~flag & ~y).sum()),
        auroc=float(roc_auc_score(y, prob)) if both else None,
        auprc=float(average_precision_score(y, prob)) if both else None,
        ece=expected_calibration_error(y, prob) if len(y) else None,
    )


@dataclass
class JudgeEvaluation:
    """One judge's metrics, keyed (section, output) like ("prompt", "unsafe") or ("refusal", "<file>")."""

    judge: str
    metrics: dict[tuple[str, str], BinaryMetrics] = field(default_factory=dict)


def run_judge(judge: Judge, data: EmbeddedRecords, batch_size: int = 256) -> list[Verdict]:
    """Verdicts for every record, built from the records' texts and embeddings."""
    answered = data.has_response()
    inputs = [
        JudgeInput(r.prompt, data.prompts[i], r.response if answered[i] else None,
                   data.responses[i] if answered[i] else None)
        for i, r in enumerate(data.records)
    ]
    out: list[Verdict] = []
    for start in range(0, len(inputs), batch_size):
        out.extend(judge.judge(inputs[start : start + batch_size]))
    return out


# Binary outputs by section: the record's label, the verdict's probability and its decision.
_BINARY: dict[str, tuple[Callable[[Any], Any], Callable[[Verdict], Any], Callable[[Verdict], Any]]] = {
    "prompt": (lambda r: r.unsafe, lambda v: v.prompt_unsafe, lambda v: v.prompt_flagged),
    "response": (lambda r: r.response_harm, lambda v: v.response_unsafe, lambda v: v.response_flagged),
    "refusal": (lambda r: r.refusal, lambda v: v.refusal, lambda v: v.refused),
}


def evaluate(name: str, verdicts: Sequence[Verdict], data: EmbeddedRecords, mapper: LabelMapper,
             categories: Sequence[str]) -> JudgeEvaluation:
    """All sections for one judge's verdicts on ``data``."""
    ev = JudgeEvaluation(name)
    recs = data.records

    def add(section: str, output: str, rows: list[int], y: list[bool], prob: list[float], flag: list[bool]) -> None:
        if rows:
            ev.metrics[(section, output)] = binary_metrics(np.array(y), np.array(prob), np.array(flag))

    rows = [i for i, r in enumerate(recs) if r.unsafe is not None]
    unsafe = ([recs[i].unsafe for i in rows], [verdicts[i].prompt_unsafe for i in rows],
              [verdicts[i].prompt_flagged for i in rows])
    add("prompt", "unsafe (all files)", rows, *unsafe)
    for origin in sorted({recs[i].origin for i in rows}):
        sub = [k for k, i in enumerate(rows) if recs[i].origin == origin]
        ys = [unsafe[0][k] for k in sub]
        # One-class files still say something: recall on all-unsafe sets, FPR on all-benign ones.
        add("prompt", f"unsafe [{origin}]", sub, ys, [unsafe[1][k] for k in sub], [unsafe[2][k] for k in sub])

    known = [(i, c) for i, c in ((i, mapper.harm_categories(r)) for i, r in enumerate(recs)) if c is not None]
    for cat in categories:
        add("category", cat, [i for i, _ in known], [cat in c for _, c in known],
            [verdicts[i].category_probs.get(cat, 0.0) for i, _ in known],
            [cat in verdicts[i].categories for i, _ in known])

    for section in ("response", "refusal"):
        label, prob, flag = _BINARY[section]
        rows = [i for i, r in enumerate(recs) if label(r) is not None and prob(verdicts[i]) is not None]
        add(section, "all files", rows, [label(recs[i]) for i in rows], [prob(verdicts[i]) for i in rows],
            [flag(verdicts[i]) for i in rows])
        for origin in sorted({recs[i].origin for i in rows}):
            sub = [i for i in rows if recs[i].origin == origin]
            add(section, origin, sub, [label(recs[i]) for i in sub], [prob(verdicts[i]) for i in sub],
                [flag(verdicts[i]) for i in sub])
    _by_stratum(verdicts, recs, add)
    return ev


def _by_stratum(verdicts: Sequence[Verdict], recs: Sequence[Any], add: Callable[..., None]) -> None:
    """Prompt and response harm within each second-opinion stratum (at the default
    ``second_judge_uncertain_above``):
    how much more often the primary is wrong where it says it is uncertain, which is what sampling
    uncertain verdicts for a second opinion buys."""
    above = default("second_judge_uncertain_above")
    if all(v.uncertainty is None for v in verdicts):
        return
    for section in ("prompt", "response"):
        label, prob, flag = _BINARY[section]
        rows = [i for i, r in enumerate(recs) if label(r) is not None and prob(verdicts[i]) is not None]
        for part, name in ((UNCERTAIN, f"uncertain (>= {above})"), ("", "confident")):
            sub = [i for i in rows if stratum(verdicts[i].uncertainty, above) == part]
            add("stratum", f"{section}, {name}", sub, [label(recs[i]) for i in sub], [prob(verdicts[i]) for i in sub],
                [flag(verdicts[i]) for i in sub])


SECTION_TITLES = {
    "prompt": "Prompt harm: unsafe vs safe",
    "category": "Prompt harm per category (rows whose category is known)",
    "response": "Response harm given the prompt",
    "refusal": "Refusal",
    "stratum": "By second-opinion stratum (rows and accuracy: where a second look pays)",
}


def format_report(evaluations: Sequence[JudgeEvaluation]) -> str:
    """Markdown tables, one per section, one row per (output, judge)."""
    lines: list[str] = []
    for section, title in SECTION_TITLES.items():
        keys = sorted({k for ev in evaluations for k in ev.metrics if k[0] == section},
                      key=lambda k: (not k[1].startswith(("unsafe (", "all")), k[1]))
        if not keys:
            continue
        lines += [f"### {title}", "",
                  "| output | judge | n (pos) | precision | recall | F1 | FPR | AUROC | AUPRC | ECE | accuracy | TP/FP/FN/TN |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for key in keys:
            for ev in evaluations:
                m = ev.metrics.get(key)
                if m is None:
                    continue
                lines.append(
                    f"| {key[1]} | {ev.judge} | {m.n} ({m.positives}) | {_f(m.precision)} | {_f(m.recall)} | "
                    f"{_f(m.f1)} | {_f(m.fpr)} | {_f(m.auroc)} | {_f(m.auprc)} | {_f(m.ece)} | {_f(m.accuracy)} | "
                    f"{m.tp}/{m.fp}/{m.fn}/{m.tn} |"
                )
        lines.append("")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"
