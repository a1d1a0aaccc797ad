"""/healthz latency while ingest is overloaded: 10x the worker's rate (sampling on), then with the
queue full (sampling off, 503s).

Run: ``.venv/bin/python bench/healthz_overload.py [--seconds 15] [--factor 10]``

Starts ``monitor serve`` in a subprocess (prototype judge, the bundled embedder, an ingest and a
read token), measures the worker's rate from ``/v1/status`` after a warm-up, then offers
``factor`` x that rate in batches of 50 from one asyncio client while probing ``/healthz`` every
20 ms. Prints p50/p99/max of /healthz, answers by status and the queue bound. Client and server
share the machine's cores: figures are upper bounds for a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

TOKEN = "bench-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(extra: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MONITOR_JUDGE": "prototype", "MONITOR_ADMIN_TOKENS": f"bench:{TOKEN}", **extra}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("monitor did not become ready")


async def run(url: str, rate: float, seconds: float) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=httpx.Limits(max_connections=64)) as client:

        async def probe() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                await client.get("/healthz")
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)

        async def send(i: int) -> None:
            body = [{"prompt": f"Overload bench question {i}-{j}: how do I configure a reverse proxy?"} for j in range(50)]
            resp = await client.post("/v1/events", json=body)
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 50

        async def load() -> None:
            interval, i, tasks = 50 / rate, 0, []
            next_at = time.monotonic()
            while time.monotonic() < stop:
                tasks.append(asyncio.create_task(send(i)))
                i += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)

        await asyncio.gather(probe(), load())
        status = (await client.get("/v1/status")).json()
    ms = np.array(latencies) * 1000
    return {
        "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "probes": len(ms),
        "answers": statuses, "queue_depth": status["queue_depth"], "queue_bound": status["queue_bound"],
        "dropped": status["dropped"], "sampled_out": status["sampled_out"],
    }  # fmt: skip


def measure(extra: dict[str, str], factor: float, seconds: float) -> tuple[float, dict]:
    proc, url = start(extra)
    try:
        warm = asyncio.run(run(url, rate=200, seconds=5))  # enough to measure the worker's rate
        rate = httpx.get(url + "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()["worker_events_per_second"] or 50.0
        del warm
        return rate, asyncio.run(run(url, rate=factor * rate, seconds=seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--factor", type=float, default=10.0)
    args = parser.parse_args()
    machine = describe()
    print(f"# /healthz under ingest overload ({machine})\n")
    print("| scenario | worker ev/s | offered ev/s | /healthz p50 ms | p99 ms | max ms | answers | queue depth / bound | dropped |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, extra in (
        (f"{args.factor:g}x, sampling auto", {}),
        (f"{args.factor:g}x, sampling off, queue full", {"MONITOR_SAMPLING": "off", "MONITOR_QUEUE_CAPACITY": "500"}),
    ):
        rate, r = measure(extra, args.factor, args.seconds)
        print(
            f"| {name} | {rate:.0f} | {args.factor * rate:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['answers']} | "
            f"{r['queue_depth']} / {r['queue_bound']} | {r['dropped']} |"
        )


if __name__ == "__main__":
    main()
