"""A second-opinion LLM judge (served by a fake speaking the OpenAI chat wire format) wired into the running service."""

from __future__ import annotations

from monitor.config import Settings
from monitor.pipeline.builder import build_service
from tests.fakes.openai_chat_server import FakeChatServer
from tests.helpers.server import running_server


def test_sampled_events_carry_second_opinions_and_failures_are_counted(embedder):
    with FakeChatServer(lambda messages: "unsafe\nS11") as fake:
        settings = Settings(judge="prototype", second_judge_url=fake.base_url, second_judge_rate=0.5, second_judge_max_retries=0, seed=3)
        seen: list = []

        def factory(s: Settings):
            service = build_service(s, embedder=embedder)
            service.batch_listeners.append(seen.extend)
            return service

        with running_server(settings, factory) as srv:
            events = [{"event_id": f"so-{i}", "prompt": f"question number {i}"} for i in range(40)]
            assert srv.client.post("/v1/events", json=events).status_code == 202
            srv.wait_processed()
            chosen = [s for s in seen if s.second_opinion is not None]
            selector = srv.service.scorer.second_opinion
            assert {s.event.event_id for s in chosen} == {e["event_id"] for e in events if selector.selected(e["event_id"])}
            assert all(s.second_opinion.category == "self_harm" and s.second_opinion.prompt_flagged for s in chosen)
            assert f"llmsafety_second_opinions_total {float(len(chosen))}" in srv.client.get("/metrics").text

            fake.fail_next(500, times=100)
            more = [{"event_id": f"so-fail-{i}", "prompt": f"another question {i}"} for i in range(20)]
            assert srv.client.post("/v1/events", json=more).status_code == 202
            status = srv.wait_processed()
            assert status["judged"] == 60  # a failing second judge never loses primary verdicts
            metrics = srv.client.get("/metrics").text
            assert 'llmsafety_second_judge_errors_total{reason="http"}' in metrics


def test_a_slow_second_judge_costs_a_batch_at_most_its_deadline(embedder):
    with FakeChatServer(lambda messages: "safe") as fake:
        fake.delay_s = 3.0
        settings = Settings(
            judge="prototype", second_judge_url=fake.base_url, second_judge_rate=1.0, second_judge_timeout_s=30,
            second_judge_batch_deadline_s=0.5, batch_max_wait_ms=200,
        )
        with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
            events = [{"event_id": f"slow-{i}", "prompt": f"question {i}"} for i in range(8)]
            assert srv.client.post("/v1/events", json=events).status_code == 202
            status = srv.wait_processed(timeout=20)
            assert status["judged"] == 8
            assert status["latency"]["batch"]["max_ms"] < 2500  # not the judge's 3 s
            assert 'llmsafety_second_judge_errors_total{reason="batch_deadline"}' in srv.client.get("/metrics").text
