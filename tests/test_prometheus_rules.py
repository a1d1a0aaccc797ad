"""The shipped Prometheus rules and configs: promtool/amtool validation and rule unit tests."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.helpers.prom import DEPLOY, binary

PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def alerting_rules() -> list[dict]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_prometheus_config_and_rules_are_valid(tmp_path):
    promtool = binary("promtool")
    # promtool checks that the token file exists: a copy whose token file does (compose mounts it)
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/monitor_read_token"
    (tmp_path / "token").write_text("t")
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    config["rule_files"] = [str(PROMETHEUS / "rules" / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert f"{len(RULE_FILES)} rule files found" in out
    run(promtool, "check", "rules", *map(str, RULE_FILES))


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests_pass(test_file):
    assert "SUCCESS" in run(binary("promtool"), "test", "rules", str(test_file))


def test_every_alerting_rule_has_a_unit_test():
    tested = {
        case["alertname"]
        for f in RULE_TESTS
        for group in yaml.safe_load(f.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {r["alert"] for r in alerting_rules()} - tested == set()


def test_alerting_rules_carry_the_labels_alertmanager_routes_on():
    for rule in alerting_rules():
        labels = rule["labels"]
        assert labels["source"] == "prometheus", rule["alert"]
        assert labels["signal"] in ("drift", "health"), rule["alert"]
        # Drift alerts take their severity from the monitor's alert engine; health alerts set one.
        assert ("severity" in labels) == (labels["signal"] == "health"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"].startswith("LLMSafety")


def test_alertmanager_config_is_valid():
    amtool = binary("amtool")
    assert "SUCCESS" in run(amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))


def test_every_alert_has_a_runbook_section_and_drift_alerts_survive_a_restart():
    """runbook_url anchors exist in docs/runbooks.md; drift rules keep firing across a monitor restart."""
    import re

    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in (DEPLOY.parent / "docs" / "runbooks.md").read_text().splitlines() if line.startswith("#")}
    for rule in alerting_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.split("#")[0].endswith("docs/runbooks.md") and url.split("#")[1] in headings, rule["alert"]
        if rule["labels"]["signal"] == "drift":
            assert rule.get("keep_firing_for") == "10m", rule["alert"]
