"""Train the heads of :class:`~monitor.judge.heads.HeadsJudge` from labelled JSONL records.

Recipe (every step seeded, so the same files give the same weights):

1. Drop held-out files (by default XSTest completions of Mistral: the refusal head is evaluated on a
   model it never saw) and the test split (hash of the prompt text); split the rest into train/val.
2. Cap each (file, label combination) stratum at ``cap_per_stratum`` rows, so one big file does not
   drown the others and training stays a few minutes of embedding on a CPU.
3. Fit one L2 logistic regression per output on the train split (class-balanced; C picked from a small
   grid by validation AUROC), then Platt-calibrate it and pick the F1-best threshold on validation.
   Category outputs train only on rows whose category is known (see ``LabelMapper``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from monitor.judge.calibration import best_f1_threshold, expected_calibration_error, fit_platt, platt
from monitor.judge.dataset import LabelMapper, Record, split_of, stratified_cap
from monitor.judge.heads import ARTIFACT_FORMAT, HeadsJudge, LinearHead, response_features, version_of, weights_blob
from monitor.judge.model_card import render_model_card
from monitor.judge.text_embeddings import EmbeddedRecords, Encode, embed_records
from monitor.taxonomy import Taxonomy

C_GRID = (0.5, 2.0, 8.0, 32.0)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    cap_per_stratum: int = 600
    holdout_origins: tuple[str, ...] = ("xstest-completions-mistralinstruct",)
    embedding_model: str = "bundled:all-MiniLM-L6-v2"
    max_seq_length: int = 128

    def split(self, record: Record) -> str:
        if record.origin in self.holdout_origins:
            return "test"
        return split_of(record.prompt, self.seed, self.test_fraction, self.val_fraction)


@dataclass
class Targets:
    """One output's labels: ``y`` over the rows in ``rows`` (indices into the embedded records)."""

    rows: np.ndarray
    y: np.ndarray


@dataclass
class OutputReport:
    """Validation figures of one output, kept in the manifest and model card."""

    name: str
    train_n: int
    train_pos: int
    val_n: int
    val_pos: int
    c: float
    threshold: float
    auroc: float | None
    f1: float | None
    precision: float | None
    recall: float | None
    ece: float | None


@dataclass
class TrainingResult:
    judge: HeadsJudge
    reports: list[OutputReport] = field(default_factory=list)


def select_training_records(records: Sequence[Record], config: TrainConfig) -> list[Record]:
    """Train and validation rows that carry at least one label, capped per stratum."""
    usable = [r for r in records if config.split(r) != "test" and _labelled(r)]
    return stratified_cap(usable, config.cap_per_stratum, config.seed)


def select_test_records(records: Sequence[Record], config: TrainConfig, cap: int) -> list[Record]:
    """The rows training never saw: the test split plus whole held-out files, capped per stratum."""
    return stratified_cap([r for r in records if config.split(r) == "test" and _labelled(r)], cap, config.seed)


def _labelled(r: Record) -> bool:
    return r.unsafe is not None or r.response_harm is not None or r.refusal is not None


def prompt_targets(data: EmbeddedRecords, mapper: LabelMapper) -> dict[str, Targets]:
    """Targets of the prompt head: 'unsafe', then one per harm category.

    Each distinct prompt counts once (XSTest's prompts recur in its completion files).
    """
    out: dict[str, Targets] = {}
    first: dict[str, int] = {}
    for i, r in enumerate(data.records):
        if r.unsafe is not None:
            first.setdefault(r.prompt, i)
    rows = sorted(first.values())
    out["unsafe"] = Targets(np.array(rows, dtype=int), np.array([data.records[i].unsafe for i in rows], dtype=bool))
    known = [(i, mapper.harm_categories(data.records[i])) for i in rows]
    known = [(i, cats) for i, cats in known if cats is not None]
    idx = np.array([i for i, _ in known], dtype=int)
    for c in mapper.taxonomy.harm_ids:
        out[c] = Targets(idx, np.array([c in cats for _, cats in known], dtype=bool))
    return out


def response_targets(data: EmbeddedRecords) -> tuple[Targets, Targets]:
    """Targets of the response-harm and refusal heads (rows that have a response)."""
    answered = data.has_response()
    harm = [(i, r.response_harm) for i, r in enumerate(data.records) if answered[i] and r.response_harm is not None]
    refusal = [(i, r.refusal) for i, r in enumerate(data.records) if answered[i] and r.refusal is not None]
    return _targets(harm), _targets(refusal)


def _targets(pairs: list[tuple[int, bool]]) -> Targets:
    return Targets(np.array([i for i, _ in pairs], dtype=int), np.array([y for _, y in pairs], dtype=bool))


def train_judge(
    train: EmbeddedRecords,
    val: EmbeddedRecords,
    taxonomy: Taxonomy,
    config: TrainConfig,
    date: dt.date | None = None,
    data_summary: list[dict] | None = None,
) -> TrainingResult:
    """Fit, calibrate and threshold the three heads; return the judge and its validation reports."""
    mapper = LabelMapper(taxonomy)
    reports: list[OutputReport] = []

    def fit_head(names: Sequence[str], xs: tuple[np.ndarray, np.ndarray], ts: tuple[dict, dict]) -> LinearHead:
        columns = [_fit_output(n, xs[0], ts[0][n], xs[1], ts[1][n], config.seed) for n in names]
        reports.extend(rep for _, rep in columns)
        return LinearHead(*(np.asarray(np.stack([getattr(col, f) for col, _ in columns], axis=-1), np.float32)
                            for f in ("weights", "bias", "scale", "shift", "threshold")))

    prompt_names = ["unsafe", *taxonomy.harm_ids]
    heads = {"prompt": fit_head(prompt_names, (train.prompts, val.prompts),
                                (prompt_targets(train, mapper), prompt_targets(val, mapper)))}
    (tr_harm, tr_ref), (va_harm, va_ref) = response_targets(train), response_targets(val)
    resp = (_response_matrix(train), _response_matrix(val))
    heads["response"] = fit_head(["response_unsafe"], resp, ({"response_unsafe": tr_harm}, {"response_unsafe": va_harm}))
    heads["refusal"] = fit_head(["refusal"], (train.responses, val.responses), ({"refusal": tr_ref}, {"refusal": va_ref}))

    blob = weights_blob({k: heads[k] for k in heads})
    manifest = {
        "format": ARTIFACT_FORMAT,
        "version": version_of(blob, taxonomy.harm_ids),
        "created": (date or dt.datetime.now(dt.timezone.utc).date()).isoformat(),
        "taxonomy": {"name": taxonomy.name, "version": taxonomy.version},
        "categories": taxonomy.harm_ids,
        "embedding": {"model": config.embedding_model, "dimension": int(train.prompts.shape[1]),
                      "max_seq_length": config.max_seq_length},
        "heads": {
            "prompt": {"features": "prompt", "outputs": prompt_names},
            "response": {"features": "prompt|response|prompt*response", "outputs": ["response_unsafe"]},
            "refusal": {"features": "response", "outputs": ["refusal"]},
        },
        "training": {**asdict(config), "holdout_origins": list(config.holdout_origins)},
        "data": data_summary or [],
        "validation": [asdict(r) for r in reports],
    }
    judge = HeadsJudge(heads, taxonomy.harm_ids, manifest)
    return TrainingResult(judge, reports)


def _response_matrix(data: EmbeddedRecords) -> np.ndarray:
    return response_features(data.prompts, data.responses)


@dataclass
class _Column:
    weights: np.ndarray
    bias: float
    scale: float
    shift: float
    threshold: float


def _fit_output(
    name: str, x_tr: np.ndarray, t_tr: Targets, x_va: np.ndarray, t_va: Targets, seed: int
) -> tuple[_Column, OutputReport]:
    xt, yt = x_tr[t_tr.rows], t_tr.y
    xv, yv = x_va[t_va.rows], t_va.y
    if len(np.unique(yt)) < 2:
        raise ValueError(f"cannot train output {name!r}: the training rows need both positive and negative examples")
    best: tuple[float, float, LogisticRegression] | None = None
    for c in C_GRID:
        model = _logistic(c, seed).fit(xt, yt)
        score = _auroc(yv, model.decision_function(xv)) if len(xv) else None
        key = score if score is not None else -math.inf
        if best is None or key > best[0]:
            best = (key, c, model)
    assert best is not None
    _, c, model = best
    w, b = model.coef_[0].astype(np.float32), float(model.intercept_[0])
    # Calibrate on the float32 weights the artifact stores, so loaded and fresh judges agree.
    logits_va = (xv.astype(np.float32) @ w + np.float32(b)).astype(np.float64)
    scale, shift = fit_platt(logits_va, yv)
    pv = platt(logits_va, scale, shift)
    threshold = best_f1_threshold(yv, pv)
    report = _report(name, yt, yv, c, threshold, pv)
    return _Column(w, b, scale, shift, threshold), report


def _logistic(c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)


def _auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def _report(name: str, yt: np.ndarray, yv: np.ndarray, c: float, threshold: float, pv: np.ndarray) -> OutputReport:
    flag = pv >= threshold
    tp = int((flag & yv).sum())
    precision = tp / flag.sum() if flag.sum() else None
    recall = tp / yv.sum() if yv.sum() else None
    f1 = 2 * tp / (flag.sum() + yv.sum()) if (flag.sum() + yv.sum()) else None
    return OutputReport(
        name=name, train_n=len(yt), train_pos=int(yt.sum()), val_n=len(yv), val_pos=int(yv.sum()), c=c,
        threshold=round(threshold, 6), auroc=_round(_auroc(yv, pv)), f1=_round(f1), precision=_round(precision),
        recall=_round(recall), ece=_round(expected_calibration_error(yv, pv) if len(yv) else None),
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def summarise_data(records: Sequence[Record]) -> list[dict]:
    """Rows used per file, with label counts, for the manifest and model card."""
    by_origin: dict[str, dict] = {}
    for r in records:
        row = by_origin.setdefault(r.origin, {"origin": r.origin, "source": r.source, "rows": 0, "unsafe": 0,
                                              "safe": 0, "response_labels": 0, "refusal_labels": 0})
        row["rows"] += 1
        row["unsafe"] += r.unsafe is True
        row["safe"] += r.unsafe is False
        row["response_labels"] += r.response_harm is not None
        row["refusal_labels"] += r.refusal is not None
    return [by_origin[k] for k in sorted(by_origin)]


def build_artifact(
    records: Sequence[Record],
    encode: Encode,
    taxonomy: Taxonomy,
    config: TrainConfig,
    date: dt.date | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[TrainingResult, str]:
    """The whole ``monitor judge train`` recipe: select, embed, fit; returns the result and its model card."""
    chosen = select_training_records(records, config)
    parts = {s: [r for r in chosen if config.split(r) == s] for s in ("train", "val")}
    progress(f"embedding {len(chosen)} records ({len(parts['train'])} train, {len(parts['val'])} validation)")
    train = embed_records(parts["train"], encode)
    val = embed_records(parts["val"], encode)
    progress("fitting heads")
    result = train_judge(train, val, taxonomy, config, date, summarise_data(chosen))
    return result, render_model_card(result.judge.manifest)
