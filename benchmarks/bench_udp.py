"""UDP over loopstack's lo against the kernel's 127.0.0.1, in the same run.

Datagram rate (1, 1400 and 60000 payload bytes), one sender socket and one
receiver socket, measured two ways, identically for the kernel and loopstack:

- one thread, batch then drain: send a batch of datagrams, then receive them
  all with recv_into. The batch is half of what the default 212992-byte
  receive buffer holds, so neither side ever drops; nothing waits on another
  thread. This is the pure cost of getting a datagram from sendto to
  recv_into.
- two threads, credit flow control: a receiver thread loops on recv_into and
  returns a 1-byte credit datagram every CREDIT_EVERY datagrams; the sender
  loops on sendto and never has more than WINDOW datagrams outstanding
  (again half a default buffer), blocking on a credit when it has.

Round-trip latency (1 and 1400 bytes): a ping-pong between two sockets,
either in one thread (send, receive, echo, receive) or between two threads
(the client thread sends and blocks; an echo thread receives and answers).

On these 2-vCPU machines waking the other CPU costs ~25 us, so every
two-thread figure is bimodal: each case runs unpinned and with the whole
process pinned to one CPU. All sockets are blocking without a timeout (a
timeout makes CPython poll() before each call on a kernel socket). Ratios:
loopstack time / kernel time for latency, loopstack rate / kernel rate for
throughput; above 1 means loopstack is faster on that row for rates, slower
for times. No assertions on timings.

    python benchmarks/bench_udp.py            # the tables
    python benchmarks/bench_udp.py --profile  # plus cProfile of loopstack's 1400-byte path
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _common import per_op, pinned, report, report_rates  # noqa: E402

import loopstack  # noqa: E402

SIZES = (1, 1400, 60000)
# Half of what a default receive buffer holds (256, 92 and 3 datagrams of
# these sizes, on Linux and loopstack alike): the batch, and the window.
WINDOW = {1: 128, 1400: 46, 60000: 2}
RATE_N = {1: 38_400, 1400: 36_800, 60000: 6_000}  # multiples of the window
RTT_N = 10_000
REPEATS = 3
HANG_LIMIT = 120.0  # seconds: a lost datagram would block forever; fail loudly instead

Factory = Callable[[], Any]


def kernel_factory() -> tuple[Factory, Callable[[], None]]:
    return (lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)), (lambda: None)


def loopstack_factory() -> tuple[Factory, Callable[[], None]]:
    stack = loopstack.Stack()
    return (lambda: stack.socket(socket.AF_INET, socket.SOCK_DGRAM)), stack.close


def bound(make: Factory) -> Any:
    s = make()
    s.bind(("127.0.0.1", 0))
    return s


def _run_threads(main: Callable[[], None], other: Callable[[], None]) -> None:
    t = threading.Thread(target=other, daemon=True)
    t.start()
    main()
    t.join(HANG_LIMIT)
    if t.is_alive():
        sys.exit("bench_udp: a datagram was lost and a thread is stuck; the figures are void")


# -- datagram rate ------------------------------------------------------------------
def rate_batch(make: Factory, size: int) -> Callable[[int], None]:
    tx, rx = make(), bound(make)
    addr = rx.getsockname()
    payload = bytes(size)
    buf = bytearray(65536)
    batch = WINDOW[size]

    def run(n: int) -> None:
        send, recv = tx.sendto, rx.recv_into
        for _ in range(n // batch):
            for _ in range(batch):
                send(payload, addr)
            for _ in range(batch):
                recv(buf)

    return run


def rate_threads(make: Factory, size: int) -> Callable[[int], None]:
    tx, rx = bound(make), bound(make)
    addr, back = rx.getsockname(), tx.getsockname()
    payload = bytes(size)
    window = WINDOW[size]
    every = max(1, window // 4)

    def run(n: int) -> None:
        def receiver() -> None:
            buf = bytearray(65536)
            recv, send = rx.recv_into, rx.sendto
            for i in range(1, n + 1):
                recv(buf)
                if i % every == 0:
                    send(b"c", back)

        def sender() -> None:
            cbuf = bytearray(16)
            send, recv = tx.sendto, tx.recv_into
            credited = 0
            for sent in range(n):
                if sent - credited >= window:
                    recv(cbuf)
                    credited += every
                send(payload, addr)
            for _ in range(n // every - credited // every):  # collect the last credits
                recv(cbuf)

        _run_threads(sender, receiver)

    return run


# -- round trip ---------------------------------------------------------------------
def rtt_one_thread(make: Factory, size: int) -> Callable[[int], None]:
    a, b = bound(make), bound(make)
    a_addr, b_addr = a.getsockname(), b.getsockname()
    payload = bytes(size)
    buf = bytearray(65536)

    def run(n: int) -> None:
        for _ in range(n):
            a.sendto(payload, b_addr)
            b.recv_into(buf)
            b.sendto(payload, a_addr)
            a.recv_into(buf)

    return run


def rtt_threads(make: Factory, size: int) -> Callable[[int], None]:
    a, b = bound(make), bound(make)
    a_addr, b_addr = a.getsockname(), b.getsockname()
    payload = bytes(size)

    def run(n: int) -> None:
        def echo() -> None:
            buf = bytearray(65536)
            recv, send = b.recv_into, b.sendto
            while True:
                got = recv(buf)
                if got == 0:  # the empty datagram ends the run
                    return
                send(payload, a_addr)

        def client() -> None:
            buf = bytearray(65536)
            recv, send = a.recv_into, a.sendto
            for _ in range(n):
                send(payload, b_addr)
                recv(buf)
            send(b"", b_addr)

        _run_threads(client, echo)

    return run


# -- driver -------------------------------------------------------------------------
def measure(case: Callable[[Factory, int], Callable[[int], None]], size: int,
            n: int) -> tuple[float, float]:
    """Seconds per operation, kernel then loopstack; fresh sockets (and stack) each."""
    out = []
    for factory in (kernel_factory, loopstack_factory):
        make, done = factory()
        try:
            out.append(per_op(case(make, size), n, REPEATS))
        finally:
            done()
    return out[0], out[1]


PINNING = (("unpinned", None), ("pinned", 0))


def main_tables() -> None:
    print(f"loopstack bench_udp: Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, median of {REPEATS} runs")
    rows = []
    for size in SIZES:
        for label, cpu in PINNING:
            with pinned(cpu):
                rows.append((f"{size:>5} B, 1 thread batch, {label}",
                             *measure(rate_batch, size, RATE_N[size])))
        for label, cpu in PINNING:
            with pinned(cpu):
                rows.append((f"{size:>5} B, 2 threads credit, {label}",
                             *measure(rate_threads, size, RATE_N[size])))
    report_rates("UDP datagram rate, 127.0.0.1, datagrams received per second "
                 "(batch/window: 128, 46, 2 datagrams)", rows)

    rows = []
    for size in (1, 1400):
        with pinned(None):
            rows.append((f"{size:>5} B, 1 thread", *measure(rtt_one_thread, size, RTT_N)))
        for label, cpu in PINNING:
            with pinned(cpu):
                rows.append((f"{size:>5} B, 2 threads, {label}",
                             *measure(rtt_threads, size, RTT_N)))
    report("UDP round trip, 127.0.0.1 (per round trip: two datagrams)", rows)


def main_profile() -> None:
    """cProfile of loopstack's 1400-byte batch-and-drain loop, top 15 by tottime."""
    make, done = loopstack_factory()
    try:
        run = rate_batch(make, 1400)
        run(1000)  # warm the route cache and the ports
        prof = cProfile.Profile()
        prof.enable()
        run(20_000)
        prof.disable()
    finally:
        done()
    print("\ncProfile: loopstack, 20 000 datagrams of 1400 bytes, sendto + recv_into, "
          "one thread")
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", action="store_true",
                    help="also profile loopstack's 1400-byte send and receive path")
    ap.add_argument("--profile-only", action="store_true", help="only the profile")
    args = ap.parse_args()
    if not args.profile_only:
        main_tables()
    if args.profile or args.profile_only:
        main_profile()
