"""Python bytecodes executed per round trip and per segment on loopstack's
established-connection paths (the kernel's side of the same loop, for
scale, runs only the benchmark's own few bytecodes).

Counted with ``sys.settrace`` and ``frame.f_trace_opcodes`` in the
measuring thread only (each 'opcode' event is one bytecode instruction
executed; the stack's clock thread is not traced, and in these one-thread
loops it does almost nothing). The timer heap's own work (clock.py
``_arm``, ``_top``) is done in the traced thread when a timer's heap entry
must move, which depends on how much real time passed: expect a spread of
a few tens of bytecodes between runs.

- rtt_single: ``c.sendall(b"x"); s.recv(1); s.sendall(b"y"); c.recv(1)``,
  TCP_NODELAY, one thread: two data segments per round trip (each carries
  the ACK of the other).
- conn_single: ``socket(); connect(); accept(); server close(); client
  recv() sees EOF; client close()``, one thread, per connection.
- bulk_single: ``c.sendall`` of a 64 KiB bytes object, then ``s.recv_into``
  a 64 KiB bytearray until all of it is read, one thread; divided by the
  segments the stack sent (``OutSegs``: data and ACKs).

Untraced time per round trip (or per 64 KiB) is printed too, from a run of
the same loop after the traced one: a rough figure (use bench_tcp.py or
handoff.py for timings).

    python benchmarks/opcount.py                    # both workloads
    python benchmarks/opcount.py --top 25           # + bytecodes by function
    python benchmarks/opcount.py --workloads rtt_single --rounds 5000
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import loopstack

HOST = "127.0.0.1"
CHUNK = 64 * 1024
# The timer heap's work and the clock thread's wake-up, done in the traced
# thread when a timer's heap entry has surfaced (a matter of wall time, not
# of the segment): shown apart, so that the rest compares between runs.
HEAP = ("clock.py:_arm", "clock.py:_top", "clock.py:_armed", "clock.py:_wake_if_earlier",
        "threading.py:notify", "threading.py:_is_owned")


def _pair(stack: Any) -> tuple[Any, Any, Any]:
    def mk() -> Any:
        return stack.socket(socket.AF_INET, socket.SOCK_STREAM)

    lst = mk()
    lst.bind((HOST, 0))
    lst.listen()
    c = mk()
    c.connect(lst.getsockname())
    s, _ = lst.accept()
    for x in (c, s):
        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return lst, c, s


def _traced(step: Callable[[], None], n: int, by_function: Counter[str]) -> int:
    """Bytecodes executed by ``n`` calls of ``step`` (this thread)."""
    ops = [0]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            ops[0] += 1
            code = frame.f_code
            by_function[f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for _ in range(n):
            step()
    finally:
        sys.settrace(None)
    return ops[0]


def _timed(step: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n * 1e6


def _measure(step: Callable[[], None], n: int, warm: int
             ) -> tuple[int, float, float, Counter[str]]:
    """Warm ``step`` up, then its bytecodes over ``n`` calls (traced), the
    best untraced µs a call of three runs, and the timer heap's bytecodes."""
    for _ in range(warm):
        step()
    by_function: Counter[str] = Counter()
    ops = _traced(step, n, by_function)
    us = min(_timed(step, n) for _ in range(3))
    heap = sum(by_function[k] for k in HEAP)
    return ops, us, heap, by_function


def rtt_single(n: int, top: int) -> None:
    stack = loopstack.Stack()
    _, c, s = _pair(stack)

    def step() -> None:
        c.sendall(b"x")
        s.recv(1)
        s.sendall(b"y")
        c.recv(1)

    ops, us, heap, by_function = _measure(step, n, 200)
    print(f"rtt_single: {ops / n:.0f} bytecodes per round trip, {ops / n / 2:.0f} per segment"
          f" (2 segments), of which the timer heap's {heap / n:.0f}: {(ops - heap) / n:.0f}"
          f" without; untraced {us:.1f} µs per round trip (best of 3 runs of {n})")
    _top(by_function, n, top, "round trip")
    stack.close()


def bulk_single(n: int, top: int) -> None:
    stack = loopstack.Stack()
    _, c, s = _pair(stack)
    payload = bytes(CHUNK)
    buf = bytearray(CHUNK)
    view = memoryview(buf)

    def step() -> None:
        c.sendall(payload)
        got = 0
        while got < CHUNK:
            got += s.recv_into(view[got:])

    for _ in range(20):
        step()
    segs0 = stack.stats()["Tcp"]["OutSegs"]
    by_function: Counter[str] = Counter()
    ops = _traced(step, n, by_function)
    segs = stack.stats()["Tcp"]["OutSegs"] - segs0
    us = min(_timed(step, n) for _ in range(3))
    heap = sum(by_function[k] for k in HEAP)
    print(f"bulk_single: {ops / segs:.0f} bytecodes per segment ({segs / n:.1f} segments,"
          f" {ops / n:.0f} bytecodes per 64 KiB), of which the timer heap's {heap / segs:.0f}:"
          f" {(ops - heap) / segs:.0f} without; untraced {us:.1f} µs per 64 KiB"
          f" (best of 3 runs of {n})")
    _top(by_function, segs, top, "segment")
    stack.close()


def conn_single(n: int, top: int) -> None:
    stack = loopstack.Stack()
    lst = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind((HOST, 0))
    lst.listen(128)
    addr = lst.getsockname()

    def step() -> None:
        c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        s, _ = lst.accept()
        s.close()
        c.recv(1)
        c.close()

    ops, us, heap, by_function = _measure(step, n, 200)
    print(f"conn_single: {ops / n:.0f} bytecodes per connection, of which the timer heap's"
          f" {heap / n:.0f}: {(ops - heap) / n:.0f} without; untraced {us:.1f} µs per"
          f" connection (best of 3 runs of {n})")
    _top(by_function, n, top, "connection")
    stack.close()


def _top(by_function: Counter[str], per: int, top: int, unit: str) -> None:
    for name, k in by_function.most_common(top):
        print(f"  {k / per:8.1f}  {name}  (per {unit})")


WORKLOADS = {"rtt_single": rtt_single, "bulk_single": bulk_single, "conn_single": conn_single}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated, of {', '.join(WORKLOADS)}")
    ap.add_argument("--rounds", type=int, default=2000,
                    help="round trips (rtt_single) or 64 KiB sends / 10 (bulk_single)")
    ap.add_argument("--top", type=int, default=0, help="list the N costliest functions")
    args = ap.parse_args()
    print(f"loopstack from {loopstack.__file__}")
    for name in args.workloads.split(","):
        n = args.rounds if name != "bulk_single" else max(1, args.rounds // 10)
        WORKLOADS[name](n, args.top)


if __name__ == "__main__":
    main()
