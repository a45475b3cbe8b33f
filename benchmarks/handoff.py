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
- ``eventfd``: the same with an eventfd each, ``os.write`` to wake and
  ``os.read`` to wait, both with the GIL released (what loopstack's
  hand-off parker does, clock.Parker: the least a Python hand-over costs);
- ``kernel``: the tcp_rtt workload on the kernel's 127.0.0.1 (two threads,
  TCP_NODELAY, ``sendall``/``recv`` of one byte);
- ``loopstack``: the same workload on a loopstack Stack;
- ``loopstack_1t``: the same exchange in one thread (send, recv on the other
  end, echo, recv): the stack's own work without any hand-over.

Besides µs per round trip, each kind's context switches per round trip
(voluntary and involuntary, every thread of the process, read from
/proc/self/task/*/status around the timed loop) and its CPU time per round
trip (``getrusage``): loopstack's two-thread round trip less its one-thread
one is what the hand-over costs it, to compare with ``eventfd``.

    .venv/bin/python benchmarks/handoff.py [--reps 5] [--n 20000]
    .venv/bin/python benchmarks/handoff.py --kinds eventfd,loopstack,loopstack_1t
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

KINDS = ("locks", "condition", "eventfd", "kernel", "loopstack", "loopstack_1t")
WARM = 200  # round trips before the timed loop


class Meter:
    """Times the loop between ``start`` and ``stop``, with the process's
    context switches and CPU time over the same interval."""

    def start(self) -> None:
        self.cs0 = _switches()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.perf_counter()

    def stop(self, n: int) -> dict[str, float]:
        dt = time.perf_counter() - self.t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cs = _switches()
        cpu = ru.ru_utime - self.ru0.ru_utime + ru.ru_stime - self.ru0.ru_stime
        return {"us": dt / n * 1e6, "cs": (cs - self.cs0) / n, "cpu_us": cpu / n * 1e6}


def _switches() -> int:
    """Context switches so far, every thread of this process (Linux; 0 elsewhere)."""
    total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:  # voluntary_ and nonvoluntary_
                        total += int(line.split()[1])
        except OSError:  # the thread has gone
            pass
    return total


def _echo_thread(fn: Any) -> threading.Thread:
    t = threading.Thread(target=fn)
    t.start()
    return t


def locks(n: int) -> dict[str, float]:
    a = _thread.allocate_lock()
    b = _thread.allocate_lock()
    a.acquire()
    b.acquire()

    def echo() -> None:
        for _ in range(WARM + n + 1):  # (+1: alive, so counted, when the meter stops)
            a.acquire()
            b.release()

    t = _echo_thread(echo)
    for _ in range(WARM):
        a.release()
        b.acquire()
    m = Meter()
    m.start()
    for _ in range(n):
        a.release()
        b.acquire()
    got = m.stop(n)
    a.release()
    b.acquire()
    t.join()
    return got


def condition(n: int) -> dict[str, float]:
    c = threading.Condition()
    turn = [0]

    def echo() -> None:
        with c:
            for _ in range(WARM + n + 1):  # (+1: alive, so counted, when the meter stops)
                while turn[0] != 1:
                    c.wait()
                turn[0] = 2
                c.notify()

    def one() -> None:
        turn[0] = 1
        c.notify()
        while turn[0] != 2:
            c.wait()

    t = _echo_thread(echo)
    m = Meter()
    with c:
        for _ in range(WARM):
            one()
        m.start()
        for _ in range(n):
            one()
        got = m.stop(n)
        one()
    t.join()
    return got


def eventfd(n: int) -> dict[str, float]:
    one = (1).to_bytes(8, sys.byteorder)
    a = os.eventfd(0, os.EFD_CLOEXEC)
    b = os.eventfd(0, os.EFD_CLOEXEC)
    read, write = os.read, os.write

    def echo() -> None:
        for _ in range(WARM + n + 1):  # (+1: alive, so counted, when the meter stops)
            read(a, 8)
            write(b, one)

    t = _echo_thread(echo)
    for _ in range(WARM):
        write(a, one)
        read(b, 8)
    m = Meter()
    m.start()
    for _ in range(n):
        write(a, one)
        read(b, 8)
    got = m.stop(n)
    write(a, one)
    read(b, 8)
    t.join()
    os.close(a)
    os.close(b)
    return got


def _tcp_pair(make: Any) -> tuple[Any, Any, Any]:
    srv = make(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = make(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect(srv.getsockname())
    conn, _ = srv.accept()
    for s in (conn, cli):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return srv, cli, conn


def _rtt_threads(make: Any, n: int) -> dict[str, float]:
    srv, cli, conn = _tcp_pair(make)

    def echo() -> None:
        recv, send = conn.recv, conn.sendall
        while True:
            b = recv(1)
            if not b:
                return
            send(b)

    t = _echo_thread(echo)
    send, recv = cli.sendall, cli.recv
    for _ in range(WARM):
        send(b"x")
        recv(1)
    m = Meter()
    m.start()
    for _ in range(n):
        send(b"x")
        recv(1)
    got = m.stop(n)
    cli.shutdown(socket.SHUT_WR)
    t.join()
    for s in (conn, cli, srv):
        s.close()
    return got


def kernel(n: int) -> dict[str, float]:
    return _rtt_threads(socket.socket, n)


def loopstack(n: int) -> dict[str, float]:
    import loopstack as ls

    stack = ls.Stack()
    try:
        return _rtt_threads(stack.socket, n)
    finally:
        stack.close()


def loopstack_1t(n: int) -> dict[str, float]:
    import loopstack as ls

    stack = ls.Stack()
    srv, cli, conn = _tcp_pair(stack.socket)

    def one() -> None:
        cli.sendall(b"x")
        conn.recv(1)
        conn.sendall(b"x")
        cli.recv(1)

    for _ in range(WARM):
        one()
    m = Meter()
    m.start()
    for _ in range(n):
        one()
    got = m.stop(n)
    for s in (conn, cli, srv):
        s.close()
    stack.close()
    return got


def child(kind: str, n: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    fn = {"locks": locks, "condition": condition, "eventfd": eventfd, "kernel": kernel,
          "loopstack": loopstack, "loopstack_1t": loopstack_1t}[kind]
    print(json.dumps(fn(n)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=20000, help="round trips per repetition")
    ap.add_argument("--cpu", type=int, default=0, help="the CPU pinned runs use")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"comma-separated, of {','.join(KINDS)}")
    ap.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--pin", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if args.reps < 1 or args.n < 1:
        ap.error("--reps and --n must be at least 1")
    if not kinds or any(k not in KINDS for k in kinds):
        ap.error(f"--kinds: choose from {','.join(KINDS)}")
    if args.one:
        child(args.one, args.n, args.pin)
        return
    print(f"handoff: Python {sys.version.split()[0]}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; per round trip, "
          f"medians of {args.reps} fresh processes: µs, context switches, CPU µs")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    for label, pin in (("unpinned", None), (f"pinned to CPU {args.cpu}", args.cpu)):
        got: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for _ in range(args.reps):
            for kind in kinds:  # interleaved
                cmd = [sys.executable, __file__, "--one", kind, "--n", str(args.n)]
                if pin is not None:
                    cmd += ["--pin", str(pin)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                got[kind].append(json.loads(out.stdout))
        med = {k: {f: statistics.median(r[f] for r in v) for f in ("us", "cs", "cpu_us")}
               for k, v in got.items()}
        print(f"  {label}")
        for kind in kinds:
            m = med[kind]
            print(f"    {kind:13} {m['us']:7.1f} µs  {m['cs']:5.2f} cs  {m['cpu_us']:7.1f} CPU µs")
        if "locks" in med and "kernel" in med:
            k, lk = med["kernel"]["us"], med["locks"]["us"]
            print(f"    locks = {lk / k:.2f}x the kernel's round trip; 1.5x of it leaves "
                  f"{1.5 * k - lk:.1f} µs beyond the bare hand-over")
        if "loopstack" in med and "loopstack_1t" in med:
            hand = med["loopstack"]["us"] - med["loopstack_1t"]["us"]
            line = f"    loopstack's hand-over (2 threads less 1): {hand:.1f} µs"
            if "eventfd" in med:
                line += f" (eventfd alone {med['eventfd']['us']:.1f})"
            print(line)


if __name__ == "__main__":
    main()
