"""Canary probes end to end against a fake model behind a real HTTP server: a model update that
starts refusing safe questions or answering harmful ones alerts within 3 rounds naming the flipped
probes; unchanged and randomly noisy models stay quiet for 200 rounds; every failure of the target
is counted and none raises; the budget holds; probe events are tagged."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry

from monitor.alerts.engine import AlertEngine
from monitor.privacy.redact import Redactor
from monitor.probe.prober import Prober, RoundResult
from tests.fakes.canary_model import CanaryModel
from tests.fakes.openai_chat_server import FakeChatServer
from tests.helpers.probes import RecordingKeywordJudge, builtin_sets, make_prober, run_round

START = 1_800_000_000.0
INTERVAL = 900.0


def sample(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@contextmanager
def first_alert_after(change: Callable[[CanaryModel], None], warmup: int) -> Iterator[tuple[CanaryModel, Prober, RoundResult, int]]:
    """Rounds against a fake model (served while in the block): ``warmup`` as it ships, then ``change(model)``
    and the first of the next 3 with an active condition, and that round's number."""
    sets = builtin_sets()
    model = CanaryModel(sets)
    with FakeChatServer(model) as server:
        prober = make_prober(server.base_url, sets=sets)
        for t in range(warmup):
            run_round(prober, START + t * INTERVAL)
        change(model)
        for t in range(warmup, warmup + 3):
            result = run_round(prober, START + t * INTERVAL)
            if any(c.active for c in result.conditions):
                yield model, prober, result, t
                return
    raise AssertionError("no active condition within 3 rounds of the change")


def test_over_refusal_after_a_model_update_alerts_within_3_rounds_naming_the_flipped_probes():
    sets = builtin_sets()
    model = CanaryModel(sets)
    with FakeChatServer(model) as server:
        prober = make_prober(server.base_url, sets=sets)
        engine = AlertEngine(redactor=Redactor("on"))
        for t in range(4):
            assert not [c for c in run_round(prober, START + t * INTERVAL).conditions if c.active]
        model.refuse_share = 0.3
        flipped = model.flipped_ids()
        fired_at = None
        for t in range(4, 7):
            transitions = engine.observe(run_round(prober, START + t * INTERVAL).conditions)
            if transitions:
                fired_at = t
                break
    assert fired_at is not None and fired_at - 4 < 3, "alert within 3 rounds of the change"
    [alert] = engine.alerts("firing")
    assert (alert.kind, alert.scope, alert.key) == ("probe_over_refusal", "model=canary", "benign_but_scary@v1")
    assert alert.started_at == START + fired_at * INTERVAL
    named = {f["probe_id"] for f in alert.evidence["flipped"]}
    assert alert.evidence["flipped_count"] == len(flipped) == 11 and named <= flipped and len(named) == 10
    example = alert.evidence["flipped"][0]
    assert "help@example.org" not in example["after"] and "sorry" in example["after"]  # redacted, as every stored answer
    assert example["before"].startswith("Good question")


def test_a_reset_while_a_rounds_conditions_wait_drops_that_keys_stale_verdict():
    """The round's conditions reach the alert engine later (in the worker): a false alarm in between must not
    be re-opened by a verdict on the reference it dropped; other keys' conditions still count."""
    with first_alert_after(lambda model: setattr(model, "refuse_share", 0.3), warmup=4) as (_, prober, pending, t):
        [stale] = [c for c in pending.conditions if c.active]
        others = [c for c in pending.conditions if (c.kind, c.key) != (stale.kind, stale.key)]
        assert others and prober.still_current(pending) == pending.conditions
        assert prober.reset(stale.kind, stale.scope, stale.key)
        assert prober.still_current(pending) == others
        for t in range(t + 1, t + 8):  # the key's verdicts count again once it has re-learned its reference
            later = run_round(prober, START + t * INTERVAL)
            if any((c.kind, c.key) == (stale.kind, stale.key) for c in later.conditions):
                break
        assert any((c.kind, c.key) == (stale.kind, stale.key) for c in prober.still_current(later))


def test_unsafe_compliance_after_a_model_update_alerts_within_3_rounds():
    with first_alert_after(lambda model: setattr(model, "comply_share", 0.2), warmup=3) as (model, _, result, _):
        flipped = model.flipped_ids()
    [cond] = [c for c in result.conditions if c.active]
    assert (cond.kind, cond.key, cond.severity) == ("probe_unsafe_compliance", "clearly_harmful@v1", "critical")
    assert {f["probe_id"] for f in cond.evidence["flipped"]} == flipped and len(flipped) == 6


def quiet_rounds(model: CanaryModel, rounds: int = 200) -> tuple[int, int]:
    """``rounds`` rounds of 5 probes per set (rotating): a full round (69 questions) costs ~0.7 s of
    HTTP on 2 loaded cores; the detector's quiet over 200 full rounds is tested in test_probe_detector."""
    with FakeChatServer(model) as server:
        judge = RecordingKeywordJudge()
        prober = make_prober(server.base_url, judge=judge, sets=model_sets, per_round=5)
        alarms = sum(
            any(c.active for c in run_round(prober, START + t * INTERVAL).conditions) for t in range(rounds)
        )
    return alarms, len(judge.events)


model_sets = builtin_sets()


def test_quiet_over_200_rounds_of_unchanged_deterministic_answers():
    alarms, judged = quiet_rounds(CanaryModel(model_sets))
    assert alarms == 0 and judged == 200 * 10


def test_quiet_over_200_rounds_of_a_model_noisy_at_a_fixed_rate():
    model = CanaryModel(model_sets, seed=3)
    model.noise = 0.05
    alarms, judged = quiet_rounds(model)
    assert alarms == 0 and judged == 200 * 10


def test_target_failures_are_counted_and_never_raise():
    registry = CollectorRegistry()
    sets = builtin_sets()
    with FakeChatServer(CanaryModel(sets)) as server:
        # 3 probes of each set per round, one at a time: the scripted failures meet known questions.
        prober = make_prober(server.base_url, sets=sets, registry=registry, per_round=3, max_retries=1, timeout_s=0.2, concurrency=1)
        server.fail_next(429, times=2, retry_after=0)  # one question: both attempts rate-limited
        server.fail_next(503, times=2)
        server.fail_next(200, body=b'{"choices": [')
        server.fail_next(200, body=b"<html>gateway error</html>")
        result = run_round(prober, START)
        assert dict(result.failures) == {"rate_limited": 1, "server_error": 1, "malformed": 2}
        assert len(result.observations) == 2
        server.delay_s = 0.3
        slow = run_round(prober, START + INTERVAL)
        assert dict(slow.failures) == {"timeout": 6} and slow.observations == []
    down = run_round(prober, START + 2 * INTERVAL)  # the server is gone
    assert dict(down.failures) == {"transport": 6}
    s = lambda outcome: sample(registry, "llmsafety_probe_requests_total", target="canary", outcome=outcome)
    assert (s("ok"), s("rate_limited"), s("server_error"), s("malformed"), s("timeout"), s("transport")) == (2, 1, 1, 2, 6, 6)
    r = lambda reason: sample(registry, "llmsafety_probe_retries_total", target="canary", reason=reason)
    assert (r("rate_limited"), r("server_error"), r("timeout"), r("transport")) == (1, 1, 6, 6)
    assert sample(registry, "llmsafety_probe_up", target="canary") == 0
    assert sample(registry, "llmsafety_probe_rounds_total", target="canary") == 3


def test_daily_token_budget_stops_sending_and_resets_next_day():
    registry = CollectorRegistry()
    sets = builtin_sets()
    with FakeChatServer(CanaryModel(sets)) as server:
        prober = make_prober(server.base_url, sets=sets, registry=registry, daily_tokens=1000, max_tokens=100, concurrency=1)
        first = run_round(prober, START)
        sent = server.arrivals
        assert 0 < sent < 69 and first.failures["budget"] == 69 - sent
        second = run_round(prober, START + 60)  # the same UTC day
        assert second.failures["budget"] >= 69 - 3
        assert sample(registry, "llmsafety_probe_tokens_total", target="canary") <= 1000
        day = 86_400
        third = run_round(prober, (START // day + 1) * day)
        assert third.failures["budget"] == first.failures["budget"]  # a new day, a new budget


def test_probe_events_are_tagged_and_rotate_through_the_sets():
    sets = builtin_sets()
    judge = RecordingKeywordJudge()
    with FakeChatServer(CanaryModel(sets)) as server:
        prober = make_prober(server.base_url, judge=judge, sets=sets, per_round=10)
        for t in range(8):
            run_round(prober, START + t * INTERVAL)
    first = judge.events[0]
    assert first.route == "probe" and first.model == "canary" and first.timestamp == START
    assert set(first.labels) == {"probe_set", "probe_id", "probe_kind"}
    asked = {(e.labels["probe_set"], e.labels["probe_id"]) for e in judge.events}
    assert len(judge.events) == 8 * 20 and len(asked) == 69  # 10 per set per round, every probe reached


def test_prober_state_round_trip_continues_identically():
    """References, windows, round index and budgets are saved with the service: a restored prober goes on as the original."""
    sets = builtin_sets()
    model = CanaryModel(sets)
    with FakeChatServer(model) as server:
        original = make_prober(server.base_url, sets=sets, per_round=10, daily_tokens=50_000)
        for t in range(4):
            run_round(original, START + t * INTERVAL)
        restored = make_prober(server.base_url, sets=sets, per_round=10, daily_tokens=50_000)
        restored.load_state_dict(original.state_dict())
        model.refuse_share = 0.5
        for t in range(4, 7):
            a, b = run_round(original, START + t * INTERVAL), run_round(restored, START + t * INTERVAL)
            assert (a.index, a.conditions) == (b.index, b.conditions)
        assert any(c.active for c in a.conditions)


def test_scheduler_survives_failing_rounds_and_stops_on_close():
    import threading

    from monitor.probe.scheduler import ProbeScheduler

    def broken_judge(events):
        raise RuntimeError("judge down")

    sets = builtin_sets()
    errors = threading.Semaphore(0)
    with FakeChatServer(CanaryModel(sets)) as server:
        prober = make_prober(server.base_url, judge=broken_judge, sets=sets, per_round=2)
        scheduler = ProbeScheduler(prober, interval_s=0.05, on_round=lambda result: None, on_error=errors.release)
        scheduler.start()
        assert all(errors.acquire(timeout=10) for _ in range(3)), "rounds go on after a failing one"
        scheduler.close()
        arrivals = server.arrivals
        assert arrivals >= 3 * 4 and not scheduler._thread.is_alive()
