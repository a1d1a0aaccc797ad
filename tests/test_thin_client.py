"""The gateway side installs with ``pip install --no-deps``: the client and the LiteLLM logger import
without torch, numpy or any other dependency of the monitor itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sentence_transformers", "transformers", "numpy", "scipy", "sklearn", "pandas", "evidently",
         "river", "redis", "prometheus_client", "fastapi", "uvicorn")

SCRIPT = f"""
import importlib.abc, sys
HEAVY = {HEAVY!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY and not name.startswith("litellm"):
            raise ImportError("blocked for the thin-client test: " + name)
sys.meta_path.insert(0, Block())
import monitor.client
from monitor.client import MonitorClient
print("client ok")
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_client_imports_with_the_monitors_dependencies_blocked():
    done = _run(SCRIPT)
    assert done.returncode == 0 and "client ok" in done.stdout, done.stderr[-2000:]


def test_litellm_logger_imports_nothing_heavy_of_ours():
    """LiteLLM brings its own dependencies; the logger adds none of the monitor's (torch above all)."""
    done = _run("import sys, monitor.integrations.litellm_logger as m; m.MonitorLogger; "
                f"print(sorted(set({HEAVY!r}) & {{k.split('.')[0] for k in sys.modules}}))")
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = eval(done.stdout.strip().splitlines()[-1])
    assert "torch" not in loaded and "sentence_transformers" not in loaded and "evidently" not in loaded, loaded
