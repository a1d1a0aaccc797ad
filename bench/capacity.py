"""What one service sustains on real prompt/response pairs, per judge and embedding backend.

``bench/throughput.py`` measures embedding, the service's main cost, with events that carry a prompt
only. A gateway sends pairs, and the default judge reads each reply against its prompt in a pass of
its own (the hybrid's cross-encoded ``prompt [SEP] reply``, besides its prompt pass). This runs ``monitor serve`` per
(judge, backend) with sampling off and posts real pairs from ../shared/data (the QA-moderation sets
and the XSTest completions, every reply non-empty, shuffled with ``--seed``), and reports events/s
from the first post until every event is processed, with the service's peak RSS: the figure to size
a deployment by. ONNX copies are exported into the model cache before any service starts, so the
peak RSS is a warm start's. Run it on a quiet machine (the worker runs at nice 10).

Run: ``.venv/bin/python bench/capacity.py [--judge hybrid --judge heads] [--backend onnx-int8 --backend torch]
[--events 400] [--repeat 2] [--judge-max-seq-length 128]`` (about three minutes on 2 CPU cores, more when the model cache is empty).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.throughput import Service, service_throughput  # noqa: E402
from monitor.judge.dataset import default_data_dir, read_records  # noqa: E402
from monitor.judge.defaults import DEFAULT_SKIP_LINE  # noqa: E402

PAIR_FILES = ("beavertails-qa", "pku-saferlhf-qa", "wildguardtest", "xstest-completions-gpt4",
              "xstest-completions-llama2new", "xstest-completions-mistralinstruct")


def load_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    data = default_data_dir()
    if not data.is_dir():
        sys.exit(f"datasets not found at {data}: set MONITOR_DATA_DIR")
    pairs = [(r.prompt, r.response) for f in PAIR_FILES for r in read_records(data / f"{f}.jsonl")
             if r.prompt.strip() and r.response and r.response.strip()]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", action="append", help="repeatable (default: hybrid and heads)")
    ap.add_argument("--backend", action="append", choices=["torch", "onnx-int8", "onnx-fp32"],
                    help="repeatable (default: onnx-int8 and torch)")
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--repeat", type=lambda v: max(1, int(v)), default=2, help="runs per service (median reported)")
    ap.add_argument("--port", type=int, default=8798)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge-max-seq-length", type=int, help="as MONITOR_JUDGE_MAX_SEQ_LENGTH (default: the service's)")
    ap.add_argument("--judge-prompt-skip-below", type=float, help=f"as MONITOR_JUDGE_PROMPT_SKIP_BELOW, for the hybrid (default: the service's, {DEFAULT_SKIP_LINE}; 0: off)")
    args = ap.parse_args()
    machine = describe()
    pairs = load_pairs(args.events, args.seed)
    prompts, replies = [p for p, _ in pairs], [r for _, r in pairs]
    words = [len(p.split()) + len(r.split()) for p, r in pairs]
    backends = args.backend or ["onnx-int8", "torch"]
    for backend in backends:  # build ONNX copies first, so no timed service pays for (or peaks with) an export
        if backend != "torch":
            for command in ("model", "judge"):
                subprocess.run([sys.executable, "-m", "monitor.cli", command, "export", "--backend", backend],
                               cwd=ROOT, check=True, capture_output=True)
    length = {"MONITOR_JUDGE_MAX_SEQ_LENGTH": str(args.judge_max_seq_length)} if args.judge_max_seq_length else {}
    skip = {} if args.judge_prompt_skip_below is None else {"MONITOR_JUDGE_PROMPT_SKIP_BELOW": str(args.judge_prompt_skip_below)}
    results = []
    for judge in args.judge or ["hybrid", "heads"]:
        for backend in backends:
            service = Service(args.port, MONITOR_SAMPLING="off", MONITOR_QUEUE_CAPACITY=str(args.events * args.repeat + 100),
                              MONITOR_JUDGE=judge, MONITOR_EMBEDDING_BACKEND=backend, **length,
                              **(skip if judge in ("default", "hybrid") else {}))
            try:
                service_throughput(service, prompts[:32], f"{judge}-{backend}-warm", replies[:32])
                rates = [service_throughput(service, prompts, f"{judge}-{backend}-{r}", replies) for r in range(args.repeat)]
                rss = service.peak_rss_mb()
                version = service.status().get("judge_version")
            finally:
                service.close()
            results.append({"judge": judge, "backend": backend, "events_per_s": float(np.median(rates)),
                            "runs": rates, "peak_rss_mb": rss, "judge_version": version})

    print(f"machine: {machine}")
    print(f"{len(pairs)} prompt/reply events from {', '.join(PAIR_FILES)} (words per event: median "
          f"{int(np.median(words))}, 90th percentile {int(np.percentile(words, 90))}); sampling off; "
          f"median of {args.repeat} run(s) after a warm-up; judge_max_seq_length "
          f"{args.judge_max_seq_length or 'unset (the embedding length)'}; judge_prompt_skip_below "
          f"{'unset (the service default)' if args.judge_prompt_skip_below is None else args.judge_prompt_skip_below}\n")
    print("| judge | backend | service end-to-end (events/s) | runs | peak RSS (MB) |")
    print("|---|---|---:|---|---:|")
    for r in results:
        print(f"| {r['judge']} | {r['backend']} | {r['events_per_s']:.1f} | "
              f"{', '.join(f'{x:.1f}' for x in r['runs'])} | {r['peak_rss_mb']:.0f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
