"""The deployment examples hang together: names, ports, paths and settings they refer to exist.

What cannot run here is said in docs/observability.md (no Docker daemon, no cluster): these checks
are what can be verified offline, plus ``kubectl kustomize`` and ``promtool`` where installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.alerts.delivery import targets_from_settings
from monitor.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
JOB = "llmsafety-monitor"  # the job name deploy/prometheus/rules select on


def k8s_objects() -> dict[tuple[str, str], dict]:
    docs = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) if f.name != "kustomization.yaml" for d in yaml.safe_load_all(f.read_text())]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


def check_monitor_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    unknown = [k for k in env if k.startswith("MONITOR_") and k.removeprefix("MONITOR_").lower() not in Settings.model_fields]
    assert not unknown, f"not settings: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    targets_from_settings(settings)  # URLs are valid
    return settings


def test_compose_services_mounts_and_settings(monkeypatch):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"monitor", "redis", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        assert service.get("image"), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
    assert (DEPLOY / services["monitor"]["build"]["context"] / services["monitor"]["build"]["dockerfile"]).is_file()
    settings = check_monitor_env(services["monitor"]["environment"], monkeypatch)
    assert settings.alertmanager_urls == ["http://alertmanager:9093"]

    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["job_name"] == JOB and job["static_configs"][0]["targets"] == ["monitor:8000"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_rules_select_the_job_the_deployments_produce():
    rules = (DEPLOY / "prometheus" / "rules" / "llmsafety-health.yml").read_text()
    assert f'job="{JOB}"' in rules


def test_k8s_sidecar_service_and_servicemonitor_line_up(monkeypatch):
    objects = k8s_objects()
    deployment = objects[("Deployment", "llm-gateway")]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert {"gateway", "safety-monitor"} <= set(containers)
    monitor = containers["safety-monitor"]
    assert monitor["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert monitor["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert monitor["resources"]["requests"] and monitor["resources"]["limits"]["memory"]
    port_names = {p["name"] for p in monitor["ports"]}

    config = objects[("ConfigMap", monitor["envFrom"][0]["configMapRef"]["name"])]["data"]
    check_monitor_env(config, monkeypatch)
    gateway_env = {e["name"]: e["value"] for e in containers["gateway"]["env"]}
    assert gateway_env["GENERIC_LOGGER_ENDPOINT"].startswith(f"http://127.0.0.1:{config['MONITOR_PORT']}/")

    service = objects[("Service", JOB)]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    service_monitor = objects[("ServiceMonitor", JOB)]
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in service_monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


def test_kustomize_builds_every_manifest():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize build not checked")
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "Service", "ServiceMonitor"]


def test_plain_k8s_scrape_config_keeps_the_job_name():
    config = yaml.safe_load((DEPLOY / "k8s" / "prometheus-scrape.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == JOB
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    done = subprocess.run([promtool, "check", "config", str(DEPLOY / "k8s" / "prometheus-scrape.yml")], capture_output=True, text=True, timeout=60)
    if "kubernetes_sd_configs not found" in done.stdout + done.stderr:
        pytest.skip("this promtool build has no Kubernetes service discovery (Debian's package strips it)")
    assert done.returncode == 0, done.stdout + done.stderr
