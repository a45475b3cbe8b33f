"""TCP on loopstack's lo against the kernel's 127.0.0.1, in the same run.

- bulk: a sender thread does sendall() of 64 KiB or 1 MiB chunks, a receiver
  thread recv_into() a 1 MiB buffer; MB/s.
- round trip: 1-byte ping-pong between two threads (TCP_NODELAY); and the
  same in one thread (send, then recv on the other socket) where the kernel
  and loopstack both deliver without a thread switch.
- connections per second: connect, accept, close both, in one thread; and
  with the server in a thread that accepts and sends one byte the client
  waits for (so neither side outruns the other's backlog).

Two-thread figures are bimodal on 2-vCPU machines (waking the other CPU costs
~25 us), so each runs unpinned and with the whole process pinned to CPU 0.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _common import pinned  # noqa: E402

import loopstack  # noqa: E402

Factory = Callable[..., Any]


def _pair(make: Factory, listen_sock: Any, connect: Callable[[Any], None]) -> tuple[Any, Any]:
    c = make(socket.AF_INET, socket.SOCK_STREAM)
    connect(c)
    s, _ = listen_sock.accept()
    for x in (c, s):
        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c, s


class Net:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.stack = loopstack.Stack() if kind == "loopstack" else None

    def socket(self, *a: Any) -> Any:
        return self.stack.socket(*a) if self.stack else socket.socket(*a)

    def listener(self) -> tuple[Any, tuple[str, int]]:
        lst = self.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", 0))
        lst.listen(128)
        return lst, lst.getsockname()

    def close(self) -> None:
        if self.stack:
            self.stack.close()


def bulk(net: Net, chunk: int, total: int) -> float:
    """MB/s moving ``total`` bytes in ``chunk``-sized sendall calls."""
    lst, addr = net.listener()
    c, s = _pair(net.socket, lst, lambda c: c.connect(addr))
    data = bytes(chunk)
    buf = bytearray(1 << 20)
    got = 0

    def receiver() -> None:
        nonlocal got
        while got < total:
            n = s.recv_into(buf)
            if n == 0:
                break
            got += n

    t = threading.Thread(target=receiver)
    t0 = time.perf_counter()
    t.start()
    sent = 0
    while sent < total:
        c.sendall(data)
        sent += chunk
    t.join()
    dt = time.perf_counter() - t0
    for x in (c, s, lst):
        x.close()
    assert got == total, (got, total)
    return total / dt / 1e6


def rtt_threads(net: Net, n: int) -> float:
    lst, addr = net.listener()
    c, s = _pair(net.socket, lst, lambda c: c.connect(addr))

    def echo() -> None:
        for _ in range(n):
            s.sendall(s.recv(1))

    t = threading.Thread(target=echo)
    t.start()
    t0 = time.perf_counter()
    for _ in range(n):
        c.sendall(b"x")
        c.recv(1)
    dt = time.perf_counter() - t0
    t.join()
    for x in (c, s, lst):
        x.close()
    return dt / n


def rtt_one_thread(net: Net, n: int) -> float:
    lst, addr = net.listener()
    c, s = _pair(net.socket, lst, lambda c: c.connect(addr))
    t0 = time.perf_counter()
    for _ in range(n):
        c.sendall(b"x")
        s.recv(1)
        s.sendall(b"y")
        c.recv(1)
    dt = time.perf_counter() - t0
    for x in (c, s, lst):
        x.close()
    return dt / n


def conn_rate(net: Net, n: int) -> float:
    lst, addr = net.listener()
    t0 = time.perf_counter()
    for _ in range(n):
        c = net.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        s, _ = lst.accept()
        c.close()
        s.close()
    dt = time.perf_counter() - t0
    lst.close()
    return n / dt


def conn_rate_threads(net: Net, n: int) -> float:
    lst, addr = net.listener()

    def server() -> None:
        for _ in range(n):
            s, _ = lst.accept()
            s.sendall(b"x")  # the client waits for it: no backlog overflow, no SYN retries
            s.close()

    t = threading.Thread(target=server)
    t.start()
    t0 = time.perf_counter()
    for _ in range(n):
        c = net.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        c.recv(1)
        c.close()
    t.join()
    dt = time.perf_counter() - t0
    lst.close()
    return n / dt


def best(fn: Callable[[], float], repeats: int, higher: bool) -> float:
    values = [fn() for _ in range(repeats)]
    return max(values) if higher else min(values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    ap.add_argument("--profile", action="store_true", help="cProfile loopstack's bulk run")
    args = ap.parse_args()
    total = (16 if args.quick else 64) << 20
    n_rtt = 2000 if args.quick else 10000
    n_conn = 500 if args.quick else 2000
    rows: list[tuple[str, float, float, str]] = []
    for label, cpu in (("unpinned", None), ("pinned", 0)):
        with pinned(cpu):
            for chunk, name in ((64 << 10, "64 KiB"), (1 << 20, "1 MiB")):
                k = best(lambda c=chunk: bulk(Net("kernel"), c, total), 3, True)
                ls = best(lambda c=chunk: bulk(Net("loopstack"), c, total), 3, True)
                rows.append((f"bulk sendall {name}, {label}", k, ls, "MB/s"))
            k = best(lambda: rtt_threads(Net("kernel"), n_rtt), 3, False)
            ls = best(lambda: rtt_threads(Net("loopstack"), n_rtt), 3, False)
            rows.append((f"1-byte round trip, 2 threads, {label}", k * 1e6, ls * 1e6, "us"))
            k = best(lambda: conn_rate_threads(Net("kernel"), n_conn), 3, True)
            ls = best(lambda: conn_rate_threads(Net("loopstack"), n_conn), 3, True)
            rows.append((f"connections/s, 2 threads, {label}", k, ls, "conn/s"))
    k = best(lambda: rtt_one_thread(Net("kernel"), n_rtt), 3, False)
    ls = best(lambda: rtt_one_thread(Net("loopstack"), n_rtt), 3, False)
    rows.append(("1-byte round trip, 1 thread", k * 1e6, ls * 1e6, "us"))
    k = best(lambda: conn_rate(Net("kernel"), n_conn), 3, True)
    ls = best(lambda: conn_rate(Net("loopstack"), n_conn), 3, True)
    rows.append(("connections/s, 1 thread", k, ls, "conn/s"))
    print("\nTCP over 127.0.0.1: kernel vs loopstack, same run (best of 3)")
    print(f"  {'case':<42} {'kernel':>12} {'loopstack':>12}  ratio")
    for label, k, ls, unit in rows:
        ratio = ls / k
        note = "(loopstack/kernel: time)" if unit == "us" else "(loopstack/kernel: rate)"
        print(f"  {label:<42} {k:>9.1f} {unit:<6}{ls:>9.1f} {unit:<6} {ratio:5.2f}x {note}")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        bulk(Net("loopstack"), 1 << 20, 32 << 20)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
