"""Shared fixtures: one real embedding model per test session (loading it costs seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.judge.dataset import default_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

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
