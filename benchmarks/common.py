"""Shared bits of the benchmarks: timing, tables, and the machine's matmul peak."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by the machine's noise)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak_gflops(n: int = 2048) -> float:
    """float32 matrix-multiply throughput of this machine's BLAS, measured now."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up threads and caches
    seconds = best_of(lambda: a @ b, repeat=5)
    return 2 * n**3 / seconds / 1e9


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_table(rows: list[tuple[str, str, str, bool]]) -> None:
    """rows: (figure, measured, target, met)."""
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'figure':<{width}}{'measured':>18}  {'target':<16}result")
    for name, measured, target, ok in rows:
        print(f"{name:<{width}}{measured:>18}  {target:<16}{verdict(ok)}")
