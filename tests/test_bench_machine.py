"""The machine line every benchmark prints: int8 figures are only comparable with the CPU's vector
extensions named, so a CPU without VNNI must say so and one with it must not."""

import doctest
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_machine", ROOT / "bench" / "machine.py")
machine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(machine)  # type: ignore[union-attr]

VNNI_CPU = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\nprocessor\t: 1\nmodel name\t: other\n"


def test_doctests_pass():
    assert doctest.testmod(machine).failed == 0


def test_reads_the_first_cpu_and_only_speed_flags():
    assert machine.cpu_model(VNNI_CPU) == ("Intel Xeon", ["avx2", "avx512f", "avx512_vnni"])


def test_describe_names_the_cpu_and_whether_it_has_vnni(monkeypatch):
    real = Path.read_text
    fake = {"/proc/cpuinfo": VNNI_CPU}
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: fake[str(self)] if str(self) in fake else real(self, *a, **k))
    line = machine.describe()
    assert line.startswith("Intel Xeon (") and "avx512_vnni" in line and "no VNNI" not in line
    fake["/proc/cpuinfo"] = "model name\t: AMD EPYC\nflags\t\t: avx2\n"
    assert "AMD EPYC (" in machine.describe() and "no VNNI" in machine.describe()
