"""Imports run one way: down the data flow (ingest → embed → judge → detect → alert/export → service → API).

Each top-level module or package of ``monitor`` sits in one layer; a module may import its own
layer and the layers below it, never one above. Command-line entry points (``cli.py``,
``*_cli.py``) sit on top wherever they live, because they assemble everything. A failure names
the importing file, the imported module and both layers, so the fix is to move the shared piece
down (as ``monitor/signals.py`` and ``monitor/backend.py`` were), not to add an exception here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "monitor"

# Lowest first. Siblings in one layer may import each other.
LAYERS: list[set[str]] = [
    # shared vocabulary, no pipeline; the probe set format, the OpenAI-compatible caller and the judge's defaults
    # (config checks all three)
    {"monitor", "taxonomy", "scopes", "redact_urls", "privacy", "signals", "client", "openai_chat", "probe.probe_sets", "probe.client",
     "judge.defaults"},
    {"embed"},
    {"config"},
    {"judge"},
    {"events"},
    {"ingest"},
    {"drift", "probe"},
    {"export"},
    {"alerts"},
    {"state"},
    {"triage"},
    {"pipeline"},
    {"backend", "integrations", "replay"},
    {"scale"},
    {"api"},
    {"demo", "cli", "cli_http"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """The layered unit a module belongs to: the longest of its dotted prefixes named in LAYERS."""
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    return parts[0] if parts else "monitor"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name == "monitor" or name.startswith("monitor.")]


def _is_entry_point(path: Path) -> bool:
    return path.name == "cli.py" or path.name.endswith("_cli.py")


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")}
    assert units - RANK.keys() == set(), "add new top-level modules to LAYERS"


def test_no_module_imports_upward():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        if _is_entry_point(path):
            continue
        source = _unit(_module_name(path))
        for target in _imports(path):
            unit = _unit(target)
            if RANK[unit] > RANK[source]:
                upward.append(f"{path.relative_to(ROOT.parent)} imports {target} ({unit}, layer {RANK[unit]} > {source}, layer {RANK[source]})")
    assert upward == []
