"""SecondOpinion sampling and verdict comparison, with an LLM guard behind a real HTTP server."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.judge.llm_guard import LlmGuardJudge
from monitor.judge.second_opinion import AsyncJudge, Disagreement, SecondOpinion, compare
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.taxonomy import SAFE
from tests.fakes.openai_chat_server import FakeChatServer

VEC = np.zeros(384, dtype=np.float32)
IDS = [f"evt-{i:05d}" for i in range(20_000)]


def unreachable_judge() -> LlmGuardJudge:
    return LlmGuardJudge("http://127.0.0.1:9/v1", "guard")


def guard_answer(messages: list[dict[str, str]]) -> str:
    return "unsafe\nS11" if "hurt myself" in messages[-1]["content"] else "safe"


def verdict(category: str = SAFE, flagged: bool = False, response_flagged: bool | None = None) -> Verdict:
    response = None if response_flagged is None else float(response_flagged)
    return Verdict("test", category, {}, float(flagged), flagged, response, response_flagged)


# --- selection ---


def test_selection_is_a_fixed_function_of_seed_and_event_id():
    first = SecondOpinion(unreachable_judge(), rate=0.1, seed=3)
    again = SecondOpinion(unreachable_judge(), rate=0.1, seed=3)
    other_seed = SecondOpinion(unreachable_judge(), rate=0.1, seed=4)
    picks = [first.selected(i) for i in IDS]
    assert picks == [again.selected(i) for i in IDS]
    assert picks != [other_seed.selected(i) for i in IDS]
    assert 0.09 < sum(picks) / len(IDS) < 0.11


def test_lower_rate_selects_a_subset_of_a_higher_rate():
    low = SecondOpinion(unreachable_judge(), rate=0.05, seed=1)
    high = SecondOpinion(unreachable_judge(), rate=0.2, seed=1)
    low_picks = {i for i in IDS if low.selected(i)}
    assert low_picks and low_picks < {i for i in IDS if high.selected(i)}


def test_rate_zero_selects_nothing_and_one_selects_everything():
    assert not any(SecondOpinion(unreachable_judge(), rate=0.0).selected(i) for i in IDS)
    assert all(SecondOpinion(unreachable_judge(), rate=1.0).selected(i) for i in IDS)


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_out_of_range_names_the_field(rate):
    with pytest.raises(ValueError, match="rate"):
        SecondOpinion(unreachable_judge(), rate=rate)


def test_llm_guard_is_an_async_judge():
    assert isinstance(unreachable_judge(), AsyncJudge)


# --- running the second judge ---


async def test_run_judges_only_selected_events_and_aligns_results_with_inputs():
    ids = IDS[:40]
    prompts = [f"prompt {i}" + (" I want to hurt myself" if i % 2 else "") for i in range(40)]
    inputs = [JudgeInput(p, VEC) for p in prompts]
    with FakeChatServer(guard_answer) as server:
        second = SecondOpinion(LlmGuardJudge(server.base_url, "llama-guard3", max_retries=0), rate=0.3, seed=0)
        results = await second.run(ids, inputs)
    expected = [second.selected(i) for i in ids]
    assert 0 < sum(expected) < 40
    assert [r is not None for r in results] == expected
    assert sorted(body["messages"][0]["content"] for body in server.requests) == sorted(
        p for p, chosen in zip(prompts, expected) if chosen
    )
    for prompt, result in zip(prompts, results):
        if result is not None:
            assert result.prompt_flagged == ("hurt myself" in prompt)
            assert result.category == ("self_harm" if result.prompt_flagged else SAFE)


async def test_selection_does_not_depend_on_batching():
    ids = IDS[:60]
    inputs = [JudgeInput(f"prompt {i}", VEC) for i in range(60)]
    with FakeChatServer(guard_answer) as server:
        second = SecondOpinion(LlmGuardJudge(server.base_url, "guard", max_retries=0), rate=0.25, seed=9)
        whole = await second.run(ids, inputs)
        sent_whole = sorted(body["messages"][0]["content"] for body in server.requests)
        server.requests.clear()
        pieces = []
        for start, stop in [(0, 7), (7, 8), (8, 41), (41, 60)]:
            pieces += await second.run(ids[start:stop], inputs[start:stop])
        sent_pieces = sorted(body["messages"][0]["content"] for body in server.requests)
    assert whole == pieces
    assert sent_whole == sent_pieces


async def test_run_without_selected_events_makes_no_calls():
    with FakeChatServer() as server:
        second = SecondOpinion(LlmGuardJudge(server.base_url, "guard"), rate=0.0)
        assert await second.run(IDS[:5], [JudgeInput("p", VEC)] * 5) == [None] * 5
    assert server.arrivals == 0


async def test_uncertain_verdicts_are_sampled_at_their_own_rate():
    """Stratified: every uncertain verdict at uncertain_rate 1, none of the confident ones at rate 0;
    a judge that states no uncertainty falls in the confident stratum."""
    uncertainties = [0.9, 0.1, None, 0.5, 0.49, 1.0]
    inputs = [JudgeInput(f"prompt {i}", VEC) for i in range(len(uncertainties))]
    with FakeChatServer(guard_answer) as server:
        second = SecondOpinion(LlmGuardJudge(server.base_url, "guard", max_retries=0), rate=0.0, uncertain_rate=1.0,
                               uncertain_above=0.5)
        results = await second.run(IDS[:6], inputs, uncertainties)
        off = SecondOpinion(LlmGuardJudge(server.base_url, "guard", max_retries=0), rate=0.0, uncertain_above=0.5)
        assert await off.run(IDS[:6], inputs, uncertainties) == [None] * 6  # no uncertain rate: one stratum
    assert [r is not None for r in results] == [True, False, False, True, False, True]
    big = SecondOpinion(unreachable_judge(), rate=0.05, uncertain_rate=0.25, uncertain_above=0.5)
    share = np.mean([big.selected(i, 0.8) for i in IDS]), np.mean([big.selected(i, 0.2) for i in IDS])
    assert abs(share[0] - 0.25) < 0.02 and abs(share[1] - 0.05) < 0.01


def test_disagreement_of_uncertain_verdicts_is_tested_under_keys_of_its_own():
    """A rise of disagreement among uncertain verdicts alarms on the `uncertain` keys; the confident
    stratum's keys, whose rate did not move, stay quiet."""
    import random

    from monitor.drift.judge_disagreement import SecondOpinionDisagreementDetector
    from monitor.drift.rate_change import RateChangeConfig
    from monitor.events import Event, ScoredEvent

    def scored(i: int, uncertainty: float, disagree: bool) -> ScoredEvent:
        primary = Verdict("v", SAFE, {}, 0.4, False, uncertainty=uncertainty)
        return ScoredEvent(Event(f"e{i}", float(i), "..."), 1.0, VEC, None, primary, second_opinion=verdict("self_harm", disagree))

    rng = random.Random(0)
    det = SecondOpinionDisagreementDetector(RateChangeConfig(warmup=300, arl=20_000), uncertain_above=0.5)
    calm = [scored(i, 0.8 if i % 2 else 0.1, rng.random() < (0.2 if i % 2 else 0.03)) for i in range(4000)]
    assert not [c for c in det.update(calm) if c.active]
    shift = [scored(i, 0.8 if i % 2 else 0.1, rng.random() < (0.5 if i % 2 else 0.03)) for i in range(4000, 6000)]
    active = {c.key for c in det.update(shift) if c.active}
    assert "uncertain" in active and "" not in active and SAFE not in active


async def test_run_rejects_mismatched_lengths():
    second = SecondOpinion(unreachable_judge(), rate=1.0)
    with pytest.raises(ValueError, match="event_ids and inputs"):
        await second.run(IDS[:2], [JudgeInput("p", VEC)])


# --- comparing verdicts ---


def test_agreement_on_everything():
    d = compare(verdict("self_harm", True, False), verdict("self_harm", True, False), at=10.0)
    assert d == Disagreement(10.0, False, False, "self_harm", "self_harm")
    assert not d.category_disagree


def test_prompt_flag_disagreement_is_not_also_a_category_disagreement():
    d = compare(verdict(SAFE, False, False), verdict("self_harm", True, False), at=1.0)
    assert d.prompt_disagree and not d.category_disagree
    assert d.response_disagree is False
    assert (d.primary_category, d.secondary_category) == (SAFE, "self_harm")


def test_both_flag_the_prompt_but_name_different_categories():
    d = compare(verdict("self_harm", True), verdict("privacy_violation", True), at=1.0)
    assert not d.prompt_disagree and d.category_disagree


def test_response_disagreement_needs_a_response_verdict_from_both():
    assert compare(verdict(response_flagged=False), verdict(response_flagged=True), at=1.0).response_disagree is True
    assert compare(verdict(response_flagged=False), verdict(), at=1.0).response_disagree is None
    assert compare(verdict(), verdict(response_flagged=True), at=1.0).response_disagree is None
