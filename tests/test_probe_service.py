"""Canary probes inside the real service, judged by the shipped judge: the schedule starts with the
service, a model that starts refusing safe questions raises a probe alert in /v1/alerts and
/metrics, user-traffic detectors and counts never see a probe, and the API key shows nowhere."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from monitor.config import Settings
from monitor.pipeline.builder import build_service
from monitor.pipeline.triaging import triage_of
from monitor.probe.client import probe_end_user
from tests.fakes.canary_model import CanaryModel
from tests.fakes.openai_chat_server import FakeChatServer
from tests.helpers.probes import builtin_sets
from tests.helpers.server import running_server

KEY = "sk-probe-7f3a9c2e5b1d4f60"

pytestmark = pytest.mark.slow


def test_scheduled_probes_alert_through_the_service_with_the_shipped_judge(embedder, caplog):
    caplog.set_level(logging.DEBUG)
    sets = builtin_sets()
    model = CanaryModel(sets)
    with FakeChatServer(model, api_key=KEY) as fake:
        settings = Settings(probe_targets=[f"canary@{fake.base_url}"], probe_api_key=KEY, probe_interval_seconds=3600, judge="default",
                            probe_warmup_rounds=2, probe_window_rounds=1)  # fewer rounds: each embeds 138 texts
        with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
            service = srv.service
            prober = service.stateful["probes"]
            deadline = time.monotonic() + 60
            while not prober.detector.readings() and time.monotonic() < deadline:
                time.sleep(0.1)  # the schedule's first round runs as soon as the worker does
            assert fake.arrivals == 69 and set(fake.authorizations) == {f"Bearer {KEY}"}
            before = service.detectors.state_dict()

            def round_at(at: float, meanwhile=lambda: None) -> list:
                """A round as the schedule runs it; ``meanwhile`` acts between its verdict and the worker applying it."""
                result = asyncio.run(prober.run_round(at))
                meanwhile()
                return service.call_in_worker(service.apply, lambda: prober.still_current(result)).result()

            now = time.time()
            assert round_at(now + 900) == []  # the reference's second round
            readings = {r.signal: r for r in prober.detector.readings()}
            # The shipped judge sees the fake's answers as they are: safe questions answered, harmful ones refused.
            assert readings["over_refusal"].reference_rate <= 0.1 and readings["unsafe_compliance"].reference_rate <= 0.1
            model.refuse_share = 0.3
            fired = []
            for t in range(2, 5):
                fired = round_at(now + t * 900)
                if fired:
                    break
            assert fired and t - 2 < 3, "alert within 3 rounds"
            alerts = srv.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"]
            [alert] = [a for a in alerts if a["kind"] == "probe_over_refusal"]
            assert alert["scope"] == "model=canary" and alert["key"] == "benign_but_scary@v1"
            named = {f["probe_id"] for f in alert["evidence"]["flipped"]}
            assert named and named <= model.flipped_ids()
            metrics = srv.client.get("/metrics").text
            assert 'llmsafety_alerts_firing{kind="probe_over_refusal",severity="warning"} 1.0' in metrics
            assert 'llmsafety_probe_requests_total{outcome="ok",target="canary"}' in metrics
            assert 'llmsafety_probe_rate{probe_set="benign_but_scary@v1",signal="over_refusal",target="canary",window="current"}' in metrics
            # Probe answers never reach the user-traffic pipeline.
            status = srv.client.get("/v1/status").json()
            assert status["received"] == status["judged"] == 0
            assert service.detectors.state_dict().keys() == before.keys()
            for name in ("category_share", "over_refusal", "unsafe_response_rate"):
                assert str(service.detectors.state_dict()[name]) == str(before[name])
            shown = status | {"alerts": alerts}
            assert KEY not in str(shown) and KEY not in metrics

            # The change was intended: a reviewer resolves the alert as a false alarm, which re-baselines the
            # probe set on the new answers: it fires again neither on the old reference (not even from a round
            # judged before the reset and applied after it) nor while warming up.
            dismiss = lambda: triage_of(service).act_on_alert("reviewer", alert["id"], "false_alarm", reason="new system prompt")  # noqa: E731
            assert round_at(now + (t + 1) * 900, meanwhile=dismiss) == []
            assert service.alert(alert["id"]).status == "resolved"
            assert not any(a.kind == "probe_over_refusal" for a in service.alerts("firing"))
            for t in range(t + 2, t + 5):  # two reference rounds, then one tested against them
                assert [tr.alert.kind for tr in round_at(now + t * 900)] == []
            assert not any(a.kind == "probe_over_refusal" for a in service.alerts("firing"))
            readings = {r.signal: r for r in prober.detector.readings()}
            assert not readings["over_refusal"].warming_up and readings["over_refusal"].reference_rate >= 0.2

            # The gateway logs each probe call too: the copy naming the probes' keyed end user is ignored, one
            # naming any other user (the old fixed name included) is traffic, or a gateway user could skip the monitor.
            marker = probe_end_user(settings.probe_end_user_key.get_secret_value())
            assert {r["user"] for r in fake.requests} == {marker} and marker.startswith("llmsafety-canary-probe-")
            logged = {"call_type": "acompletion", "model": "canary", "messages": [{"role": "user", "content": "How do I bake bread?"}],
                      "response": {"choices": [{"message": {"content": "Mix flour and water."}}]}}
            copy = srv.client.post("/v1/ingest/litellm", json={**logged, "id": "probe-copy", "end_user": marker}).json()
            evader = srv.client.post("/v1/ingest/litellm", json={**logged, "id": "evader", "end_user": "llmsafety-canary-probe"}).json()
            assert (copy["accepted"], copy["ignored"], evader["accepted"], evader["ignored"]) == (0, 1, 1, 0)
            # So is the copy an OpenTelemetry-instrumented gateway traces (OpenLLMetry records OpenAI's `user` as llm.user).
            ignored = lambda: service.metrics.registry.get_sample_value("llmsafety_integration_items_ignored_total", {"source": "otel"}) or 0.0  # noqa: E731
            traced = {"resourceSpans": [{"scopeSpans": [{"spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "00000000000000b1", "name": "chat",
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in
                               {"gen_ai.operation.name": "chat", "gen_ai.prompt": "How do I bake bread?", "llm.user": marker}.items()]}]}]}]}
            before_ignored = ignored()
            assert srv.client.post("/v1/traces", json=traced).status_code == 200
            assert ignored() == before_ignored + 1 and srv.client.get("/v1/status").json()["received"] == 1  # the evader only
            shown = srv.client.get("/v1/status").json()
            assert marker not in str(shown) and settings.probe_end_user_key.get_secret_value() not in str(shown) + caplog.text
    assert KEY not in caplog.text
