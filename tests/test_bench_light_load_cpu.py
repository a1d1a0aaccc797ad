"""bench/light_load_cpu.py reads a process's CPU time from /proc: the figure its table reports."""

import os
import sys
import time

import pytest

from bench import light_load_cpu


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU time is read from /proc (Linux)")
def test_cpu_seconds_counts_the_cpu_this_process_burns():
    """Other threads of the test process can only add to it, so only a lower bound is asserted."""
    before = light_load_cpu.cpu_seconds(os.getpid())
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    assert light_load_cpu.cpu_seconds(os.getpid()) - before >= 0.2
