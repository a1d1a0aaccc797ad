"""``monitor judge train``, ``combine`` and ``eval``: build the judge artifacts and measure them against baselines."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from monitor.judge.combiner import COMBINER_FOLDER, LABEL_NAMES, OUTPUTS, VerdictCombiner
from monitor.judge.dataset import LabelMapper, Record, data_files, default_data_dir, read_records
from monitor.judge.defaults import DEFAULT_SKIP_LINE, skip_line
from monitor.judge.evaluation import evaluate, format_report, run_judge
from monitor.embed.embedder import DEFAULT_EMBEDDING_MODEL
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge
from monitor.judge.hybrid import HybridJudge, check_same_split
from monitor.judge.keyword_baseline import KeywordJudge
from monitor.judge.text_embeddings import embed_records, embedder_encoder
from monitor.judge.encoder_judge import DEFAULT_ENCODER_ARTIFACT, is_encoder_artifact, load_encoder_judge, save_encoder_artifact
from monitor.judge.encoder_training import PRECISIONS, EncoderTrainConfig, training_device
from monitor.judge.model_card import render_encoder_model_card
from monitor.judge.training import TrainConfig, build_artifact, select_test_records
from monitor.taxonomy import load_taxonomy

judge_app = typer.Typer(help="Train and evaluate the safety judge heads.", no_args_is_help=True)

DATA_HELP = "JSONL file or folder of them (repeat the option for more); default: $MONITOR_DATA_DIR or ../shared/data."
MAPPINGS_HELP = "Folder of label-mapping YAML files, consulted before the bundled ones (repeatable)."
CACHE_HELP = "Folder to cache embeddings in between runs (development speed-up; never inside the repo)."
HYBRID = "hybrid"


def _records(paths: Optional[list[Path]]) -> list[Record]:
    try:
        files = data_files(paths or [default_data_dir()])
        records = [r for f in files for r in read_records(f)]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None
    if not files:
        raise typer.BadParameter("no .jsonl files found", param_hint="--data")
    return records


def _embedder(model: str, max_seq_length: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from monitor.embed.embedder import Embedder

    return Embedder(model=model, max_seq_length=max_seq_length)


@judge_app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Artifact folder to write (manifest.json, weights.npz, model_card.md)."),
    kind: str = typer.Option("encoder", help="'encoder' (judge v2: fine-tune the encoder's layers) or 'heads' "
                             "(small heads on frozen embeddings)."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help=DATA_HELP),
    seed: int = typer.Option(0, help="Seed for splits, sampling and initialisation."),
    cap: Optional[int] = typer.Option(None, min=1, help="Most rows per (file, label combination) [encoder 1500, heads 600]."),
    safe_cap: Optional[int] = typer.Option(None, min=1, help="Most safe prompt-only rows per file [encoder 3000, heads 2000]."),
    max_seq_length: int = typer.Option(128, min=8, help="heads: tokens kept per text when embedding training data."),
    neighbours: int = typer.Option(30, min=0, help="heads: training prompts whose vote joins the unsafe head (0: the MLP alone)."),
    epochs: float = typer.Option(2.0, min=0.01, help="encoder: passes over the training rows."),
    frozen_layers: int = typer.Option(4, min=0, help="encoder: lower layers kept as shipped (their outputs are cached; "
                                      "the shipped encoder: 0)."),
    precision: str = typer.Option("fp32", help="encoder: 'fp32' or 'bf16' (bfloat16 matrix products: fast on a GPU or a "
                                  "CPU with AMX, slow on other CPUs; the shipped encoder: bf16 on AMX)."),
    device: str = typer.Option("auto", help="encoder: where the top layers train: 'auto' (a GPU when torch sees one, "
                               "else the CPU), 'cpu' or 'cuda'."),
    test_fraction: float = typer.Option(0.2, min=0.0, max=0.9, help="Share of prompts kept out for `judge eval`."),
    val_fraction: float = typer.Option(0.2, min=0.05, max=0.9, help="Share of prompts for calibration and thresholds."),
    holdout: list[str] = typer.Option(["xstest-completions-mistralinstruct"], help="File stems kept out entirely (repeatable)."),
    taxonomy: Optional[Path] = typer.Option(None, help="Taxonomy YAML (default: the bundled one)."),
    mappings: Optional[list[Path]] = typer.Option(None, help=MAPPINGS_HELP),
    embedding_model: str = typer.Option(DEFAULT_EMBEDDING_MODEL, help="Base (encoder) or embedding (heads) model."),
    embedding_cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    date: Optional[str] = typer.Option(None, help="Date written in the card (YYYY-MM-DD; default today, UTC)."),
) -> None:
    """Train a safety judge on labelled JSONL records and write an artifact with its model card."""
    if kind not in ("encoder", "heads"):
        raise typer.BadParameter(f"{kind!r} is not 'encoder' or 'heads'", param_hint="--kind")
    if precision not in PRECISIONS:
        raise typer.BadParameter(f"{precision!r} is not one of {', '.join(PRECISIONS)}", param_hint="--precision")
    train_device = _training_device(device, precision) if kind == "encoder" else "cpu"
    if test_fraction + val_fraction >= 1:
        raise typer.BadParameter("test and validation fractions must leave rows to train on", param_hint="--val-fraction")
    try:
        day = dt.date.fromisoformat(date) if date else None
    except ValueError:
        raise typer.BadParameter(f"{date!r} is not a YYYY-MM-DD date", param_hint="--date") from None
    tax = load_taxonomy(taxonomy)
    records = _records(data)
    if kind == "encoder":
        _train_encoder(out, records, tax, EncoderTrainConfig(
            seed=seed, test_fraction=test_fraction, val_fraction=val_fraction, holdout_origins=tuple(holdout),
            cap_per_stratum=cap or 1500, safe_prompt_cap=safe_cap or 3000, base_model=embedding_model,
            frozen_layers=frozen_layers, epochs=epochs, precision=precision,
            device=train_device), day, tuple(mappings or ()))
        return
    config = TrainConfig(seed=seed, test_fraction=test_fraction, val_fraction=val_fraction, cap_per_stratum=cap or 600,
                         safe_prompt_cap=safe_cap or 2000, unsafe_neighbours=neighbours,
                         holdout_origins=tuple(holdout), embedding_model=embedding_model, max_seq_length=max_seq_length)
    encoder = embedder_encoder(_embedder(embedding_model, max_seq_length), embedding_cache)
    result, card = build_artifact(records, encoder, tax, config, day, progress=typer.echo,
                                  mapping_dirs=tuple(mappings or ()))
    result.judge.save(out, card)
    _report_trained(out, result.judge.version, result.reports)


def _training_device(requested: str, precision: str) -> str:
    try:
        return training_device(requested, precision)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from None


def _train_encoder(out: Path, records: list[Record], tax, config: EncoderTrainConfig, day: dt.date | None,
                   mapping_dirs: tuple[Path, ...]) -> None:
    from monitor.embed.embedder import resolve_model_path
    from monitor.judge.encoder_training import build_encoder_artifact

    result = build_encoder_artifact(records, tax, config, resolve_model_path(config.base_model), day,
                                    progress=typer.echo, mapping_dirs=mapping_dirs)
    save_encoder_artifact(out, result.arrays, result.manifest, render_encoder_model_card(result.manifest))
    _report_trained(out, result.manifest["version"], result.reports)


def _report_trained(out: Path, version: str, reports) -> None:
    typer.echo(f"wrote {out} ({version})")
    for r in reports:
        typer.echo(f"  {r.name:50s} val AUROC {r.auroc if r.auroc is not None else '–'}  F1 {r.f1}  threshold {r.threshold:.3f}")


@judge_app.command("export")
def export(
    artifact: Path = typer.Option(DEFAULT_ENCODER_ARTIFACT, help="Encoder judge artifact (default: the shipped one)."),
    backend: list[str] = typer.Option(["onnx-int8"], help="onnx-int8, onnx-fp32 (repeat for both)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Model cache folder (default: the configured model_cache_dir)."),
) -> None:
    """Build the ONNX copies of an encoder judge ahead of time (image build), as `monitor model export` does for
    the embedding model; the service otherwise builds them on its first start."""
    from monitor.config import load_settings

    if not is_encoder_artifact(artifact):
        raise typer.BadParameter(f"{artifact} is not an encoder judge artifact", param_hint="--artifact")
    for kind in backend:
        if kind not in ("onnx-int8", "onnx-fp32"):
            raise typer.BadParameter(f"{kind!r} is not onnx-int8 or onnx-fp32", param_hint="--backend")
        judge = load_encoder_judge(artifact, backend=kind, cache_dir=cache_dir or load_settings().model_cache_dir)
        typer.echo(f"{kind}: {judge.version} ready in {judge.encoder.backend.folder}")


@judge_app.command("eval")
def eval_(
    data: Optional[list[Path]] = typer.Option(None, "--data", help=DATA_HELP),
    artifact: Path = typer.Option(Path(HYBRID), help="Judge artifact to evaluate, encoder or heads, or 'hybrid' "
                                  "(default: the shipped hybrid, with its heads and encoder as rows of their own)."),
    cap: int = typer.Option(400, min=1, help="Most test rows per (file, label combination)."),
    split: str = typer.Option("test", help="test (report it once) or val (the validation rows: where choices are made)."),
    max_seq_length: int = typer.Option(256, min=8, help="Tokens kept per text (256 = the service default)."),
    judge_max_seq_length: Optional[int] = typer.Option(None, min=8, help="Tokens the encoder keeps per input, as the "
                                                       "service's judge_max_seq_length (default: --max-seq-length)."),
    judge_prompt_skip_below: Optional[float] = typer.Option(None, help="The hybrid's skip line, as the service's "
                                                          f"judge_prompt_skip_below (default: the service's, {DEFAULT_SKIP_LINE}; 0: off)."),
    baselines: bool = typer.Option(True, help="Also score the shipped heads judge (for an encoder artifact) and the "
                                   "keyword and prototype baselines."),
    taxonomy: Optional[Path] = typer.Option(None, help="Taxonomy YAML (default: the bundled one)."),
    mappings: Optional[list[Path]] = typer.Option(None, help=MAPPINGS_HELP),
    embedding_cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    out: Optional[Path] = typer.Option(None, help="Also write the report (markdown) to this file."),
) -> None:
    """Evaluate on rows the artifact never trained on: its test split plus its held-out files."""
    if split not in ("test", "val"):
        raise typer.BadParameter(f"{split!r} is not test or val", param_hint="--split")
    tax = load_taxonomy(taxonomy)
    encoder_length = judge_max_seq_length or max_seq_length
    try:
        line = skip_line(judge_prompt_skip_below, judge=str(artifact))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--judge-prompt-skip-below") from None
    if str(artifact) == HYBRID:
        judge = _hybrid(tax, encoder_length, line)
    else:
        judge = load_encoder_judge(artifact, tax, encoder_length) if is_encoder_artifact(artifact) else HeadsJudge.load(artifact, tax)
    config = TrainConfig.of_artifact(judge.manifest)
    test = select_test_records(_records(data), config, cap, "val" if split == "val" else "test")
    if not test:
        raise typer.BadParameter(f"none of these rows is in the artifact's {split} split", param_hint="--data")
    embedder = _embedder(judge.embedding_model, max_seq_length)
    embedded = embed_records(test, embedder_encoder(embedder, embedding_cache))
    judges = [judge]
    if baselines:
        from monitor.judge.prototype import PrototypeJudge

        if isinstance(judge, HybridJudge):
            judges += [judge.heads, judge.encoder]  # its parts, each as a row of its own
        elif not isinstance(judge, HeadsJudge) and list(HeadsJudge.load(DEFAULT_ARTIFACT).categories) == tax.harm_ids:
            judges.append(HeadsJudge.load(DEFAULT_ARTIFACT, tax))  # the v1 judge as a baseline row
        judges += [KeywordJudge(tax.harm_ids), PrototypeJudge(embedder, tax)]
    mapper = LabelMapper(tax, tuple(mappings or ()))
    evaluations = [evaluate(j.version, run_judge(j, embedded), embedded, mapper, tax.harm_ids) for j in judges]
    held = ", ".join(config.holdout_origins) or "none"
    rows_digest = hashlib.sha256("\n".join(sorted(r.id for r in test)).encode()).hexdigest()[:12]
    share = config.test_fraction if split == "test" else config.val_fraction
    header = (f"{'Test' if split == 'test' else 'Validation'} rows: {len(test)}, ids sha256 {rows_digest} (seeded "
              f"prompt-hash split, seed {config.seed}, {share:.0%}"
              + (f"; whole files held out: {held}" if split == "test" else "")
              + f"; at most {cap} rows per file and label combination); max_seq_length {max_seq_length}"
              + (f", the judge's encoder {encoder_length}" if encoder_length != max_seq_length else "") + ".\n")
    report = header + "\n" + format_report(evaluations)
    typer.echo(report)
    if out:
        out.write_text(report)


# The files whose prompts look like a gateway's traffic (real users' chat, moderation API traffic, adversarial
# prompts): the prompt combination's weight is ranked by the mean AUROC over them, so that the thousands of
# templated or synthetic prompts in the other files do not outvote them.
PROMPT_RANKING_ORIGINS = ("openai-moderation", "toxicchat-train", "wildguardtest", "convabuse")


@judge_app.command()
def combine(
    data: Optional[list[Path]] = typer.Option(None, "--data", help=DATA_HELP),
    cap: int = typer.Option(400, min=1, help="Most validation rows per (file, label combination)."),
    max_seq_length: int = typer.Option(256, min=8, help="Tokens kept per text (256 = the service default)."),
    embedding_cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    output: list[str] = typer.Option(list(OUTPUTS), help="Which verdicts to combine: response, prompt, refusal (repeatable)."),
    out_dir: Path = typer.Option(COMBINER_FOLDER, help="Folder to write <output>-combiner.json in (default: the shipped one)."),
) -> None:
    """Fit how the hybrid combines the shipped heads' and encoder's prompt-harm, response-harm and refusal verdicts,
    on the validation rows (both judges' own calibration rows; the test split is not read)."""
    for name in output:
        if name not in OUTPUTS:
            raise typer.BadParameter(f"{name!r} is not one of {', '.join(OUTPUTS)}", param_hint="--output")
    tax = load_taxonomy()
    heads = HeadsJudge.load(DEFAULT_ARTIFACT, tax)
    encoder = load_encoder_judge(DEFAULT_ENCODER_ARTIFACT, tax, max_seq_length)
    try:
        check_same_split(heads, encoder)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None
    rows = select_test_records(_records(data), TrainConfig.of_artifact(encoder.manifest), cap, "val")
    embedded = embed_records(rows, embedder_encoder(_embedder(heads.embedding_model, max_seq_length), embedding_cache))
    verdicts = list(zip(run_judge(heads, embedded), run_judge(encoder, embedded), rows))
    for name in output:
        _fit_combiner(name, verdicts, heads.version, encoder.artifact_version, max_seq_length, out_dir / f"{name}-combiner.json")


def _fit_combiner(output: str, verdicts: list, heads_version: str, encoder_version: str, max_seq_length: int,
                  out: Path) -> None:
    from sklearn.metrics import roc_auc_score

    score, label = {"response": (lambda v: v.response_unsafe, lambda r: r.response_harm),
                    "prompt": (lambda v: v.prompt_unsafe, lambda r: r.unsafe),
                    "refusal": (lambda v: v.refusal, lambda r: r.refusal)}[output]
    fitted = [(score(h), score(e), r) for h, e, r in verdicts
              if score(h) is not None and score(e) is not None and label(r) is not None]
    if not fitted:
        raise typer.BadParameter(f"no validation row has a labelled {output}", param_hint="--data")
    h, e = (np.array(column, dtype=float) for column in list(zip(*fitted))[:2])
    y = np.array([label(r) for _, _, r in fitted], dtype=bool)
    origins = np.array([r.origin for _, _, r in fitted])
    both_labels = [o for o in sorted(set(origins)) if 0 < y[origins == o].sum() < (origins == o).sum()]
    # Prompts: the files that look like a gateway's traffic; refusals: every file (each one model's or one set of
    # models' replies); response harm: all rows pooled.
    ranking = {"prompt": [o for o in PROMPT_RANKING_ORIGINS if o in both_labels], "refusal": both_labels}.get(output)
    if output == "prompt" and not ranking:
        raise typer.BadParameter(f"no validation prompts, harmful and harmless, from {', '.join(PROMPT_RANKING_ORIGINS)} "
                                 "to rank the prompt combination on", param_hint="--data")
    groups = None if ranking is None else [origins == o for o in ranking]
    digest = hashlib.sha256("\n".join(sorted(r.id for _, _, r in fitted)).encode()).hexdigest()[:12]
    try:
        combiner = VerdictCombiner.fit(h, e, y, heads_version, encoder_version, output, groups)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} among the {len(y)} validation rows", param_hint="--data") from None
    auroc = {name: round(float(roc_auc_score(y, p)), 4)
             for name, p in (("heads", h), ("encoder", e), ("combined", combiner.probabilities(h, e)))}
    ranked_by = "all rows" if ranking is None else "mean over " + ", ".join(ranking)
    positive = LABEL_NAMES[output][0]
    combiner = replace(combiner, validation={**combiner.validation, "ranked_by": ranked_by, "rows": len(y),
                                             positive: int(y.sum()), "ids_sha256": digest,
                                             "max_seq_length": max_seq_length, "auroc": auroc})
    combiner.save(out)
    typer.echo(f"wrote {out} ({combiner.version}) from {len(y)} validation {output}s ({int(y.sum())} {positive}), "
               f"ids sha256 {digest}")
    typer.echo("validation AUROC: " + ", ".join(f"{k} {v}" for k, v in auroc.items())
               + f"; heads weight {combiner.heads_weight:g} (AUROC by weight, {ranked_by}: "
               + ", ".join(f"{w} {v}" for w, v in combiner.validation["auroc_by_heads_weight"].items())
               + f"), threshold {combiner.threshold:.3f}")


def _hybrid(tax, max_seq_length: int, skip_below: float | None = None) -> HybridJudge:
    """The shipped hybrid on torch, as evaluation runs it (the service builds it on its own backend)."""
    return HybridJudge(HeadsJudge.load(DEFAULT_ARTIFACT, tax), load_encoder_judge(DEFAULT_ENCODER_ARTIFACT, tax, max_seq_length),
                       VerdictCombiner.load_all(), skip_below)
