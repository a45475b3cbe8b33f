"""What a two-thread round trip costs Python before any network stack runs.

Issue 10's tcp_rtt row asks loopstack's two-thread 1-byte ping-pong to stay
within 1.5x of the kernel's. Part of every Python two-thread round trip is
the interpreter's own hand-over (a blocked thread woken, then given the
GIL), which no user-space stack can avoid. This measures, in the same run,
each repetition a fresh process, the three interleaved, pinned to one CPU
and unpinned, medians of ``--reps``:

- ``locks``: two threads handing a turn back and forth with two bare
  ``_thread`` locks (the least Python can do per hand-over: no data at all);
- ``condition``: the same with one ``threading.Condition`` (what a blocking
  socket layer in Python uses);
- ``kernel``: the tcp_rtt workload on the kernel's 127.0.0.1 (two threads,
  TCP_NODELAY, ``sendall``/``recv`` of one byte).

    .venv/bin/python benchmarks/handoff.py [--reps 5] [--n 20000]
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

KINDS = ("locks", "condition", "kernel")


def locks(n: int) -> float:
    a = _thread.allocate_lock()
    b = _thread.allocate_lock()
    a.acquire()
    b.acquire()

    def echo() -> None:
        for _ in range(n):
            a.acquire()
            b.release()

    t = threading.Thread(target=echo)
    t.start()
    t0 = time.perf_counter()
    for _ in range(n):
        a.release()
        b.acquire()
    dt = time.perf_counter() - t0
    t.join()
    return dt / n * 1e6


def condition(n: int) -> float:
    c = threading.Condition()
    turn = [0]

    def echo() -> None:
        with c:
            for _ in range(n):
                while turn[0] != 1:
                    c.wait()
                turn[0] = 2
                c.notify()

    t = threading.Thread(target=echo)
    t.start()
    t0 = time.perf_counter()
    with c:
        for _ in range(n):
            turn[0] = 1
            c.notify()
            while turn[0] != 2:
                c.wait()
    dt = time.perf_counter() - t0
    t.join()
    return dt / n * 1e6


def kernel(n: int) -> float:
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    for s in (conn, cli):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def echo() -> None:
        for _ in range(n):
            conn.sendall(conn.recv(1))

    t = threading.Thread(target=echo)
    t.start()
    t0 = time.perf_counter()
    for _ in range(n):
        cli.sendall(b"x")
        cli.recv(1)
    dt = time.perf_counter() - t0
    t.join()
    for s in (conn, cli, srv):
        s.close()
    return dt / n * 1e6


def child(kind: str, n: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    fn = {"locks": locks, "condition": condition, "kernel": kernel}[kind]
    print(json.dumps({"us": fn(n)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=20000, help="round trips per repetition")
    ap.add_argument("--cpu", type=int, default=0, help="the CPU pinned runs use")
    ap.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--pin", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reps < 1 or args.n < 1:
        ap.error("--reps and --n must be at least 1")
    if args.one:
        child(args.one, args.n, args.pin)
        return
    print(f"handoff: Python {sys.version.split()[0]}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; µs per round trip, "
          f"medians of {args.reps} fresh processes")
    for label, pin in (("unpinned", None), (f"pinned to CPU {args.cpu}", args.cpu)):
        got: dict[str, list[float]] = {k: [] for k in KINDS}
        for _ in range(args.reps):
            for kind in KINDS:  # interleaved
                cmd = [sys.executable, __file__, "--one", kind, "--n", str(args.n)]
                if pin is not None:
                    cmd += ["--pin", str(pin)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                got[kind].append(json.loads(out.stdout)["us"])
        med = {k: statistics.median(v) for k, v in got.items()}
        print(f"  {label:18} locks {med['locks']:6.1f}   condition {med['condition']:6.1f}"
              f"   kernel TCP {med['kernel']:6.1f}   (locks = {med['locks'] / med['kernel']:.2f}x"
              f" the kernel's round trip; 1.5x of it leaves "
              f"{1.5 * med['kernel'] - med['locks']:.1f} µs beyond the bare hand-over)")


if __name__ == "__main__":
    main()
