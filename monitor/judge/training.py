"""Train the heads of :class:`~monitor.judge.heads.HeadsJudge` from labelled JSONL records.

Recipe (every step seeded, so the same files give the same weights):

1. Drop held-out files (by default XSTest completions of Mistral: the refusal head is evaluated on a
   model it never saw) and the test split (hash of the prompt text); split the rest into train/val.
2. Cap each (file, label combination) stratum at ``cap_per_stratum`` rows (safe prompt-only strata at
   ``safe_prompt_cap``), so one big file does not drown the others and training stays a few minutes
   of embedding on a CPU.
3. Fit the overall unsafe output as a one-hidden-layer MLP (a linear head tops out near 0.90 AUROC
   on the mixed sources, 0.84 on OpenAI moderation; the MLP reaches 0.95 and 0.91) plus the vote of
   its ``unsafe_neighbours`` most similar training prompts (see ``neighbours.py``), and every other
   output as an L2 logistic regression (class-balanced; C picked from a small grid by validation
   AUROC). Then Platt-calibrate each and pick its F1-best threshold on validation. Category outputs
   train only on rows whose category is known (see ``LabelMapper``).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier

from monitor.embed.embedder import DEFAULT_EMBEDDING_MODEL
from monitor.judge.calibration import best_f1_threshold, expected_calibration_error, fit_platt, platt
from monitor.judge.dataset import LabelMapper, Record, record_split, stratified_cap
from monitor.judge.heads import (
    Head,
    HeadsJudge,
    artifact_format,
    compliance,
    refusal_features,
    response_features,
    version_of,
    weights_blob,
)
from monitor.judge.model_card import render_model_card
from monitor.judge.neighbours import NeighbourVote
from monitor.judge.refusal_phrases import PhraseFeatures
from monitor.judge.text_embeddings import EmbeddedRecords, Encode, embed_records
from monitor.taxonomy import Taxonomy

C_GRID = (0.5, 2.0, 8.0, 32.0)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    cap_per_stratum: int = 600
    safe_prompt_cap: int = 2000
    holdout_origins: tuple[str, ...] = ("xstest-completions-mistralinstruct",)
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    max_seq_length: int = 128
    unsafe_hidden_units: int = 128
    mlp_alpha: float = 1e-3
    unsafe_neighbours: int = 30  # 0: the MLP alone; k and temperature chosen on the validation split
    neighbour_temperature: float = 0.05

    def split(self, record: Record) -> str:
        return record_split(record, self.seed, self.test_fraction, self.val_fraction, self.holdout_origins)

    @classmethod
    def of_artifact(cls, manifest: Mapping) -> TrainConfig:
        """The seeded split an artifact was trained on (what its test and validation rows are)."""
        training = manifest["training"]
        return cls(seed=training["seed"], test_fraction=training["test_fraction"],
                   val_fraction=training["val_fraction"], holdout_origins=tuple(training["holdout_origins"]))


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
    model: str
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
    return stratified_cap(usable, config.cap_per_stratum, config.seed, config.safe_prompt_cap)


def select_test_records(records: Sequence[Record], config: TrainConfig, cap: int, split: str = "test") -> list[Record]:
    """The rows training never saw, capped per stratum: the test split plus whole held-out files, or
    (``split="val"``) the validation rows that chose thresholds and are where design choices are made."""
    return stratified_cap([r for r in records if config.split(r) == split and _labelled(r)], cap, config.seed)


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
    mapping_dirs: tuple[Path, ...] = (),
) -> TrainingResult:
    """Fit, calibrate and threshold the four heads; return the judge and its validation reports.

    ``mapping_dirs`` holds user label mappings, consulted before the bundled ones.
    """
    mapper = LabelMapper(taxonomy, mapping_dirs)
    reports: list[OutputReport] = []

    def fit_head(names: Sequence[str], xs: tuple[np.ndarray, np.ndarray], ts: tuple[dict, dict],
                 hidden: int | None = None) -> Head:
        columns = [_fit_output(n, xs[0], ts[0][n], xs[1], ts[1][n], config, hidden) for n in names]
        reports.extend(rep for _, rep in columns)
        stacked = {f: np.asarray(np.stack([getattr(col, f) for col, _ in columns], axis=-1), np.float32)
                   for f in ("weights", "bias", "scale", "shift", "threshold")}
        if hidden is None:
            return Head(**stacked)
        (col, _), = columns  # a hidden layer is fitted for one output at a time
        return Head(**stacked, hidden_weights=col.hidden_weights, hidden_bias=col.hidden_bias, neighbours=col.neighbours)

    prompt_x = (train.prompts, val.prompts)
    prompt_t = (prompt_targets(train, mapper), prompt_targets(val, mapper))
    heads = {
        "unsafe": fit_head(["unsafe"], prompt_x, prompt_t, hidden=config.unsafe_hidden_units),
        "categories": fit_head(taxonomy.harm_ids, prompt_x, prompt_t),
    }
    (tr_harm, tr_ref), (va_harm, va_ref) = response_targets(train), response_targets(val)
    phrases = PhraseFeatures()
    refusal_x = tuple(refusal_features(d.responses, [r.response or "" for r in d.records], phrases) for d in (train, val))
    heads["refusal"] = fit_head(["refusal"], refusal_x, ({"refusal": tr_ref}, {"refusal": va_ref}))
    # The response head stacks on the unsafe and refusal heads (see heads.py): score them first, a
    # training prompt without its own vote among its neighbours (as the service will meet prompts).
    resp = tuple(
        response_features(d.prompts, d.responses,
                          compliance(heads["unsafe"].probabilities(d.prompts, leave_out_identical=d is train)[:, 0],
                                     heads["refusal"].probabilities(x)[:, 0]))
        for d, x in zip((train, val), refusal_x)
    )
    heads["response"] = fit_head(["response_unsafe"], resp, ({"response_unsafe": tr_harm}, {"response_unsafe": va_harm}))

    blob = weights_blob(heads)
    manifest = {
        "format": artifact_format(heads),
        "version": version_of(blob, taxonomy.harm_ids),
        "created": (date or dt.datetime.now(dt.timezone.utc).date()).isoformat(),
        "taxonomy": {"name": taxonomy.name, "version": taxonomy.version},
        "categories": taxonomy.harm_ids,
        "embedding": {"model": config.embedding_model, "dimension": int(train.prompts.shape[1]),
                      "max_seq_length": config.max_seq_length},
        "heads": {
            "unsafe": {"features": "prompt", "outputs": ["unsafe"], "hidden_units": config.unsafe_hidden_units,
                       **_neighbour_settings(heads["unsafe"].neighbours)},
            "categories": {"features": "prompt", "outputs": taxonomy.harm_ids},
            "response": {"features": "prompt|response|prompt*response|compliance", "outputs": ["response_unsafe"]},
            "refusal": {"features": "response|refusal_phrases", "outputs": ["refusal"], "phrases": phrases.to_dict()},
        },
        "training": {**asdict(config), "holdout_origins": list(config.holdout_origins)},
        "data": data_summary or [],
        "validation": [asdict(r) for r in reports],
    }
    judge = HeadsJudge(heads, taxonomy.harm_ids, manifest)
    return TrainingResult(judge, reports)


def _neighbour_settings(vote: NeighbourVote | None) -> dict:
    if vote is None:
        return {}
    return {"neighbours": {"k": vote.k, "temperature": vote.temperature, "rows": len(vote.labels),
                           "unsafe_rows": int(vote.labels.sum())}}


@dataclass
class _Column:
    weights: np.ndarray
    bias: float
    scale: float
    shift: float
    threshold: float
    hidden_weights: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None
    neighbours: NeighbourVote | None = None

    def head(self) -> Head:
        """This one output as a :class:`Head`, with its float32 weights and its calibration as it stands."""
        return Head(self.weights[:, None], np.array([self.bias], np.float32), np.array([self.scale], np.float32),
                    np.array([self.shift], np.float32), np.array([self.threshold], np.float32),
                    self.hidden_weights, self.hidden_bias, self.neighbours)


def _fit_output(
    name: str, x_tr: np.ndarray, t_tr: Targets, x_va: np.ndarray, t_va: Targets, config: TrainConfig,
    hidden: int | None,
) -> tuple[_Column, OutputReport]:
    xt, yt = x_tr[t_tr.rows], t_tr.y
    xv, yv = x_va[t_va.rows], t_va.y
    if len(np.unique(yt)) < 2:
        raise ValueError(f"cannot train output {name!r}: the training rows need both positive and negative examples")
    col, model = _fit_mlp(xt, yt, config, hidden) if hidden else _fit_logistic(xt, yt, xv, yv, config.seed)
    if name == "unsafe" and config.unsafe_neighbours:
        col.neighbours = NeighbourVote(xt, yt, min(config.unsafe_neighbours, len(yt)), config.neighbour_temperature)
        model += f" + vote of {col.neighbours.k} neighbours"
    # Calibrate on the float32 weights the artifact stores, so loaded and fresh judges agree.
    logits_va = col.head().logits(xv.astype(np.float32))[:, 0].astype(np.float64)
    col.scale, col.shift = fit_platt(logits_va, yv)
    pv = platt(logits_va, col.scale, col.shift)
    col.threshold = best_f1_threshold(yv, pv)
    return col, _report(name, yt, yv, model, col.threshold, pv)


def _fit_logistic(xt: np.ndarray, yt: np.ndarray, xv: np.ndarray, yv: np.ndarray, seed: int) -> tuple[_Column, str]:
    best: tuple[float, float, LogisticRegression] | None = None
    for c in C_GRID:
        model = _logistic(c, seed).fit(xt, yt)
        score = _auroc(yv, model.decision_function(xv)) if len(xv) else None
        key = score if score is not None else -math.inf
        if best is None or key > best[0]:
            best = (key, c, model)
    assert best is not None
    _, c, model = best
    col = _Column(model.coef_[0].astype(np.float32), float(model.intercept_[0]), 1.0, 0.0, 0.5)
    return col, f"logistic C={c:g}"


def _fit_mlp(xt: np.ndarray, yt: np.ndarray, config: TrainConfig, hidden: int) -> tuple[_Column, str]:
    """One ReLU layer, Adam with seeded init; early stopping on a seeded 10% of the training rows when
    there are enough of them for that 10% to mean something."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter bounds small runs on purpose
        model = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=config.mlp_alpha, random_state=config.seed,
                              max_iter=200, early_stopping=len(yt) >= 1000, n_iter_no_change=8).fit(xt, yt)
    w1, w2 = model.coefs_
    b1, b2 = model.intercepts_
    col = _Column(w2[:, 0].astype(np.float32), float(b2[0]), 1.0, 0.0, 0.5,
                  hidden_weights=w1.astype(np.float32), hidden_bias=b1.astype(np.float32))
    return col, f"mlp {hidden} relu, alpha={config.mlp_alpha:g}"


def _logistic(c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)


def _auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def _report(name: str, yt: np.ndarray, yv: np.ndarray, model: str, threshold: float, pv: np.ndarray) -> OutputReport:
    flag = pv >= threshold
    tp = int((flag & yv).sum())
    precision = tp / flag.sum() if flag.sum() else None
    recall = tp / yv.sum() if yv.sum() else None
    f1 = 2 * tp / (flag.sum() + yv.sum()) if (flag.sum() + yv.sum()) else None
    return OutputReport(
        name=name, train_n=len(yt), train_pos=int(yt.sum()), val_n=len(yv), val_pos=int(yv.sum()), model=model,
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
    mapping_dirs: tuple[Path, ...] = (),
) -> tuple[TrainingResult, str]:
    """The whole ``monitor judge train`` recipe: select, embed, fit; returns the result and its model card."""
    chosen = select_training_records(records, config)
    parts = {s: [r for r in chosen if config.split(r) == s] for s in ("train", "val")}
    progress(f"embedding {len(chosen)} records ({len(parts['train'])} train, {len(parts['val'])} validation)")
    train = embed_records(parts["train"], encode)
    val = embed_records(parts["val"], encode)
    progress("fitting heads")
    result = train_judge(train, val, taxonomy, config, date, summarise_data(chosen), mapping_dirs)
    return result, render_model_card(result.judge.manifest)
