"""What the integrations cost the gateway and the monitor.

Run: ``.venv/bin/python bench/integrations.py [--n 20000]``

- gateway side: ``MonitorClient.send`` and the LiteLLM ``MonitorLogger`` hook per call, while the
  monitor accepts connections but never answers (the worst case: the sender is stuck, the buffer
  fills, calls are dropped); p50/p99 in microseconds.
- monitor side: LiteLLM payloads and OTLP spans mapped to events per second (parse + map, no HTTP).

Prints a markdown table. No model is loaded, nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench.machine import describe  # noqa: E402
from monitor.client import MonitorClient  # noqa: E402
from monitor.integrations.litellm import LiteLLMAdapter  # noqa: E402
from monitor.integrations.otel import OtelAdapter, parse_request  # noqa: E402

PROMPT = "How do I rotate the credentials of a service account without downtime? " * 3
REPLY = "Create the new key first, roll it out to every consumer, then revoke the old one. " * 4


def payload(i: int) -> dict:
    return {
        "id": f"chatcmpl-{i}", "litellm_call_id": f"call-{i}", "call_type": "acompletion", "status": "success",
        "model": "gpt-4o", "model_group": "chat", "startTime": 1767225600.0 + i, "endTime": 1767225601.0 + i,
        "prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100,
        "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": f"{PROMPT} #{i}"}],
        "response": {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}]},
        "metadata": {"user_api_key_team_alias": "support", "user_api_key_alias": "prod", "usage_object": {"total_tokens": 100}},
    }  # fmt: skip


def otlp_body(n: int) -> bytes:
    spans = [
        {
            "traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "chat gpt-4o",
            "startTimeUnixNano": str(1767225600 * 10**9 + i), "endTimeUnixNano": str(1767225601 * 10**9 + i),
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps([{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}])}},
                {"key": "gen_ai.output.messages", "value": {"stringValue": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": REPLY}]}])}},
            ],
        }
        for i in range(n)
    ]  # fmt: skip
    request = parse_request(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode(), "application/json")
    return request.SerializeToString()


def percentiles_us(samples: list[float]) -> str:
    p50, p99 = np.percentile(np.array(samples) * 1e6, [50, 99])
    return f"{p50:.1f} / {p99:.1f}"


def time_calls(call, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    machine = describe()
    n = args.n
    rows = []
    with socket.socket() as blackhole:  # accepts connections, never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(1024)
        url = f"http://127.0.0.1:{blackhole.getsockname()[1]}"

        client = MonitorClient(url, max_buffer=n // 2, timeout=60)
        samples = time_calls(lambda i: client.send(payload(i)), n)
        stats = client.close(timeout=0)
        rows.append(("MonitorClient.send, monitor stuck", percentiles_us(samples), f"dropped {stats.dropped} of {n}"))

        from monitor.integrations.litellm_logger import MonitorLogger

        logger = MonitorLogger(url, max_buffer=n // 2, timeout=60)

        async def hooks() -> list[float]:  # as LiteLLM awaits the hook inside the gateway's event loop
            out = []
            for i in range(n):
                kwargs = {"standard_logging_object": payload(i)}
                t0 = time.perf_counter()
                await logger.async_log_success_event(kwargs, None, None, None)
                out.append(time.perf_counter() - t0)
            return out

        samples = asyncio.run(hooks())
        stats = logger.close(timeout=0)
        rows.append(("MonitorLogger async hook (slim + dedup + send), monitor stuck", percentiles_us(samples), f"dropped {stats['dropped']} of {n}"))

    payloads = [payload(i) for i in range(n)]
    adapter = LiteLLMAdapter()
    t0 = time.perf_counter()
    adapted = adapter.adapt(enumerate(payloads))
    rate = len(adapted.events) / (time.perf_counter() - t0)
    rows.append(("LiteLLM payload → EventIn", "", f"{rate:,.0f} events/s"))

    body = otlp_body(n)
    t0 = time.perf_counter()
    adapted = OtelAdapter().adapt(parse_request(body, "application/x-protobuf"))
    rate = len(adapted.events) / (time.perf_counter() - t0)
    rows.append(("OTLP protobuf span → EventIn", "", f"{rate:,.0f} events/s"))

    print(f"{machine}, n={n}\n")
    print("| measure | p50 / p99 µs per call | result |\n|---|---|---|")
    for name, lat, result in rows:
        print(f"| {name} | {lat} | {result} |")


if __name__ == "__main__":
    main()
