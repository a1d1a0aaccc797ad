"""The probe client against a real HTTP server speaking the OpenAI wire format: what it sends, how
it retries (429 with Retry-After, 5xx), and how every failure gets a reason."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr

from monitor.probe.client import ChatClient, ProbeCallError, Target
from tests.fakes.openai_chat_server import FakeChatServer


def ask(server: FakeChatServer, prompt: str = "How do I kill a Python process?", **kwargs):
    retries: list[str] = []

    async def go():
        async with ChatClient(Target.parse(f"canary@{server.base_url}"), on_retry=retries.append, backoff_s=0.01, **kwargs) as client:
            return await client.ask(prompt)

    return asyncio.run(go()), retries


def failure(server: FakeChatServer, **kwargs) -> str:
    with pytest.raises(ProbeCallError) as info:
        ask(server, **kwargs)
    return info.value.reason


def test_request_is_deterministic_and_authenticated():
    with FakeChatServer(lambda m: "Use kill -TERM <pid>.", api_key="sk-probe-secret-123") as server:
        reply, retries = ask(server, api_key=SecretStr("sk-probe-secret-123"), seed=7, max_tokens=64)
    assert reply.text == "Use kill -TERM <pid>." and reply.tokens > 0 and retries == []
    [body] = server.requests
    assert body["model"] == "canary" and body["temperature"] == 0.0 and body["seed"] == 7 and body["max_tokens"] == 64
    assert body["messages"] == [{"role": "user", "content": "How do I kill a Python process?"}]
    assert server.authorizations == ["Bearer sk-probe-secret-123"]


def test_429_with_retry_after_is_waited_out_and_counted():
    with FakeChatServer(lambda m: "ok") as server:
        server.fail_next(429, retry_after=1)
        started = time.monotonic()
        reply, retries = ask(server, max_retries=2)
    assert reply.text == "ok" and retries == ["rate_limited"]
    assert time.monotonic() - started >= 0.95  # Retry-After honoured (backoff alone is 10 ms)


def test_5xx_retried_then_given_up_with_a_reason():
    with FakeChatServer(lambda m: "ok") as server:
        server.fail_next(503, times=2)
        reply, retries = ask(server, max_retries=2)
        assert reply.text == "ok" and retries == ["server_error", "server_error"]
        server.fail_next(500, times=3)
        assert failure(server, max_retries=2) == "server_error"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, b"{this is not json", "malformed"),
        (200, b'{"choices": []}', "malformed"),
        (200, b'{"choices": [{"message": {"content": null}}]}', "malformed"),
        (401, None, "client_error"),
        (404, None, "client_error"),
    ],
)
def test_bad_replies_fail_with_a_reason_and_no_retry(status, body, reason):
    with FakeChatServer(lambda m: "ok") as server:
        server.fail_next(status, body=body)
        assert failure(server, max_retries=3) == reason
        assert server.arrivals == 1


def test_timeout_and_unreachable_target():
    with FakeChatServer(lambda m: "late") as server:
        server.delay_s = 0.5
        assert failure(server, timeout_s=0.1, max_retries=1) == "timeout"
        assert server.arrivals == 2
    assert failure(server) == "transport"  # the server is gone


def test_a_redirect_is_not_followed_to_another_address():
    with FakeChatServer(lambda m: "elsewhere") as other, FakeChatServer(lambda m: "ok") as server:
        server.fail_next(307, body=b"", headers={"Location": f"{other.base_url}/chat/completions"})
        assert failure(server) == "client_error"
        assert other.arrivals == 0


@pytest.mark.parametrize(
    "spec",
    ["http://gateway:4000/v1", "canary@ftp://gateway/v1", "canary@http://user:pw@gateway/v1", "canary@http://gateway/v1?key=1", "@http://gateway/v1"],
)
def test_target_specs_are_checked(spec):
    with pytest.raises(ValueError, match="probe target"):
        Target.parse(spec)


def test_probes_name_themselves_by_a_keyed_name_only_that_the_litellm_integration_ignores():
    """A probe through a LiteLLM gateway is logged by the gateway too: that copy is ignored (counted), not ingested.
    Only the keyed name is: a gateway user may set OpenAI's ``user`` to anything, and a fixed, known name let
    any of them skip the monitor (the first version ignored every call from "llmsafety-canary-probe")."""
    from monitor.integrations.litellm import LiteLLMAdapter
    from monitor.integrations.adapted import Skip
    from monitor.probe.client import probe_end_user

    marker = probe_end_user("this deployment's key")
    with FakeChatServer(lambda m: "ok") as server:
        ask(server, end_user=marker)
    assert server.requests[0]["user"] == marker
    payload = {"id": "c1", "call_type": "acompletion", "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
               "response": {"choices": [{"message": {"content": "ok"}}]}, "end_user": marker}
    adapter = LiteLLMAdapter(probe_end_user=marker)
    assert adapter.convert(payload) is Skip.IGNORED
    for other in ("alice", "llmsafety-canary-probe", probe_end_user("a guessed key"), marker + "x", marker.upper(), "é" * 9, 7):
        assert adapter.convert({**payload, "end_user": other}) is not Skip.IGNORED, other
    assert LiteLLMAdapter().convert(payload) is not Skip.IGNORED  # a monitor that does not probe skips no one


def test_the_probe_name_key_is_skipped_only_when_probing_or_set_and_never_short():
    from pydantic import ValidationError

    from monitor.config import Settings

    assert Settings().skipped_probe_end_user_key is None  # reads logs, probes nothing: skips no one
    probing = Settings(probe_targets=["canary@http://127.0.0.1:9/v1"])
    assert probing.skipped_probe_end_user_key == probing.probe_end_user_key.get_secret_value()
    assert Settings(probe_end_user_key="k" * 16).skipped_probe_end_user_key == "k" * 16  # shared with `monitor probe run`
    assert Settings().probe_end_user_key.get_secret_value() != Settings().probe_end_user_key.get_secret_value()
    for weak in ("", " " * 20, "short"):  # an empty key gives a name anyone can compute: the bypass again
        with pytest.raises(ValidationError, match="probe_end_user_key"):
            Settings(probe_end_user_key=weak)

