"""Soak: a million events through the running service, memory sampled throughout, every event counted.

Why: the service must run for weeks beside a gateway. Its state is bounded by design (queue in
events and bytes, dedup memory, detector windows, cluster and exemplar caps, alert history); this
checks that the bounds hold in bytes over a long run: resident memory should be flat (within 10%)
once the first 100k events have filled the windows, and the counts must add up.

The model is replaced by a **stand-in embedder** (named ``stand-in-hash`` in the output): a text's
vector is a seeded hash of its words, so a million events run in minutes on two cores and every
other part is the real one (HTTP API, parsing, dedup, sampling, queue, worker, the prototype judge,
every default detector, alert engine, report reservoir, metrics). Texts are real prompts and
replies from ``../shared/data``, cycled, each event with a fresh id and an increasing timestamp.
The server runs in this process (uvicorn in a thread) so one RSS covers it; the client side holds
no more than one request at a time.

Run: ``.venv/bin/python bench/soak.py [--events 1000000] [--per-request 500]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.machine import describe  # noqa: E402
from monitor.api.app import create_app  # noqa: E402
from monitor.api.connections import guarded_http  # noqa: E402
from monitor.config import Settings  # noqa: E402
from monitor.embed.embedder import EmbedderInfo  # noqa: E402
from monitor.judge.dataset import default_data_dir, read_records  # noqa: E402
from monitor.pipeline.builder import build_service  # noqa: E402

DIM = 384


class StandInEmbedder:
    """Unit vectors from hashed words: similar texts share words, so clusters and drift still mean
    something. Each word picks one row of a fixed random table (the hashing trick), so the stand-in's
    own memory is fixed at start and the RSS curve is the service's."""

    info = EmbedderInfo("stand-in-hash", DIM, "cpu", 256, backend="none")
    ROWS = 1 << 15

    def __init__(self) -> None:
        self._table = np.random.default_rng(0).standard_normal((self.ROWS, DIM)).astype(np.float32)

    def _row(self, word: str) -> int:
        return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little") % self.ROWS

    def encode(self, texts, batch_size=None) -> np.ndarray:
        out = np.zeros((len(texts), DIM), np.float32)
        for i, text in enumerate(texts):
            rows = [self._row(w) for w in text.lower().split()[:64]]
            if rows:
                out[i] = self._table[rows].sum(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def texts() -> list[tuple[str, str | None]]:
    pairs = []
    for path in sorted(default_data_dir().glob("*.jsonl")):
        pairs += [(r.prompt, r.response) for r in read_records(path)[:2000] if r.prompt.strip()]
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--per-request", type=int, default=500)
    ap.add_argument("--sample-every", type=int, default=50_000)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--sampling", choices=["off", "auto"], default="off",
                    help="off (default): every event is judged, the client waiting on 503s, so every judged-event "
                    "window fills; auto: the service sheds the overload by sampling (most events never reach the windows)")
    args = ap.parse_args()
    machine = describe()

    settings = Settings(port=args.port, judge="prototype", auth="off", sampling=args.sampling,
                        max_events_per_request=max(5000, args.per_request))
    app = create_app(settings, service_factory=lambda s: build_service(s, embedder=StandInEmbedder()))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning",
                                           **guarded_http(app.state.connection_guard)))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{args.port}"
    client = httpx.Client(base_url=base, timeout=60)
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)

    pool = texts()
    proc = psutil.Process()
    rss: list[tuple[int, float]] = [(0, proc.memory_info().rss / 2**20)]
    # Event times end about now (the service rejects stamps too far in the future), 10 ms apart.
    sent, codes, started, t0 = 0, {}, time.time() - args.events * 0.01, time.perf_counter()
    while sent < args.events:
        n = min(args.per_request, args.events - sent)
        batch = []
        for i in range(sent, sent + n):
            prompt, response = pool[i % len(pool)]
            event = {"event_id": f"soak-{i}", "timestamp": started + i * 0.01, "prompt": prompt}
            if response:
                event["response"] = response
            batch.append(event)
        while True:
            reply = client.post("/v1/events", json=batch)
            codes[reply.status_code] = codes.get(reply.status_code, 0) + 1
            if reply.status_code != 503:
                break
            time.sleep(min(0.2, float(reply.headers.get("Retry-After", "1"))))  # sooner than asked: keep the queue full
        sent += n
        if sent % args.sample_every == 0 or sent == args.events:
            rss.append((sent, proc.memory_info().rss / 2**20))
            print(f"{sent:>9,} events sent, RSS {rss[-1][1]:,.0f} MB, {time.perf_counter() - t0:,.0f} s", flush=True)
    while True:  # let the worker finish what is queued
        status = client.get("/v1/status").json()
        if status["queue_depth"] == 0 and status["processed"] >= status["accepted"]:
            break
        time.sleep(1)
    wall = time.perf_counter() - t0
    rss.append((sent, proc.memory_info().rss / 2**20))
    server.should_exit = True

    settled = min(100_000, args.events // 10)  # the first 100k events fill the windows (a tenth of a short run)
    after = [mb for n, mb in rss if n >= settled]
    spread = (max(after) - min(after)) / min(after)
    refused = sum(status["dropped"].get(reason, 0) for reason in ("queue_full", "store_unavailable"))  # never accepted
    dropped = sum(status["dropped"].values()) - refused  # accepted, then not judged (overload, poison, shutdown)
    outcomes = status["accepted"] + status["duplicates"] + status["rejected"] + refused
    print(f"\nembedder: stand-in-hash (not the model); judge {status.get('judge_version')}; sampling {args.sampling}; {sent:,} events in "
          f"{args.events // args.per_request:,} requests of {args.per_request}; wall {wall:,.0f} s; HTTP codes {codes}; {machine}")
    print("RSS (MB) by events sent: " + ", ".join(f"{n // 1000}k {mb:,.0f}" for n, mb in rss))
    print(f"RSS after the first {settled:,} events: min {min(after):,.0f} MB, max {max(after):,.0f} MB, spread {spread:.1%} (target <= 10%)")
    print(f"counts: received {status['received']:,}, accepted {status['accepted']:,}, duplicates {status['duplicates']:,}, "
          f"rejected {status['rejected']:,}, judged {status['judged']:,}, sampled out {status['sampled_out']:,}, "
          f"dropped {status['dropped']}, processed {status['processed']:,}")
    print(f"every event counted: received == accepted + duplicates + rejected + refused: {status['received'] == outcomes}; "
          f"accepted == processed: {status['accepted'] == status['processed']}; judged + sampled out + dropped == processed: "
          f"{status['judged'] + status['sampled_out'] + dropped == status['processed']}")


if __name__ == "__main__":
    main()
