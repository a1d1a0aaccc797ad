"""The machine line every benchmark prints: int8 figures are only comparable with the CPU's vector
extensions named, so a CPU without VNNI must say so and one with it must not."""

import doctest

from bench import machine

VNNI_CPU = ("processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\n"
            "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu sse2\n")


def test_doctests_pass():
    assert doctest.testmod(machine).failed == 0


def test_reads_the_first_cpu_and_only_speed_flags():
    assert machine.cpu_model(VNNI_CPU) == ("Intel Xeon", ["avx2", "avx512f", "avx512_vnni"])


def test_describe_names_the_cpu_and_whether_it_has_vnni():
    line = machine.describe(VNNI_CPU)
    assert line.startswith("Intel Xeon (") and "avx512_vnni" in line and "no VNNI" not in line
    assert "AMD EPYC (" in machine.describe("model name\t: AMD EPYC\nflags\t\t: avx2\n")
    assert "no VNNI" in machine.describe("model name\t: AMD EPYC\nflags\t\t: avx2\n")
    assert "no VNNI" not in machine.describe("model name\t: Neoverse\nflags\t\t: fp asimd\n")  # no x86 flags: nothing to say
