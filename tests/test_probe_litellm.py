"""Probes that travel through LiteLLM, as they would through a LiteLLM gateway.

LiteLLM's proxy server needs the ``litellm[proxy]`` extras, which are not installable here
(offline index), so the gateway is a small HTTP app around LiteLLM's real ``Router``: the probe
asks the gateway for model ``canary`` over the OpenAI wire format, the Router routes that to
``openai/canary-backend`` at the fake model's address, and the fake's errors come back through
LiteLLM's exception mapping.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map
litellm = pytest.importorskip("litellm")

import uvicorn  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from monitor.probe.probe_sets import ProbeSet  # noqa: E402
from tests.fakes.canary_model import CanaryModel  # noqa: E402
from tests.fakes.openai_chat_server import FakeChatServer  # noqa: E402
from tests.helpers.probes import builtin_sets, make_prober, run_round  # noqa: E402
from tests.helpers.server import free_port  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")


def gateway(backend_url: str) -> Starlette:
    router = litellm.Router(
        model_list=[{"model_name": "canary", "litellm_params": {
            "model": "openai/canary-backend", "api_base": backend_url, "api_key": "sk-backend", "max_retries": 0}}],
        num_retries=0,
        disable_cooldowns=True,  # one deployment: a scripted 429 must not take it out of rotation
    )

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        params = {k: body[k] for k in ("temperature", "seed", "max_tokens") if k in body}
        try:
            response = await router.acompletion(model=body["model"], messages=body["messages"], **params)
        except Exception as exc:  # LiteLLM maps the backend's failure to an exception with its status
            return JSONResponse({"error": {"message": type(exc).__name__}}, status_code=getattr(exc, "status_code", 500))
        return JSONResponse(response.model_dump())

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def small_sets() -> list[ProbeSet]:
    """Twenty probes of each built-in set keep the rounds through LiteLLM short (and 6 flips of 20 detectable in a round)."""
    return [s.model_copy(update={"probes": s.probes[:20]}) for s in builtin_sets()]


def test_probes_through_a_litellm_router_gateway_alert_and_count_failures():
    sets = small_sets()
    model = CanaryModel(sets)
    registry = CollectorRegistry()
    with FakeChatServer(model) as fake:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(gateway(fake.base_url), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            prober = make_prober(f"http://127.0.0.1:{port}/v1", sets=sets, registry=registry, max_retries=0, concurrency=4)
            start = 1_800_000_000.0
            for t in range(3):
                run_round(prober, start + t * 900)
            assert {r["model"] for r in fake.requests} == {"canary-backend"}  # routed by LiteLLM
            assert fake.requests[0]["temperature"] == 0.0 and "seed" in fake.requests[0]
            model.refuse_share = 0.3
            fired = []
            for t in range(3, 6):
                fired = [c for c in run_round(prober, start + t * 900).conditions if c.active]
                if fired:
                    break
            assert t - 3 < 3 and [c.kind for c in fired] == ["probe_over_refusal"]
            assert {f["probe_id"] for f in fired[0].evidence["flipped"]} == model.flipped_ids()
            fake.fail_next(429, times=1, retry_after=1)
            fake.fail_next(500, times=1)
            failures = run_round(prober, start + 6 * 900).failures
            assert dict(failures) == {"rate_limited": 1, "server_error": 1}
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    assert registry.get_sample_value("llmsafety_probe_requests_total", {"target": "canary", "outcome": "rate_limited"}) == 1
