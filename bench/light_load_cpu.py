"""How much CPU the service takes from its machine at light load, the usual case beside a gateway.

Why: a sidecar that shares the gateway's cores must not burn them while traffic is light. Throughput
benches (``throughput.py``, ``capacity.py``) measure the service saturated, where any idle spinning
is hidden: the next batch is already waiting. This runs ``monitor serve`` as its own process (sampling
off, so every event is embedded and judged), sends enough short prompts past the embedding-drift
detector's one-off reference fit, then offers each ``--rate`` for ``--seconds`` as single-event
requests on a fixed schedule and reports the service process's CPU time over that span (user +
system, from ``/proc``, Linux), as a share of one core and per accepted event, with the client-side
ingest latency and status codes, and how long after the last request the backlog cleared (a service
that cannot keep up with a rate ends with a backlog: that column grows with the span). Polling for
that end costs the service little. The model is exported into the cache before the service starts.

Run: ``.venv/bin/python bench/light_load_cpu.py [--backend onnx-int8] [--judge heads] [--rate 20 --rate 100]
[--seconds 10]``. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.throughput import Service, ingest_latency, load_texts, make_embedder, service_throughput  # noqa: E402
from monitor.config import Settings  # noqa: E402


def cpu_seconds(stat: Path) -> float:
    """User + system CPU time so far from a ``/proc`` stat file: ``/proc/PID/stat`` for a process (all its
    threads), ``/proc/PID/task/TID/stat`` for one thread."""
    # The command may hold spaces and parentheses: count fields after its closing parenthesis.
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15 of stat(5)


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="onnx-int8", choices=["torch", "onnx-int8", "onnx-fp32"])
    ap.add_argument("--judge", default="default")
    ap.add_argument("--rate", type=_positive, action="append", help="events/s offered, repeatable (default: 20 and 100)")
    ap.add_argument("--seconds", type=_positive, default=10.0)
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rates = args.rate or [20.0, 100.0]
    warmup = Settings().embedding_reference_events
    texts = load_texts(warmup, 0, args.seed, unseen=True)["short"]
    make_embedder(args.backend, None)  # exports an ONNX model now if the cache lacks it, not inside the service's start
    queue = max(warmup, math.ceil(max(rates) * args.seconds)) + 1000
    service = Service(args.port, MONITOR_SAMPLING="off", MONITOR_QUEUE_CAPACITY=str(queue),
                      MONITOR_JUDGE=args.judge, MONITOR_EMBEDDING_BACKEND=args.backend, MONITOR_EMBEDDING_DEVICE="cpu")
    stat = Path(f"/proc/{service.proc.pid}/stat")
    rows = []
    try:
        service_throughput(service, texts, "warmup")
        for rate in rates:
            time.sleep(1.0)
            base = service.status()["accepted"]
            before, started = cpu_seconds(stat), time.perf_counter()
            latency = ingest_latency(service, texts, rate, args.seconds, per_request=1)
            offered_until = time.perf_counter()
            accepted = service.status()["accepted"]
            service.wait_processed(accepted, base, started)
            cpu, wall = cpu_seconds(stat) - before, time.perf_counter() - started
            rows.append({"rate": rate, "achieved": latency["achieved"], "accepted": accepted - base, "codes": latency["codes"],
                         "cpu_s": cpu, "wall_s": wall, "core_share": cpu / wall, "cpu_ms_per_event": 1000 * cpu / max(accepted - base, 1),
                         "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"], "backlog_cleared_after_s": started + wall - offered_until})
    finally:
        service.close()
    print(f"machine: {describe()}")
    print(f"backend {args.backend}; judge {args.judge}; single-event requests for {args.seconds:.0f} s per rate, after {warmup} warm-up events\n")
    print("| offered (events/s) | achieved | accepted | status codes | service CPU (s) | share of one core | CPU ms per accepted event "
          "| ingest p50 / p99 (ms) | backlog cleared after the last request (s) |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rate']:.0f} | {r['achieved']:.0f} | {r['accepted']} | {r['codes']} | {r['cpu_s']:.2f} over {r['wall_s']:.1f} s "
              f"| {r['core_share']:.0%} | {r['cpu_ms_per_event']:.1f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['backlog_cleared_after_s']:.2f} |")
    print(json.dumps({"backend": args.backend, "judge": args.judge, "rows": rows}))


if __name__ == "__main__":
    main()
