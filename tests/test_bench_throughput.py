"""bench/throughput.py's helpers: texts cycle when a run asks for more than the data holds (the GPU
rows need tens of thousands of short prompts, ToxicChat has 2,801)."""

import doctest

from bench import throughput


def test_doctests_pass():
    assert doctest.testmod(throughput).failed == 0


def test_repeated_texts_keep_their_order_and_count():
    assert throughput._repeat_to(["x", "y", "z"], 7) == ["x", "y", "z", "x", "y", "z", "x"]
