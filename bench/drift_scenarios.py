"""Covariate-shift detectors on real data: false alarms per 100k stationary events, detection delay, cost.

Streams are sampled (seeded, with replacement) from pools of real prompts in ``MONITOR_DATA_DIR``
(default ``../shared/data``): benign real-user chat (ToxicChat, ConvAbuse, OpenAI moderation,
HateCheck and XSTest prompts labelled safe), benign instructions (self-instruct/Alpaca seeds, T0
templates, Alpaca), and unsafe prompts of one harm category each (labels mapped to the taxonomy by
``monitor.taxonomy.mapping``). Every event carries its pool's real MiniLM embedding and a verdict
equal to its label (a perfect judge, so the benchmark measures the detectors, not the judge), and
events are ``1 / EVENT_RATE`` seconds apart.

A scenario is a small function returning phases of (events, mix); a detector is a name and a
factory. Both are registries (``SCENARIOS``, ``DETECTORS``) the command line picks from, so adding a
signal or a situation is one function. Prints markdown tables; asserts nothing.

Embeddings are computed once and cached (``$BENCH_CACHE``, default ``/tmp/drift_bench_cache``;
about 10k texts, minutes on a busy CPU the first time)::

    .venv/bin/python bench/drift_scenarios.py                  # 5 x 120k stationary, 20 seeds per change
    .venv/bin/python bench/drift_scenarios.py --quick          # 1 x 120k stationary, 3 seeds per change
    .venv/bin/python bench/drift_scenarios.py --detectors category_share --scenarios rise_5_10 --seeds 40

River's ADWIN is the baseline for category shares. alibi-detect's online MMD is not run as a peer:
installing it would downgrade numpy (2.4 -> 1.26) and transformers (to 4.57) in the shared
environment, and its licence (BSL) keeps it out of the project anyway.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

# Small matrix products gain nothing from threads and crawl on a busy shared CPU.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.drift.adwin_baseline import AdwinShareDetector  # noqa: E402
from monitor.drift.base import Detector  # noqa: E402
from monitor.drift.embedding_mmd import EmbeddingMMDDetector  # noqa: E402
from monitor.drift.proportions import CategoryShareDetector  # noqa: E402
from monitor.events import Event, ScoredEvent  # noqa: E402
from monitor.judge.dataset import LabelMapper, Record, default_data_dir, read_records  # noqa: E402
from monitor.judge.text_embeddings import CachedEncoder, cache_file_for  # noqa: E402
from monitor.judge.verdict import SAFE, Verdict  # noqa: E402

CACHE_DIR = Path(os.environ.get("BENCH_CACHE", "/tmp/drift_bench_cache"))
EVENT_RATE = 10.0  # events per second of event time
BATCH = 64
CATEGORY_CAP = 400  # prompts per harm category pool
CHAT = "benign_chat"
INSTRUCTIONS = "benign_instructions"
CHAT_FILES = ("toxicchat-train", "convabuse", "openai-moderation", "hatecheck", "xstest-prompts")
INSTRUCTION_FILES = ("benign-instructions", "alpaca-harmless-harmful")
BENIGN_CAP = {"convabuse": 1500, "hatecheck": 600, "benign-instructions": 1500, "alpaca-harmless-harmful": 1500}


# ---------------------------------------------------------------------- pools


@dataclass(frozen=True)
class Pools:
    """Embeddings per pool: the two benign pools and one per harm category id."""

    vectors: Mapping[str, np.ndarray]

    def categories(self) -> list[str]:
        return [name for name in self.vectors if name not in (CHAT, INSTRUCTIONS)]


def _sample(items: list, cap: int | None, seed: str) -> list:
    if cap is None or len(items) <= cap:
        return items
    rng = np.random.default_rng(list(seed.encode()))
    return [items[i] for i in sorted(rng.choice(len(items), size=cap, replace=False))]


def load_pools(data_dir: Path) -> Pools:
    """Prompt texts per pool from the shared data, embedded once (cached)."""
    mapper = LabelMapper()
    texts: dict[str, list[str]] = {CHAT: [], INSTRUCTIONS: []}
    by_category: dict[str, list[str]] = {}
    seen: set[str] = set()
    for path in sorted(data_dir.glob("*.jsonl")):
        origin = path.stem
        records: list[Record] = read_records(path)
        benign = [r.prompt for r in records if r.unsafe is False and r.prompt.strip()]
        if origin in CHAT_FILES or origin in INSTRUCTION_FILES:
            pool = texts[CHAT if origin in CHAT_FILES else INSTRUCTIONS]
            for text in _sample(benign, BENIGN_CAP.get(origin), origin):
                if text not in seen:
                    seen.add(text)
                    pool.append(text)
        for r in records:
            cats = mapper.harm_categories(r)
            if cats and len(cats) == 1 and r.prompt not in seen:
                seen.add(r.prompt)
                by_category.setdefault(next(iter(cats)), []).append(r.prompt)
    for cat in sorted(by_category):
        texts[cat] = _sample(by_category[cat], CATEGORY_CAP, cat)
    embedder = None

    def encode(batch: list[str]) -> np.ndarray:
        nonlocal embedder
        if embedder is None:
            from monitor.embed.embedder import Embedder

            embedder = Embedder(device="cpu")
            print(f"embedding texts missing from {CACHE_DIR} (once) ...", flush=True)
        return embedder.encode(batch)

    encoder = CachedEncoder(encode, cache_file_for(CACHE_DIR, "bundled:all-MiniLM-L6-v2", 256))
    return Pools({name: encoder(items) for name, items in texts.items()})


# ---------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """Phases of ``(events, mix)``; a mix maps pool names to shares. ``key`` is the alert key a detection must name."""

    name: str
    description: str
    phases: tuple[tuple[int, Mapping[str, float]], ...]
    key: str | None = None  # None: any key counts as detecting the change

    @property
    def change_at(self) -> int | None:
        """Index of the first event after the change; None for a stationary scenario."""
        return self.phases[0][0] if len(self.phases) > 1 else None


RISING = "violence_aiding_and_abetting_incitement"
WARMUP = 20_000


def base_mix(pools: Pools, shares: Mapping[str, float] | None = None, background: float = 0.002) -> dict[str, float]:
    """Benign chat plus every harm category at ``background``, with ``shares`` overriding some."""
    mix = {cat: background for cat in pools.categories()}
    mix.update(shares or {})
    mix[CHAT] = 1.0 - sum(mix.values())
    return mix


def stationary(pools: Pools, events: int = 120_000) -> Scenario:
    mix = base_mix(pools, {RISING: 0.05})
    unsafe = 1.0 - mix[CHAT]
    return Scenario("stationary", f"{events:,} events, {unsafe:.1%} unsafe ({RISING} 5%, other categories 0.2% each)", ((events, mix),))


def category_rise(pools: Pools, before: float, after: float, pre: int = 30_000, post: int = 10_000) -> Scenario:
    name = f"rise_{round(before * 100)}_{round(after * 100)}"
    return Scenario(
        name,
        f"{RISING} {before:.0%} -> {after:.0%} at event {pre:,}",
        ((pre, base_mix(pools, {RISING: before})), (post, base_mix(pools, {RISING: after}))),
        key=RISING,
    )


def topic_shift(pools: Pools, share: float = 0.25, pre: int = 10_000, post: int = 10_000) -> Scenario:
    """A new integration: ``share`` of the benign traffic becomes instruction-style prompts (no category moves)."""
    before = base_mix(pools, {RISING: 0.05})
    after = dict(before)
    after[INSTRUCTIONS] = share * before[CHAT]
    after[CHAT] = (1.0 - share) * before[CHAT]
    return Scenario(f"topic_shift_{round(share * 100)}", f"{share:.0%} of benign prompts become instructions at event {pre:,}", ((pre, before), (post, after)))


SCENARIOS: dict[str, Callable[[Pools], Scenario]] = {
    "stationary": stationary,
    "rise_5_10": lambda p: category_rise(p, 0.05, 0.10),
    "rise_2_6": lambda p: category_rise(p, 0.02, 0.06),
    "topic_shift_25": topic_shift,
}

# Each factory gets the bench seed; warm-up is the number of events before the detector can alarm.
DETECTORS: dict[str, tuple[Callable[[int], Detector], int]] = {
    "category_share": (lambda seed: CategoryShareDetector(warmup_events=WARMUP), WARMUP),
    "category_share_adwin": (lambda seed: AdwinShareDetector(warmup_events=WARMUP), WARMUP),
    "embedding_drift": (lambda seed: EmbeddingMMDDetector(seed=seed), 3_000),
}


def build_stream(scenario: Scenario, pools: Pools, seed: int) -> list[ScoredEvent]:
    """Events in order: each phase draws pool names by its mix, then a prompt (with replacement) from the pool."""
    rng = np.random.default_rng(seed)
    verdicts = {
        name: Verdict("labels", SAFE, {}, 0.0, False)
        if name in (CHAT, INSTRUCTIONS)
        else Verdict("labels", name, {name: 1.0}, 1.0, True, categories=(name,))
        for name in pools.vectors
    }
    events: list[ScoredEvent] = []
    for n, mix in scenario.phases:
        names = list(mix)
        probs = np.array([mix[k] for k in names])
        picks = rng.choice(len(names), size=n, p=probs / probs.sum())
        for pick, u in zip(picks.tolist(), rng.random(n).tolist()):
            name = names[pick]
            pool = pools.vectors[name]
            i = len(events)
            events.append(ScoredEvent(Event(f"e{i}", i / EVENT_RATE, ""), 1.0, pool[int(u * len(pool))], None, verdicts[name]))
    return events


# ---------------------------------------------------------------------- running


@dataclass
class Run:
    activations: list[tuple[int, str]]  # (event index, key) each time an alert key turned active
    monitored: int  # events after the warm-up batch
    seconds: float  # CPU time of update() over those events
    warmup_batch_s: float  # CPU time of the batch that ended the warm-up (fitting and calibration)


def run_detector(detector: Detector, events: list[ScoredEvent], warmup: int) -> Run:
    state: dict[tuple[str, str], bool] = {}
    activations: list[tuple[int, str]] = []
    seconds = warm_s = 0.0
    monitored = 0
    for i in range(0, len(events), BATCH):
        batch = events[i : i + BATCH]
        t0 = time.process_time()  # CPU time: steadier than wall time on a shared machine
        conditions = detector.update(batch)
        dt = time.process_time() - t0
        if i < warmup <= i + len(batch):
            warm_s += dt
        elif i >= warmup:
            seconds += dt
            monitored += len(batch)
        for c in conditions:
            fp = (c.scope, c.key)
            if c.active and not state.get(fp, False):
                activations.append((round(c.at * EVENT_RATE), c.key))
            state[fp] = c.active
    return Run(activations, monitored, seconds, warm_s)


def _fmt(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def stationary_table(runs: dict[str, list[Run]]) -> str:
    lines = [
        "| detector | events watched | false alarms | per 100k events | CPU µs/event | warm-up batch CPU s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        watched = sum(r.monitored for r in rs)
        alarms = sum(len(r.activations) for r in rs)
        cost = statistics.median(r.seconds / r.monitored * 1e6 for r in rs)
        warm = statistics.median(r.warmup_batch_s for r in rs)
        lines.append(f"| {name} | {watched:,} | {alarms} | {alarms / watched * 1e5:.2f} | {cost:.1f} | {warm:.2f} |")
    return "\n".join(lines)


def change_table(scenario: Scenario, runs: dict[str, list[Run]]) -> str:
    change = scenario.change_at
    assert change is not None
    lines = [
        f"**{scenario.name}**: {scenario.description}",
        "",
        "| detector | detected | median delay (events) | median delay (s) | mean delay (events) | false alarms before the change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        delays = []
        early = 0
        for r in rs:
            hits = [i - change for i, key in r.activations if i >= change and (scenario.key is None or key in (scenario.key, ""))]
            early += sum(1 for i, _ in r.activations if i < change)
            if hits:
                delays.append(min(hits))
        med = statistics.median(delays) if delays else None
        mean = statistics.fmean(delays) if delays else None
        lines.append(
            f"| {name} | {len(delays)}/{len(rs)} | {_fmt(med)} | {_fmt(None if med is None else med / EVENT_RATE, 1)} | {_fmt(mean)} | {early} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated names from: " + ", ".join(DETECTORS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names from: " + ", ".join(SCENARIOS))
    parser.add_argument("--seeds", type=int, default=20, help="seeds per change scenario")
    parser.add_argument("--stationary-seeds", type=int, default=5, help="seeds (streams of 120k events) for false alarms")
    parser.add_argument("--quick", action="store_true", help="3 seeds per change, 1 stationary stream")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.stationary_seeds = 3, 1
    data_dir = default_data_dir()
    if not data_dir.is_dir():
        sys.exit(f"shared data not found at {data_dir} (set MONITOR_DATA_DIR)")
    detectors = {name: DETECTORS[name] for name in args.detectors.split(",")}
    pools = load_pools(data_dir)
    print(f"pools: {', '.join(f'{k} {len(v)}' for k, v in pools.vectors.items())}\n")
    for scenario_name in args.scenarios.split(","):
        scenario = SCENARIOS[scenario_name](pools)
        seeds = range(args.stationary_seeds if scenario.change_at is None else args.seeds)
        runs: dict[str, list[Run]] = {name: [] for name in detectors}
        for seed in seeds:
            events = build_stream(scenario, pools, seed)
            for name, (factory, warmup) in detectors.items():
                runs[name].append(run_detector(factory(seed), events, warmup))
        if scenario.change_at is None:
            print(f"**{scenario.name}**: {scenario.description}, {len(seeds)} seed(s)\n")
            print(stationary_table(runs))
        else:
            print(change_table(scenario, runs))
        print(flush=True)


if __name__ == "__main__":
    main()
