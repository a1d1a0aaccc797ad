"""``monitor judge train`` and ``monitor judge eval``: build the heads artifact and measure it against baselines."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Optional

import typer

from monitor.judge.dataset import LabelMapper, Record, data_files, default_data_dir, read_records
from monitor.judge.evaluation import evaluate, format_report, run_judge
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge
from monitor.judge.keyword_baseline import KeywordJudge
from monitor.judge.text_embeddings import embed_records, embedder_encoder
from monitor.judge.training import TrainConfig, build_artifact, select_test_records
from monitor.taxonomy import load_taxonomy

judge_app = typer.Typer(help="Train and evaluate the safety judge heads.", no_args_is_help=True)

DATA_HELP = "JSONL file or folder of them (repeat the option for more); default: $MONITOR_DATA_DIR or ../shared/data."
MAPPINGS_HELP = "Folder of label-mapping YAML files, consulted before the bundled ones (repeatable)."
CACHE_HELP = "Folder to cache embeddings in between runs (development speed-up; never inside the repo)."


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
    data: Optional[list[Path]] = typer.Option(None, "--data", help=DATA_HELP),
    seed: int = typer.Option(0, help="Seed for splits and sampling."),
    cap: int = typer.Option(600, min=1, help="Most rows per (file, label combination)."),
    safe_cap: int = typer.Option(2000, min=1, help="Most safe prompt-only rows per file (benign variety is cheap)."),
    max_seq_length: int = typer.Option(128, min=8, help="Tokens kept per text when embedding training data."),
    test_fraction: float = typer.Option(0.2, min=0.0, max=0.9, help="Share of prompts kept out for `judge eval`."),
    val_fraction: float = typer.Option(0.2, min=0.05, max=0.9, help="Share of prompts for calibration and thresholds."),
    holdout: list[str] = typer.Option(["xstest-completions-mistralinstruct"], help="File stems kept out entirely (repeatable)."),
    taxonomy: Optional[Path] = typer.Option(None, help="Taxonomy YAML (default: the bundled one)."),
    mappings: Optional[list[Path]] = typer.Option(None, help=MAPPINGS_HELP),
    embedding_model: str = typer.Option("bundled:all-MiniLM-L6-v2", help="sentence-transformers model."),
    embedding_cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    date: Optional[str] = typer.Option(None, help="Date written in the card (YYYY-MM-DD; default today, UTC)."),
) -> None:
    """Train the judge heads on labelled JSONL records and write an artifact with its model card."""
    if test_fraction + val_fraction >= 1:
        raise typer.BadParameter("test and validation fractions must leave rows to train on", param_hint="--val-fraction")
    try:
        day = dt.date.fromisoformat(date) if date else None
    except ValueError:
        raise typer.BadParameter(f"{date!r} is not a YYYY-MM-DD date", param_hint="--date") from None
    tax = load_taxonomy(taxonomy)
    config = TrainConfig(seed=seed, test_fraction=test_fraction, val_fraction=val_fraction, cap_per_stratum=cap,
                         safe_prompt_cap=safe_cap,
                         holdout_origins=tuple(holdout), embedding_model=embedding_model, max_seq_length=max_seq_length)
    records = _records(data)
    encoder = embedder_encoder(_embedder(embedding_model, max_seq_length), embedding_cache)
    result, card = build_artifact(records, encoder, tax, config, day, progress=typer.echo,
                                  mapping_dirs=tuple(mappings or ()))
    result.judge.save(out, card)
    typer.echo(f"wrote {out} ({result.judge.version})")
    for r in result.reports:
        typer.echo(f"  {r.name:50s} val AUROC {r.auroc if r.auroc is not None else '–'}  F1 {r.f1}  threshold {r.threshold:.3f}")


@judge_app.command("eval")
def eval_(
    data: Optional[list[Path]] = typer.Option(None, "--data", help=DATA_HELP),
    artifact: Path = typer.Option(DEFAULT_ARTIFACT, help="Heads artifact to evaluate (default: the shipped one)."),
    cap: int = typer.Option(400, min=1, help="Most test rows per (file, label combination)."),
    max_seq_length: int = typer.Option(256, min=8, help="Tokens kept per text (256 = the service default)."),
    baselines: bool = typer.Option(True, help="Also score the keyword and prototype baselines."),
    taxonomy: Optional[Path] = typer.Option(None, help="Taxonomy YAML (default: the bundled one)."),
    mappings: Optional[list[Path]] = typer.Option(None, help=MAPPINGS_HELP),
    embedding_cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    out: Optional[Path] = typer.Option(None, help="Also write the report (markdown) to this file."),
) -> None:
    """Evaluate on rows the artifact never trained on: its test split plus its held-out files."""
    tax = load_taxonomy(taxonomy)
    heads = HeadsJudge.load(artifact, tax)
    config = TrainConfig(**{**heads.manifest["training"], "holdout_origins": tuple(heads.manifest["training"]["holdout_origins"])})
    test = select_test_records(_records(data), config, cap)
    if not test:
        raise typer.BadParameter("none of these rows is in the artifact's test split or held-out files", param_hint="--data")
    embedder = _embedder(heads.embedding_model, max_seq_length)
    embedded = embed_records(test, embedder_encoder(embedder, embedding_cache))
    judges = [heads]
    if baselines:
        from monitor.judge.prototype import PrototypeJudge

        judges += [KeywordJudge(tax.harm_ids), PrototypeJudge(embedder, tax)]
    mapper = LabelMapper(tax, tuple(mappings or ()))
    evaluations = [evaluate(j.version, run_judge(j, embedded), embedded, mapper, tax.harm_ids) for j in judges]
    held = ", ".join(config.holdout_origins) or "none"
    header = (f"Test rows: {len(test)} (seeded prompt-hash split, seed {config.seed}, {config.test_fraction:.0%}; "
              f"whole files held out: {held}); texts embedded with {heads.embedding_model}, max_seq_length {max_seq_length}.\n")
    report = header + "\n" + format_report(evaluations)
    typer.echo(report)
    if out:
        out.write_text(report)
