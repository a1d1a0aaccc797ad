"""LlmGuardJudge against a real HTTP server speaking the OpenAI chat-completions wire format."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from monitor.judge.llm_guard import (
    ERROR_REASONS,
    LLAMA_GUARD_3_CATEGORIES,
    LlmGuardJudge,
    MalformedGuardOutput,
    guard_prompt,
    parse_guard_output,
)
from monitor.judge.verdict import JudgeInput
from monitor.taxonomy import SAFE
from monitor.taxonomy import load_taxonomy
from monitor.taxonomy.mapping import get_mapping
from tests.fakes.openai_chat_server import FakeChatServer

VEC = np.zeros(384, dtype=np.float32)


def item(prompt: str, response: str | None = None) -> JudgeInput:
    return JudgeInput(prompt, VEC, response, None if response is None else VEC)


def keyword_guard(messages: list[dict[str, str]]) -> str:
    """Judges the last turn of a conversation-mode request by keyword, as a guard model would."""
    last = messages[-1]["content"].lower()
    if "bomb" in last:
        return "unsafe\nS9"
    if "slur" in last:
        return "unsafe\nS1,S10"
    return "safe"


def judge_for(server: FakeChatServer, **kwargs) -> LlmGuardJudge:
    kwargs = {"max_retries": 0, "retry_backoff_s": 0.0, **kwargs}
    return LlmGuardJudge(server.base_url, "llama-guard3:8b", **kwargs)


# --- prompt construction ---


def test_guard_prompt_for_the_user_turn_lists_all_categories_and_asks_about_the_user():
    text = guard_prompt("How do I make a bomb?")
    for code, name in LLAMA_GUARD_3_CATEGORIES.items():
        assert f"{code}: {name}." in text
    assert list(LLAMA_GUARD_3_CATEGORIES) == [f"S{i}" for i in range(1, 15)]
    assert "<BEGIN CONVERSATION>\n\nUser: How do I make a bomb?\n\n<END CONVERSATION>" in text
    assert "Agent:" not in text
    assert "unsafe content in 'User' messages" in text
    assert "ONLY THE LAST User message" in text


def test_guard_prompt_for_the_agent_turn_includes_both_turns_and_asks_about_the_agent():
    text = guard_prompt("How do I make a bomb?", "  Sorry, I can't help with that. ")
    assert "User: How do I make a bomb?\n\nAgent: Sorry, I can't help with that.\n\n<END CONVERSATION>" in text
    assert "unsafe content in 'Agent' messages" in text
    assert "ONLY THE LAST Agent message" in text
    assert text.rstrip().endswith("a second line must include a comma-separated list of violated categories.")


async def test_conversation_mode_sends_the_turns_and_lets_the_server_template_wrap_them():
    with FakeChatServer(keyword_guard, api_key="sk-test") as server:
        judge = judge_for(server, api_key="sk-test")
        await judge.ajudge([item("hello", "hi there")])
    bodies = sorted(server.requests, key=lambda body: len(body["messages"]))
    assert [body["messages"] for body in bodies] == [
        [{"role": "user", "content": "hello"}],
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}],
    ]
    assert all(body["model"] == "llama-guard3:8b" and body["temperature"] == 0 for body in bodies)
    assert all(body["stream"] is False for body in bodies)
    assert server.authorizations == ["Bearer sk-test", "Bearer sk-test"]


async def test_guard_prompt_mode_sends_the_built_prompt_as_one_user_message():
    with FakeChatServer() as server:
        await judge_for(server, prompt_mode="guard_prompt").ajudge([item("hello", "hi there")])
    sent = sorted(body["messages"][0]["content"] for body in server.requests)
    assert all(len(body["messages"]) == 1 and body["messages"][0]["role"] == "user" for body in server.requests)
    assert sent == sorted([guard_prompt("hello"), guard_prompt("hello", "hi there")])


# --- parsing and mapping ---


@pytest.mark.parametrize(
    ("text", "unsafe", "codes"),
    [
        ("safe", False, ()),
        ("\n\nsafe\n", False, ()),
        ("unsafe\nS1,S10", True, ("S1", "S10")),
        ("Unsafe\n s3 , S14 ", True, ("S3", "S14")),
    ],
)
def test_parse_accepts_the_guard_answer_format(text, unsafe, codes):
    answer = parse_guard_output(text)
    assert (answer.unsafe, answer.codes) == (unsafe, codes)


@pytest.mark.parametrize(
    "text", ["", "maybe", "unsafe", "unsafe\nviolence", "unsafe\nS1,", "safe\nS1", "unsafe\nS1\nS2", "I think it is safe"]
)
def test_parse_rejects_anything_else(text):
    with pytest.raises(MalformedGuardOutput):
        parse_guard_output(text)


async def test_verdict_maps_s_codes_to_taxonomy_ids_for_prompt_and_response():
    taxonomy = load_taxonomy()
    mapping = get_mapping("mlcommons-hazard")
    with FakeChatServer(keyword_guard) as server:
        judge = judge_for(server)
        safe, slur, bomb_reply, no_reply = await judge.ajudge(
            [
                item("what is the capital of France?", "Paris."),
                item("write a slur about my neighbours", "No."),
                item("tell me a story", "Here is how to build a bomb: ..."),
                item("how do I build a bomb?"),
            ]
        )
    assert judge.version == "llm:llama-guard3:8b"
    assert judge.errors == 0

    assert (safe.category, safe.prompt_flagged, safe.prompt_unsafe, safe.categories) == (SAFE, False, 0.0, ())
    assert (safe.response_flagged, safe.response_unsafe) == (False, 0.0)
    assert set(safe.category_probs) == set(taxonomy.harm_ids)
    assert not any(safe.category_probs.values())

    assert slur.prompt_flagged and slur.prompt_unsafe == 1.0
    assert slur.categories == (mapping["S1"], mapping["S10"])
    assert slur.category == mapping["S1"]
    assert {c for c, p in slur.category_probs.items() if p == 1.0} == {mapping["S1"], mapping["S10"]}
    assert slur.response_flagged is False

    assert not bomb_reply.prompt_flagged and bomb_reply.category == SAFE
    assert bomb_reply.response_flagged is True and bomb_reply.response_unsafe == 1.0

    assert no_reply.category == mapping["S9"] and no_reply.prompt_flagged
    assert not no_reply.has_response and no_reply.response_flagged is None
    assert all(v.refusal is None and v.refused is None for v in (safe, slur, bomb_reply, no_reply))


def test_categories_are_the_taxonomy_ids_the_mapping_reaches():
    judge = LlmGuardJudge("http://127.0.0.1:9/v1", "guard")
    assert set(judge.categories) == set(get_mapping("mlcommons-hazard").values())
    assert judge.categories == [c for c in load_taxonomy().harm_ids if c in judge.categories]


@pytest.mark.parametrize(
    "answer", ["I cannot judge this", "unsafe", "unsafe\nS15", "unsafe\nS1,S99"], ids=["prose", "no-codes", "unknown-code", "one-unknown"]
)
async def test_malformed_answer_is_an_error_and_none_while_the_rest_of_the_batch_is_judged(answer):
    with FakeChatServer(lambda m: answer if "odd" in m[-1]["content"] else "safe") as server:
        judge = judge_for(server)
        verdicts = await judge.ajudge([item("odd one"), item("fine one")])
    assert verdicts[0] is None
    assert verdicts[1] is not None and not verdicts[1].prompt_flagged
    assert judge.errors == 1 and judge.errors_by_reason["malformed"] == 1


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"choices": []}', b'{"choices": [{"message": {"content": null}}]}'])
async def test_a_200_without_a_message_is_malformed_not_a_crash(body):
    with FakeChatServer() as server:
        server.fail_next(200, body=body)
        judge = judge_for(server, max_retries=2)
        assert await judge.ajudge([item("hello")]) == [None]
    assert judge.errors_by_reason["malformed"] == 1
    assert server.arrivals == 1  # a malformed answer is not retried


async def test_one_failed_turn_makes_the_whole_event_none():
    with FakeChatServer(lambda m: "gibberish" if len(m) == 2 else "safe") as server:
        judge = judge_for(server)
        assert await judge.ajudge([item("hello", "hi")]) == [None]
    assert judge.errors == 1


# --- retries, timeouts, transport errors ---


async def test_500_and_429_are_retried_until_success():
    with FakeChatServer(keyword_guard) as server:
        server.fail_next(500)
        server.fail_next(429, retry_after=0.01)
        judge = judge_for(server, max_retries=2, retry_backoff_s=0.01)
        [verdict] = await judge.ajudge([item("build a bomb")])
    assert verdict is not None and verdict.prompt_flagged
    assert server.arrivals == 3
    assert judge.retries == 2 and judge.errors == 0


async def test_retries_exhausted_gives_none_and_counts_an_http_error():
    with FakeChatServer() as server:
        server.fail_next(503, times=3)
        judge = judge_for(server, max_retries=2, retry_backoff_s=0.01)
        assert await judge.ajudge([item("hello")]) == [None]
    assert server.arrivals == 3
    assert judge.errors == 1 and judge.errors_by_reason == {**dict.fromkeys(ERROR_REASONS, 0), "http": 1}


async def test_client_errors_are_not_retried():
    with FakeChatServer(api_key="right") as server:
        judge = judge_for(server, api_key="wrong", max_retries=3, retry_backoff_s=0.01)
        assert await judge.ajudge([item("hello")]) == [None]
    assert server.arrivals == 1
    assert judge.errors_by_reason["http"] == 1 and judge.retries == 0


async def test_timeout_is_retried_then_none_with_a_timeout_error():
    with FakeChatServer() as server:
        server.delay_s = 1.0
        judge = judge_for(server, timeout_s=0.1, max_retries=1, retry_backoff_s=0.01)
        assert await judge.ajudge([item("hello")]) == [None]
        assert server.arrivals == 2
    assert judge.errors == 1 and judge.errors_by_reason["timeout"] == 1


async def test_unreachable_server_is_a_transport_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        judge = LlmGuardJudge(f"http://127.0.0.1:{port}/v1", "guard", max_retries=1, retry_backoff_s=0.0)
        assert await judge.ajudge([item("hello"), item("bye")]) == [None, None]
    assert judge.errors == 2 and judge.errors_by_reason["transport"] == 2 and judge.retries == 2


# --- concurrency ---


async def test_concurrency_limit_holds_across_concurrent_batches():
    with FakeChatServer() as server:
        server.delay_s = 0.2
        judge = judge_for(server, max_concurrency=2)
        first, second = await asyncio.gather(
            judge.ajudge([item(f"a{i}") for i in range(3)]),
            judge.ajudge([item(f"b{i}", "reply") for i in range(2)]),
        )
    assert len(server.requests) == 7
    assert server.max_in_flight == 2
    assert all(v is not None for v in first + second)


def test_judge_works_under_successive_event_loops():
    with FakeChatServer(keyword_guard) as server:
        judge = judge_for(server, max_concurrency=1)
        first = asyncio.run(judge.ajudge([item("build a bomb")]))
        second = asyncio.run(judge.ajudge([item("build a bomb")]))
    assert first == second and first[0].prompt_flagged


# --- configuration errors ---


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_url": "localhost:8000/v1"}, "base_url"),
        ({"model": ""}, "model"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"retry_backoff_s": -1}, "retry_backoff_s"),
        ({"prompt_mode": "raw"}, "prompt_mode"),
        ({"mapping": {"S1": "not_a_category"}}, "mapping"),
    ],
)
def test_bad_configuration_names_the_field(kwargs, field):
    args = {"base_url": "http://127.0.0.1:8000/v1", "model": "guard", **kwargs}
    with pytest.raises(ValueError, match=field):
        LlmGuardJudge(**args)
