"""Judge cost against embedding cost, per event (prompt + response), on real texts.

Target: judging costs at most 10% of embedding. Run from the repository root:

    .venv/bin/python bench/judge_cost.py [--events 512] [--batch 64] [--artifact DIR]

Texts: XSTest completions (GPT-4) from the shared data folder, else the test fixtures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from monitor.judge.dataset import default_data_dir, read_records
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge
from monitor.judge.verdict import JudgeInput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    parser.add_argument("--max-seq-length", type=int, default=256)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from monitor.embed.embedder import Embedder

    source = default_data_dir() / "xstest-completions-gpt4.jsonl"
    if not source.exists():
        source = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "judge" / "records.jsonl"
    records = [r for r in read_records(source) if r.response]
    records = (records * (args.events // len(records) + 1))[: args.events]
    judge = HeadsJudge.load(args.artifact)
    embedder = Embedder(max_seq_length=args.max_seq_length)
    embedder.encode(["warm up"])

    t0 = time.perf_counter()
    prompts = embedder.encode([r.prompt for r in records], batch_size=args.batch)
    responses = embedder.encode([r.response for r in records], batch_size=args.batch)
    embed_s = time.perf_counter() - t0

    inputs = [JudgeInput(r.prompt, p, r.response, q) for r, p, q in zip(records, prompts, responses)]
    judge.judge(inputs[: args.batch])
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        for start in range(0, len(inputs), args.batch):
            judge.judge(inputs[start : start + args.batch])
    judge_s = (time.perf_counter() - t0) / reps

    n = len(records)
    print(f"source: {source.name}, events: {n}, batch: {args.batch}, max_seq_length: {args.max_seq_length}, "
          f"judge: {judge.version}")
    print(f"embedding (prompt + response): {embed_s / n * 1e6:10.1f} us/event")
    print(f"heads judge:                   {judge_s / n * 1e6:10.1f} us/event")
    print(f"judge / embedding:             {judge_s / embed_s:10.2%}")
    print(f"(median response length {int(np.median([len(r.response) for r in records]))} chars)")


if __name__ == "__main__":
    main()
