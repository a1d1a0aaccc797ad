"""The two shipped judges' prompt scores, alone and combined, at a fixed recall. Validation split.

The default (hybrid) judge sums the heads' and the encoder's calibrated prompt log-odds and
recalibrates the sum (``monitor judge combine`` fits it, the heads' weight ranked by the mean AUROC
over the gateway-like files). A ranking says nothing of the benign traffic flagged at the recall an operator wants, so this scores
the artifacts' validation rows (where design choices are made; the test split is not touched)
with both judges and prints, per source, AUROC, AUPRC and the share of benign prompts flagged at
recall 0.80, for each judge alone and for weightings of their logits (a monotone recalibration
changes none of these). Each distinct prompt counts once (XSTest's prompts recur in its four
files; the first row's label stands).

Run: ``.venv/bin/python bench/judge_ensemble.py [--cap 400] [--embedding-cache DIR]`` (about 10
minutes on 2 CPU cores, most of it the encoder's passes).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.machine import describe  # noqa: E402
from monitor.embed.embedder import Embedder  # noqa: E402
from monitor.judge.calibration import logit  # noqa: E402
from monitor.judge.dataset import default_data_dir, read_records  # noqa: E402
from monitor.judge.encoder_judge import DEFAULT_ENCODER_ARTIFACT, load_encoder_judge  # noqa: E402
from monitor.judge.evaluation import run_judge  # noqa: E402
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge  # noqa: E402
from monitor.judge.text_embeddings import embed_records, embedder_encoder  # noqa: E402
from monitor.judge.training import TrainConfig, select_test_records  # noqa: E402

SOURCES = ("openai-moderation", "toxicchat", "wildguardtest", "convabuse", "hatecheck", "toxigen", "xstest")


COMBINATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "heads": lambda h, e: logit(h),
    "encoder": lambda h, e: logit(e),
    "sum of logits": lambda h, e: logit(h) + logit(e),
    "2 heads : 1 encoder": lambda h, e: 2 * logit(h) + logit(e),
}


def flagged_at_recall(y: np.ndarray, score: np.ndarray, recall: float = 0.8) -> float:
    """Share of negatives scored at or above the threshold that keeps ``recall`` of the positives."""
    positives = np.sort(score[y])[::-1]
    threshold = positives[int(np.ceil(recall * len(positives))) - 1]
    return float((score[~y] >= threshold).mean())


def main() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cap", type=int, default=400, help="most rows per (file, label combination), as judge eval")
    ap.add_argument("--embedding-cache", type=Path, default=None, help="cache folder for the heads' embeddings")
    args = ap.parse_args()
    machine = describe()

    heads = HeadsJudge.load(DEFAULT_ARTIFACT)
    encoder = load_encoder_judge(DEFAULT_ENCODER_ARTIFACT, None, 256)
    config = TrainConfig.of_artifact(heads.manifest)
    records = [r for f in sorted(default_data_dir().glob("*.jsonl")) for r in read_records(f)]
    val = select_test_records(records, config, args.cap, "val")
    data = embed_records(val, embedder_encoder(Embedder(heads.embedding_model, 256), args.embedding_cache))
    scores: dict[str, tuple[str, bool, float, float]] = {}  # prompt -> (source, unsafe, heads, encoder)
    for h, e, r in zip(run_judge(heads, data), run_judge(encoder, data), val):
        if r.unsafe is not None:
            scores.setdefault(r.prompt, (r.source, r.unsafe, h.prompt_unsafe, e.prompt_unsafe))

    print(f"validation rows: {len(val)}, distinct labelled prompts: {len(scores)}; {machine}\n")
    print("| source | prompts (unsafe) | " + " | ".join(f"{name}: AUROC / AUPRC / benign flagged at recall 0.8" for name in COMBINATIONS) + " |")
    print("|---|---|" + "---|" * len(COMBINATIONS))
    for source in ("all", *SOURCES):
        rows = [v for v in scores.values() if source == "all" or v[0].startswith(source)]  # xstest: its prompt and completion files
        y = np.array([u for _, u, _, _ in rows], dtype=bool)
        if y.all() or not y.any():
            continue
        h = np.array([p for _, _, p, _ in rows])
        e = np.array([p for _, _, _, p in rows])
        cells = []
        for combine in COMBINATIONS.values():
            s = combine(h, e)
            cells.append(f"{roc_auc_score(y, s):.3f} / {average_precision_score(y, s):.3f} / {flagged_at_recall(y, s):.0%}")
        print(f"| {source} | {len(rows)} ({int(y.sum())}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
