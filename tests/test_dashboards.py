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
