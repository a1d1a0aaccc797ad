"""Judge cost against embedding cost, per event (prompt + response), on real texts.

The service embeds every prompt and response for the drift detectors anyway; this says what the
judge adds on top. The heads judge reads those embeddings (target: at most 10% of embedding); the
encoder and hybrid judges run passes of their own (the hybrid: the prompt, unless the heads put it
below the skip line, and the cross-encoded prompt+reply pair). Both are timed in one process on one backend, so the ratio holds up on a loaded machine
better than either absolute figure. Run from the repository root:

    .venv/bin/python bench/judge_cost.py [--judge heads|encoder|hybrid] [--backend torch|onnx-int8] [--events 512] [--batch 64]
    [--judge-prompt-skip-below 0]

Texts: XSTest completions (GPT-4) from the shared data folder, else the test fixtures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402

from monitor.judge.dataset import default_data_dir, read_records  # noqa: E402
from monitor.judge.factory import build_judge  # noqa: E402
from monitor.judge.verdict import JudgeInput  # noqa: E402
from monitor.taxonomy import load_taxonomy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--judge", default="heads", help="as MONITOR_JUDGE: heads, encoder, hybrid, or an artifact folder")
    parser.add_argument("--backend", default="torch", help="embedding backend (torch, onnx-int8, onnx-fp32)")
    parser.add_argument("--reps", type=int, default=5, help="judge passes over the events (the median is kept)")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--judge-prompt-skip-below", type=float, help="as MONITOR_JUDGE_PROMPT_SKIP_BELOW, for the hybrid "
                        "(default: the service's; 0: off)")
    args = parser.parse_args()
    machine = describe()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from monitor.embed.embedder import Embedder

    source = default_data_dir() / "xstest-completions-gpt4.jsonl"
    if not source.exists():
        source = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "judge" / "records.jsonl"
    records = [r for r in read_records(source) if r.response]
    records = (records * (args.events // len(records) + 1))[: args.events]
    embedder = Embedder(max_seq_length=args.max_seq_length, backend=args.backend)
    judge = build_judge(args.judge, embedder, load_taxonomy(), prompt_skip_below=args.judge_prompt_skip_below)
    embedder.encode(["warm up"])

    t0 = time.perf_counter()
    prompts = embedder.encode([r.prompt for r in records], batch_size=args.batch)
    responses = embedder.encode([r.response for r in records], batch_size=args.batch)
    embed_s = time.perf_counter() - t0

    inputs = [JudgeInput(r.prompt, p, r.response, q) for r, p, q in zip(records, prompts, responses)]
    judge.judge(inputs[: args.batch])
    passes = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for start in range(0, len(inputs), args.batch):
            judge.judge(inputs[start : start + args.batch])
        passes.append(time.perf_counter() - t0)
    judge_s = float(np.median(passes))

    n = len(records)
    print(f"source: {source.name}, events: {n}, batch: {args.batch}, max_seq_length: {args.max_seq_length}, "
          f"judge: {judge.version}, backend: {args.backend}; {machine}")
    print(f"embedding (prompt + response): {embed_s / n * 1e6:10.1f} us/event")
    print(f"judge:                         {judge_s / n * 1e6:10.1f} us/event")
    print(f"judge / embedding:             {judge_s / embed_s:10.2%}")
    print(f"(median response length {int(np.median([len(r.response) for r in records]))} chars)")


if __name__ == "__main__":
    main()
