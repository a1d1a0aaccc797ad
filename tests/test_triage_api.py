"""Triage over HTTP: JSON actions need admin, reads need read, bad input is a 4xx naming the field
(never a 500); the /ui page logs in with a token, its forms need the session's CSRF token, and a
silence reaches a real Alertmanager."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests.helpers.prom import DEPLOY, running_alertmanager
from tests.helpers.server import running_server
from tests.helpers.triage import drifting, emerging_alert, feed, synthetic_service
from tests.test_drift_emerging import World

SECRETS = {"read": "r" * 24, "admin": "a" * 24}
TOKENS = dict(read_tokens=f"viewer:{SECRETS['read']}", admin_tokens=f"reviewer:{SECRETS['admin']}")


def _auth(scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[scope]}"}


def serve(**settings):
    service = synthetic_service(**TOKENS, **settings)
    feed(service, drifting(world=World.make()))
    return running_server(service.settings, lambda s: service)


@pytest.fixture(scope="module")
def srv():
    with serve() as running:
        yield running


def _alert(srv):
    return emerging_alert(srv.service)


def test_reads_need_read_and_actions_need_admin(srv):
    c = srv.client
    assert c.get("/v1/triage").status_code == 401
    body = c.get("/v1/triage", headers=_auth("read")).json()
    assert body["judge_version"] == "table-1" and body["revision"] == 0
    url = f"/v1/alerts/{_alert(srv).id}/triage"
    forbidden = c.post(url, json={"action": "acknowledge"}, headers=_auth("read"))
    assert forbidden.status_code == 403 and forbidden.json()["required_scope"] == "admin"
    ok = c.post(url, json={"action": "acknowledge", "reason": "on it"}, headers=_auth("admin"))
    assert ok.status_code == 200 and ok.json()["who"] == "reviewer"
    audit = c.get("/v1/triage/audit", headers=_auth("read")).json()["entries"]
    assert audit[0]["action"] == "alert.acknowledge" and audit[0]["who"] == "reviewer"


@pytest.mark.parametrize("path, body, status, field", [
    ("cluster", {"action": "rename"}, 422, "body.action"),
    ("cluster", {"action": "new_category", "name": "Bad Name!"}, 422, "name"),
    ("cluster", {"action": "new_category", "name": "x" * 60}, 422, "body.name"),
    ("cluster", {"action": "existing_category", "category": "nope"}, 422, "category"),
    ("cluster", {"action": "split", "labels": [{"event_id": "zz", "category": "safe"}]}, 422, "labels[0].event_id"),
    ("cluster", {"action": "benign", "colour": "red"}, 422, "body.colour"),
    ("cluster", "not an object", 422, "body"),
    ("alert", {"action": "silence"}, 422, "duration_seconds"),
    ("alert", {"action": "silence", "duration_seconds": "soon"}, 422, "body.duration_seconds"),
    ("alert", {"action": "silence", "duration_seconds": "120"}, 422, "body.duration_seconds"),  # a number, not a string of one
    ("alert", {"action": "silence", "duration_seconds": True}, 422, "body.duration_seconds"),
    ("alert", {"action": "snooze"}, 422, "body.action"),
    ("missing-cluster", {"action": "benign"}, 404, "cluster_id"),
    ("missing-alert", {"action": "acknowledge"}, 404, "alert_id"),
])
def test_bad_input_is_a_4xx_naming_the_field(srv, path, body, status, field):
    alert = _alert(srv)
    url = {"cluster": f"/v1/clusters/{alert.key}/triage", "alert": f"/v1/alerts/{alert.id}/triage",
           "missing-cluster": "/v1/clusters/c-missing/triage", "missing-alert": "/v1/alerts/nope/triage"}[path]
    resp = srv.client.post(url, json=body, headers=_auth("admin"))
    assert resp.status_code == status, resp.text
    assert resp.json()["error"].startswith(f"{field}"), resp.json()


def test_export_formats_and_raw_access(srv):
    c = srv.client
    assert c.get("/v1/export", params={"format": "xml"}, headers=_auth("read")).json()["error"].startswith("format:")
    assert c.get("/v1/export", params={"raw": "true"}, headers=_auth("read")).status_code == 403
    raw = c.get("/v1/export", params={"raw": "true"}, headers=_auth("admin"))
    assert raw.status_code == 409 and raw.json()["error"].startswith("raw:")
    csv = c.get("/v1/export", params={"format": "csv"}, headers=_auth("read"))
    assert csv.status_code == 200 and csv.text.startswith("event_id,label,unsafe,prompt")


def _login(client: httpx.Client, secret: str) -> str:
    resp = client.post("/ui/login", data={"token": secret})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    page = client.get("/ui")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_ui_login_csrf_and_form_errors(srv):
    with httpx.Client(base_url=srv.url, follow_redirects=False) as c:
        assert c.get("/ui").headers["location"] == "/ui/login"
        bad = c.post("/ui/login", data={"token": "wrong" * 5})
        assert bad.status_code == 401 and "token: unknown token" in bad.text
        csrf = _login(c, SECRETS["admin"])
        alert = _alert(srv)
        page = c.get("/ui").text
        assert alert.id in page and alert.key in page and "<svg" in page and SECRETS["admin"] not in page
        forged = c.post(f"/ui/clusters/{alert.key}", data={"action": "benign", "csrf": "forged"})
        assert forged.status_code == 403 and "csrf:" in forged.text
        wrong = c.post(f"/ui/clusters/{alert.key}", data={"action": "new_category", "name": "Bad Name", "csrf": csrf})
        assert wrong.status_code == 422 and "name: 3-48 characters" in wrong.text
        minutes = c.post(f"/ui/alerts/{alert.id}", data={"action": "silence", "duration_minutes": "soon", "csrf": csrf})
        assert minutes.status_code == 422 and "duration_minutes: must be a number" in minutes.text
        done = c.post(f"/ui/alerts/{alert.id}", data={"action": "acknowledge", "reason": "ui", "csrf": csrf})
        assert done.status_code == 303
        assert "alert.acknowledge" in c.get("/ui").text


def test_ui_login_refuses_a_large_form_before_reading_it(srv):
    # Login needs no session: a body declared past the form's limit is answered before a byte of it is read
    # (the reply comes while the client still owes almost all of it), and a streamed one stops at the limit.
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"POST /ui/login HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/x-www-form-urlencoded"
                    b"\r\nContent-Length: 1000000000\r\n\r\ntoken=")
        head = raw.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413") and "form: 1000000000 bytes exceeds the form limit" in head, head
    refused = srv.service.metrics.registry.get_sample_value  # counted like every body refused whole
    assert refused("llmsafety_request_bodies_refused_total", {"route": "/ui/login", "status": "413"}) >= 1
    streamed = srv.client.post("/ui/login", content=(b"token=" + b"x" * 65536 for _ in range(32)),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413 and "form: larger than the form limit" in streamed.text


def test_a_logout_whose_form_is_refused_says_so_and_keeps_the_session_it_did_not_close(srv):
    # Under load (a 503 from the forms' budget) or past the form limit, logout cannot read its CSRF token: it must
    # not drop the cookie and claim a logout while the session stays open on the server.
    with httpx.Client(base_url=srv.url, follow_redirects=False) as c:
        csrf = _login(c, SECRETS["admin"])
        form = b"csrf=" + csrf.encode() + b"&pad=" + b"x" * 70000
        refused = c.post("/ui/logout", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert refused.status_code == 413 and "logout not done: form:" in refused.text
        assert "set-cookie" not in refused.headers and c.get("/ui").status_code == 200
        done = c.post("/ui/logout", data={"csrf": csrf})
        assert done.status_code == 303 and done.headers["location"] == "/ui/login"
        assert c.get("/ui").headers["location"] == "/ui/login"


def test_ui_login_from_another_site_is_refused(srv):
    # Login CSRF: a foreign page posting its own token would put the reviewer in the attacker's session.
    with httpx.Client(base_url=srv.url, follow_redirects=False) as c:
        for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/login.html"}, {"Origin": "null"},
                        {"Origin": "https://evil.example", "X-Forwarded-Host": "monitor.example.org"}, {"Origin": "https://x:99999"}):
            refused = c.post("/ui/login", data={"token": SECRETS["admin"]}, headers=headers)
            assert refused.status_code == 403 and "origin:" in refused.text and "set-cookie" not in refused.headers, headers
        same = c.post("/ui/login", data={"token": SECRETS["admin"]}, headers={"Origin": srv.url, "Referer": f"{srv.url}/ui/login"})
        assert same.status_code == 303 and "set-cookie" in same.headers
        # Behind a proxy that rewrites Host: the site the browser saw is in X-Forwarded-Host (case and default port aside).
        proxied = {"Origin": "https://Monitor.Example.org", "Host": "10.0.0.5:8000", "X-Forwarded-Host": "monitor.example.org:443"}
        assert c.post("/ui/login", data={"token": SECRETS["admin"]}, headers=proxied).status_code == 303


def test_ui_read_token_sees_no_forms(srv):
    with httpx.Client(base_url=srv.url, follow_redirects=False) as c:
        csrf = _login(c, SECRETS["read"])
        alert = _alert(srv)
        assert f'action="/ui/clusters/{alert.key}"' not in c.get("/ui").text
        refused = c.post(f"/ui/alerts/{alert.id}", data={"action": "acknowledge", "csrf": csrf})
        assert refused.status_code == 403 and "lacks scope &#39;admin&#39;" in refused.text


def test_silence_is_pushed_to_a_real_alertmanager(tmp_path):
    with running_alertmanager(DEPLOY / "alertmanager" / "alertmanager.yml", tmp_path) as am, serve(alertmanager_urls=[am]) as s:
        alert = emerging_alert(s.service)
        resp = s.client.post(f"/v1/alerts/{alert.id}/triage", json={"action": "silence", "duration_seconds": 600, "reason": "known"},
                             headers=_auth("admin"))
        assert resp.status_code == 200, resp.text
        [result] = resp.json()["detail"]["alertmanager"]
        assert result["error"] is None and result["silence_id"]
        silences = httpx.get(f"{am}/api/v2/silences", timeout=5).json()
        mine = next(x for x in silences if x["id"] == result["silence_id"])
        matchers = {m["name"]: m["value"] for m in mine["matchers"]}
        assert matchers == {"source": "llmsafety-monitor", "kind": "emerging_category", "scope": alert.scope, "key": alert.key}
        assert mine["createdBy"] == "reviewer" and mine["status"]["state"] == "active"


def test_monitor_export_writes_the_labelled_events(srv, tmp_path):
    from typer.testing import CliRunner

    from monitor.cli import app

    alert = _alert(srv)
    cluster = srv.client.get(f"/v1/clusters/{alert.key}", headers=_auth("read")).json()
    split = [{"event_id": cluster["exemplar_ids"][0], "category": "cat_b"}]
    assert srv.client.post(f"/v1/clusters/{alert.key}/triage", json={"action": "split", "labels": split},
                           headers=_auth("admin")).status_code == 200
    out = tmp_path / "triaged.jsonl"
    result = CliRunner().invoke(app, ["export", "--out", str(out), "--url", srv.url, "--token", SECRETS["read"]])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and SECRETS["read"] not in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["labels"], r["label_set"]) for r in rows] == [(f"triage:{split[0]['event_id']}", ["cat_b"], "llmsafety-taxonomy")]
    refused = CliRunner().invoke(app, ["export", "--out", str(out), "--raw", "--url", srv.url, "--token", SECRETS["read"]])
    assert refused.exit_code == 2 and "raw: unredacted texts need a token of scope admin" in refused.output


def test_a_split_labelling_one_event_twice_is_a_422_naming_it(srv):
    # The last label used to win silently; which of the two the reviewer meant is theirs to say.
    alert = _alert(srv)
    exemplar = srv.client.get(f"/v1/clusters/{alert.key}", headers=_auth("read")).json()["exemplar_ids"][0]
    split = [{"event_id": exemplar, "category": "cat_b"}, {"event_id": exemplar, "category": "safe"}]
    resp = srv.client.post(f"/v1/clusters/{alert.key}/triage", json={"action": "split", "labels": split}, headers=_auth("admin"))
    assert resp.status_code == 422 and resp.json()["error"] == f"labels[1].event_id: {exemplar!r} is labelled in labels[0] already"


def test_an_oversize_action_names_its_own_limit(srv):
    # Triage bodies have a fixed 64 KiB limit: max_body_bytes (8 MiB) does not apply to them.
    url = f"/v1/alerts/{_alert(srv).id}/triage"
    resp = srv.client.post(url, json={"action": "acknowledge", "reason": "x" * 70_000}, headers=_auth("admin"))
    assert resp.status_code == 413 and "max_body_bytes" not in resp.text
    assert resp.json()["error"].endswith("bytes exceeds the triage action limit of 65536 bytes")
    assert srv.service.metrics.registry.get_sample_value(  # counted like every body refused whole
        "llmsafety_request_bodies_refused_total", {"route": "/v1/alerts/{alert_id}/triage", "status": "413"}) == 1


def test_a_body_that_is_not_json_is_a_400_after_the_token_check(srv):
    url = f"/v1/alerts/{_alert(srv).id}/triage"
    assert srv.client.post(url, content=b"\xff\xfe{", headers={"Content-Type": "application/json"}).status_code == 401
    resp = srv.client.post(url, content=b"\xff\xfe{", headers={**_auth("admin"), "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"].startswith("body: not UTF-8 JSON")
    for kind in ("text/plain", None):  # the OpenAPI document promises a 415 for any other type
        headers = {**_auth("admin"), **({"Content-Type": kind} if kind else {})}
        resp = srv.client.post(url, content=b'{"action": "ack"}', headers=headers)
        assert resp.status_code == 415 and "application/json" in resp.json()["error"], resp.text
