"""The deployment examples hang together: names, ports, paths and settings they refer to exist.

What cannot run here is said in docs/observability.md (no Docker daemon, no cluster): these checks
are what can be verified offline, plus ``kubectl kustomize`` and ``promtool`` where installed.
"""

from __future__ import annotations

import json
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
# Token settings the authentication work adds (monitor/config.py on its branch); the deployments
# already pass them, from a Secret / the compose .env, never from a committed file.
AUTH_ENV = ("MONITOR_INGEST_TOKENS", "MONITOR_READ_TOKENS", "MONITOR_ADMIN_TOKENS")


def k8s_objects() -> dict[tuple[str, str], dict]:
    docs = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) if f.name != "kustomization.yaml" for d in yaml.safe_load_all(f.read_text())]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


def check_monitor_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    unknown = [k for k in env if k.startswith("MONITOR_") and k.removeprefix("MONITOR_").lower() not in Settings.model_fields
               and k not in AUTH_ENV]
    assert not unknown, f"not settings: {unknown}"
    for key, value in env.items():
        if key.startswith("MONITOR_") and key.removeprefix("MONITOR_").lower() in Settings.model_fields:
            monkeypatch.setenv(key, str(value))
    settings = Settings()
    targets_from_settings(settings)  # URLs are valid
    return settings


def test_compose_services_mounts_and_settings(monkeypatch):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"gateway", "monitor", "redis", "prometheus", "alertmanager", "grafana"} <= set(services)
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
    assert settings.alertmanager_urls == ["http://alertmanager:9093"] and settings.redaction == "on" and not settings.store_raw_text
    # tokens and passwords come from deploy/.env, required (":?"), never a default in the file
    env = services["monitor"]["environment"]
    assert all(env[k].startswith("${MONITOR_") and ":?" in env[k] for k in AUTH_ENV)
    assert ":?" in services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert ":?" in services["gateway"]["environment"]["LLMSAFETY_AUTHORIZATION"]
    for name, service in services.items():  # published on loopback only
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])), name
    assert "redis" not in services["gateway"].get("networks", []) and "state" not in services["gateway"]["networks"]
    assert services["gateway"]["depends_on"]["monitor"]["condition"] == "service_healthy"
    litellm = yaml.safe_load((DEPLOY / "litellm" / "config.yaml").read_text())
    check_litellm_config(litellm, "http://monitor:8000/")

    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["job_name"] == JOB and job["static_configs"][0]["targets"] == ["monitor:8000"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/" + services["prometheus"]["secrets"][0]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def check_litellm_config(config: dict, endpoint_prefix: str) -> None:
    """callback_settings where LiteLLM reads it (top level, litellm/proxy/proxy_server.py), naming the callback in use."""
    assert "callback_settings" not in config.get("litellm_settings", {})
    [name] = config["litellm_settings"]["callbacks"]
    callback = config["callback_settings"][name]
    assert callback["callback_type"] == "generic_api" and callback["endpoint"].startswith(endpoint_prefix)
    assert callback["endpoint"].endswith("/v1/ingest/litellm") and callback["max_retries"] >= 1
    assert callback["headers"]["Authorization"].startswith("os.environ/")


def test_compose_validates_with_docker_compose(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose (the v2 plugin) is not installed here: compose checked against the Compose Specification's schema")
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}=x\n" for k in ("MONITOR_INGEST_TOKEN", "MONITOR_READ_TOKEN", "MONITOR_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD")))
    done = subprocess.run([docker, "compose", "--env-file", str(env), "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "--env-file", "/dev/null", "config", "--quiet"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "MONITOR_" in missing.stderr  # no token, no start


def test_compose_file_follows_the_compose_specification():
    """Where no compose plugin runs (CI), the file is validated against the Compose Specification's
    JSON schema (tests/fixtures/compose-spec.json): unknown keys, wrong types and misplaced sections
    fail here as `docker compose config` would fail on them."""
    import jsonschema

    schema = json.loads((Path(__file__).parent / "fixtures" / "compose-spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert [e.message for e in validator.iter_errors(compose)] == []
    broken = {**compose, "services": {**compose["services"], "monitor": {**compose["services"]["monitor"], "restart_policy": "always"}}}
    assert any("restart_policy" in e.message for e in validator.iter_errors(broken))  # the check has teeth


def test_rules_select_the_job_the_deployments_produce():
    rules = (DEPLOY / "prometheus" / "rules" / "llmsafety-health.yml").read_text()
    assert f'job="{JOB}"' in rules


def test_k8s_sidecar_service_and_servicemonitor_line_up(monkeypatch):
    objects = k8s_objects()
    workload = objects[("StatefulSet", "llm-gateway")]
    pod = workload["spec"]["template"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert objects[("Service", workload["spec"]["serviceName"])]["spec"]["clusterIP"] == "None"
    # the monitor is a native sidecar: an init container that keeps running (starts first, stops last)
    sidecars = {c["name"]: c for c in pod["spec"]["initContainers"]}
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert sidecars["safety-monitor"]["restartPolicy"] == "Always" and "gateway" in containers
    monitor = sidecars["safety-monitor"]
    assert monitor["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert monitor["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert monitor["resources"]["requests"] and monitor["resources"]["limits"]["memory"]
    port_names = {p["name"] for p in monitor["ports"]}

    config = objects[("ConfigMap", monitor["envFrom"][0]["configMapRef"]["name"])]["data"]
    check_monitor_env(config, monkeypatch)
    env = {e["name"]: e for e in monitor["env"]}
    # each replica its own Redis state, named by its (stable) pod name: no replica overwrites another's snapshot
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "$(POD_NAME)" in env["MONITOR_STATE_KEY_PREFIX"]["value"] and [*env].index("POD_NAME") < [*env].index("MONITOR_STATE_KEY_PREFIX")
    assert all(env[k]["valueFrom"]["secretKeyRef"]["name"] == "llmsafety-tokens" for k in AUTH_ENV)
    gateway = containers["gateway"]
    gateway_env = {e["name"]: e for e in gateway["env"]}
    assert gateway_env["LLMSAFETY_INGEST_TOKEN"]["valueFrom"]["secretKeyRef"] == env["MONITOR_INGEST_TOKENS"]["valueFrom"]["secretKeyRef"]
    assert gateway_env["LLMSAFETY_AUTHORIZATION"]["value"] == "Bearer $(LLMSAFETY_INGEST_TOKEN)"
    # the LiteLLM config is mounted where --config points, and enables the callback on loopback
    [mount] = [m for m in gateway["volumeMounts"] if m["mountPath"] == gateway["args"][gateway["args"].index("--config") + 1]]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    litellm = yaml.safe_load(objects[("ConfigMap", volume["configMap"]["name"])]["data"][mount["subPath"]])
    check_litellm_config(litellm, f"http://127.0.0.1:{config['MONITOR_PORT']}/")
    # securityContext per container: LiteLLM runs as root, so runAsNonRoot only on the monitor
    assert "runAsNonRoot" not in pod["spec"].get("securityContext", {})
    assert monitor["securityContext"]["runAsNonRoot"] and monitor["securityContext"]["readOnlyRootFilesystem"]
    for c in (monitor, gateway):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # only Prometheus reaches the monitor port; a PDB keeps all but one replica through drains
    policy = objects[("NetworkPolicy", "llm-gateway")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    monitor_rules = [r for r in policy["ingress"] if any(p["port"] == int(config["MONITOR_PORT"]) for p in r["ports"])]
    assert monitor_rules and all(r.get("from") for r in monitor_rules)
    assert all(f["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"} for r in monitor_rules for f in r["from"])
    pdb = objects[("PodDisruptionBudget", "llm-gateway")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items() and pdb["maxUnavailable"] == 1

    service = objects[("Service", JOB)]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    service_monitor = objects[("ServiceMonitor", JOB)]
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in service_monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert all(e["authorization"]["credentials"]["name"] == "llmsafety-tokens" for e in service_monitor["spec"]["endpoints"])


def test_prometheusrule_wraps_the_shipped_rules():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_prometheusrule", DEPLOY / "build_prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DEPLOY / "k8s" / "prometheusrule.yaml").read_text() == module.render(), "run: python deploy/build_prometheusrule.py"
    rule = k8s_objects()[("PrometheusRule", JOB)]
    files = [g for f in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")) for g in yaml.safe_load(f.read_text())["groups"]]
    assert rule["spec"]["groups"] == files


def test_kustomize_builds_every_manifest():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize build not checked")
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout) if d)
    assert kinds == ["ConfigMap", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "Service", "Service",
                     "ServiceMonitor", "StatefulSet"]


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
