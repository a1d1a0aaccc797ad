"""The shipped judge's metrics on each embedding backend: is int8 within tolerance of fp32?

The judges were trained on torch fp32 encoders; a service on ``onnx-int8`` feeds the heads int8
embeddings and runs the fine-tuned encoder (``--judge encoder`` or ``hybrid``) in int8. This runs the same evaluation as ``monitor judge eval`` (the artifact's test split plus
its held-out files, from ../shared/data) once per backend and prints, per output, AUROC and FPR
(false positives / negatives at the judge's own thresholds) side by side with the difference to
the first backend. The target of issue 15: AUROC within 0.01 of fp32.

Run: ``.venv/bin/python bench/judge_backends.py [--judge heads|encoder|hybrid] [--backend torch --backend onnx-int8] [--cap 400]
[--judge-prompt-skip-below 0]``
(``--cap 20`` checks the script quickly; figures then mean little).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from monitor.embed.embedder import Embedder  # noqa: E402
from monitor.judge.dataset import LabelMapper, default_data_dir, read_records  # noqa: E402
from monitor.judge.evaluation import evaluate, run_judge  # noqa: E402
from monitor.judge.factory import build_judge  # noqa: E402
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge  # noqa: E402
from monitor.judge.text_embeddings import embed_records  # noqa: E402
from monitor.judge.training import TrainConfig, select_test_records  # noqa: E402
from monitor.taxonomy import load_taxonomy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", action="append", choices=["torch", "onnx-fp32", "onnx-int8"], help="repeatable (default: onnx-fp32, onnx-int8)")
    ap.add_argument("--judge", default="heads", help="as MONITOR_JUDGE: heads, encoder, hybrid, or an artifact folder")
    ap.add_argument("--cap", type=int, default=400, help="most test rows per (file, label combination), as judge eval")
    ap.add_argument("--judge-prompt-skip-below", type=float, help="as MONITOR_JUDGE_PROMPT_SKIP_BELOW, for the hybrid "
                    "(default: the service's; 0: off)")
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--model-cache-dir", type=Path, default=None)
    args = ap.parse_args()
    backends = args.backend or ["onnx-fp32", "onnx-int8"]

    tax = load_taxonomy()
    # Both shipped artifacts were trained on the same seeded split, so the heads' test rows are every judge's.
    config = TrainConfig.of_artifact(HeadsJudge.load(DEFAULT_ARTIFACT, tax).manifest)
    records = [r for f in sorted(default_data_dir().glob("*.jsonl")) for r in read_records(f)]
    mapper = LabelMapper(tax)
    test, skipped = [], set()
    for r in select_test_records(records, config, args.cap):
        try:
            mapper.harm_categories(r)
            test.append(r)
        except ValueError:  # a data file whose labels this checkout has no mapping for
            skipped.add(r.origin)
    if skipped:
        print(f"skipped files without a label mapping here: {', '.join(sorted(skipped))}", flush=True)
    results = {}
    for backend in backends:
        started = time.perf_counter()
        embedder = Embedder(max_seq_length=args.max_seq_length, device="cpu", backend=backend, cache_dir=args.model_cache_dir)
        judge = build_judge(args.judge, embedder, tax, args.model_cache_dir, prompt_skip_below=args.judge_prompt_skip_below)
        embedded = embed_records(test, embedder.encode)
        results[backend] = evaluate(backend, run_judge(judge, embedded), embedded, mapper, tax.harm_ids).metrics
        print(f"{backend}: {len(test)} rows embedded and judged by {judge.version} in {time.perf_counter() - started:.0f} s", flush=True)

    base = backends[0]
    print(f"\njudge {args.judge} on {len(test)} test rows; differences are to {base}\n")
    header = "| section | output | n (pos) | " + " | ".join(f"AUROC {b} | FPR {b}" for b in backends) + " | max ΔAUROC |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    worst = 0.0
    for key in sorted(results[base]):
        cells, aurocs = [], []
        for b in backends:
            m = results[b].get(key)
            fpr = m.fp / (m.fp + m.tn) if m and m.fp + m.tn else None
            cells += [f"{m.auroc:.4f}" if m and m.auroc is not None else "–", f"{fpr:.4f}" if fpr is not None else "–"]
            aurocs.append(m.auroc if m else None)
        delta = max((abs(a - aurocs[0]) for a in aurocs[1:] if a is not None and aurocs[0] is not None), default=0.0)
        worst = max(worst, delta) if key[1].startswith(("unsafe (", "all")) or key[0] == "category" else worst
        m0 = results[base][key]
        print(f"| {key[0]} | {key[1]} | {m0.n} ({m0.positives}) | " + " | ".join(cells) + f" | {delta:.4f} |")
    print(f"\nlargest AUROC difference on the pooled outputs and categories: {worst:.4f} (target <= 0.01)")


if __name__ == "__main__":
    main()
