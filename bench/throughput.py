"""Bare embedder throughput vs end-to-end service throughput per embedding backend, ingest latency,
and how far int8 embeddings move from fp32.

Run: ``.venv/bin/python bench/throughput.py [--backend torch --backend onnx-int8] [--short 2000] [--long 300]
[--rate 1000] [--seconds 10] [--cosine 2000] [--repeat 3] [--device auto] [--unseen] [--warmup 3000]``; ``--quick`` checks the script in a minute (tiny n,
figures meaningless). Benchmark on a quiet machine: the worker runs at nice 10 and loses to any
other CPU-heavy process.

Texts come from ../shared/data (MONITOR_DATA_DIR): "short" are real user prompts from ToxicChat
(median ≈ 12 words), "long" are prompts of 120–250 words from any file; when more are asked for
than the files hold, the list repeats (nothing caches embeddings, so a repeated text costs the same).
``--device`` (default ``auto``, as the service: a GPU when torch sees one) places the bare embedder
and the service alike; on a GPU each row also gives the GPU memory: the bare embedder's peak
allocation, and what ``nvidia-smi`` shows the service process holding after its runs (PyTorch keeps
its peak in its cache). For each backend: the
bare backend (monitor's Embedder over all texts in one call: token-planned passes with a global
view, a ceiling) and the service end to end (``monitor serve`` as a separate process with
``MONITOR_EMBEDDING_BACKEND``, defaults except sampling=off so every event is embedded, and a
queue large enough for the whole run; events carry a prompt only, so service and embedder embed
the same texts), with the service's peak RSS. With ``--repeat N`` the bare and the service runs
alternate N times and the tables give medians (the ratio is the median of the N paired ratios, with
its range): on a shared VM one run of either can be 20% off its neighbour, and alternating pairs
keep a slow minute from landing on one side only. ``--warmup N`` sends N short prompts to each service
before its first measured run (not counted): the embedding-drift detector fits its reference once per
scope, at its 3,000th event by default (``embedding_reference_events``), and the fit stalls the worker;
without a warm-up that one-off lands inside whichever measured run crosses it (the category-share and
emerging-cluster detectors' references come at 20,000 events, past most runs of this bench). The bench keeps its own embedder loaded (idle)
while the service runs; the sentence-transformers reference runs once, before the pairs. For torch also sentence-transformers' own
``encode`` (today's reference figure). ONNX models are exported into the model cache first
(``--model-cache-dir``), so no service start pays for an export. The cosine rows compare int8 with
fp32 (ONNX) embeddings of ``--cosine`` prompts and responses drawn from every file of the shared
data. Prints markdown tables and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe, gpu_memory_mb  # noqa: E402

from monitor.config import Settings  # noqa: E402
from monitor.embed.backends import resolve_device  # noqa: E402
from monitor.judge.dataset import default_data_dir, read_records  # noqa: E402
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge  # noqa: E402
from monitor.judge.training import TrainConfig  # noqa: E402


def load_texts(n_short: int, n_long: int, seed: int, unseen: bool = False) -> dict[str, list[str]]:
    """``unseen``: only prompts of the shipped judge's validation and test rows. A judge is surer of the
    prompts it trained on, and the hybrid's skip line (``judge_prompt_skip_below``, on by default) skips more
    of them, so only unseen prompts measure what live traffic would get."""
    data = default_data_dir()
    if not data.is_dir():
        sys.exit(f"datasets not found at {data}: set MONITOR_DATA_DIR")
    rng = random.Random(seed)
    keep = _unseen_by_the_judge() if unseen else (lambda r: True)
    short = [r.prompt for r in read_records(data / "toxicchat-train.jsonl") if r.prompt.strip() and keep(r)]
    long = [r.prompt for f in sorted(data.glob("*.jsonl")) for r in read_records(f)
            if 120 <= len(r.prompt.split()) <= 250 and keep(r)]
    rng.shuffle(short)
    rng.shuffle(long)
    return {"short": _repeat_to(short, n_short), "long": _repeat_to(long, n_long)}


def _unseen_by_the_judge():
    """Whether a record is in the shipped judges' validation or test split (the heads and the encoder share one)."""
    config = TrainConfig.of_artifact(HeadsJudge.load(DEFAULT_ARTIFACT).manifest)
    return lambda record: config.split(record) != "train"


def _repeat_to(texts: list[str], n: int) -> list[str]:
    """The first ``n`` of ``texts``, cycling through them again when there are fewer.

    >>> _repeat_to(["a", "b"], 5), _repeat_to(["a", "b", "c"], 2), _repeat_to([], 3)
    (['a', 'b', 'a', 'b', 'a'], ['a', 'b'], [])
    """
    return [texts[i % len(texts)] for i in range(n)] if texts else []


def bare_embedder(texts: list[str], batch_sizes: tuple[int, ...], device: str) -> float:
    """sentence-transformers' own ``encode`` over all texts in one call (it sorts them by length
    globally, which a service seeing one worker batch at a time cannot), at the best of several pass
    sizes: the torch figure the issue's targets are relative to."""
    from sentence_transformers import SentenceTransformer

    from monitor.embed.embedder import resolve_model_path

    model = SentenceTransformer(resolve_model_path("bundled:all-MiniLM-L6-v2"), device=device)
    model.max_seq_length = 256
    model.encode(texts[:64], batch_size=8)  # warm-up
    rates = []
    for batch_size in batch_sizes:
        start = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        rates.append(len(texts) / (time.perf_counter() - start))
    return max(rates)


def make_embedder(backend: str, cache_dir: Path | None, device: str = "cpu"):
    """The embedder the service builds from the same settings (``MONITOR_*`` in the environment,
    e.g. ``MONITOR_EMBEDDING_BATCH_SIZE``, reach both), on ``backend`` and ``device``."""
    from monitor.pipeline.builder import build_embedder

    overrides: dict = {"embedding_backend": backend, "embedding_device": device}
    if cache_dir is not None:
        overrides["model_cache_dir"] = cache_dir
    return build_embedder(Settings(**overrides))


def planned_embedder(embedder, texts: list[str]) -> float:
    """Our Embedder over all texts in one call: its token-planned passes with a global view (a ceiling)."""
    embedder.encode(texts[:64 if embedder.info.device == "cpu" else 1024])  # warm-up (a GPU's kernel and allocator caches want more)
    start = time.perf_counter()
    embedder.encode(texts)
    return len(texts) / (time.perf_counter() - start)


def cosine_texts(n: int, seed: int) -> list[str]:
    """Prompts and responses drawn evenly from every file of the shared data."""
    rng = random.Random(seed)
    files = sorted(default_data_dir().glob("*.jsonl"))
    per_file = max(1, n // max(1, len(files)))
    out: list[str] = []
    for f in files:
        texts = [t for r in read_records(f) for t in (r.prompt, r.response) if t and t.strip()]
        rng.shuffle(texts)
        out += texts[:per_file]
    return out[:n]


def int8_vs_fp32(texts: list[str], cache_dir: Path | None) -> dict[str, float]:
    vectors = {kind: make_embedder(kind, cache_dir).encode(texts) for kind in ("onnx-fp32", "onnx-int8")}
    cos = (vectors["onnx-fp32"] * vectors["onnx-int8"]).sum(axis=1)
    return {"n": len(texts), "median": float(np.median(cos)), "p5": float(np.percentile(cos, 5)), "min": float(cos.min())}


class Service:
    """``monitor serve`` in its own process, so the client's CPU is not the server's."""

    def __init__(self, port: int, **env: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        environ = {**os.environ, "MONITOR_PORT": str(port), "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "serve", "--log-level", "warning"], env=environ, cwd=ROOT
        )
        self.client = httpx.Client(base_url=self.url, timeout=60.0)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.proc.returncode} before it was ready")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("service did not become ready")

    def status(self) -> dict:
        return self.client.get("/v1/status").json()

    def wait_processed(self, accepted: int, base: int, started: float) -> None:
        """Return once ``processed`` reaches ``accepted``. Polls every 0.25 s (faster steals CPU from
        the service on a small machine) until the end is near, then every 10 ms: a fixed 0.25 s
        poll adds 0.125 s on average to a run of a few seconds (~2.5% of 5 s, up to 5%)."""
        while (processed := self.status()["processed"]) < accepted:
            rate = (processed - base) / max(time.perf_counter() - started, 1e-3)
            eta = (accepted - processed) / rate if rate > 0 else 1.0
            time.sleep(min(0.25, max(0.01, eta / 2)))

    def gpu_memory_mb(self) -> float:
        return gpu_memory_mb(self.proc.pid)

    def stages(self) -> dict[str, float]:
        """Per worker batch, the median ms of each stage and of the whole batch: where the time goes."""
        latency = self.status()["latency"]
        return {stage: latency[stage]["p50_ms"] for stage in ("embed", "judge", "detect", "batch")}

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        """SIGTERM (the service drains its queue for up to 30 s), then SIGKILL if it is still draining."""
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def service_throughput(service: Service, texts: list[str], tag: str, responses: list[str] | None = None) -> float:
    """Events/s from the first post until the service has processed every event (prompts, and replies
    when ``responses`` is given)."""
    events = [{"event_id": f"{tag}-{i}", "prompt": t} for i, t in enumerate(texts)]
    for event, response in zip(events, responses, strict=True) if responses is not None else ():
        event["response"] = response
    base = service.status()["accepted"]
    start = time.perf_counter()
    for i in range(0, len(events), 500):
        resp = service.client.post("/v1/events", json=events[i : i + 500])
        resp.raise_for_status()
    service.wait_processed(base + len(events), base, start)
    return len(events) / (time.perf_counter() - start)


def ingest_latency(service: Service, texts: list[str], rate: float, seconds: float, per_request: int) -> dict[str, float]:
    """Offer ``rate`` events/s as requests of ``per_request`` events on a fixed schedule; client-side latency."""
    interval = per_request / rate
    latencies = []
    codes: dict[int, int] = {}
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + i * interval
        if now < due:
            time.sleep(due - now)
        batch = [{"prompt": texts[(i * per_request + j) % len(texts)]} for j in range(per_request)]
        t0 = time.perf_counter()
        resp = service.client.post("/v1/events", json=batch)
        latencies.append(time.perf_counter() - t0)
        codes[resp.status_code] = codes.get(resp.status_code, 0) + 1
        i += 1
    achieved = i * per_request / (time.perf_counter() - start)
    arr = np.array(latencies) * 1000
    return {"offered": rate, "achieved": achieved, "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)), "codes": codes}


def _bare_gpu_peak_mb(device: str) -> float:
    """The bench's own embedder's peak GPU allocation since the last call (NaN on a CPU)."""
    if not device.startswith("cuda"):
        return float("nan")
    import torch

    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def _mb(value: float) -> str:
    return "–" if value != value else f"{value:,.0f}"


def _ratio(value: float, reference: float) -> str:
    """``value / reference`` as ``1.23x``, or a dash when no torch reference ran."""
    return "–" if reference != reference else f"{value / reference:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", action="append", choices=["torch", "onnx-int8", "onnx-fp32"], help="repeatable (default: torch and onnx-int8)")
    ap.add_argument("--short", type=int, default=2000)
    ap.add_argument("--long", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=Settings().batch_size, help="worker batch (events; default: the service's)")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--per-request", type=int, default=10)
    ap.add_argument("--cosine", type=int, default=2000, help="texts for the int8-vs-fp32 cosine (0: skip)")
    ap.add_argument("--model-cache-dir", type=Path, default=None, help="exported models (default: the service's model_cache_dir)")
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu, cuda, cuda:1: the bare embedder's and the service's")
    ap.add_argument("--judge", default="default")
    ap.add_argument("--repeat", type=lambda v: max(1, int(v)), default=1, help="alternate bare and service runs N times (at least 1); report medians")
    ap.add_argument("--unseen", action="store_true", help="only prompts the shipped judge never trained on (its validation "
                    "and test rows): what a skip line saves on live traffic")
    ap.add_argument("--warmup", type=lambda v: max(0, int(v)), default=0, help="short prompts sent to each service before its measured "
                    "runs, not counted (e.g. 3000: past the embedding-drift detector's one-off reference fit)")
    ap.add_argument("--quick", action="store_true", help="tiny n to check the script runs (figures meaningless)")
    args = ap.parse_args()
    machine = describe()
    backends = args.backend or ["torch", "onnx-int8"]
    if args.quick:
        args.short, args.long, args.seconds, args.rate, args.cosine = 64, 16, 2.0, 100.0, min(args.cosine, 64)
    cache_env = {"MONITOR_MODEL_CACHE_DIR": str(args.model_cache_dir)} if args.model_cache_dir else {}

    device = resolve_device(args.device)
    texts = load_texts(args.short, args.long, args.seed, args.unseen)
    warmup = _repeat_to(texts["short"], args.warmup)  # none when there are no short prompts
    sizes = (16, 64) if args.quick else (8, 16, 32, 64) if device == "cpu" else (64, 256, 1024)
    stock = {kind: bare_embedder(t, sizes, device) for kind, t in texts.items()} if "torch" in backends else {}
    bare: dict[str, dict[str, float]] = {}
    e2e: dict[str, dict[str, float]] = {}
    ratios: dict[str, dict[str, list[float]]] = {}
    rss: dict[str, float] = {}
    gpu: dict[str, dict[str, float]] = {}
    stages: dict[str, dict[str, float]] = {}
    pass_sizes: dict[str, int] = {}
    _bare_gpu_peak_mb(device)  # resets the peak: sentence-transformers' reference ran on the same GPU
    for backend in backends:
        embedder = make_embedder(backend, args.model_cache_dir, device)  # exports an ONNX model now if the cache lacks it
        pass_sizes[backend] = embedder.pass_size
        service = Service(
            args.port,
            MONITOR_SAMPLING="off",
            MONITOR_QUEUE_CAPACITY=str(max(args.short + args.long, args.warmup) + 1000),
            MONITOR_BATCH_SIZE=str(args.batch_size),
            MONITOR_JUDGE=args.judge,
            MONITOR_EMBEDDING_BACKEND=backend,
            MONITOR_EMBEDDING_DEVICE=device,
            **cache_env,
        )
        runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in texts}
        try:
            if warmup:
                service_throughput(service, warmup, f"{backend}-warmup")
            for r in range(args.repeat):
                for kind, t in texts.items():
                    runs[kind].append((planned_embedder(embedder, t), service_throughput(service, t, f"{backend}-{kind}-{r}")))
                    # Progress, so a run stopped early still leaves its figures.
                    print(f"# {backend}, {kind}, run {r + 1}: bare {runs[kind][-1][0]:.0f} texts/s, service "
                          f"{runs[kind][-1][1]:.0f} events/s; stage medians {service.stages()}", flush=True)
            rss[backend] = service.peak_rss_mb()
            gpu[backend] = {"bare_peak_mb": _bare_gpu_peak_mb(device), "service_mb": service.gpu_memory_mb()}
            stages[backend] = service.stages()
        finally:
            service.close()
        del embedder
        bare[backend] = {kind: float(np.median([b for b, _ in pairs])) for kind, pairs in runs.items()}
        e2e[backend] = {kind: float(np.median([e for _, e in pairs])) for kind, pairs in runs.items()}
        ratios[backend] = {kind: sorted(e / b for b, e in pairs) for kind, pairs in runs.items()}

    # Latency at a fixed offered rate, on the default configuration (sampling on, backend auto).
    service = Service(args.port, MONITOR_JUDGE=args.judge, MONITOR_EMBEDDING_DEVICE=device, **cache_env)
    try:
        latency = ingest_latency(service, texts["short"], args.rate, args.seconds, args.per_request)
        time.sleep(1)
        status = service.status()
        server_ingest = status["latency"]["ingest"]
        print(f"# ingest: {latency}", flush=True)
    finally:
        service.close()
    cosine = int8_vs_fp32(cosine_texts(args.cosine, args.seed), args.model_cache_dir) if args.cosine else None

    print(f"machine: {machine}"
          + (" -- QUICK RUN: figures meaningless" if args.quick else ""))
    print(
        f"device: {device}; judge: {args.judge}{'; prompts the judge never trained on' if args.unseen else ''}; worker batch {args.batch_size} events; bare backend: monitor's Embedder over all texts at once; "
        "sentence-transformers: its encode over all texts at once, best of several pass sizes (the torch reference); "
        f"{args.repeat} alternating bare/service run(s) per backend, medians"
        f"{f'; {len(warmup)} warm-up events per service first, not counted' if warmup else ''}\n"
    )
    print("| backend | texts | n | bare backend (texts/s) | service end-to-end (events/s) | service / own bare (range) "
          "| service / torch reference | service / torch service | service peak RSS (MB) | GPU memory, bare peak / service (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    reference = {kind: stock.get(kind) or (e2e["torch"][kind] if "torch" in e2e else float("nan")) for kind in texts}
    for kind in texts:
        if stock:
            print(f"| sentence-transformers (torch) | {kind} | {len(texts[kind])} | {stock[kind]:.0f} | – | – | – | – | – | – |")
        for backend in backends:
            b, e, r = bare[backend][kind], e2e[backend][kind], ratios[backend][kind]
            spread = f" ({r[0]:.0%}–{r[-1]:.0%})" if len(r) > 1 else ""
            torch_service = e2e["torch"][kind] if "torch" in e2e else float("nan")
            print(f"| {backend} | {kind} | {len(texts[kind])} | {b:.0f} | {e:.0f} | {float(np.median(r)):.0%}{spread} "
                  f"| {_ratio(e, reference[kind])} | {_ratio(e, torch_service)} | {rss[backend]:.0f} "
                  f"| {_mb(gpu[backend]['bare_peak_mb'])} / {_mb(gpu[backend]['service_mb'])} |")
    print()
    for backend in backends:
        print(f"{backend}: passes of at most {pass_sizes[backend]} texts; service stage medians per worker batch, over all its batches (ms): "
              + ", ".join(f"{stage} {ms:.1f}" for stage, ms in stages[backend].items()))
    if cosine:
        print(f"int8 vs fp32 cosine over {cosine['n']} shared-data prompts and responses: median {cosine['median']:.4f}, "
              f"5th percentile {cosine['p5']:.4f}, min {cosine['min']:.4f}")
    print(
        f"ingest at {latency['offered']:.0f} events/s offered ({args.per_request} events/request, {args.seconds:.0f} s): "
        f"achieved {latency['achieved']:.0f} events/s; client-side p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms; "
        f"server-side handler p50 {server_ingest['p50_ms']:.2f} ms, p99 {server_ingest['p99_ms']:.2f} ms; "
        f"status codes {latency['codes']}; sampling rate at end {status['sampling_rate']:.2f}; "
        f"sampled out {status['sampled_out']} of {status['accepted']}; backend {status.get('embedding_backend')}"
    )
    print(json.dumps({"stock_torch": stock, "bare": bare, "service": e2e, "service_over_bare": ratios, "peak_rss_mb": rss, "gpu_memory_mb": gpu, "stages_ms": stages, "device": device, "cosine_int8_fp32": cosine,
                      "latency": latency, "server_ingest": server_ingest, "warmup": len(warmup), "quick": args.quick}))


if __name__ == "__main__":
    main()
