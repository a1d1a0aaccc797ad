"""The dashboards and rules are real: the service, a real Prometheus and a real Alertmanager on loopback.

The real service (uvicorn, prototype judge, detectors tuned to a short stream) pushes its alerts to
a real Alertmanager running the shipped config; a real Prometheus runs the shipped scrape config
(1 s intervals, loopback targets) and rules. A demo stream whose self-harm share rises halfway is
replayed; then every panel query of every dashboard is evaluated through Prometheus's HTTP API,
the shipped drift rule must fire, and Alertmanager must hold the service's own alert (with its
evidence link) and mute the rule's duplicate of it. The service also probes a fake model (one
round at start), so the Canary probes row has data.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from monitor.config import Settings
from monitor.demo import demo_stream
from monitor.drift.over_refusal import OverRefusalDetector
from monitor.drift.unsafe_response_rate import UnsafeResponseRateDetector
from monitor.drift.emerging_clusters import EmergingClusterDetector, EmergingClusterSettings
from monitor.drift.category_share import CategoryShareDetector
from monitor.drift.rate_change import RateChangeConfig
from monitor.drift.suite import DetectorSuite
from monitor.pipeline.builder import build_service
from tests.fakes.canary_model import CanaryModel
from tests.fakes.openai_chat_server import FakeChatServer
from tests.helpers.probes import builtin_sets
from tests.helpers.prom import DEPLOY, binary, running_alertmanager, running_prometheus
from tests.helpers.server import RunningServer, running_server
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
N_EVENTS = 1200  # the demo's self-harm share rises from 1% to 15% at event 600 (embedding costs ~15 ms CPU per event)
MODEL, ROUTE = "demo-model", "/chat"
ALL = {"model": ".*", "route": ".*", "detector": ".*"}
ONE = {"model": MODEL, "route": ROUTE, "detector": "category_share"}


def fast_detectors() -> DetectorSuite:
    """The shipped detectors, tuned for a short stream: short warm-ups, a false alarm per 10,000 events."""
    rates = RateChangeConfig(warmup=300)
    return DetectorSuite([
        CategoryShareDetector(["self_harm"], warmup_events=500, expected_run_time=10_000),
        UnsafeResponseRateDetector(rates),
        OverRefusalDetector(rates),
        EmergingClusterDetector(EmergingClusterSettings(reference_events=300, calibration_events=300)),
    ])


@dataclass
class Stack:
    server: RunningServer
    prometheus: str
    alertmanager: str
    started: float

    def prom(self, path: str, **params: Any) -> Any:
        body = httpx.get(f"{self.prometheus}{path}", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]


def prometheus_config(target: str, alertmanager: str, workdir: Path) -> Path:
    """The shipped prometheus.yml, pointed at loopback and sped up (1 s scrape and evaluation)."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager.removeprefix("http://")]}]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target.removeprefix("http://")]}]
    token = workdir / "read-token"  # the shipped config reads the monitor's read token from a file
    token.write_text("test-read-token")
    job["authorization"] = {"credentials_file": str(token)}
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def binaries() -> None:
    """Skip before the model loads when a binary is missing."""
    binary("prometheus")
    binary("prometheus-alertmanager", "alertmanager")


@pytest.fixture(scope="module")
def stack(binaries, embedder, tmp_path_factory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("observability")
    with FakeChatServer(CanaryModel(builtin_sets())) as canary, running_alertmanager(DEPLOY / "alertmanager" / "alertmanager.yml", work) as am_url:
        settings = Settings(
            judge="prototype", models=[MODEL], routes=[ROUTE], batch_size=128,
            alertmanager_urls=[am_url], alert_link_base_url="http://monitor.test", alert_resend_interval_s=5,
            probe_targets=[f"canary@{canary.base_url}"], probe_interval_seconds=3600,
        )

        def factory(s: Settings):  # build_service attaches alert delivery: alertmanager_urls is set
            return build_service(s, embedder=embedder, detectors=fast_detectors())

        with running_server(settings, factory) as server:
            with running_prometheus(prometheus_config(server.url, am_url, work), work) as prom_url:
                stack = Stack(server, prom_url, am_url, time.time())
                wait_for("first scrape", lambda: stack.prom("/api/v1/query", query='up{job="llmsafety-monitor"} == 1')["result"])
                events = demo_stream(N_EVENTS, shift_at=N_EVENTS // 2)
                for i in range(0, N_EVENTS, 200):
                    assert server.client.post("/v1/events", json=events[i : i + 200]).status_code == 202
                server.wait_processed(timeout=180)
                wait_for("the drift rule to fire", lambda: firing_rule_alerts(stack))
                yield stack


def firing_rule_alerts(stack: Stack) -> list[dict]:
    return [a for a in stack.prom("/api/v1/alerts")["alerts"] if a["state"] == "firing" and a["labels"].get("signal") == "drift"]


def substitute(expr: str, values: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], target["expr"]))
    return out


def test_the_stream_was_judged_and_alerted_on(stack):
    status = stack.server.client.get("/v1/status").json()
    assert status["judged"] == N_EVENTS
    alerts = stack.server.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"]
    assert any(a["kind"] == "category_share" for a in alerts), alerts


@pytest.mark.parametrize("values", [ALL, ONE], ids=["all", "one-model"])
def test_every_panel_query_returns_data(stack, values):
    empty = []
    for board, title, expr in panel_queries():
        query = substitute(expr, values)
        result = stack.prom("/api/v1/query_range", query=query, start=stack.started, end=time.time(), step="1s")["result"]
        finite = [float(v) for series in result for _, v in series["values"] if math.isfinite(float(v))]
        if not finite:
            empty.append(f"{board} / {title}: {query}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_dashboard_variables_list_the_service_labels(stack):
    def label_values(label: str, match: str) -> list[str]:
        return stack.prom(f"/api/v1/label/{label}/values", **{"match[]": match})

    assert MODEL in label_values("model", "llmsafety_events_judged_total")
    assert ROUTE in label_values("route", f'llmsafety_events_judged_total{{model=~"{MODEL}"}}')
    assert "category_share" in label_values("detector", "llmsafety_detector_statistic")


def test_shipped_drift_rule_fires_for_the_category_share_rise(stack):
    fired = {(a["labels"]["alertname"], a["labels"]["kind"]) for a in firing_rule_alerts(stack)}
    assert ("LLMSafetyDriftCategoryShare", "category_share") in fired
    [rule] = [a for a in firing_rule_alerts(stack) if a["labels"]["kind"] == "category_share"]
    assert rule["labels"]["source"] == "prometheus" and rule["labels"]["severity"] in ("warning", "critical")


def test_alertmanager_holds_the_pushed_alert_and_mutes_the_rule_duplicate(stack):
    def alerts() -> list[dict]:
        return httpx.get(f"{stack.alertmanager}/api/v2/alerts", timeout=5).json()

    def both_arrived() -> tuple[list[dict], list[dict]] | None:
        current = [a for a in alerts() if a["labels"].get("kind") == "category_share"]
        pushed = [a for a in current if a["labels"]["source"] == "llmsafety-monitor"]
        rule = [a for a in current if a["labels"]["source"] == "prometheus" and a["status"]["inhibitedBy"]]
        return (pushed, rule) if pushed and rule else None

    pushed, rule = wait_for("both alerts in Alertmanager", both_arrived)
    service_alerts = {a["id"]: a for a in stack.server.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"]}
    for alert in pushed:
        alert_id = alert["annotations"]["alert_url"].removeprefix("http://monitor.test/v1/alerts/")
        assert service_alerts[alert_id]["key"] == alert["labels"]["key"]
        assert alert["labels"]["alertname"] == "LLMSafetyCategoryShare" and alert["status"]["state"] == "active"
    assert rule[0]["labels"]["alertname"] == "LLMSafetyDriftCategoryShare"
    assert rule[0]["status"]["state"] == "suppressed"
    assert set(rule[0]["status"]["inhibitedBy"]) <= {a["fingerprint"] for a in pushed}
