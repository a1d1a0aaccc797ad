"""Drift-report cost on 50k vs 50k events: the reservoir's per-event cost and report build times.

Run: ``.venv/bin/python bench/reports.py [--events 50000] [--rows 5000 50000] [--mmd-rows 2000]``

Events are synthetic judged events with 384-d unit embeddings (one cluster per category, the
shape of MiniLM's output) and a response each; the current window has three times the self-harm
share. Measured here, per row of the printed table:

- ``reservoir``: feeding 2 x ``--events`` events through :class:`WindowReservoir` at the service
  defaults (1 h windows, 1000 kept each), the cost the worker thread pays per event;
- ``service default``: the report the API builds at the defaults, from that reservoir (each hour
  holds 50k events, the reservoir keeps 1000: the report says it analyses a sample);
- ``model, N rows``: :func:`build_report` on windows holding every event (a reservoir sized to
  keep them all), analysing ``N`` rows per side (``report_max_rows``; N = events means no sampling);
- ``mmd``: the same with ``mmd`` embedding drift (bootstrap), at its row cap.

Reports run with BLAS/OpenMP at one thread, as in the service. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DO_NOT_TRACK", "1")

from bench.machine import describe  # noqa: E402
from monitor.events import Event, ScoredEvent  # noqa: E402
from monitor.export.report import build_report  # noqa: E402
from monitor.export.reservoir import WindowReservoir  # noqa: E402
from monitor.export.windows import TimeWindow  # noqa: E402
from monitor.judge.verdict import Verdict  # noqa: E402
from monitor.taxonomy import SAFE

T0 = 1767225600.0
HOUR = 3600.0
CATEGORIES = (SAFE, "violence_aiding_and_abetting_incitement", "self_harm", "privacy_violation", "hate_speech_offensive_language")
BASE = (0.84, 0.04, 0.04, 0.04, 0.04)
SHIFTED = (0.76, 0.04, 0.12, 0.04, 0.04)


def window_events(hour: int, n: int, shares: tuple[float, ...], seed: int, dim: int = 384) -> list[ScoredEvent]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(size=(len(CATEGORIES), dim))
    cats = rng.choice(len(CATEGORIES), size=n, p=shares)
    emb = centers[cats] + rng.normal(scale=2.0, size=(n, dim))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    lengths = rng.integers(10, 400, size=n)
    out = []
    for i, (c, length) in enumerate(zip(cats, lengths)):
        flagged = c != 0
        refused = flagged and bool(rng.random() < 0.7)
        verdict = Verdict("bench", CATEGORIES[c], {}, 0.9 if flagged else 0.1, flagged, 0.05, False, 0.9 if refused else 0.1, refused)
        event = Event(f"b{hour}-{i}", T0 + hour * HOUR + i * HOUR / n, "x" * int(length), "I can't help." if refused else "Sure.")
        out.append(ScoredEvent(event, 1.0, emb[i], emb[i], verdict))
    return out


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="Events per window.")
    parser.add_argument("--rows", type=int, nargs="+", default=[5000, 50_000], help="report_max_rows values to time with the model method.")
    parser.add_argument("--mmd-rows", type=int, default=2000, help="Rows per side for the mmd run (0: skip).")
    parser.add_argument("--tsne-points", type=int, default=200)
    args = parser.parse_args()
    machine = describe()

    n = args.events
    print(f"generating 2 x {n:,} events ...", file=sys.stderr)
    reference_events = window_events(0, n, BASE, seed=1)
    current_events = window_events(1, n, SHIFTED, seed=2)
    rows: list[tuple[str, str, str, str]] = []

    def import_evidently() -> None:
        import evidently.metrics  # noqa: F401  (the service pays this once, on its first report)

    _, seconds = timed(import_evidently)
    rows.append(("import evidently (first report only)", "", f"{seconds:.1f} s", ""))

    default = WindowReservoir(per_window=1000, seed=0)
    _, seconds = timed(lambda: [default(reference_events[i : i + 64]) or default(current_events[i : i + 64]) for i in range(0, n, 64)])
    rows.append(("reservoir (1000 kept per 1 h window)", f"{2 * n:,} events", f"{seconds:.2f} s", f"{seconds / (2 * n) * 1e6:.1f} µs/event"))

    def report(reservoir: WindowReservoir, max_rows: int, method: str = "model"):
        ref = reservoir.sample(TimeWindow(T0, T0 + HOUR))
        cur = reservoir.sample(TimeWindow(T0 + HOUR, T0 + 2 * HOUR))
        return build_report(ref, cur, max_rows=max_rows, embedding_method=method, tsne_points=args.tsne_points).to_json()

    def outcome(result: dict) -> str:
        drifted = ", ".join(result["drifted_categories"]) or "none"
        emb = result["checks"]["embedding:prompt"]
        return f"categories drifted: {drifted}; embedding {emb['method']} {emb['score']:.3f} drifted={emb['drifted']}"

    result, seconds = timed(lambda: report(default, 5000))
    rows.append(("service default (reservoir sample)", f"{result['reference']['rows']:,} vs {result['current']['rows']:,}", f"{seconds:.1f} s", outcome(result)))

    everything = WindowReservoir(per_window=n, seed=0)
    everything(reference_events)
    everything(current_events)
    del reference_events, current_events
    for max_rows in args.rows:
        result, seconds = timed(lambda: report(everything, max_rows))
        rows.append((f"model, max_rows={max_rows:,}", f"{result['reference']['rows']:,} vs {result['current']['rows']:,}", f"{seconds:.1f} s", outcome(result)))
    if args.mmd_rows:
        result, seconds = timed(lambda: report(everything, args.mmd_rows, "mmd"))
        rows.append((f"mmd (bootstrap), max_rows={args.mmd_rows:,}", f"{result['reference']['rows']:,} vs {result['current']['rows']:,}", f"{seconds:.1f} s", outcome(result)))

    print(f"\n{machine}; "
          f"{n:,} vs {n:,} events, t-SNE {args.tsne_points} points per side\n")
    print("| run | rows analysed | time | result |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
