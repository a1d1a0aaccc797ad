"""The triage console in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against
a running monitor fed a drifting stream of real prompts, judged by the shipped judge.

The page shows a firing emerging-cluster alert and the cluster; labelling the cluster as a new
category through the form changes later verdicts (measured over HTTP on the held-back rest of the
cluster's source and on benign traffic, from the verdict counters), the emerging alert resolves and
does not fire again while the category keeps coming, the audit log shows the action, and revert
restores the previous judge version. ``MONITOR_SCREENSHOTS=DIR`` saves the main views there
(``docs/img/`` holds the ones in the README).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from monitor.config import Settings
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

CHROMIUM = "/usr/bin/chromium"
SECRET = "s" * 32
NEW_SOURCE = ("ailuminate-en", "iwp")  # AILuminate indiscriminate-weapons prompts: a region the reference never saw
NEW_NAME = "mass_casualty_weapons"
START = 1_767_225_600.0
REFERENCE, CALIBRATION = 1500, 500  # the emerging detector's phases, in events (short: a test, not production)
# The change comes 1,500 events after calibration: the alert needs its cluster's recent share to be twice its share over
# the longer baseline, and right after calibration the whole stream is barely longer than the recent window.
CHANGE_AT, AFTER, PREVALENCE = 3500, 1000, 0.08


def _require_browser():
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("chromium not installed (apt-get install chromium; tests/run.sh does it)")
    return pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")


def _rows(data: Path, name: str) -> list[dict]:
    with (data / f"{name}.jsonl").open() as f:
        return [json.loads(line) for line in f]


def pools(data: Path) -> dict[str, list[str]]:
    """Benign chat and instructions, known unsafe prompts, and the new source split in two halves (seeded)."""
    rng = random.Random(0)
    short = lambda r: r["unsafe"] is False and len(r["prompt"]) <= 160  # noqa: E731 (short texts: embedding is the test's cost)
    benign = [r["prompt"] for r in _rows(data, "benign-instructions") if short(r)]
    benign += [r["prompt"] for r in _rows(data, "toxicchat-train") if short(r)]
    known = [r["prompt"] for r in _rows(data, "beavertails-evaluation")]
    new = [r["prompt"] for r in _rows(data, NEW_SOURCE[0]) if r["labels"] and r["labels"][0] == NEW_SOURCE[1]]
    for pool in (benign, known, new):
        rng.shuffle(pool)
    half = len(new) // 2
    assert len(benign) > 2000, len(benign)
    return {"benign": benign[400:3400], "benign_check": benign[:400], "known": known, "new": new[:half], "held_back": new[half:]}


def drifting(p: dict[str, list[str]], n: int, start: int = 0) -> list[dict]:
    """Event ``i``: 5% known unsafe, else benign; from ``CHANGE_AT`` on, ``PREVALENCE`` of the new source (its streamed half, cycled)."""
    rng = random.Random(start)
    out = []
    new = iter(p["new"] * 3)
    for i in range(start, start + n):
        u = rng.random()
        if i >= CHANGE_AT and u < PREVALENCE:
            prompt = next(new)
        elif u > 0.95:
            prompt = p["known"][i % len(p["known"])]
        else:
            prompt = p["benign"][i % len(p["benign"])]
        out.append({"event_id": f"ev-{i:06d}", "timestamp": START + i, "prompt": prompt, "model": "gateway"})
    return out


def send(srv, events: list[dict]) -> None:
    for i in range(0, len(events), 250):
        assert srv.client.post("/v1/events", json=events[i : i + 250]).status_code == 202
    srv.wait_processed(timeout=600)


def share_of(srv, model: str, category: str) -> float:
    """The share of ``model``'s judged prompts whose verdict counter says ``category``."""
    text = srv.client.get("/metrics").text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("llmsafety_prompt_verdicts_total{") and f'model="{model}"' in line:
            cat = re.search(r'category="([^"]+)"', line).group(1)
            counts[cat] = counts.get(cat, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts.get(category, 0.0) / sum(counts.values())


@pytest.mark.slow
def test_label_a_cluster_in_the_browser_and_the_judge_learns_it(embedder, shared_data, tmp_path):
    sync_api = _require_browser()
    shots = Path(os.environ.get("MONITOR_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    p = pools(shared_data)
    settings = Settings(admin_tokens=f"oncall:{SECRET}", sampling="off", queue_capacity=20_000, share_warmup_events=REFERENCE,
                        embedding_reference_events=REFERENCE, emerging_reference_events=REFERENCE,
                        emerging_calibration_events=CALIBRATION, models=["gateway", "heldback", "benigncheck"])
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        srv.client.headers["Authorization"] = f"Bearer {SECRET}"
        send(srv, drifting(p, CHANGE_AT + AFTER))
        alerts = srv.client.get("/v1/alerts", params={"status": "firing"}).json()["alerts"]
        emerging = [a for a in alerts if a["kind"] == "emerging_category" and a["scope"] == "global"]
        assert emerging, [(a["kind"], a["scope"]) for a in alerts]
        alert = emerging[0]
        base_version = srv.client.get("/v1/status").json()["judge_version"]

        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"{srv.url}/ui")
            assert page.url.endswith("/ui/login")
            page.fill("input[name=token]", SECRET)
            page.click("button[type=submit]")
            page.wait_for_url(f"{srv.url}/ui")
            row = page.locator(f"#alert-{alert['id']}")
            assert row.is_visible() and "firing" in row.inner_text() and row.locator("svg").count() == 1
            cluster = page.locator(f"#cluster-{alert['key']}")
            assert cluster.is_visible() and "emerging" in cluster.inner_text()
            page.screenshot(path=str(shots / "triage-overview.png"), full_page=False)
            cluster.screenshot(path=str(shots / "triage-cluster.png"))

            form = cluster.locator("form.label-form")
            form.locator("input[name=name]").fill("Not A Name")
            form.locator("button[value=new_category]").click()
            assert "name: 3-48 characters" in page.locator("#error").inner_text()  # bad input: a clear message, nothing done
            cluster = page.locator(f"#cluster-{alert['key']}")
            form = cluster.locator("form.label-form")
            form.locator("input[name=name]").fill(NEW_NAME)
            form.locator("input[name=reason]").fill("CBRNE weapons requests, to be watched on their own")
            form.locator("button[value=new_category]").click()
            page.wait_for_url(f"{srv.url}/ui#clusters")
            assert "cluster.new_category" in page.locator("#notice").inner_text()
            version = page.locator("#judge-version code").inner_text()
            assert version == f"{base_version}+triage-1"
            audit = page.locator("#audit-log").inner_text()
            assert "cluster.new_category" in audit and "oncall" in audit and "CBRNE" in audit
            page.locator("#audit").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "triage-audit.png"), full_page=False)

            # Later traffic: the held-back half of the source and unseen benign prompts, each under its own model label.
            later = [{"event_id": f"hb-{i}", "timestamp": START + CHANGE_AT + AFTER + i, "prompt": t, "model": "heldback"}
                     for i, t in enumerate(p["held_back"])]
            later += [{"event_id": f"bc-{i}", "timestamp": START + CHANGE_AT + AFTER + i, "prompt": t, "model": "benigncheck"}
                      for i, t in enumerate(p["benign_check"])]
            send(srv, later)
            held_back, benign = share_of(srv, "heldback", NEW_NAME), share_of(srv, "benigncheck", NEW_NAME)
            print(f"held-back rest judged {NEW_NAME}: {held_back:.1%} of {len(p['held_back'])}; benign: {benign:.2%} of {len(p['benign_check'])}")
            assert held_back >= 0.80 and benign <= 0.01

            # The source keeps coming: the emerging alert stays resolved and no new one fires.
            send(srv, drifting(p, 500, start=CHANGE_AT + AFTER + 1000))
            assert srv.client.get(f"/v1/alerts/{alert['id']}").json()["status"] == "resolved"
            after = srv.client.get("/v1/alerts", params={"status": "all"}).json()["alerts"]
            assert not [a for a in after if a["kind"] == "emerging_category" and a["status"] != "resolved"]
            page.goto(f"{srv.url}/ui")
            assert page.locator(f"#alert-{alert['id']}").count() == 0  # no longer among the open alerts
            assert NEW_NAME in page.locator(f"#cluster-{alert['key']}").inner_text()

            page.fill("#revert-form input[name=reason]", "undo for the screenshot")
            page.locator("#revert").click()
            page.wait_for_url(f"{srv.url}/ui#judge")
            assert page.locator("#judge-version code").inner_text() == base_version
            assert srv.client.get("/v1/status").json()["judge_version"] == base_version
            assert "judge.revert" in page.locator("#audit-log").inner_text()
            browser.close()
