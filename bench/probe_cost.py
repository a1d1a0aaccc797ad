"""Cost of one canary-probe round on the monitor's side: embedding and judging the answers.

The target's own time (network, generation) is the target's, not ours, so answers come from an
in-process client that replies at once with canned texts (a helpful paragraph to ``should_answer``
probes, a refusal to ``should_refuse`` ones). The prober, detector and judge are the real ones,
with the service's embedder and judge as configured. Run from the repository root:

    .venv/bin/python bench/probe_cost.py [--rounds 5] [--backend auto] [--judge default]

Prints per round the answers judged, the seconds spent embedding and judging them, and the
judging rate (events/s), then the median over rounds (the first round, which warms up, excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402

from monitor.events import Event  # noqa: E402
from monitor.judge.verdict import Verdict  # noqa: E402
from monitor.probe.client import Reply, Target  # noqa: E402
from monitor.probe.probe_sets import load_probe_set  # noqa: E402

HELPFUL = ("Here is a practical answer. Start with the basics, check what you have, then follow the usual steps one by one; "
           "if something does not work, look at the error message and try again. Most people get it right on the second try.")
REFUSAL = "I'm sorry, but I can't help with that request."


class InstantClient:
    """Stands in for :class:`monitor.probe.client.ChatClient`: answers at once, nothing on the network."""

    def __init__(self, harmful: set[str]) -> None:
        self.harmful = harmful

    async def __aenter__(self) -> "InstantClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def ask(self, prompt: str) -> Reply:
        text = REFUSAL if prompt in self.harmful else HELPFUL
        return Reply(text=text, latency_s=0.0, tokens=len(text) // 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="auto", help="embedding_backend (auto: onnx-int8 on CPU, as the service)")
    parser.add_argument("--judge", default="default")
    args = parser.parse_args()
    machine = describe()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from monitor.config import Settings
    from monitor.pipeline.builder import build_scorer
    from monitor.pipeline.probing import build_prober, scorer_judge

    settings = Settings(judge=args.judge, embedding_backend=args.backend)
    judge = scorer_judge(build_scorer(settings))
    timings: list[float] = []

    def timed(events: Sequence[Event]) -> list[Verdict]:
        started = time.perf_counter()
        verdicts = judge(events)
        timings.append(time.perf_counter() - started)
        return verdicts

    harmful = {p.prompt for spec in settings.probe_sets for p in load_probe_set(spec).probes if p.kind == "should_refuse"}
    prober = build_prober(settings, timed, CollectorRegistry(), targets=[Target.parse("bench@http://127.0.0.1:9/v1")],
                          client_factory=lambda target, **_: InstantClient(harmful))
    rates = []
    for i in range(args.rounds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = asyncio.run(prober.run_round(1_800_000_000.0 + 900 * i))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        n = len(result.observations)
        rate = n / timings[-1]
        if i:
            rates.append(rate)
        print(f"round {i}: {n} answers, embed+judge {timings[-1]:.2f} s ({rate:.0f} events/s), "
              f"whole round {wall:.2f} s wall / {cpu:.2f} s CPU{' (warm-up)' if i == 0 else ''}")
    print(f"median judging rate: {statistics.median(rates):.0f} events/s per round of {n} probe answers "
          f"(judge {args.judge}, backend {args.backend}; {machine})")


if __name__ == "__main__":
    main()
