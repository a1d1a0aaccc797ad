"""Group texts into forward passes so that padding and per-pass overhead waste the least compute.

A transformer pass costs about ``overhead + longest_length * texts_in_pass`` token-equivalents:
every text is padded to the longest one in its pass, and each pass pays a fixed cost (Python
dispatch, kernel set-up; on 2 CPU cores about 40 tokens' worth for all-MiniLM-L6-v2). Sorting by
character length and cutting every ``batch_size`` texts, as ``SentenceTransformer.encode`` does,
pads a worker batch of 64 short prompts to ~1.3x its real tokens. Sorting by *token* length and
choosing the cuts by dynamic programming brings that to ~1.1x, which is what lets the service keep
up with the bare embedder although it only ever sees one worker batch at a time.

A pass's peak memory grows with the *square* of its length (each attention head holds a
texts × length × length score matrix), so a count cap alone lets a pass of long texts take
hundreds of MB more than one of short texts. ``max_cells`` caps texts × longest length² instead,
which bounds a pass in bytes: long texts go in smaller passes, short ones are unaffected.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def plan_passes(lengths: Sequence[int], max_batch: int, overhead_tokens: float, max_cells: float | None = None) -> list[list[int]]:
    """Partition text indices into passes minimising ``sum(overhead + max_len * size)``.

    ``lengths`` are token counts (after truncation); each pass holds at most ``max_batch`` texts,
    all of similar length, and (with ``max_cells``) at most ``max_cells / max_len²`` of them, one
    at least. Deterministic: equal lengths keep their input order.

    >>> plan_passes([3, 50, 4, 52, 5], max_batch=8, overhead_tokens=10)
    [[0, 2, 4], [1, 3]]
    >>> plan_passes([7, 7, 7], max_batch=2, overhead_tokens=0)
    [[0], [1, 2]]
    >>> plan_passes([], max_batch=4, overhead_tokens=10)
    []
    >>> [len(p) for p in plan_passes([10] * 4 + [100] * 4, max_batch=8, overhead_tokens=1000, max_cells=20_000)]
    [4, 2, 2]
    """
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    sorted_lengths = np.asarray(lengths, dtype=np.float64)[order]
    n = len(order)
    best = np.zeros(n + 1)  # best[j]: least cost of the first j sorted texts
    start = np.zeros(n + 1, dtype=np.int64)  # where the last pass of that best plan starts
    for j in range(1, n + 1):
        size = max_batch if max_cells is None else min(max_batch, max(1, int(max_cells // max(sorted_lengths[j - 1], 1.0) ** 2)))
        first = np.arange(max(0, j - size), j)
        # Sorted ascending, so a pass [i, j) pads to sorted_lengths[j - 1].
        costs = best[first] + overhead_tokens + sorted_lengths[j - 1] * (j - first)
        k = int(np.argmin(costs))
        best[j], start[j] = costs[k], first[k]
    passes: list[list[int]] = []
    j = n
    while j > 0:
        passes.append(order[start[j] : j].tolist())
        j = int(start[j])
    return passes[::-1]
