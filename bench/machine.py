"""One line naming the machine a benchmark ran on, for every script's output.

Why the CPU model and its vector extensions, not only the core count: the int8 backend's speed
depends on them. VNNI (AVX-512 VNNI, AVX-VNNI or AMX) does an int8 multiply-accumulate in one
instruction; AVX2 needs several, and on an AVX2-only CPU the same command gives a much smaller
speed-up over torch. A figure without the CPU it came from cannot be compared with anyone else's.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

# Flags of /proc/cpuinfo that change how fast the embedding backends run, in the order printed.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_model(cpuinfo: str) -> tuple[str, list[str]]:
    """The model name and the speed-relevant flags of the first CPU in ``/proc/cpuinfo`` text.

    >>> cpu_model("model name\\t: AMD EPYC\\nflags\\t\\t: fpu avx2 sse4_2\\n")
    ('AMD EPYC', ['avx2'])
    >>> cpu_model("")
    ('', [])
    """
    model, flags = "", []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            present = set(value.split())
            flags = [f for f in SPEED_FLAGS if f in present]
    return model, flags


def _nvidia_smi(*args: str) -> str:
    """``nvidia-smi``'s output, or "" where it is missing or fails (no GPU, no driver)."""
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def gpus(query: str | None = None) -> list[str]:
    """Each GPU as ``NVIDIA H200 (143771 MiB, driver 580.159.04)``, from ``nvidia-smi``'s CSV (``query``:
    that CSV, for tests); empty without a GPU.

    >>> gpus("NVIDIA H200, 143771 MiB, 580.159.04\\n")
    ['NVIDIA H200 (143771 MiB, driver 580.159.04)']
    >>> gpus("")
    []
    """
    if query is None:
        query = _nvidia_smi("--query-gpu=name,memory.total,driver_version", "--format=csv,noheader")
    rows = [[field.strip() for field in line.split(",")] for line in query.splitlines() if line.strip()]
    return [f"{row[0]} ({row[1]}, driver {row[2]})" for row in rows if len(row) == 3]


def gpu_memory_mb(pid: int, query: str | None = None) -> float:
    """GPU memory (MiB) that process ``pid`` holds now, by ``nvidia-smi``; NaN where it holds none
    or there is no GPU. ``query``: that CSV, for tests.

    >>> gpu_memory_mb(42, "41, 100 MiB\\n42, 1536 MiB\\n")
    1536.0
    >>> gpu_memory_mb(7, ""), gpu_memory_mb(42, "42, [N/A]\\n")
    (nan, nan)
    """
    if query is None:
        query = _nvidia_smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader")
    for line in query.splitlines():
        found, _, used = line.partition(",")
        if found.strip() == str(pid):
            try:
                return float(used.split()[0])
            except (IndexError, ValueError):  # "[N/A]", "[Not Supported]" (e.g. under MIG)
                return float("nan")
    return float("nan")


def describe(cpuinfo: str | None = None) -> str:
    """E.g. ``AMD EPYC (x86_64; avx2; no VNNI), 2 CPUs, Python 3.11.7, load average 0.4``; ``cpuinfo``
    defaults to this machine's ``/proc/cpuinfo``. Call it before a run: the load average is then
    that of other jobs, which is what marks a figure as measured on a loaded machine."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = cpu_model(cpuinfo)
    vnni = any("vnni" in f or "amx" in f for f in flags)
    isa = "; ".join(filter(None, [platform.machine(), ", ".join(flags), "" if vnni or not flags else "no VNNI"]))
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    gpu = "; GPU: " + ", ".join(found) if (found := gpus()) else ""
    return f"{model or platform.processor() or 'unknown CPU'} ({isa}), {os.cpu_count()} CPUs, Python {platform.python_version()}{load}{gpu}"
