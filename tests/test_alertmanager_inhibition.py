"""The shipped Alertmanager inhibit rules, run in a real Alertmanager: they mute this project's
alerts as documented, and never another team's (amtool cannot test inhibition, the API can:
``GET /api/v2/alerts`` reports ``status.inhibitedBy``)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.helpers.prom import DEPLOY, running_alertmanager


def _alert(**labels: str) -> dict:
    now = datetime.now(timezone.utc)
    return {"labels": labels, "annotations": {"summary": "test"}, "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat()}


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    with running_alertmanager(DEPLOY / "alertmanager" / "alertmanager.yml", tmp_path_factory.mktemp("am")) as url:
        yield url


def _inhibited(url: str, sent: list[dict]) -> dict[str, bool]:
    """alertname -> inhibited, once Alertmanager reports every alert sent."""
    httpx.post(f"{url}/api/v2/alerts", json=sent, timeout=5).raise_for_status()
    names = {a["labels"]["alertname"] for a in sent}
    deadline = time.monotonic() + 20
    while True:
        got = {a["labels"]["alertname"]: bool(a["status"]["inhibitedBy"]) for a in httpx.get(f"{url}/api/v2/alerts", timeout=5).json()}
        if names <= set(got) and (any(got.values()) or time.monotonic() > deadline):
            return got
        time.sleep(0.2)


def test_a_critical_llmsafety_alert_mutes_its_own_warnings_but_not_another_teams(alertmanager):
    got = _inhibited(alertmanager, [
        _alert(alertname="LLMSafetyMonitorDown", source="prometheus", signal="health", severity="critical", instance="m:8000"),
        _alert(alertname="LLMSafetyIngestStalled", source="prometheus", signal="health", severity="warning", instance="m:8000"),
        _alert(alertname="DiskAlmostFull", severity="warning", team="storage", instance="db1:9100"),  # no kind, no scope
    ])
    assert got["LLMSafetyIngestStalled"] is True  # same (absent) kind and scope, this project: muted
    assert got["DiskAlmostFull"] is False  # before the fix: muted by LLMSafetyMonitorDown


def test_the_pushed_drift_alert_supersedes_the_rule_on_the_same_kind(alertmanager):
    got = _inhibited(alertmanager, [
        _alert(alertname="LLMSafetyCategoryShare", source="llmsafety-monitor", kind="category_share", scope="global", severity="warning"),
        _alert(alertname="LLMSafetyDriftCategoryShare", source="prometheus", signal="drift", kind="category_share", severity="warning"),
        _alert(alertname="OtherDrift", source="prometheus", signal="drift", kind="category_share", severity="warning"),
    ])
    assert got["LLMSafetyDriftCategoryShare"] is True
    assert got["OtherDrift"] is False
