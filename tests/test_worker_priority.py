"""The worker thread, and the torch threads it starts, run nicer than the HTTP loop (Linux)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch

from monitor.config import Settings
from monitor.pipeline.builder import build_service
from tests.helpers.server import running_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread niceness is read from /proc (Linux)")


def nice_of(tid: int) -> int:
    # /proc/<pid>/task/<tid>/stat: the command may hold spaces, so count fields after its closing parenthesis.
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat(5), "nice"


def thread_nices() -> dict[int, int]:
    nices = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            nices[int(task.name)] = nice_of(int(task.name))
        except FileNotFoundError:  # the thread ended between the listing and the read
            pass
    return nices


@pytest.mark.parametrize("nice", [7, 0])
def test_worker_and_its_torch_threads_take_the_configured_niceness(embedder, nice):
    before = thread_nices()
    with running_server(Settings(judge="prototype", worker_nice=nice), lambda s: build_service(s, embedder=embedder)) as srv:
        assert srv.client.post("/v1/events", json=[{"prompt": f"hello number {i}"} for i in range(40)]).status_code == 202
        srv.wait_processed()
        [worker] = [t for t in threading.enumerate() if t.name.startswith("monitor-worker")]
        after = thread_nices()
        assert after[worker.native_id] == nice
        assert after[threading.get_native_id()] == 0  # the rest of the process is untouched
        if nice:
            started = {tid for tid in after if tid not in before and after[tid] == nice} - {worker.native_id}
            # torch's intra-op threads started from the worker inherit its niceness
            assert len(started) >= torch.get_num_threads() - 1
