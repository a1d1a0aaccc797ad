"""Processes that embed keep numpy's BLAS to ``blas_threads``: its spinning threads would take cores from torch."""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits

from monitor.config import Settings
from monitor.pipeline.builder import build_scorer


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_building_the_scorer_limits_blas_threads(embedder):
    with threadpool_limits(limits=2, user_api="blas"):  # whatever the machine, restored afterwards
        assert blas_threads() == {2}
        build_scorer(Settings(judge="prototype", blas_threads=1), embedder=embedder)
        assert blas_threads() == {1}


def test_zero_leaves_the_library_default(embedder):
    with threadpool_limits(limits=2, user_api="blas"):
        build_scorer(Settings(judge="prototype", blas_threads=0), embedder=embedder)
        assert blas_threads() == {2}
