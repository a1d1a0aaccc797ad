"""bench/light_load_cpu.py reads a process's CPU time from /proc: the figure its table reports."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import light_load_cpu


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU time is read from /proc (Linux)")
def test_cpu_seconds_reads_the_process_it_is_given():
    """A child burns 0.6 s of CPU, says so, then sleeps: its figure holds the burn and stays put while it
    sleeps, and this process (waiting on the child) is not what is read."""
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.6: pass\nprint('burned', flush=True)\ntime.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "burned"
        stat = Path(f"/proc/{child.pid}/stat")
        burned = light_load_cpu.cpu_seconds(stat)
        time.sleep(0.3)
        assert 0.6 <= burned <= 1.5  # its burn and its start
        assert light_load_cpu.cpu_seconds(stat) - burned < 0.05  # asleep
    finally:
        child.kill()
        child.wait()
