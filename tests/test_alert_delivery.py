"""Alert delivery against a real Alertmanager (shipped config) and a real HTTP webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import httpx
import pytest

from monitor.signals import Condition
from monitor.alerts.delivery import AlertDelivery, DeliveryPolicy, targets_from_settings
from monitor.alerts.engine import AlertEngine, Transition
from monitor.alerts.silences import SilenceHold
from monitor.alerts.targets import AlertmanagerTarget, WebhookTarget
from monitor.config import Settings
from monitor.export.metrics import MonitorMetrics
from tests.helpers.prom import DEPLOY, running_alertmanager
from tests.helpers.server import free_port

FAST = DeliveryPolicy(resend_interval_s=60.0, timeout_s=2.0, max_attempts=3, backoff_s=0.01, max_backoff_s=0.05)
T0 = 1767225600.0  # event time, in the past: alerts keep their event-time startsAt


def fire(engine: AlertEngine, key: str = "self_harm", kind: str = "category_share", at: float = T0, **kw) -> list[Transition]:
    return engine.observe([Condition(kind, "global", key, True, at, summary=f"{key} share up", **kw)])


def resolve(engine: AlertEngine, key: str = "self_harm", kind: str = "category_share", at: float = T0 + 600) -> list[Transition]:
    return engine.observe([Condition(kind, "global", key, False, at)])


def sample(metrics: MonitorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Receiver:
    """A real HTTP server that records JSON bodies and answers with scripted status codes."""

    def __init__(self, statuses: list[int] | None = None, gate: threading.Event | None = None) -> None:
        self.bodies: list[object] = []
        self.statuses = list(statuses or [])
        self.gate = gate
        self.received = threading.Event()

    @contextmanager
    def serve(self) -> Iterator[str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.gate is not None:
                    receiver.gate.wait(30)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(body)
                    receiver.received.set()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/hook"
        finally:
            if self.gate is not None:
                self.gate.set()
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory) -> Iterator[str]:
    with running_alertmanager(DEPLOY / "alertmanager" / "alertmanager.yml", tmp_path_factory.mktemp("am")) as url:
        yield url


def am_alerts(url: str, **filters: str) -> list[dict]:
    return httpx.get(f"{url}/api/v2/alerts", params=filters, timeout=5).json()


def test_firing_alert_reaches_alertmanager_with_labels_links_and_event_time(alertmanager):
    metrics, engine = MonitorMetrics(), AlertEngine(cooldown_seconds=0)
    delivery = AlertDelivery([AlertmanagerTarget(alertmanager, "http://monitor.example:8000")], metrics, FAST)
    delivery.start()
    delivery.on_transitions(fire(engine, key="self_harm", evidence={"category": "self_harm"}))
    assert delivery.flush()
    [got] = [a for a in am_alerts(alertmanager) if a["labels"].get("key") == "self_harm"]
    alert_id = engine.alerts("firing")[0].id
    assert got["labels"] == {
        "alertname": "LLMSafetyCategoryShare",
        "kind": "category_share",
        "scope": "global",
        "key": "self_harm",
        "category": "self_harm",
        "severity": "warning",
        "source": "llmsafety-monitor",
    }
    assert got["annotations"]["summary"] == "self_harm share up"
    assert got["annotations"]["alert_url"] == f"http://monitor.example:8000/v1/alerts/{alert_id}"
    assert "since 2026-01-01T00:00:00Z (event time)" in got["annotations"]["description"]
    assert got["startsAt"].startswith("2026-01-01T00:00:00")
    assert got["status"]["state"] == "active"
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="alertmanager", outcome="sent") == 1

    delivery.on_transitions(resolve(engine, key="self_harm"))
    assert delivery.flush()
    assert not [a for a in am_alerts(alertmanager) if a["labels"].get("key") == "self_harm"]
    delivery.close()


def test_emerging_cluster_alert_links_to_its_cluster_page(alertmanager):
    metrics, engine = MonitorMetrics(), AlertEngine()
    delivery = AlertDelivery([AlertmanagerTarget(alertmanager, "http://monitor.example:8000")], metrics, FAST)
    delivery.start()
    delivery.on_transitions(fire(engine, kind="emerging_category", key="c1a2b3", severity="critical"))
    assert delivery.flush()
    [got] = [a for a in am_alerts(alertmanager) if a["labels"]["kind"] == "emerging_category"]
    assert got["labels"]["alertname"] == "LLMSafetyEmergingCategory"
    assert got["annotations"]["cluster_url"] == "http://monitor.example:8000/v1/clusters/c1a2b3"
    delivery.close()


def test_firing_alerts_are_resent_so_alertmanager_keeps_them_alive(alertmanager):
    metrics, engine = MonitorMetrics(), AlertEngine()
    policy = DeliveryPolicy(resend_interval_s=0.2, timeout_s=2.0, max_attempts=2, backoff_s=0.01)
    delivery = AlertDelivery([AlertmanagerTarget(alertmanager, expiry_s=600.0)], metrics, policy)
    delivery.start()
    delivery.on_transitions(fire(engine, kind="embedding_drift", key=""))
    assert delivery.flush()

    def ends_at() -> str:
        return [a for a in am_alerts(alertmanager) if a["labels"]["kind"] == "embedding_drift"][0]["endsAt"]

    first = ends_at()
    sent = sample(metrics, "llmsafety_alert_deliveries_total", target="alertmanager", outcome="sent")
    for _ in range(200):  # re-sends every 0.2 s; wait for two of them (bounded)
        if sample(metrics, "llmsafety_alert_deliveries_total", target="alertmanager", outcome="sent") >= sent + 2:
            break
        threading.Event().wait(0.05)
    assert delivery.flush()
    assert ends_at() > first  # each re-send pushes the expiry forward
    delivery.close()


def test_shipped_inhibit_rule_lets_the_pushed_alert_mute_the_prometheus_fallback(alertmanager):
    fallback = {
        "labels": {"alertname": "LLMSafetyDriftUnsafeResponseRate", "kind": "unsafe_response_rate", "severity": "critical",
                   "source": "prometheus", "signal": "drift"},
        "annotations": {"summary": "rule fallback"},
    }
    assert httpx.post(f"{alertmanager}/api/v2/alerts", json=[fallback], timeout=5).status_code == 200
    metrics, engine = MonitorMetrics(), AlertEngine()
    delivery = AlertDelivery([AlertmanagerTarget(alertmanager)], metrics, FAST)
    delivery.start()
    delivery.on_transitions(fire(engine, kind="unsafe_response_rate", key="self_harm", severity="critical"))
    assert delivery.flush()
    for _ in range(50):  # Alertmanager evaluates inhibitions asynchronously
        [rule_alert] = [a for a in am_alerts(alertmanager) if a["labels"]["source"] == "prometheus"]
        if rule_alert["status"]["inhibitedBy"]:
            break
        threading.Event().wait(0.1)
    assert rule_alert["status"]["state"] == "suppressed"
    [pushed] = [a for a in am_alerts(alertmanager) if a["labels"]["kind"] == "unsafe_response_rate" and a["labels"]["source"] == "llmsafety-monitor"]
    assert rule_alert["status"]["inhibitedBy"] == [pushed["fingerprint"]]
    delivery.close()


def test_json_webhook_gets_each_transition_with_links():
    receiver = Receiver()
    with receiver.serve() as url:
        metrics, engine = MonitorMetrics(), AlertEngine(cooldown_seconds=0)
        delivery = AlertDelivery([WebhookTarget(url, "json", "https://monitor.example")], metrics, FAST)
        delivery.start()
        delivery.on_transitions(fire(engine))
        assert delivery.flush()
        delivery.on_transitions(resolve(engine))
        assert delivery.flush()
        delivery.close()
    fired, resolved = receiver.bodies
    assert fired["source"] == "llmsafety-monitor" and fired["version"] == "1"
    [a] = fired["alerts"]
    assert (a["status"], a["kind"], a["scope"], a["key"], a["severity"]) == ("firing", "category_share", "global", "self_harm", "warning")
    assert a["links"]["alert"] == f"https://monitor.example/v1/alerts/{a['id']}"
    assert a["links"]["report"].startswith("https://monitor.example/v1/reports?reference=")
    assert a["started_at"] == "2026-01-01T00:00:00Z" and a["resolved_at"] is None
    [r] = resolved["alerts"]
    assert (r["id"], r["status"], r["resolved_at"]) == (a["id"], "resolved", "2026-01-01T00:10:00Z")
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="sent") == 2


def test_slack_webhook_gets_a_text_message():
    receiver = Receiver()
    with receiver.serve() as url:
        delivery = AlertDelivery([WebhookTarget(url, "slack", "https://monitor.example")], MonitorMetrics(), FAST)
        delivery.start()
        delivery.on_transitions(fire(AlertEngine(), severity="critical"))
        assert delivery.flush()
        delivery.close()
    [body] = receiver.bodies
    assert set(body) == {"text"}
    assert body["text"].startswith("[FIRING] critical LLMSafetyCategoryShare global/self_harm: self_harm share up <https://monitor.example/v1/alerts/")


def test_server_errors_are_retried_with_backoff_then_delivered():
    receiver = Receiver(statuses=[503, 429])
    with receiver.serve() as url:
        metrics = MonitorMetrics()
        delivery = AlertDelivery([WebhookTarget(url)], metrics, FAST)
        delivery.start()
        delivery.on_transitions(fire(AlertEngine()))
        assert delivery.flush()
        delivery.close()
    assert len(receiver.bodies) == 1
    assert sample(metrics, "llmsafety_alert_delivery_retries_total", target="webhook") == 2
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="sent") == 1


def test_refused_payload_is_not_retried_and_is_counted():
    receiver = Receiver(statuses=[400])
    with receiver.serve() as url:
        metrics = MonitorMetrics()
        delivery = AlertDelivery([WebhookTarget(url)], metrics, FAST)
        delivery.start()
        delivery.on_transitions(fire(AlertEngine()))
        assert delivery.flush()
        delivery.close()
    assert receiver.bodies == []
    assert sample(metrics, "llmsafety_alert_delivery_retries_total", target="webhook") == 0
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="rejected") == 1


def test_unreachable_target_fails_after_retries_without_stopping_the_others():
    receiver = Receiver()
    with receiver.serve() as url:
        dead = f"http://127.0.0.1:{free_port()}/hook"  # a port nobody listens on
        metrics = MonitorMetrics()
        delivery = AlertDelivery([WebhookTarget(dead), WebhookTarget(url, "slack")], metrics, FAST)
        delivery.start()
        delivery.on_transitions(fire(AlertEngine()))
        assert delivery.flush()
        delivery.close()
    assert len(receiver.bodies) == 1
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="failed") == 1
    assert sample(metrics, "llmsafety_alert_delivery_retries_total", target="webhook") == FAST.max_attempts - 1
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="slack", outcome="sent") == 1


def test_listener_returns_while_the_receiver_hangs():
    gate = threading.Event()
    receiver = Receiver(gate=gate)
    with receiver.serve() as url:
        delivery = AlertDelivery([WebhookTarget(url)], MonitorMetrics(), FAST)
        delivery.start()
        engine = AlertEngine()
        delivery.on_transitions(fire(engine, key="a"))
        delivery.on_transitions(fire(engine, key="b"))  # returns although the first request is stuck
        assert not receiver.received.is_set()
        gate.set()
        assert delivery.flush()
        delivery.close()
    assert sorted(a["key"] for body in receiver.bodies for a in body["alerts"]) == ["a", "b"]


def test_outbox_is_bounded_and_drops_the_oldest():
    receiver = Receiver()
    with receiver.serve() as url:
        metrics = MonitorMetrics()
        policy = DeliveryPolicy(outbox_size=2, max_attempts=1, backoff_s=0.01)
        delivery = AlertDelivery([WebhookTarget(url)], metrics, policy)
        engine = AlertEngine()
        for key in "abcde":  # queued before the thread starts: nothing is sent yet
            delivery.on_transitions(fire(engine, key=key))
        assert sample(metrics, "llmsafety_alert_outbox_size", target="webhook") == 2
        assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="dropped") == 3
        delivery.start()
        assert delivery.flush()
        delivery.close()
    assert [a["key"] for a in receiver.bodies[0]["alerts"]] == ["d", "e"]
    assert sample(metrics, "llmsafety_alert_outbox_size", target="webhook") == 0


def test_pending_alerts_are_not_announced():
    receiver = Receiver()
    with receiver.serve() as url:
        delivery = AlertDelivery([WebhookTarget(url)], MonitorMetrics(), FAST)
        delivery.start()
        engine = AlertEngine(pending_seconds=60)
        delivery.on_transitions(fire(engine, at=T0))
        delivery.on_transitions(fire(engine, at=T0 + 60))
        assert delivery.flush()
        delivery.close()
    assert [a["status"] for body in receiver.bodies for a in body["alerts"]] == ["firing"]


def test_settings_build_targets_and_bad_urls_name_the_setting():
    settings = Settings(
        alertmanager_urls="http://am-0:9093,http://am-1:9093",
        alert_webhook_urls=["https://hooks.example/x"],
        alert_slack_webhook_urls=["https://hooks.slack.example/T/B/secret"],
    )
    assert [t.label for t in targets_from_settings(settings)] == ["alertmanager", "alertmanager", "webhook", "slack"]
    with pytest.raises(ValueError, match="alertmanager_urls: no scheme") as refused:
        targets_from_settings(Settings(alertmanager_urls=["am-0:9093"]))
    assert "am-0" not in str(refused.value)  # never the value: a webhook's path or user info is its secret
    with pytest.raises(ValueError, match="alert_slack_webhook_urls: ftp://x: scheme 'ftp'"):
        targets_from_settings(Settings(alert_slack_webhook_urls=["ftp://x"]))
    with pytest.raises(ValueError, match="max_attempts"):
        DeliveryPolicy(max_attempts=0)


def test_restored_firing_alerts_are_restated_to_alertmanager_only(alertmanager):
    """A restart or detector handover must not page Slack/webhooks again for an alert already announced."""
    engine = AlertEngine()
    [transition] = fire(engine, key="hate", kind="judge_disagreement")
    restored = [Transition(transition.alert, "firing")]
    receiver = Receiver()
    with receiver.serve() as url:
        delivery = AlertDelivery([AlertmanagerTarget(alertmanager, "", 240.0), WebhookTarget(url, "json")], MonitorMetrics(), FAST)
        delivery.start(firing=[transition.alert])
        delivery.on_transitions(restored)
        assert delivery.flush()
        delivery.on_transitions(fire(engine, key="fraud", kind="judge_disagreement"))
        assert delivery.flush()
        delivery.close()
    assert [a["key"] for body in receiver.bodies for a in body["alerts"]] == ["fraud"]
    assert {a["labels"]["key"] for a in am_alerts(alertmanager) if a["labels"]["kind"] == "judge_disagreement"} == {"hate", "fraud"}


def test_outbox_gauge_sums_every_delivery_on_a_shared_registry():
    """A detector node runs one delivery per owned partition on one registry."""
    receiver = Receiver()
    with receiver.serve() as url:
        metrics = MonitorMetrics()
        first, second = (AlertDelivery([WebhookTarget(url)], metrics, FAST) for _ in range(2))
        for delivery, keys in ((first, "ab"), (second, "cde")):  # threads not started: everything stays queued
            engine = AlertEngine()
            for key in keys:
                delivery.on_transitions(fire(engine, key=key))
        assert sample(metrics, "llmsafety_alert_outbox_size", target="webhook") == 5
        first.start()
        first.close()  # a partition handed back: its outbox leaves the sum
        assert sample(metrics, "llmsafety_alert_outbox_size", target="webhook") == 3
        second.start()
        assert second.flush()
        second.close()
    assert sample(metrics, "llmsafety_alert_outbox_size", target="webhook") == 0


def test_silenced_notices_skip_webhooks_and_are_counted_but_reach_alertmanager(alertmanager):
    """A person's silence mutes the monitor's own webhooks; Alertmanager gets the notice and mutes it itself."""
    engine, metrics, receiver = AlertEngine(), MonitorMetrics(), Receiver()
    with receiver.serve() as url:
        delivery = AlertDelivery([AlertmanagerTarget(alertmanager, ""), WebhookTarget(url, "json")], metrics, FAST)
        hold = SilenceHold(FAST.outbox_size, silenced=lambda notice: notice.key == "weapons")
        delivery.mute_with(hold)
        delivery.start()
        delivery.on_transitions(fire(engine, key="weapons") + fire(engine, key="fraud"))
        assert delivery.flush()
        delivery.close()
    assert [a["key"] for body in receiver.bodies for a in body["alerts"]] == ["fraud"]
    assert [n["key"] for n in hold.state_dict()["held"]] == ["weapons"]  # waits for its silence to end, in the snapshot
    assert {"weapons", "fraud"} <= {a["labels"].get("key") for a in am_alerts(alertmanager)}


def test_a_held_notice_goes_out_when_its_silence_ends_and_never_if_its_alert_resolved_first():
    """As Alertmanager does: a silence delays the page of an alert that still fires, and swallows one that ended."""
    engine, metrics, receiver, silenced = AlertEngine(), MonitorMetrics(), Receiver(), {"weapons", "fraud"}
    with receiver.serve() as url:
        delivery = AlertDelivery([WebhookTarget(url, "json")], metrics, FAST)
        delivery.mute_with(SilenceHold(FAST.outbox_size, silenced=lambda notice: notice.key in silenced))
        delivery.start()
        delivery.on_transitions(fire(engine, key="weapons") + fire(engine, key="fraud"))
        delivery.on_transitions(resolve(engine, key="fraud"))
        assert delivery.flush()
        assert receiver.bodies == []
        silenced.clear()  # the silence ends; the next batch, with no transitions of its own, releases weapons
        delivery.on_transitions([])
        assert delivery.flush()
        assert [(a["key"], a["status"]) for body in receiver.bodies for a in body["alerts"]] == [("weapons", "firing")]
        delivery.on_transitions(resolve(engine, key="weapons"))
        assert delivery.flush()
        delivery.close()
    assert [(a["key"], a["status"]) for body in receiver.bodies for a in body["alerts"]] == [("weapons", "firing"), ("weapons", "resolved")]
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="silenced") == 2  # fraud's two


def test_a_failing_silence_lookup_sends_the_notice():
    """A broken lookup must not swallow pages."""
    engine, receiver = AlertEngine(), Receiver()
    with receiver.serve() as url:
        delivery = AlertDelivery([WebhookTarget(url, "json")], MonitorMetrics(), FAST)
        delivery.mute_with(SilenceHold(FAST.outbox_size, silenced=lambda notice: 1 / 0))
        delivery.start()
        delivery.on_transitions(fire(engine, key="weapons"))
        assert delivery.flush()
        delivery.close()
    assert [a["key"] for body in receiver.bodies for a in body["alerts"]] == ["weapons"]


def test_without_traffic_a_page_due_at_the_end_of_a_silence_goes_out_within_the_resend_interval():
    engine, receiver, silenced = AlertEngine(), Receiver(), {"weapons", "fraud"}
    quick = DeliveryPolicy(resend_interval_s=0.05, timeout_s=2.0, max_attempts=3, backoff_s=0.01, max_backoff_s=0.05)

    def heard() -> list[str]:
        return [a["key"] for body in receiver.bodies for a in body["alerts"]]

    with receiver.serve() as url:
        for policy, key in ((quick, "weapons"), (FAST, "fraud")):
            delivery = AlertDelivery([WebhookTarget(url, "json")], MonitorMetrics(), policy)
            hold = SilenceHold(policy.outbox_size, silenced=lambda notice: notice.key in silenced)
            delivery.mute_with(hold)
            delivery.start()
            delivery.on_transitions(fire(engine, key=key))
            assert delivery.flush() and key not in heard()
            silenced.discard(key)  # no transitions from here on
            if policy is quick:
                deadline = time.monotonic() + 5
                while key not in heard() and time.monotonic() < deadline:
                    time.sleep(0.02)
            delivery.close()
    # FAST re-checks every 60 s: closing keeps fraud held (the service snapshotted it already; sent now, it
    # would go out again after a restart).
    assert heard() == ["weapons"] and [n["key"] for n in hold.state_dict()["held"]] == ["fraud"]


def test_held_notices_of_alerts_no_longer_firing_at_start_are_given_up_and_counted():
    """Restoring state can resolve an alert (a refitted detector) before delivery listens."""
    engine, metrics = AlertEngine(), MonitorMetrics()
    hold = SilenceHold(FAST.outbox_size, silenced=lambda notice: True)
    delivery = AlertDelivery([WebhookTarget("http://127.0.0.1:9/hook", "json")], metrics, FAST)
    delivery.mute_with(hold)
    delivery.on_transitions(fire(engine, key="weapons") + fire(engine, key="fraud"))  # threads not started: held only
    restored = SilenceHold(FAST.outbox_size)
    restored.load_state_dict(hold.state_dict())
    later = AlertDelivery([WebhookTarget("http://127.0.0.1:9/hook", "json")], metrics, FAST)
    later.mute_with(restored)
    resolve(engine, key="fraud")
    later.start(engine.alerts("firing"))
    later.close()
    assert [n["key"] for n in restored.state_dict()["held"]] == ["weapons"]
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="silenced") == 1


def test_notices_after_close_are_counted_dropped():
    metrics, engine = MonitorMetrics(), AlertEngine()
    delivery = AlertDelivery([WebhookTarget("http://127.0.0.1:9/hook", "json")], metrics, FAST)
    delivery.start()
    delivery.close()
    delivery.on_transitions(fire(engine, key="weapons"))  # e.g. a reviewer's action racing the stop
    assert sample(metrics, "llmsafety_alert_deliveries_total", target="webhook", outcome="dropped") == 1


def test_a_triage_silence_mutes_the_services_webhook(embedder):
    """Wired by build_service: after a reviewer silences an alert, a re-opened alert with the same labels stays
    off the webhook while the silence lasts; the resolve of the one the webhook heard firing and other alerts
    still go out."""
    from monitor.pipeline.builder import build_service
    from monitor.pipeline.triaging import triage_of

    receiver = Receiver()
    with receiver.serve() as url:
        service = build_service(Settings(judge="prototype", alert_webhook_urls=[url], alert_cooldown_seconds=0), embedder=embedder)
        try:
            [opened] = service.apply(lambda: [Condition("category_share", "global", "weapons", True, T0, summary="up")])
            triage_of(service).act_on_alert("reviewer", opened.alert.id, "silence", seconds=600)
            service.apply(lambda: [Condition("category_share", "global", "weapons", False, T0 + 60)])
            service.apply(lambda: [Condition("category_share", "global", "weapons", True, T0 + 7200, summary="up again")])
            service.apply(lambda: [Condition("category_share", "global", "fraud", True, T0 + 7200, summary="up")])
            assert len(service.alerts("all")) == 3  # the second weapons alert is a new one (cooldown 0), still silenced
        finally:
            service.close()
    sent = [(a["key"], a["status"]) for body in receiver.bodies for a in body["alerts"]]
    assert sent == [("weapons", "firing"), ("weapons", "resolved"), ("fraud", "firing")]
    assert [n["key"] for n in service.stateful["silence_hold"].state_dict()["held"]] == ["weapons"]


def test_a_held_notice_survives_a_restart_and_goes_out_when_the_silence_ends(embedder):
    """The hold is in the snapshot (Redis): after a restart the page still comes when the silence ends, and the
    receiver never gets a resolve of an alert it did not hear firing."""
    from monitor.pipeline.builder import build_service
    from monitor.pipeline.triaging import triage_of
    from tests.helpers.redis import private_redis

    receiver = Receiver()
    with private_redis() as redis, receiver.serve() as url:
        settings = Settings(judge="prototype", redis_url=redis.url, alert_webhook_urls=[url], alert_cooldown_seconds=0)
        service = build_service(settings, embedder=embedder)
        [opened] = service.apply(lambda: [Condition("category_share", "global", "weapons", True, T0, summary="up")])
        triage_of(service).act_on_alert("reviewer", opened.alert.id, "silence", seconds=600)
        service.apply(lambda: [Condition("category_share", "global", "weapons", False, T0 + 60)])
        service.apply(lambda: [Condition("category_share", "global", "weapons", True, T0 + 7200, summary="up again")])
        service.apply(lambda: [Condition("category_share", "global", "fraud", True, T0 + 7200, summary="up")])
        service.apply(lambda: [Condition("category_share", "global", "fraud", False, T0 + 7300)])  # heard firing: goes out
        service.close()  # saves the snapshot
        restarted = build_service(settings, embedder=embedder)
        try:
            restarted.apply(lambda: [])
            time.sleep(0.5)  # time for a wrongly released notice to arrive
            assert sum(len(body["alerts"]) for body in receiver.bodies) == 4  # still silenced
            triage_of(restarted).clock = lambda: time.time() + 3600  # the silence has ended
            restarted.apply(lambda: [])  # the next batch
            assert restarted.stateful["silence_hold"].state_dict()["held"] == []
        finally:
            restarted.close()
    sent = [(a["key"], a["status"]) for body in receiver.bodies for a in body["alerts"]]
    assert sent == [("weapons", "firing"), ("weapons", "resolved"), ("fraud", "firing"), ("fraud", "resolved"), ("weapons", "firing")]



@pytest.mark.parametrize("fired_by", ["worker_batch", "reviewer_action"])
def test_transition_listeners_hear_an_alert_resolve_after_it_fired_even_from_two_threads(embedder, fired_by):
    """The worker and a reviewer's action both make transitions; listeners (delivery) run under the state lock,
    so a resolve made while the firing is still being handed over waits for it."""
    from monitor.drift.suite import DetectorSuite
    from monitor.events import Event
    from monitor.pipeline.builder import build_service
    from tests.helpers.detectors import RecentRefusals

    service = build_service(Settings(judge="prototype", alert_cooldown_seconds=0), embedder=embedder,
                            detectors=DetectorSuite([RecentRefusals()]))
    refusals = [(Event(f"e{i}", T0 + i, "What is the capital of Peru?", "Sorry, I cannot assist with that request."), 1.0)
                for i in range(10)]
    fire = {"worker_batch": lambda: service.process_batch(refusals),
            "reviewer_action": lambda: service.apply(lambda: [Condition("recent_refusals", "global", "", True, T0)])}[fired_by]
    heard: list[str] = []
    handing_over, release = threading.Event(), threading.Event()

    def slow_first_listener(transitions: list[Transition]) -> None:
        if transitions and not handing_over.is_set():
            handing_over.set()
            release.wait(5)
        heard.extend(t.alert.status for t in transitions)

    service.transition_listeners.append(slow_first_listener)
    try:
        firing = threading.Thread(target=fire)
        firing.start()
        assert handing_over.wait(30)
        resolving = threading.Thread(target=service.apply, args=(lambda: [Condition("recent_refusals", "global", "", False, T0 + 60)],))
        resolving.start()
        resolving.join(0.3)  # without the lock the resolve is heard now, before the firing
        release.set()
        firing.join(5)
        resolving.join(5)
    finally:
        service.close()
    assert heard == ["firing", "resolved"]
