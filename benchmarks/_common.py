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


# -- system figures (issue10.py, callcount.py) ----------------------------------------
def loadavg() -> str:
    """The first three fields of /proc/loadavg ("" where there is none)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return ""


def proc_snmp() -> dict[str, dict[str, int]]:
    """The kernel's /proc/net/snmp counters by group: ["Tcp"]["OutSegs"]."""
    out: dict[str, dict[str, int]] = {}
    try:
        with open("/proc/net/snmp") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        group, names = head.split(":", 1)
        _, values = vals.split(":", 1)
        out[group] = {n: int(v) for n, v in zip(names.split(), values.split(), strict=False)}
    return out


def rss_bytes() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slabinfo() -> dict[str, tuple[int, int]]:
    """/proc/slabinfo (root only): cache name -> (bytes in active objects,
    bytes in the cache's slabs). Empty when unreadable."""
    out: dict[str, tuple[int, int]] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/slabinfo") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        f_ = line.split()
        # name active_objs num_objs objsize objperslab pagesperslab : tunables ... : slabdata
        # active_slabs num_slabs sharedavail
        active, size, pages_per_slab, slabs = int(f_[1]), int(f_[3]), int(f_[5]), int(f_[-2])
        out[f_[0]] = (active * size, slabs * pages_per_slab * page)
    return out


def meminfo_slab() -> int:
    """The Slab: line of /proc/meminfo, in bytes (0 when absent)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Slab:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
