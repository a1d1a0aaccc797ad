"""How long ``GET /ui`` takes with 100 emerging clusters and 1,000 alerts kept (target: < 1 s).

Run: ``.venv/bin/python bench/triage_ui.py [--requests 20]``

The service is the real one (alert engine, detectors, triage, the FastAPI app under uvicorn) on
synthetic judged traffic (``tests/helpers/triage.py``: no embedding model). The drifting stream
makes the emerging-cluster detector form real clusters; its state is then saved, its clusters
copied (with perturbed centroids and new ids) to 100 over the three scopes, and loaded back through
``load_state_dict``. 1,000 alerts are opened through the alert engine (500 left firing, with
category-share evidence so each draws its chart; 500 resolved). Requests go over HTTP with a
logged-in session, one at a time; prints the median, p95 and the page size.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DO_NOT_TRACK", "1")

from monitor.signals import Condition  # noqa: E402
from monitor.drift.emerging_clusters import EmergingClusterDetector  # noqa: E402
from tests.helpers.server import running_server  # noqa: E402
from tests.helpers.triage import drifting, feed, synthetic_service  # noqa: E402

SECRET = "b" * 32


def with_clusters(service, n: int) -> None:
    det = service.detectors.get(EmergingClusterDetector.name)
    state = det.state_dict()
    rng = np.random.default_rng(0)
    scopes = list(state["scopes"])
    template = next(c for s in state["scopes"].values() for c in s["clusters"])
    for s in state["scopes"].values():
        s["clusters"] = []
    for i in range(n):
        c = copy.deepcopy(template)
        c["id"] = f"c{i:010d}"
        c["total"] = c["total"] + rng.normal(scale=0.5, size=c["total"].shape).astype(c["total"].dtype)
        state["scopes"][scopes[i % len(scopes)]]["clusters"].append(c)
    det.load_state_dict(state)


def with_alerts(service, n: int) -> None:
    at = service.event_time or 0.0
    evidence = {"direction": "rise", "reference_share": 0.02, "reference_ci95": [0.018, 0.022], "current_share": 0.05,
                "current_ci95": [0.04, 0.06], "reference_start": at - 5000, "reference_end": at - 3000, "change_point_at": at - 500}
    conds = [Condition("category_share", "global", f"bench_key_{i}", True, at, "warning", f"share of bench_key_{i} rose", evidence)
             for i in range(n)]
    service.alert_engine.observe(conds)
    service.alert_engine.observe([Condition(c.kind, c.scope, c.key, False, at + 1) for c in conds[: n // 2]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--alerts", type=int, default=1000)
    args = parser.parse_args()
    service = synthetic_service(admin_tokens=f"bench:{SECRET}", max_alerts_kept=args.alerts)
    feed(service, drifting())
    with_clusters(service, args.clusters)
    with_alerts(service, args.alerts)
    kept = len(service.alerts("all"))
    clusters = sum(len(service.clusters(s) or []) for s in service.detectors.get(EmergingClusterDetector.name).scopes())
    with running_server(service.settings, lambda s: service) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        client.post("/ui/login", data={"token": SECRET})
        times, size = [], 0
        for _ in range(args.requests):
            t0 = time.perf_counter()
            resp = client.get("/ui")
            times.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.text[:300]
            size = len(resp.content)
    times.sort()
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    print(f"| clusters | alerts kept | requests | median (s) | p95 (s) | page (KB) |\n|---:|---:|---:|---:|---:|---:|\n"
          f"| {clusters} | {kept} | {len(times)} | {statistics.median(times):.3f} | {p95:.3f} | {size / 1024:.0f} |")


if __name__ == "__main__":
    main()
