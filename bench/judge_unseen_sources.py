"""How the heads' prompt judge holds up on a source it never saw: leave one source out.

Every figure the test split gives is in-distribution: each file's test rows come from the same
file, templates and labelling convention as its training rows. Traffic a deployed judge meets is
not, and the figures users measure on outside data fall short of ours (issue 14). This bench
estimates that gap. For each source it refits the unsafe output exactly as ``monitor judge train
--kind heads`` does (MLP, the neighbour vote, Platt calibration and the F1-best threshold on the
validation rows), once on every file (the shipped recipe) and once without the source, dropping
too every row of another file that shares one of its prompts, and scores the source's rows:

* ``seen``: the recipe that trained on the source, on the source's validation rows (its
  calibration rows, so if anything optimistic);
* ``unseen``: the recipe that never saw it, on the same validation rows, and on all the source's
  rows outside the test split (more rows, same model);
* with and without the neighbour vote, to show whether the vote generalises or only remembers.

Per row: AUROC, AUPRC and the share of benign prompts flagged at the recipe's own threshold where
the source has both labels; recall at that threshold where it has unsafe prompts only. The test
split is not read. Texts are embedded at the training's 128 tokens.

Run: ``.venv/bin/python bench/judge_unseen_sources.py [--embedding-cache DIR] [--source NAME ...]``
(about two minutes on 2 CPU cores with a warm cache; the first run embeds every prompt, a few minutes more).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.machine import describe  # noqa: E402
from monitor.embed.embedder import Embedder  # noqa: E402
from monitor.judge.dataset import LabelMapper, Record, default_data_dir, read_records  # noqa: E402
from monitor.judge.text_embeddings import EmbeddedRecords, embedder_encoder  # noqa: E402
from monitor.judge.training import TrainConfig, _fit_output, prompt_targets, select_training_records  # noqa: E402
from monitor.taxonomy import load_taxonomy  # noqa: E402

# A source is every file of one dataset: XSTest's prompts recur in its completion files.
GROUPS = {
    "OpenAI moderation": ("openai-moderation",),
    "ToxicChat": ("toxicchat-train",),
    "ConvAbuse": ("convabuse",),
    "WildGuardTest": ("wildguardtest",),
    "HateCheck": ("hatecheck",),
    "ToxiGen": ("toxigen",),
    "XSTest": ("xstest-prompts", "xstest-completions-gpt4", "xstest-completions-llama2new",
               "xstest-completions-mistralinstruct"),
    "HarmfulQA": ("harmfulqa",),
    "CatQA": ("catqa",),
    "Do-Not-Answer": ("do-not-answer",),
    "AILuminate": ("ailuminate-en",),
    "BeaverTails": ("beavertails-evaluation", "beavertails-qa"),
}


class UnsafeRecipe:
    """The unsafe output of ``monitor judge train --kind heads``, fitted on a subset of the records."""

    def __init__(self, records: list[Record], config: TrainConfig, encode, mapper: LabelMapper) -> None:
        chosen = select_training_records(records, config)
        data = {s: embed_prompts([r for r in chosen if config.split(r) == s], encode) for s in ("train", "val")}
        targets = {s: prompt_targets(d, mapper)["unsafe"] for s, d in data.items()}
        col, _ = _fit_output("unsafe", data["train"].prompts, targets["train"], data["val"].prompts, targets["val"],
                             config, config.unsafe_hidden_units)
        self.head = col.head()
        self.train_prompts = int(len(targets["train"].y))

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and decisions at the recipe's threshold."""
        p = self.head.probabilities(x.astype(np.float32))[:, 0]
        return p, p >= self.head.threshold[0]


def embed_prompts(records: list[Record], encode) -> EmbeddedRecords:
    """Prompts only: the unsafe output reads nothing else."""
    return EmbeddedRecords(records, encode([r.prompt for r in records]), np.full((len(records), 0), np.nan))


def metrics(y: np.ndarray, p: np.ndarray, flag: np.ndarray) -> str:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.all():
        return f"recall {flag.mean():.2f} (n={len(y)})"
    if not y.any():
        return f"flagged {flag.mean():.1%} (n={len(y)})"
    return (f"{roc_auc_score(y, p):.3f} / {average_precision_score(y, p):.3f} / {flag[~y].mean():.1%} "
            f"(n={len(y)}, {int(y.sum())} unsafe)")


def without_source(records: list[Record], files: tuple[str, ...]) -> list[Record]:
    """Every record a recipe that never saw the source may train on: not its files, nor any other file's
    row that shares one of its prompts (XSTest's prompts recur in four files, BeaverTails' in two)."""
    prompts = {r.prompt for r in records if r.origin in files}
    return [r for r in records if r.origin not in files and r.prompt not in prompts]


def source_rows(records: list[Record], files: tuple[str, ...], config: TrainConfig,
                splits: tuple[str, ...]) -> list[Record]:
    """The source's distinct labelled prompts in ``splits`` (the first row's label stands)."""
    seen: dict[str, Record] = {}
    for r in records:
        if r.origin in files and r.unsafe is not None and config.split(r) in splits:
            seen.setdefault(r.prompt, r)
    return list(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedding-cache", type=Path, default=None, help="cache folder for the embeddings")
    ap.add_argument("--source", action="append", choices=sorted(GROUPS), help="sources to leave out (default: all)")
    args = ap.parse_args()
    machine = describe()

    shipped = TrainConfig()
    records = [r for f in sorted(default_data_dir().glob("*.jsonl")) for r in read_records(f)]
    encode = embedder_encoder(Embedder(shipped.embedding_model, shipped.max_seq_length), args.embedding_cache)
    mapper = LabelMapper(load_taxonomy())
    variants = {"with vote": shipped, "MLP alone": replace(shipped, unsafe_neighbours=0)}
    seen = {name: UnsafeRecipe(records, config, encode, mapper) for name, config in variants.items()}

    print(f"{machine}\nAUROC / AUPRC / benign flagged at the recipe's threshold (or recall / flagged where the "
          "source has one label); validation rows, then all rows outside the test split for the unseen recipe\n")
    print("| source | recipe | seen: validation rows | unseen: validation rows | unseen: all non-test rows |")
    print("|---|---|---|---|---|")
    for name in args.source or GROUPS:
        files = GROUPS[name]
        rest = without_source(records, files)
        val = embed_prompts(source_rows(records, files, shipped, ("val",)), encode)
        every = embed_prompts(source_rows(records, files, shipped, ("train", "val")), encode)
        y_val = np.array([r.unsafe for r in val.records], bool)
        y_all = np.array([r.unsafe for r in every.records], bool)
        for variant, config in variants.items():
            unseen = UnsafeRecipe(rest, config, encode, mapper)
            print(f"| {name} | {variant} | {metrics(y_val, *seen[variant].score(val.prompts))} | "
                  f"{metrics(y_val, *unseen.score(val.prompts))} | {metrics(y_all, *unseen.score(every.prompts))} |",
                  flush=True)


if __name__ == "__main__":
    main()
