"""The service's peak memory while many clients post large bodies at once, with and without the in-flight body budget.

Run: ``.venv/bin/python bench/inflight_bodies.py [--clients 16 32 64] [--budget-bytes 67108864]``

Starts ``monitor serve`` in a subprocess (prototype judge) per row, resets the process's peak RSS once it
is ready (``/proc/<pid>/clear_refs``), then lets ``clients`` threads post the same 8 MiB body of empty
objects (``[{},{},…]``: millions of dicts once parsed, then a 413, too many items) at once, and prints
the rise of the service's peak RSS (``VmHWM``) over its ready RSS and the answers by status. Each row runs
at the budget given and with the budget set out of reach (64 GiB: no bound, as before the budget existed).
Linux only (reads ``/proc``).
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.healthz_overload import TOKEN, start  # noqa: E402
from bench.machine import describe  # noqa: E402
from monitor.config import Settings  # noqa: E402

UNBOUNDED = 64 * 1024**3
BODY = b"[" + b"{}," * ((8 * 1024 * 1024 - 2) // 3 - 1) + b"{}]"


def kib(pid: int, key: str) -> int:
    return int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(key)).split()[1])


def measure(budget: int, clients: int) -> tuple[float, float, dict[int | str, int], float]:
    """(ready RSS MB, peak rise MB, answers by status, seconds) for ``clients`` concurrent posts of :data:`BODY`."""
    proc, url = start({"MONITOR_MAX_INFLIGHT_BODY_BYTES": str(budget)})
    try:
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # the peak from here on, not the model load's
        base = kib(proc.pid, "VmRSS:")
        answers: collections.Counter[int | str] = collections.Counter()
        lock = threading.Lock()

        def post() -> None:
            try:
                answer: int | str = httpx.post(url + "/v1/events", content=BODY, timeout=300, headers={
                    "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}).status_code
            except httpx.HTTPError as exc:  # counted by kind, never lost from the row
                answer = type(exc).__name__
            with lock:
                answers[answer] += 1

        threads = [threading.Thread(target=post) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - t0
        return base / 1024, (kib(proc.pid, "VmHWM:") - base) / 1024, dict(answers), took
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--budget-bytes", type=int, default=Settings.model_fields["max_inflight_body_bytes"].default,
                        help="max_inflight_body_bytes (default: the service's)")
    args = parser.parse_args()
    print(f"# Peak RSS with concurrent 8 MiB bodies ({describe()})\n")
    print("| clients | max_inflight_body_bytes | ready RSS MB | peak rise MB | answers | seconds |")
    print("|---:|---|---:|---:|---|---:|")
    for clients in args.clients:
        for budget in (args.budget_bytes, UNBOUNDED):
            base, rise, answers, took = measure(budget, clients)
            label = "unbounded (64 GiB)" if budget == UNBOUNDED else str(budget)
            print(f"| {clients} | {label} | {base:.0f} | {rise:.0f} | {answers} | {took:.1f} |", flush=True)


if __name__ == "__main__":
    main()
