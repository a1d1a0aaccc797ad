"""One line naming the machine a benchmark ran on, for every script's output.

Why the CPU model and its vector extensions, not only the core count: the int8 backend's speed
depends on them. On a CPU with VNNI (AVX-512 VNNI, AVX-VNNI or AMX) ONNX Runtime multiplies int8
weights natively; on one with AVX2 only it does not, and the same command gives a much smaller
speed-up over torch. A figure without the CPU it came from cannot be compared with anyone else's.
"""

from __future__ import annotations

import os
import platform
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


def describe() -> str:
    """E.g. ``AMD EPYC (x86_64; avx2; no VNNI), 2 CPUs, Python 3.11.7, load average 0.4``."""
    try:
        model, flags = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, flags = "", []
    vnni = any("vnni" in f or "amx" in f for f in flags)
    isa = "; ".join(filter(None, [platform.machine(), ", ".join(flags), "" if vnni or not flags else "no VNNI"]))
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{model or platform.processor() or 'unknown CPU'} ({isa}), {os.cpu_count()} CPUs, Python {platform.python_version()}{load}"
