"""Run the real Prometheus and Alertmanager binaries (Debian packages) on loopback for tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.helpers.server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"


def binary(*names: str) -> str:
    """The first binary found on PATH, or skip the test naming the package that provides it."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"{' / '.join(names)} not installed (apt-get install prometheus prometheus-alertmanager; tests/run.sh does it)")


@contextmanager
def _process(args: list[str], ready_url: str, log_path: Path, timeout: float = 30.0) -> Iterator[None]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{args[0]} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(ready_url, timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{args[0]} not ready after {timeout}s: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def running_alertmanager(config: Path, workdir: Path) -> Iterator[str]:
    """Alertmanager with ``config`` on a free loopback port, clustering off; yields its base URL."""
    exe = binary("prometheus-alertmanager", "alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        exe,
        f"--config.file={config}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with _process(args, f"{url}/-/ready", workdir / "alertmanager.log"):
        yield url


@contextmanager
def running_prometheus(config: Path, workdir: Path) -> Iterator[str]:
    """Prometheus with ``config`` (rule_files resolved relative to it) on a free port; yields its URL."""
    exe = binary("prometheus")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        exe,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _process(args, f"{url}/-/ready", workdir / "prometheus.log"):
        yield url
