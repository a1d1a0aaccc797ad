"""Shared fixtures: one real embedding model per test session (loading it costs seconds)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from monitor.judge.dataset import default_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Longest a service still building at the session's end may take to finish (the hybrid judge's first ONNX export).
START_JOIN_SECONDS = 300


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Wait for services that a test stopped while they were still building. Their start thread
    (``monitor.api.app.in_daemon_thread``) is a daemon, so ``monitor serve`` can stop at once; but when
    Python finalizes while that thread is inside ONNX Runtime or torch, the process aborts ("terminate
    called without an active exception", exit 134) after every test passed. A thread waiting for an
    unreachable state store (``tests/test_restart.py`` leaves one) waits in Python for good, which is
    safe at exit: it is not waited for."""
    for thread in threading.enumerate():
        if thread.name == "monitor-start" and not _waiting_for_its_store(thread):
            thread.join(timeout=START_JOIN_SECONDS)


def _waiting_for_its_store(thread: threading.Thread) -> bool:
    from monitor.state.snapshots import Snapshotter

    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is Snapshotter.attach.__code__:
            return True
        frame = frame.f_back
    return False


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = default_data_dir()
    if not path.is_dir():
        pytest.skip(f"public safety datasets not found at {path} (set MONITOR_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def embedder():
    from monitor.embed.embedder import Embedder

    return Embedder()
