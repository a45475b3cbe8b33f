"""The price of crossing the process boundary: TCP on one loopstack stack,
driven from the process that owns it and from a forked, attached child.

The server side always runs in the owner, in a thread; the client runs
either in another thread of the owner ("owner") or in a child process
forked from it ("child"), whose every socket call travels over the attach
channel and runs in the owner. Workloads:

- round trip: 1-byte ping-pong with an echo thread (TCP_NODELAY), µs;
- bulk: sendall of 64 KiB chunks (64 MiB in all) to a thread that
  recv_into()s a 1 MiB buffer, MiB/s;
- connections/s: connect, the server accepts and sends one byte, the
  client reads it and both close.

Each repetition runs in a fresh interpreter; owner and child repetitions
alternate; the table gives the median of each and the ratio of the
medians (child ÷ owner for times, owner ÷ child for rates: above 1 means
the child is slower). Two-thread figures on 2-vCPU machines are bimodal,
so every workload also runs with the whole process pinned to CPU 0.

    .venv/bin/python benchmarks/bench_attach.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import loopstack

WORKLOADS = ("rtt", "bulk", "conn")


def _server(lst: Any, workload: str, n: int) -> None:
    if workload == "rtt":
        s, _ = lst.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            s.sendall(s.recv(1))
        s.close()
    elif workload == "bulk":
        s, _ = lst.accept()
        buf = bytearray(1 << 20)
        while s.recv_into(buf):
            pass
        s.close()
    else:
        for _ in range(n):
            s, _ = lst.accept()
            s.sendall(b"x")
            s.close()


def _client(stack: Any, addr: tuple[str, int], workload: str, n: int) -> float:
    """The measured side; returns µs per round trip, MiB/s or connections/s."""
    if workload == "rtt":
        c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            c.sendall(b"x")
            c.recv(1)
        dt = time.perf_counter() - t0
        c.close()
        return dt / n * 1e6
    if workload == "bulk":
        c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        chunk = bytes(64 << 10)
        t0 = time.perf_counter()
        for _ in range(n):
            c.sendall(chunk)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)  # the server's close: everything was received
        dt = time.perf_counter() - t0
        c.close()
        return n * len(chunk) / dt / (1 << 20)
    t0 = time.perf_counter()
    for _ in range(n):
        c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        c.recv(1)
        c.close()
    return n / (time.perf_counter() - t0)


def one(mode: str, workload: str, n: int) -> float:
    """One repetition, in this (fresh) process."""
    stack = loopstack.Stack()
    lst = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(128)
    addr = lst.getsockname()
    if mode == "child":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            value = _client(stack, addr, workload, n)
            os.write(w, repr(value).encode())
            os._exit(0)
        os.close(w)
        server = threading.Thread(target=_server, args=(lst, workload, n))
        server.start()
        value = float(os.read(r, 100).decode())
        os.waitpid(pid, 0)
    else:
        server = threading.Thread(target=_server, args=(lst, workload, n))
        server.start()
        value = _client(stack, addr, workload, n)
    server.join()
    stack.close()
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    ap.add_argument("--one", nargs=4, metavar=("MODE", "WORKLOAD", "N", "CPU"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        mode, workload, n, cpu = args.one
        if cpu != "-":
            os.sched_setaffinity(0, {int(cpu)})
        print(one(mode, workload, int(n)))
        return
    sizes = {"rtt": 2000, "bulk": 512, "conn": 500} if args.quick else \
        {"rtt": 10000, "bulk": 1024, "conn": 2000}
    units = {"rtt": "µs", "bulk": "MiB/s", "conn": "conn/s"}
    names = {"rtt": "1-byte round trip", "bulk": "bulk sendall 64 KiB", "conn": "connections/s"}
    print(f"Owner vs attached child, one stack, {args.repeats} fresh processes each "
          "(interleaved), medians")
    print(f"  {'case':<34} {'owner':>14} {'child':>14}  price of the boundary")
    for cpu in ("-", "0"):
        for workload in WORKLOADS:
            got: dict[str, list[float]] = {"owner": [], "child": []}
            for _ in range(args.repeats):
                for mode in ("owner", "child"):
                    out = subprocess.run(
                        [sys.executable, __file__, "--one", mode, workload,
                         str(sizes[workload]), cpu],
                        capture_output=True, text=True, timeout=600, check=True)
                    got[mode].append(float(out.stdout.strip().splitlines()[-1]))
            o, c = statistics.median(got["owner"]), statistics.median(got["child"])
            ratio = c / o if workload == "rtt" else o / c
            label = f"{names[workload]}, {'pinned' if cpu != '-' else 'unpinned'}"
            unit = units[workload]
            print(f"  {label:<34} {o:>9.1f} {unit:<4} {c:>9.1f} {unit:<4}  {ratio:5.2f}x slower")


if __name__ == "__main__":
    main()
