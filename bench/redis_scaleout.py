"""Throughput of the scale-out mode with 1, 2 and 4 worker processes vs the single process, and Redis memory per event.

Run: ``.venv/bin/python bench/redis_scaleout.py [--events 2000] [--workers 1,2,4] [--judge default]``

Every component is a real process: a private redis-server, ``monitor serve`` (single process, in
memory) or ``monitor serve --role api`` + ``--role detector`` + N × ``--role worker``. Texts are
the short ToxicChat prompts of bench/throughput.py (prompt only, so both modes embed the same
texts). Each run first sends a warm-up (it also waits until every worker has loaded its model),
then times sending all events over HTTP until the detector reports them all processed. Workers
get ``cores / workers`` torch threads each (at least 1), so together they use the machine's cores
as the single process does.

Memory: events are sent to an api replica with no worker running; the growth of Redis
``used_memory`` splits into the events stream (``MEMORY USAGE``, exact) and the dedup keys. The
scored stream's payload per event comes from the entries the detector owner still holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.machine import describe  # noqa: E402

from throughput import Service, load_texts, service_throughput  # noqa: E402

from monitor.config import Settings  # noqa: E402
from monitor.scale.streams import StreamKeys, decode_scored  # noqa: E402


class RedisProcess:
    def __init__(self, port: int) -> None:
        if shutil.which("redis-server") is None:
            sys.exit("redis-server not found (apt-get install redis-server)")
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        self.client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def spawn_worker(env: dict[str, str], threads: int) -> subprocess.Popen:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": str(threads), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "serve", "--role", "worker", "--log-level", "warning"], env=environ, cwd=ROOT
    )


def scale_out(texts: list[str], warmup: list[str], n_workers: int, r: RedisProcess, common: dict[str, str], port: int) -> tuple[float, float | None]:
    """Events/s end to end, and the scored stream's payload per event (read before the owner's final snapshot trims it)."""
    prefix = f"bench{n_workers}:"
    env = {**common, "MONITOR_REDIS_URL": r.url, "MONITOR_STATE_KEY_PREFIX": prefix}
    detector = Service(port + 1, MONITOR_ROLE="detector", **env)
    api = Service(port, MONITOR_ROLE="api", **env)
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    workers = [spawn_worker(env, threads) for _ in range(n_workers)]
    try:
        service_throughput(api, warmup, f"warm{n_workers}")
        rate = service_throughput(api, texts, f"run{n_workers}")
        return rate, scored_payload_per_event(r, prefix)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        api.close()
        detector.close()


def memory_per_event(texts: list[str], r: RedisProcess, common: dict[str, str], port: int) -> dict[str, float]:
    """Per event, over ``n`` events (the texts repeated, ids unique: ``uuid4().hex`` as gateways send)."""
    prefix, n = "benchmem:", max(20_000, len(texts))
    keys = StreamKeys(prefix)
    api = Service(port, MONITOR_ROLE="api", MONITOR_REDIS_URL=r.url, MONITOR_STATE_KEY_PREFIX=prefix, MONITOR_QUEUE_CAPACITY=str(n), **common)
    before = r.client.info("memory")["used_memory"]
    try:
        for i in range(0, n, 500):
            batch = [{"event_id": uuid.uuid4().hex, "prompt": texts[(i + j) % len(texts)]} for j in range(min(500, n - i))]
            api.client.post("/v1/events", json=batch).raise_for_status()
    finally:
        api.close()
    grown = r.client.info("memory")["used_memory"] - before
    stream = r.client.memory_usage(keys.events, samples=0) or 0
    return {"events_stream": stream / n, "dedup_keys": (grown - stream) / n}


def scored_payload_per_event(r: RedisProcess, prefix: str) -> float | None:
    entries = r.client.xrange(StreamKeys(prefix).partition(0).scored)
    events = sum(len(decode_scored(fields[b"b"]).scored) for _, fields in entries)
    return sum(len(fields[b"b"]) for _, fields in entries) / events if events else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--batch-size", type=int, default=Settings().batch_size, help="worker batch (events; default: the service's)")
    ap.add_argument("--judge", default="default")
    ap.add_argument("--port", type=int, default=8899)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    machine = describe()

    texts = load_texts(args.events + 4 * args.batch_size * 2, 0, args.seed)["short"]
    warmup, texts = texts[: 4 * args.batch_size * 2], texts[4 * args.batch_size * 2 :]
    common = {
        "MONITOR_SAMPLING": "off",
        "MONITOR_QUEUE_CAPACITY": str(len(texts) + len(warmup) + 1000),
        "MONITOR_BATCH_SIZE": str(args.batch_size),
        "MONITOR_JUDGE": args.judge,
        # The detector owner keeps what it has not snapshotted: keep all of the run to measure it.
        "MONITOR_SNAPSHOT_EVERY_EVENTS": str(10 * (len(texts) + len(warmup))),
        "MONITOR_SNAPSHOT_EVERY_SECONDS": "3600",
    }
    load_before = os.getloadavg()
    single = Service(args.port, **{k: v for k, v in common.items() if not k.startswith("MONITOR_SNAPSHOT")})
    try:
        service_throughput(single, warmup, "warm")
        results: dict[str, float] = {"single process": service_throughput(single, texts, "single")}
    finally:
        single.close()

    r = RedisProcess(args.port + 10)
    try:
        for n in [int(x) for x in args.workers.split(",")]:
            results[f"{n} worker(s)"], scored = scale_out(texts, warmup, n, r, common, args.port)
        memory = memory_per_event(texts, r, {k: v for k, v in common.items() if k not in ("MONITOR_JUDGE", "MONITOR_QUEUE_CAPACITY")}, args.port)
    finally:
        r.close()

    print(f"machine: {machine}")
    print(f"judge: {args.judge}; batch size {args.batch_size}; {len(texts)} events (short ToxicChat prompts)\n")
    print("| mode | events/s | vs single process |")
    print("|---|---|---|")
    base = results["single process"]
    for mode, rate in results.items():
        print(f"| {mode} | {rate:.0f} | {rate / base:.2f}× |")
    print()
    per_million = 1e6 * memory["dedup_keys"] / 2**20
    print(
        f"Redis memory per event: dedup key {memory['dedup_keys']:.0f} B (kept dedup_ttl_seconds), events stream "
        f"{memory['events_stream']:.0f} B (kept while unprocessed), scored stream payload "
        f"{scored or float('nan'):.0f} B (kept until the owner's next snapshot)."
    )
    print(f"per million events within the dedup TTL: {per_million:.0f} MiB of dedup keys; streams are bounded by the backlog and snapshot interval")
    print(json.dumps({"throughput": results, "memory_bytes_per_event": {**memory, "scored_payload": scored}, "load_before": load_before}))


if __name__ == "__main__":
    main()
