"""Where to draw the prompt-harm line: what each line flags of benign prompts and what harm it misses.

The shipped line is the one with the best F1 over the pooled validation rows. An operator may move it
(``judge_prompt_threshold``): a higher line flags fewer benign prompts (every unsafe share on the
dashboards counts flagged prompts) and misses more harmful ones. This prints that trade per source on
the validation rows (never the test split): at the judge's own line, and at the lines that flag at
most the given shares of the real-user benign validation prompts (ToxicChat, ConvAbuse: the files
that are real users' chat). The judge runs once on torch; each line re-decides its probabilities.

The hybrid runs with every prompt passed to its encoder; the first table reads its probabilities at the
service's skip line (``judge_prompt_skip_below`` unset: the heads' own below it), and a second table
prints what each skip line saves and costs: the share of prompts whose encoder pass it skips, the
ranking (AUROC) with the heads' probability standing below the line, and the decisions that change
against the full hybrid at its own threshold.

Run: ``.venv/bin/python bench/judge_thresholds.py [--judge default] [--cap 400] [--max-flagged 0.05 ...] [--skip-below 0.03 ...]``
(``--cap 20`` checks the script quickly; figures then mean little).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sklearn.metrics import roc_auc_score  # noqa: E402

from bench.machine import describe  # noqa: E402
from monitor.embed.embedder import Embedder  # noqa: E402
from monitor.judge.dataset import default_data_dir, read_records  # noqa: E402
from monitor.judge.defaults import skip_line  # noqa: E402
from monitor.judge.evaluation import run_judge  # noqa: E402
from monitor.judge.factory import build_judge, judge_version  # noqa: E402
from monitor.judge.hybrid import HybridJudge, skipped  # noqa: E402
from monitor.judge.text_embeddings import embed_records  # noqa: E402
from monitor.judge.training import TrainConfig, select_test_records  # noqa: E402
from monitor.taxonomy import load_taxonomy  # noqa: E402

REAL_USERS = ("toxicchat-train", "convabuse")
STEPS = 10_000  # lines are printed, and set, to four decimals
SHOWN = ("openai-moderation", "toxicchat-train", "convabuse", "wildguardtest", "benign-instructions")


def line_for(probs: np.ndarray, benign_real: np.ndarray, max_flagged: float) -> float:
    """The lowest line, in steps of 0.0001 (what a setting is written with), that flags at most ``max_flagged``
    of the real-user benign prompts: just above the highest benign prompt it must leave unflagged.

    >>> line_for(np.array([0.1, 0.2, 0.3, 0.9]), np.array([True, True, True, False]), 1 / 3)
    0.2001
    >>> line_for(np.array([0.1, 0.3, 0.3, 0.9]), np.array([True, True, True, False]), 1 / 3)  # a tie: both or neither
    0.3001
    """
    benign = np.sort(probs[benign_real])[::-1]
    if not len(benign):
        raise ValueError("no real-user benign prompts among the rows to draw a line by")
    allowed = int(np.floor(max_flagged * len(benign)))  # flagged benign prompts the line may keep
    if allowed >= len(benign):
        return math.floor(benign[-1] * STEPS) / STEPS  # every one may be flagged
    return (math.floor(benign[allowed] * STEPS) + 1) / STEPS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default="default", help="as MONITOR_JUDGE: default, heads, encoder, hybrid")
    ap.add_argument("--cap", type=int, default=400, help="most validation rows per (file, label combination), as judge eval")
    ap.add_argument("--max-flagged", type=float, action="append",
                    help="share of real-user benign prompts a line may flag (repeatable; default 0.05 0.04 0.03 0.02)")
    ap.add_argument("--skip-below", type=float, action="append",
                    help="hybrid only: skip lines to try (repeatable; default 0.005 0.01 0.02 0.03 0.05 0.1)")
    args = ap.parse_args()
    started = time.perf_counter()
    tax = load_taxonomy()
    embedder = Embedder(max_seq_length=256, device="cpu", backend="torch")
    judge = build_judge(args.judge, embedder, tax, prompt_skip_below=0)  # every prompt passed: the skip sweep starts from it
    config = TrainConfig.of_artifact(judge.manifest)  # its validation rows
    records = [r for f in sorted(default_data_dir().glob("*.jsonl")) for r in read_records(f)]
    seen: set[tuple[str, str]] = set()  # each distinct prompt once per file (XSTest's prompts recur in its completion files)
    rows = []
    for r in select_test_records(records, config, args.cap, "val"):
        if r.unsafe is not None and (r.origin, r.prompt) not in seen:
            seen.add((r.origin, r.prompt))
            rows.append(r)
    embedded = embed_records(rows, embedder.encode)
    full = np.array([v.prompt_unsafe for v in run_judge(judge, embedded)])
    heads = np.array([v.prompt_unsafe for v in run_judge(judge.heads, embedded)]) if isinstance(judge, HybridJudge) else full
    y = np.array([r.unsafe for r in rows], dtype=bool)
    origin = np.array([r.origin for r in rows])
    benign_real = ~y & np.isin(origin, REAL_USERS)

    print(f"# {judge_version(args.judge, tax)}: prompt harm on {len(rows)} validation prompts ({int(y.sum())} harmful), judged in "
          f"{time.perf_counter() - started:.0f} s; {describe()}\n")
    shown = [o for o in SHOWN if (origin == o).any()]
    print("| line | real-user benign flagged | all: recall / benign flagged | "
          + " | ".join(f"{o}: recall / benign flagged" for o in shown) + " |")
    print("|" + "---|" * (3 + len(shown)))
    lines = [("own", judge.decision_thresholds[0])]
    lines += [(f"≤ {share:.0%} real-user", _line_for(full, heads, benign_real, share, args.judge))
              for share in args.max_flagged or (0.05, 0.04, 0.03, 0.02)]
    for name, line in lines:
        flagged = _at_line(full, heads, None if name == "own" else line, args.judge) >= line
        cells = [_rates(flagged, y, np.ones(len(y), dtype=bool))] + [_rates(flagged, y, origin == o) for o in shown]
        print(f"| {name}: {line:.4f} | {flagged[benign_real].mean():.1%} | " + " | ".join(cells) + " |")
    if isinstance(judge, HybridJudge):
        skip_lines(full, heads, y, origin, judge.decision_thresholds[0], args.skip_below or (0.005, 0.01, 0.02, 0.03, 0.05, 0.1))


def _at_line(full: np.ndarray, heads: np.ndarray, moved: float | None, judge: str) -> np.ndarray:
    """The service's prompt probabilities with the prompt line ``moved`` (or not): a line moved low turns the
    default skip line off (:func:`monitor.judge.defaults.skip_line`)."""
    return cascade(full, heads, skip_line(None, moved, judge))


def _line_for(full: np.ndarray, heads: np.ndarray, benign_real: np.ndarray, share: float, judge: str) -> float:
    """:func:`line_for` on the probabilities the service has at that line (the cascade's on or off by the line)."""
    line = line_for(_at_line(full, heads, None, judge), benign_real, share)
    return line if skip_line(None, line, judge) is not None else line_for(full, benign_real, share)  # cascade off there


def cascade(full: np.ndarray, heads: np.ndarray, line: float | None) -> np.ndarray:
    """The hybrid's prompt probabilities at a skip line (or none): the heads' own below it, the combination's elsewhere.

    >>> cascade(np.array([0.2, 0.01, 0.9]), np.array([0.1, 0.02, 0.8]), 0.05).tolist()
    [0.2, 0.02, 0.9]
    """
    return np.where(skipped(heads, line), heads, full)


def skip_lines(full: np.ndarray, heads: np.ndarray, y: np.ndarray, origin: np.ndarray, threshold: float,
               lines: list[float]) -> None:
    """What each skip line saves (prompts whose encoder pass is skipped) and costs (AUROC; decisions that change)."""
    shown = [o for o in SHOWN if (origin == o).any() and 0 < y[origin == o].sum() < (origin == o).sum()]
    print("\n| skip line | prompts skipped: all / real users | decisions changed (harmful prompts no longer flagged) | "
          "AUROC, all | " + " | ".join(f"{o}: AUROC" for o in shown) + " |")
    print("|" + "---|" * (4 + len(shown)))
    real = np.isin(origin, REAL_USERS)
    for line in [None, *lines]:
        p, skips = cascade(full, heads, line), skipped(heads, line)
        changed = (p >= threshold) != (full >= threshold)
        cells = [f"{roc_auc_score(y[origin == o], p[origin == o]):.4f}" for o in shown]
        print(f"| {'none' if line is None else line} | {skips.mean():.1%} / {skips[real].mean():.1%} | "
              f"{int(changed.sum())} ({int((changed & y).sum())}) | {roc_auc_score(y, p):.4f} | " + " | ".join(cells) + " |")


def _rates(flagged: np.ndarray, y: np.ndarray, rows: np.ndarray) -> str:
    recall = f"{flagged[rows & y].mean():.2f}" if (rows & y).any() else "–"
    benign = f"{flagged[rows & ~y].mean():.1%}" if (rows & ~y).any() else "–"
    return f"{recall} / {benign}"


if __name__ == "__main__":
    main()
