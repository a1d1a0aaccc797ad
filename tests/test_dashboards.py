"""The committed Grafana JSON is what dashboards/build.py builds, and is well-formed for provisioning."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"


def load_builder():
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_json_is_up_to_date():
    rendered = load_builder().render()
    assert sorted(rendered) == sorted(committed()), "run: .venv/bin/python dashboards/build.py"
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, f"dashboards/{name} is stale; run: .venv/bin/python dashboards/build.py"


@pytest.mark.parametrize("name", sorted(committed()))
def test_dashboard_structure(name):
    board = committed()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "model", "route"} <= set(variables)
    assert variables["model"]["allValue"] == ".*" and variables["model"]["includeAll"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"} and t["expr"].strip()


def test_every_dashboard_is_provisioned_with_unique_uids():
    boards = committed()
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    assert {b["title"].split("· ")[1] for b in boards.values()} == {"Overview", "Drift", "Emerging categories", "Pipeline health"}
    provider = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "llmsafety.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/llmsafety"
    datasource = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"


def test_queries_filter_on_the_variables_stats_colour_and_alerts_are_annotated():
    builder = load_builder()
    for name, board in committed().items():
        assert any(a["expr"].startswith("ALERTS{") and a["enable"] for a in board["annotations"]["list"]), name
        for p in board["panels"]:
            for t in p.get("targets", []):
                metrics = builder.metrics_of(t["expr"])
                assert metrics, (name, t["expr"])
                if "$model" in t["expr"]:
                    assert "$route" in t["expr"], (name, p["title"])
                else:  # only metrics without model/route labels, and the panel says so
                    assert metrics <= builder.PROCESS_WIDE, (name, p["title"], metrics)
                    assert builder.ALL_SCOPES in p["description"], (name, p["title"])
    stats = {p["title"]: p for board in committed().values() for p in board["panels"] if p["type"] == "stat"}
    for title, colour_at_bad in (("Firing alerts", (1, "red")), ("Monitor up", (0, "red")), ("Emerging clusters alerting", (1, "red"))):
        steps = stats[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        value, colour = colour_at_bad
        applies = [s for s in steps if s["value"] is None or s["value"] <= value][-1]
        assert applies["color"] == colour, title
