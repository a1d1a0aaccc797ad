"""How the heads' neighbour vote was chosen: a sweep on the validation prompts (the test split is not touched).

Fits the unsafe head's MLP as ``monitor judge train --kind heads`` does (the same rows, seed and
settings; texts embedded at the training's 128 tokens), then scores the validation prompts with the
MLP alone and with the vote of its ``k`` most similar training prompts at a ``temperature``, the
vote's log-odds added with a ``weight``. Prints, per source, AUROC / AUPRC / benign prompts flagged
at recall 0.8, and the criterion the shipped settings were chosen by: the mean of OpenAI-moderation
AUROC and AUPRC, ToxicChat AUPRC and 1 - its benign flagged, WildGuardTest AUROC and 1 - its benign
flagged, and all-file AUROC. Each distinct prompt counts once.

Run: ``.venv/bin/python bench/judge_neighbours.py [--embedding-cache DIR]`` (a few minutes on 2 CPU
cores, most of it embedding).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.judge_ensemble import flagged_at_recall  # noqa: E402
from bench.machine import describe  # noqa: E402
from monitor.embed.embedder import Embedder  # noqa: E402
from monitor.judge.dataset import LabelMapper, default_data_dir, read_records  # noqa: E402
from monitor.judge.neighbours import NeighbourVote  # noqa: E402
from monitor.judge.text_embeddings import EmbeddedRecords, embedder_encoder  # noqa: E402
from monitor.judge.training import TrainConfig, _fit_mlp, prompt_targets, select_training_records  # noqa: E402
from monitor.taxonomy import load_taxonomy  # noqa: E402

SOURCES = {"all": "", "OpenAI moderation": "openai-moderation", "ToxicChat": "toxicchat", "ConvAbuse": "convabuse",
           "WildGuardTest": "wildguardtest", "XSTest": "xstest"}
GRID = {"k": (10, 20, 30, 50, 100), "temperature": (0.02, 0.05, 0.1), "weight": (0.5, 1.0, 2.0)}


def labelled_prompts(records, encode, mapper) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The unsafe head's rows, as training builds them: embeddings, labels and each row's file."""
    data = EmbeddedRecords(records, encode([r.prompt for r in records]), np.full((len(records), 0), np.nan))
    target = prompt_targets(data, mapper)["unsafe"]
    return data.prompts[target.rows], target.y, [records[i].origin for i in target.rows]


def per_source(y: np.ndarray, score: np.ndarray, origins: np.ndarray) -> dict[str, tuple[float, float, float]]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    out = {}
    for name, prefix in SOURCES.items():
        mask = np.char.startswith(origins, prefix)
        ys, ss = y[mask], score[mask]
        out[name] = (roc_auc_score(ys, ss), average_precision_score(ys, ss), flagged_at_recall(ys, ss))
    return out


def criterion(m: dict[str, tuple[float, float, float]]) -> float:
    oai, chat, wgt = m["OpenAI moderation"], m["ToxicChat"], m["WildGuardTest"]
    return float(np.mean([oai[0], oai[1], chat[1], 1 - chat[2], wgt[0], 1 - wgt[2], m["all"][0]]))


def row(label: str, m: dict[str, tuple[float, float, float]]) -> str:
    cells = " | ".join(f"{a:.3f} / {p:.3f} / {f:.0%}" for a, p, f in m.values())
    return f"| {label} | {criterion(m):.4f} | {cells} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedding-cache", type=Path, default=None, help="cache folder for the embeddings")
    ap.add_argument("--top", type=int, default=10, help="settings to print, best criterion first")
    args = ap.parse_args()
    machine = describe()

    config = TrainConfig()
    records = [r for f in sorted(default_data_dir().glob("*.jsonl")) for r in read_records(f)]
    chosen = select_training_records(records, config)
    encode = embedder_encoder(Embedder(config.embedding_model, config.max_seq_length), args.embedding_cache)
    mapper = LabelMapper(load_taxonomy())
    x_tr, y_tr, _ = labelled_prompts([r for r in chosen if config.split(r) == "train"], encode, mapper)
    x_va, y_va, origins = labelled_prompts([r for r in chosen if config.split(r) == "val"], encode, mapper)
    origins = np.array(origins)

    col, _ = _fit_mlp(x_tr, y_tr, config, config.unsafe_hidden_units)
    mlp = col.head().logits(x_va)[:, 0]
    print(f"train prompts: {len(y_tr)} ({int(y_tr.sum())} unsafe), validation prompts: {len(y_va)} "
          f"({int(y_va.sum())} unsafe); {machine}\n")
    print("| settings | criterion | " + " | ".join(f"{s}: AUROC / AUPRC / benign flagged at recall 0.8" for s in SOURCES) + " |")
    print("|---|---:|" + "---|" * len(SOURCES))
    print(row("MLP alone", per_source(y_va, mlp, origins)))
    results = []
    for k, temperature in itertools.product(GRID["k"], GRID["temperature"]):
        vote = NeighbourVote(x_tr, y_tr, k, temperature).logits(x_va)
        for weight in GRID["weight"]:
            m = per_source(y_va, mlp + weight * vote, origins)
            results.append((criterion(m), f"k={k}, temperature={temperature:g}, weight={weight:g}", m))
    shipped = f"k={config.unsafe_neighbours}, temperature={config.neighbour_temperature:g}, weight=1"
    print(row(f"**shipped: {shipped}**", next(m for _, s, m in results if s == shipped)))
    for _, label, m in sorted(results, key=lambda r: -r[0])[: args.top]:
        print(row(label, m))
    novel_prompts(x_tr, y_tr, x_va, y_va, origins, mlp, config)


def novel_prompts(x_tr, y_tr, x_va, y_va, origins, mlp, config, below: float = 0.8) -> None:
    """Is the gain memory of near-duplicates? AUROC on validation prompts whose nearest training prompt is
    further than ``below`` cosine, with the MLP alone and with the shipped vote."""
    from sklearn.metrics import roc_auc_score

    nearest = np.concatenate([(x_va[i:i + 256] @ x_tr.T).max(axis=1) for i in range(0, len(x_va), 256)])
    vote = NeighbourVote(x_tr, y_tr, config.unsafe_neighbours, config.neighbour_temperature).logits(x_va)
    print(f"\nvalidation prompts whose nearest training prompt has cosine < {below}: AUROC, MLP alone -> shipped")
    for name, prefix in SOURCES.items():
        mask = np.char.startswith(origins, prefix) & (nearest < below)
        total = int(np.char.startswith(origins, prefix).sum())
        if 0 < y_va[mask].sum() < mask.sum():
            print(f"  {name}: {int(mask.sum())} of {total} prompts, "
                  f"{roc_auc_score(y_va[mask], mlp[mask]):.3f} -> {roc_auc_score(y_va[mask], mlp[mask] + vote[mask]):.3f}")


if __name__ == "__main__":
    main()
