"""Authentication over HTTP: every endpoint without a token, with a wrong one, and with each scope;
secrets never in logs, ``serve --help`` or ``/v1/status``; when the service refuses to start."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.api.app import create_app
from monitor.api.auth import AuthConfigError, Authenticator, parse_token
from monitor.config import Settings
from monitor.drift.feedback_disagreement import Feedback
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

SECRETS = {"ingest": "ingest-secret-0123456789", "read": "read-secret-0123456789", "admin": "admin-secret-0123456789"}
NAMES = {"ingest": "gateway", "read": "grafana", "admin": "ops"}
WRONG = "wrong-secret-0123456789"

# (method, path, body, scope needed)
ENDPOINTS = [
    ("POST", "/v1/events", [{"prompt": "auth table hello"}], "ingest"),
    ("POST", "/v1/ingest/litellm", {"id": "auth-1", "call_type": "completion", "messages": "auth table hi"}, "ingest"),
    ("POST", "/v1/traces", {"resourceSpans": []}, "ingest"),
    ("GET", "/v1/status", None, "read"),
    ("GET", "/v1/alerts", None, "read"),
    ("GET", "/v1/alerts/no-such-alert", None, "read"),
    ("GET", "/v1/clusters", None, "read"),
    ("GET", "/v1/clusters/no-such-cluster", None, "read"),
    ("GET", "/v1/reports?reference=last:1h&current=last:1h&format=json", None, "read"),
    ("POST", "/v1/feedback", {"event_id": "never-judged", "unsafe": True}, "admin"),
]
GRANTED = {"ingest": {"ingest"}, "read": {"read"}, "admin": {"ingest", "read", "admin"}}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def token_settings(**extra) -> Settings:
    return Settings(
        judge="prototype",
        ingest_tokens=f"{NAMES['ingest']}:{SECRETS['ingest']}",
        read_tokens=f"{NAMES['read']}:{SECRETS['read']}",
        admin_tokens=f"{NAMES['admin']}:{SECRETS['admin']}",
        **extra,
    )


@pytest.fixture(scope="module")
def logs():
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(old_level)


@pytest.fixture(scope="module")
def server(embedder, logs):
    with running_server(token_settings(), lambda s: build_service(s, embedder=embedder)) as srv:
        yield srv


def call(server, method: str, path: str, body, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return server.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("method, path, body, scope", ENDPOINTS)
def test_no_token_is_401_naming_the_scope(server, method, path, body, scope):
    resp = call(server, method, path, body, None)
    assert resp.status_code == 401
    assert resp.json()["required_scope"] == scope
    assert "missing bearer token" in resp.json()["error"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ") and f'scope="{scope}"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("method, path, body, scope", ENDPOINTS)
def test_wrong_token_is_401_invalid_token(server, method, path, body, scope):
    resp = call(server, method, path, body, WRONG)
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert "unknown token" in resp.json()["error"]
    basic = server.client.request(method, path, json=body, headers={"Authorization": f"Basic {SECRETS['admin']}"})
    assert basic.status_code == 401  # only the Bearer scheme counts


@pytest.mark.parametrize("held", ["ingest", "read", "admin"])
@pytest.mark.parametrize("method, path, body, scope", ENDPOINTS)
def test_each_scope_reaches_exactly_its_endpoints(server, method, path, body, scope, held):
    resp = call(server, method, path, body, SECRETS[held])
    if scope in GRANTED[held]:
        assert resp.status_code not in (401, 403) and resp.status_code < 500, resp.text
    else:
        assert resp.status_code == 403, resp.text
        assert resp.json() == {"error": f"authorization: token {NAMES[held]!r} lacks scope {scope!r}", "required_scope": scope}
        assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_probes_are_open_by_default(server, path):
    assert server.client.get(path).status_code == 200


def test_probes_can_require_a_read_token(embedder):
    settings = token_settings(open_endpoints=["healthz"])
    app = create_app(settings, service_factory=lambda s: build_service(s, embedder=embedder))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.head("/healthz").status_code == 200
        assert client.head("/readyz").status_code == 401  # a HEAD probe is checked as its GET is
        for path in ("/readyz", "/metrics"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"Authorization": f"Bearer {SECRETS['ingest']}"}).status_code == 403
            assert client.get(path, headers={"Authorization": f"Bearer {SECRETS['read']}"}).status_code in (200, 503)


def test_raw_exemplars_need_admin_and_store_raw_text(server):
    """Redacted by default; `raw=true` is refused to a read token, and refused to an admin too while
    store_raw_text is off (nothing raw was kept)."""
    assert call(server, "GET", "/v1/clusters", None, SECRETS["read"]).status_code == 200
    refused = call(server, "GET", "/v1/clusters?raw=true", None, SECRETS["read"])
    assert refused.status_code == 403 and refused.json()["error"].startswith("raw:")
    assert call(server, "GET", "/v1/clusters/some-id?raw=true", None, SECRETS["read"]).status_code == 403
    off = call(server, "GET", "/v1/clusters?raw=true", None, SECRETS["admin"])
    assert off.status_code == 409 and "store_raw_text" in off.json()["error"]


def test_feedback_source_is_the_token_name(server):
    """The label's source comes from the token, whatever the body's free-text `source` claims."""
    resp = call(server, "POST", "/v1/feedback", {"event_id": "src-1", "unsafe": True, "source": "someone-else"}, SECRETS["admin"])
    assert resp.status_code == 202
    # never judged, so unknown_event; the source shows in the per-source bucket the limiter keeps
    assert set(server.app.state.feedback_limiter._buckets) == {NAMES["admin"]}


@pytest.mark.parametrize("path, body", [
    ("/v1/events", lambda i: {"event_id": i, "prompt": "namespaced ids hello"}),
    ("/v1/ingest/litellm", lambda i: {"id": i, "call_type": "completion", "messages": "namespaced ids hi"}),
])
def test_event_ids_are_namespaced_per_ingest_token(server, path, body):
    """Another client sending the gateway's id first does not make the gateway's event a duplicate;
    each sender's own resend still is one."""
    event_id = f"gw-req-42{path}"
    first = call(server, "POST", path, body(event_id), SECRETS["admin"])  # admin may ingest: another sender
    assert first.status_code == 202 and first.json()["duplicates"] == 0
    gateway = call(server, "POST", path, body(event_id), SECRETS["ingest"])
    assert gateway.status_code == 202 and (gateway.json()["accepted"], gateway.json()["duplicates"]) == (1, 0)
    again = call(server, "POST", path, body(event_id), SECRETS["ingest"])
    assert again.json()["duplicates"] == 1


def test_a_label_naming_the_sender_finds_that_senders_event(server):
    """Two senders used one id: a label naming the gateway finds the gateway's event, one naming a
    sender that never used the id finds nothing, and one naming none takes the event judged last."""
    import time

    detector = server.service.detectors.get("feedback_disagreement")

    def judged(sender: str) -> bool:
        return server.service.read_detectors(lambda _: detector.lookup(Feedback("shared-id-7", True, sender=sender))[1] is not None)

    event = {"event_id": "shared-id-7", "prompt": "labels by sender hello"}
    assert call(server, "POST", "/v1/events", event, SECRETS["ingest"]).json()["accepted"] == 1
    assert call(server, "POST", "/v1/events", event, SECRETS["admin"]).json()["duplicates"] == 0
    deadline = time.monotonic() + 60
    while not (judged(NAMES["ingest"]) and judged(NAMES["admin"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    before = dict(detector.counts)
    label = {"event_id": "shared-id-7", "unsafe": True}
    for sender in (NAMES["ingest"], "nobody"):
        assert call(server, "POST", "/v1/feedback", {**label, "sender": sender}, SECRETS["admin"]).status_code == 202
    assert call(server, "POST", "/v1/feedback", label, SECRETS["admin"]).status_code == 202
    after = {k: detector.counts[k] - before.get(k, 0) for k in detector.counts}
    assert (after["matched"], after["unknown_event"]) == (2, 1)  # the gateway's event, then the admin's (judged last)
    assert detector.lookup(Feedback("shared-id-7", unsafe=True))[0] == f"{NAMES['admin']}:shared-id-7"


def test_secrets_never_in_status_logs_or_help(server, logs):
    status = call(server, "GET", "/v1/status", None, SECRETS["read"]).text
    joined = "\n".join(logs.lines)
    assert "authentication on" in joined and NAMES["admin"] in joined
    env = {f"MONITOR_{scope.upper()}_TOKENS": f"{NAMES[scope]}:{secret}" for scope, secret in SECRETS.items()}
    from monitor.cli import app as cli

    help_text = CliRunner().invoke(cli, ["serve", "--help"], env=env).output
    assert "MONITOR_ADMIN_TOKENS" in help_text
    for secret in SECRETS.values():
        assert secret not in status
        assert secret not in joined
        assert secret not in help_text
    assert "PydanticUndefined" not in help_text and "SecretStr(" not in help_text
    assert "['healthz', 'readyz', 'metrics']" in help_text  # list options show their default_factory's value


# ---------------------------------------------------------------- start-up decisions (no server)


def test_auto_is_off_on_loopback_without_tokens(caplog):
    with caplog.at_level(logging.INFO):
        assert Authenticator(Settings()).enabled is False
    assert "authentication off" in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_auto_refuses_a_network_host_without_tokens(host):
    with pytest.raises(AuthConfigError, match="MONITOR_AUTH=off"):
        create_app(Settings(host=host))


def test_off_is_loud_and_on_needs_tokens(caplog):
    with caplog.at_level(logging.WARNING):
        assert Authenticator(Settings(host="0.0.0.0", auth="off")).enabled is False
    assert "AUTHENTICATION IS OFF" in caplog.text
    with pytest.raises(AuthConfigError, match="no token is configured"):
        Authenticator(Settings(auth="on"))
    assert Authenticator(Settings(host="0.0.0.0", read_tokens="r:" + "x" * 16)).enabled is True


def test_tokens_from_files_and_their_names(tmp_path: Path):
    path = tmp_path / "admin.tokens"
    path.write_text("# ops team\nops:" + "a" * 20 + "\n\n" + "b" * 20 + "\n")
    auth = Authenticator(Settings(admin_tokens_file=path))
    assert auth.table.lookup("a" * 20).name == "ops"
    bare = auth.table.lookup("b" * 20)
    assert bare.name.startswith("token-") and "b" * 20 not in bare.name
    assert bare.scopes == {"admin", "read", "ingest"}
    assert auth.table.lookup("c" * 20) is None


def test_weak_or_missing_token_files_are_refused(tmp_path: Path):
    with pytest.raises(AuthConfigError, match="shorter than 16"):
        parse_token("ops:short", "admin_tokens")
    with pytest.raises(AuthConfigError, match="cannot read"):
        Authenticator(Settings(read_tokens_file=tmp_path / "missing"))


def test_serve_refuses_to_start_on_a_network_host_without_tokens(monkeypatch):
    import uvicorn

    from monitor.cli import app as cli

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(True))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], env={"MONITOR_AUTH": "auto"})
    assert result.exit_code == 2 and not started
    assert "no token is configured" in result.output
    result = CliRunner().invoke(cli, ["serve"], env={"MONITOR_AUTH": "auto"})  # README's fresh-machine start: loopback
    assert result.exit_code == 0 and started == [True]


def test_clients_send_the_token(server):
    """MonitorClient, the LiteLLM logger and replay put the token in the Authorization header."""
    from monitor.client import MonitorClient
    from monitor.replay import replay, wait_until_processed

    with MonitorClient(server.url, token=SECRETS["ingest"], flush_interval=0.05) as client:
        client.send({"prompt": "client token check"})
    assert client.stats().sent == 1 and client.stats().failed == 0
    with MonitorClient(server.url, token=WRONG, flush_interval=0.05, max_retries=0) as denied:
        denied.send({"prompt": "wrong token"})
    assert denied.stats().failed == 1 and denied.stats().retries == 0

    from monitor.integrations.litellm_logger import MonitorLogger

    logger = MonitorLogger(server.url, token=SECRETS["ingest"], flush_interval=0.05)
    logger.enqueue({"standard_logging_object": {"id": "logger-token-1", "call_type": "completion", "messages": "logged with a token"}})
    assert logger.close(timeout=10)["sent"] == 1

    result = replay(iter([{"prompt": "replayed with a token"}]), server.url, token=SECRETS["admin"])
    assert result.accepted == 1
    assert wait_until_processed(server.url, token=SECRETS["read"], timeout_s=60)["ready"]
    with pytest.raises(RuntimeError, match="401"):
        replay(iter([{"prompt": "no token"}]), server.url, token="")


def test_cli_status_sends_the_token_and_never_prints_a_password_in_its_url(server):
    from monitor.cli import app as cli

    ok = CliRunner().invoke(cli, ["status", "--url", server.url, "--token", SECRETS["read"]])
    assert ok.exit_code == 0 and json.loads(ok.output)["ready"] is True
    denied = CliRunner().invoke(cli, ["status", "--url", server.url, "--token", WRONG])
    assert denied.exit_code == 1 and "status failed (401)" in denied.output and WRONG not in denied.output
    unreachable = CliRunner().invoke(cli, ["status", "--url", "http://ops:pwLEAK@127.0.0.1:1/monitor"])
    assert unreachable.exit_code == 1 and "cannot reach the monitor at http://127.0.0.1:1" in unreachable.output
    assert "pwLEAK" not in unreachable.output
    # A 200 that is not JSON (here /metrics' text, reached through a query string): a clear exit, not a traceback.
    elsewhere = CliRunner().invoke(cli, ["status", "--url", f"{server.url}/metrics?from="])
    assert elsewhere.exit_code == 1 and "is not JSON; is --url the monitor?" in elsewhere.output
    assert elsewhere.exception is None or isinstance(elsewhere.exception, SystemExit)
