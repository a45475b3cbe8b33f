"""Shared helpers for the benchmarks: timing, CPU pinning, ratio tables.

Absolute times on shared machines are noise; every benchmark runs the kernel
and loopstack in the same process and run, and reports the ratio.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Pin the whole process to one CPU (None: leave it free) for the block."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def per_op(fn: Callable[[int], None], n: int, repeats: int = 5) -> float:
    """Median seconds per operation of ``fn(n)`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def report(title: str, rows: list[tuple[str, float, float]], unit: str = "us") -> None:
    """rows: (label, kernel seconds/op, loopstack seconds/op)."""
    print(f"\n{title}")
    print(f"  {'case':<34} {'kernel':>10} {'loopstack':>10}  ratio (loopstack/kernel)")
    for label, k, loop in rows:
        print(f"  {label:<34} {k * 1e6:>8.1f}{unit} {loop * 1e6:>8.1f}{unit}  {loop / k:6.2f}x")


def report_rates(title: str, rows: list[tuple[str, float, float]]) -> None:
    """rows: (label, kernel seconds/op, loopstack seconds/op), printed as
    operations per second with the ratio loopstack rate / kernel rate."""
    print(f"\n{title}")
    print(f"  {'case':<34} {'kernel':>12} {'loopstack':>12}  ratio (loopstack rate/kernel rate)")
    for label, k, loop in rows:
        print(f"  {label:<34} {1 / k:>10,.0f}/s {1 / loop:>10,.0f}/s  {k / loop:6.2f}x")
