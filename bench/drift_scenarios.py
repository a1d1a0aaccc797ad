"""The drift-detection scenario benchmark: every signal, every scenario, one markdown table.

Runs each scenario of issue 4 through the shipped detectors at their defaults, with baselines in
the same run, and prints one table: per detector and scenario, how many seeds detected the
change, the median delay in events and in event time after it, false alarms per 100k stationary
events, CPU µs per event, and (emerging categories) the share of alert exemplars that come from
the new group. Seeded; asserts nothing.

- covariate shift (:mod:`bench.scenarios.covariate`): real prompts, perfect judge; stationary,
  one category 5% → 10% and 2% → 6% (``category_share`` against river ADWIN at defaults), and a
  style shift of benign prompts (``embedding_drift``).
- concept shift and model behaviour (:mod:`bench.scenarios.concept`): feedback labels flipping
  for one category, second-judge disagreement, unsafe-response rate of one category and
  over-refusal after a "model update" (each against ADWIN on the same raw trials), and real XSTest
  refusal labels across a model swap.
- emerging categories (:mod:`bench.scenarios.emerging`): real embeddings, a stand-in judge that
  never saw the withheld group, the group injected at 2%.

Prompts come from ``MONITOR_DATA_DIR`` (default ``../shared/data``) and are embedded once with the
bundled MiniLM; the cache (``--cache-dir``, ``$BENCH_CACHE``, default
``~/.cache/llm-safety-drift-monitor/bench``) is keyed by each text's hash, and the quick run's
texts are a subset of the full run's::

    .venv/bin/python bench/drift_scenarios.py --quick   # ~3.6k texts to embed cold; minutes once cached
    .venv/bin/python bench/drift_scenarios.py           # ~10.7k texts; long stationary streams, 40 seeds per covariate change
    .venv/bin/python bench/drift_scenarios.py --only emerging
    .venv/bin/python bench/drift_scenarios.py --backend onnx-int8   # the same on int8 embeddings

alibi-detect's online MMD is not run as a peer: installing it downgrades numpy and transformers in
the project's environment, and its licence (BSL) keeps it out of the project.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Small matrix products gain nothing from threads and crawl on a busy shared CPU.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

from bench.scenarios import concept, covariate, emerging  # noqa: E402
from bench.scenarios.pools import FULL, QUICK, Caps, default_cache_dir, load_pools  # noqa: E402
from bench.scenarios.running import table  # noqa: E402
from monitor.judge.dataset import default_data_dir  # noqa: E402


@dataclass(frozen=True)
class Size:
    caps: Caps
    covariate_stationary: tuple[int, int]  # (events per stream, streams)
    concept_stationary: int
    emerging_stationary: tuple[int, int]  # (events per stream after the detector's warm-up, streams)
    seeds: int  # per covariate change scenario
    concept_seeds: int  # per concept change scenario
    emerging_seeds: int  # per withheld group


SIZES = {
    "quick": Size(QUICK, (120_000, 1), 100_000, (100_000, 1), 3, 2, 2),
    "full": Size(FULL, (120_000, 20), 300_000, (100_000, 3), 40, 5, 8),
}
SECTIONS = ("covariate", "concept", "emerging")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller pools, fewer seeds and stationary streams")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections from: " + ", ".join(SECTIONS))
    parser.add_argument("--seeds", type=int, help="seeds per change scenario, every section (overrides the size's)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="embedding cache folder")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx-int8", "onnx-fp32"], help="embedding backend of the real-prompt pools")
    args = parser.parse_args()
    machine = describe()
    size = SIZES["quick" if args.quick else "full"]
    seeds, concept_seeds, emerging_seeds = (args.seeds,) * 3 if args.seeds else (size.seeds, size.concept_seeds, size.emerging_seeds)
    sections = args.only.split(",")
    data_dir = default_data_dir()
    if not data_dir.is_dir():
        sys.exit(f"shared data not found at {data_dir} (set MONITOR_DATA_DIR)")
    started = time.perf_counter()
    pools = load_pools(data_dir, args.cache_dir, size.caps, args.backend) if {"covariate", "emerging"} & set(sections) else None
    rows = []
    if "covariate" in sections:
        events, streams = size.covariate_stationary
        rows += covariate.rows(pools, stationary_events=events, stationary_seeds=streams, change_seeds=seeds)
    if "concept" in sections:
        rows += concept.rows(stationary_events=size.concept_stationary, seeds=concept_seeds, data_dir=data_dir)
    if "emerging" in sections:
        events, streams = size.emerging_stationary
        rows += emerging.rows(pools, stationary_events=events, stationary_seeds=streams, seeds=emerging_seeds)
    print(table(rows))
    print(f"\n{'quick' if args.quick else 'full'} run, embeddings from backend {args.backend}, {seeds} seeds per covariate change, {concept_seeds} per concept "
          f"change, {emerging_seeds} per withheld group, {time.perf_counter() - started:.0f} s wall; {machine}")


if __name__ == "__main__":
    main()
