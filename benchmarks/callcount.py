"""Python calls per TCP segment and per round trip, on loopstack (and, for
scale, the same loops on the kernel's sockets, where only the benchmark's
own Python and asyncio's run).

Counted with ``sys.setprofile`` in every thread (``threading.setprofile``
is set before the stack or any thread exists, so the stack's clock thread
is counted too): 'call' events are Python frames entered (a coroutine or
generator resumed counts as one), 'c_call' events are calls of C functions
from Python. Only events inside the measured window count.

- bulk: a sender thread does ``sendall`` of a 64 KiB bytes object, the main
  thread ``recv_into`` a 1 MiB bytearray, N bytes in all; calls divided by
  the segments the stack sent (``Stack.stats()["Tcp"]["OutSegs"]``, data and
  ACKs) and by the 64 KiB ``sendall`` calls.
- rtt_threads: 1-byte ping-pong between two threads, TCP_NODELAY.
- rtt_single: the same ping-pong in one thread (send, recv on the other
  end, echo, recv).
- aio: asyncio streams under ``loopstack.patch()`` with ``asyncio.run``,
  1-byte ping-pong, TCP_NODELAY.
- aio_vt: the same ping-pong under ``loopstack.aio.run`` (virtual time); the
  kernel side is asyncio.run on the kernel's sockets, as issue10.py's
  aio_vt_rtt.
- aio_bulk: asyncio streams under ``patch()``, 64 KiB ``write`` + ``drain``
  (issue10.py's aio_bulk); calls per 64 KiB written, the reader included.
- conn: one connection in one thread: connect, accept, the server's end
  closes, the client reads EOF and closes (issue10.py's tcp_conn without
  its server thread); calls per connection.
- aio_conn: asyncio ``open_connection``, the server's handler closes, the
  client reads EOF and closes (issue10.py's aio_conn); calls per connection.

    python benchmarks/callcount.py                 # the table
    python benchmarks/callcount.py --json out.json
    python benchmarks/callcount.py --top           # + the most-called functions per
                                                   #   round trip / segment, and cProfile
                                                   #   (every thread) by cumulative time
    python benchmarks/callcount.py --top --workloads aio --limit 25
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import loadavg  # noqa: E402

import loopstack  # noqa: E402

HOST = "127.0.0.1"
WORKLOADS = ("bulk", "rtt_threads", "rtt_single", "aio", "aio_vt", "aio_bulk", "conn",
             "aio_conn")


# -- counting -------------------------------------------------------------------------
class Counting:
    """sys.setprofile in every thread; counts only while ``active``."""

    def __init__(self, by_function: bool) -> None:
        self.active = False
        self.calls = 0
        self.c_calls = 0
        self.by_function: Counter[Any] = Counter()
        self.by_thread: Counter[int] = Counter()
        self.names: dict[int, str] = {}
        self._detail = by_function

    def hook(self) -> Callable[[Any, str, Any], None]:
        get_ident = threading.get_ident
        by_function, by_thread, names = self.by_function, self.by_thread, self.names
        detail = self._detail

        def prof(frame: Any, event: str, arg: Any) -> None:
            if not self.active:
                return
            if event == "call":
                self.calls += 1
                key: Any = frame.f_code
            elif event == "c_call":
                self.c_calls += 1
                key = arg
            else:
                return
            if detail:
                ident = get_ident()
                by_thread[ident] += 1
                if ident not in names:
                    names[ident] = threading.current_thread().name
                if event == "c_call":
                    key = ("C", getattr(arg, "__qualname__", repr(arg)))
                by_function[key] += 1

        return prof

    def install(self) -> None:
        hook = self.hook()
        threading.setprofile(hook)
        sys.setprofile(hook)

    def uninstall(self) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


class Profiling:
    """cProfile in every thread started after install(), and in this one."""

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.profiles: list[tuple[str, cProfile.Profile]] = [("MainThread", self.main)]

    def install(self) -> None:
        profiles = self.profiles

        def bootstrap(frame: Any, event: str, arg: Any) -> None:
            # The first event in a new thread: hand the thread to a profiler of its own.
            sys.setprofile(None)
            p = cProfile.Profile()
            profiles.append((threading.current_thread().name, p))
            p.enable()

        threading.setprofile(bootstrap)
        self.main.enable()

    def report(self, limit: int) -> str:
        """Each thread's top functions by cumulative time, then every thread's
        together by own time."""
        self.main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        out = io.StringIO()
        combined: pstats.Stats | None = None
        for name, p in self.profiles:
            try:
                st = pstats.Stats(p, stream=out)
            except TypeError:  # a profile that saw nothing
                continue
            total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
            waits = sum(v[2] for k, v in st.stats.items()  # type: ignore[attr-defined]
                        if k[2] in ("<method 'acquire' of '_thread.lock' objects>",
                                    "<method 'acquire' of '_thread.RLock' objects>"))
            print(f"--- thread {name}: {total:.3f} s own time in all, of which "
                  f"{waits:.3f} s in lock.acquire / RLock.acquire (waiting or contended); "
                  f"by cumulative time:", file=out)
            st.sort_stats("cumulative").print_stats(limit)
            if combined is None:
                combined = st
            else:
                combined.add(p)
        if combined is not None:
            print("--- every thread together, by own time:", file=out)
            combined.sort_stats("tottime").print_stats(limit)
        return out.getvalue()


def key_name(key: Any) -> str:
    if isinstance(key, tuple):
        return f"{key[1]} (C)"
    path = key.co_filename
    for marker in ("/loopstack/", "/asyncio/", "/benchmarks/"):
        if marker in path:
            path = marker.strip("/") + "/" + path.split(marker, 1)[1]
            break
    else:
        path = os.path.basename(path)
    return f"{key.co_qualname} ({path}:{key.co_firstlineno})"


# -- workloads ------------------------------------------------------------------------
# Each takes (side, n, window): side "kernel" or "loopstack"; window(active) is
# called with True when the measured part starts and False when it ends. Each
# returns {"units": n, "segments": OutSegs delta or None, ...}.


def _make(side: str) -> tuple[Any, Callable[..., Any]]:
    if side == "kernel":
        return None, socket.socket
    stack = loopstack.Stack()
    return stack, stack.socket


def _pair(make: Callable[..., Any]) -> tuple[Any, Any, Any]:
    lst = make(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind((HOST, 0))
    lst.listen(8)
    c = make(socket.AF_INET, socket.SOCK_STREAM)
    c.connect(lst.getsockname())
    s, _ = lst.accept()
    for x in (c, s):
        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return lst, c, s


def _segments(stack: Any) -> int:
    return int(stack.stats()["Tcp"]["OutSegs"]) if stack is not None else 0


def bulk(side: str, total: int, window: Callable[[bool], None]) -> dict[str, Any]:
    stack, make = _make(side)
    lst, c, s = _pair(make)
    chunk = 64 << 10
    data = bytes(chunk)
    buf = bytearray(1 << 20)
    sends = total // chunk

    def sender() -> None:
        for _ in range(sends):
            c.sendall(data)
        c.shutdown(socket.SHUT_WR)

    seg0 = _segments(stack)
    window(True)
    t = threading.Thread(target=sender, name="sender")
    t.start()
    got = 0
    while True:
        k = s.recv_into(buf)
        if not k:
            break
        got += k
    t.join()
    window(False)
    segs = _segments(stack) - seg0
    for x in (c, s, lst):
        x.close()
    if stack is not None:
        stack.close()
    assert got == sends * chunk, (got, sends * chunk)
    return {"units": segs, "segments": segs, "sendalls": sends, "bytes": got}


def rtt_threads(side: str, n: int, window: Callable[[bool], None]) -> dict[str, Any]:
    stack, make = _make(side)
    lst, c, s = _pair(make)

    def echo() -> None:
        while True:
            b = s.recv(1)
            if not b:
                return
            s.sendall(b)

    t = threading.Thread(target=echo, name="echo")
    t.start()
    for _ in range(100):
        c.sendall(b"x")
        c.recv(1)
    seg0 = _segments(stack)
    window(True)
    for _ in range(n):
        c.sendall(b"x")
        c.recv(1)
    window(False)
    segs = _segments(stack) - seg0
    c.shutdown(socket.SHUT_WR)
    t.join()
    for x in (c, s, lst):
        x.close()
    if stack is not None:
        stack.close()
    return {"units": n, "segments": segs if stack is not None else None}


def rtt_single(side: str, n: int, window: Callable[[bool], None]) -> dict[str, Any]:
    stack, make = _make(side)
    lst, c, s = _pair(make)
    for _ in range(100):
        c.sendall(b"x")
        s.recv(1)
        s.sendall(b"y")
        c.recv(1)
    seg0 = _segments(stack)
    window(True)
    for _ in range(n):
        c.sendall(b"x")
        s.recv(1)
        s.sendall(b"y")
        c.recv(1)
    window(False)
    segs = _segments(stack) - seg0
    for x in (c, s, lst):
        x.close()
    if stack is not None:
        stack.close()
    return {"units": n, "segments": segs if stack is not None else None}


async def _aio_pingpong(n: int, window: Callable[[bool], None],
                        stack: Any) -> dict[str, Any]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            b = await r.read(1)
            if not b:
                break
            w.write(b)
        w.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection(HOST, port)
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    inner = getattr(sock, "_sock", sock)  # asyncio's TransportSocket wraps the socket
    ls = sys.modules.get("loopstack.socket")
    if ls is not None:  # under patch() a front: socket.socket, carried out by loopstack
        inner = ls.implementation(inner)
    kind = type(inner).__module__
    for _ in range(100):
        w.write(b"x")
        await r.readexactly(1)
    seg0 = _segments(stack)
    window(True)
    for _ in range(n):
        w.write(b"x")
        await r.readexactly(1)
    window(False)
    segs = _segments(stack) - seg0
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()
    return {"units": n, "segments": segs if stack is not None else None, "socket_module": kind}


def aio(side: str, n: int, window: Callable[[bool], None]) -> dict[str, Any]:
    if side == "kernel":
        return asyncio.run(_aio_pingpong(n, window, None))
    with loopstack.patch() as stack:
        out = asyncio.run(_aio_pingpong(n, window, stack))
    assert out["socket_module"].startswith("loopstack"), out
    return out


async def _aio_bulk(n: int, window: Callable[[bool], None], stack: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[int] = loop.create_future()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got = 0
        while True:
            d = await r.read(1 << 20)
            if not d:
                break
            got += len(d)
        finished.set_result(got)
        w.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection(HOST, port)
    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = bytes(64 << 10)
    for _ in range(20):
        w.write(data)
        await w.drain()
    seg0 = _segments(stack)
    window(True)
    for _ in range(n):
        w.write(data)
        await w.drain()
    window(False)
    segs = _segments(stack) - seg0
    w.write_eof()
    if await finished != (n + 20) * len(data):
        raise AssertionError("bytes lost")
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()
    return {"units": n, "segments": segs if stack is not None else None}


def aio_bulk(side: str, n: int, window: Callable[[bool], None]) -> dict[str, Any]:
    if side == "kernel":
        return asyncio.run(_aio_bulk(n, window, None))
    with loopstack.patch() as stack:
        return asyncio.run(_aio_bulk(n, window, stack))


def aio_vt(side: str, n: int, window: Callable[[bool], None]) -> dict[str, Any]:
    if side == "kernel":
        return asyncio.run(_aio_pingpong(n, window, None))
    import loopstack.aio

    stack = loopstack.Stack(clock="virtual")
    try:
        out = loopstack.aio.run(_aio_pingpong(n, window, stack), stack=stack)
    finally:
        stack.close()
    assert out["socket_module"].startswith("loopstack"), out
    return out


def conn(side: str, n: int, window: Callable[[bool], None]) -> dict[str, Any]:
    stack, make = _make(side)
    lst = make(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((HOST, 0))
    lst.listen(128)
    addr = lst.getsockname()

    def one() -> None:
        c = make(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        s, _ = lst.accept()
        s.close()
        if c.recv(1) != b"":
            raise AssertionError("expected EOF")
        c.close()

    for _ in range(20):
        one()
    seg0 = _segments(stack)
    window(True)
    for _ in range(n):
        one()
    window(False)
    segs = _segments(stack) - seg0
    lst.close()
    if stack is not None:
        stack.close()
    return {"units": n, "segments": segs if stack is not None else None}


async def _aio_conns(n: int, window: Callable[[bool], None], stack: Any) -> dict[str, Any]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]

    async def one() -> None:
        r, w = await asyncio.open_connection(HOST, port)
        if await r.read() != b"":
            raise AssertionError("expected EOF")
        w.close()
        await w.wait_closed()

    for _ in range(20):
        await one()
    seg0 = _segments(stack)
    window(True)
    for _ in range(n):
        await one()
    window(False)
    segs = _segments(stack) - seg0
    server.close()
    await server.wait_closed()
    return {"units": n, "segments": segs if stack is not None else None}


def aio_conn(side: str, n: int, window: Callable[[bool], None]) -> dict[str, Any]:
    if side == "kernel":
        return asyncio.run(_aio_conns(n, window, None))
    with loopstack.patch() as stack:
        return asyncio.run(_aio_conns(n, window, stack))


RUNNERS: dict[str, Callable[[str, int, Callable[[bool], None]], dict[str, Any]]] = {
    "bulk": bulk, "rtt_threads": rtt_threads, "rtt_single": rtt_single, "aio": aio,
    "aio_vt": aio_vt, "aio_bulk": aio_bulk, "conn": conn, "aio_conn": aio_conn}
UNIT = {"bulk": "segment", "rtt_threads": "round trip", "rtt_single": "round trip",
        "aio": "round trip", "aio_vt": "round trip",
        "aio_bulk": "64 KiB write", "conn": "connection", "aio_conn": "connection"}


def count(workload: str, side: str, n: int, detail: bool) -> dict[str, Any]:
    counting = Counting(detail)
    counting.install()  # before any stack or thread exists
    try:
        def window(on: bool) -> None:
            counting.active = on

        out = RUNNERS[workload](side, n, window)
    finally:
        counting.active = False
        counting.uninstall()
    units = out["units"] or 1
    out.update(calls=counting.calls, c_calls=counting.c_calls,
               calls_per=counting.calls / units, c_calls_per=counting.c_calls / units,
               total_per=(counting.calls + counting.c_calls) / units)
    if workload == "bulk":
        out["total_per_sendall"] = (counting.calls + counting.c_calls) / out["sendalls"]
    elif out.get("segments"):
        out["segments_per_round_trip"] = out["segments"] / units
        out["total_per_segment"] = (counting.calls + counting.c_calls) / out["segments"]
    if detail:
        out["top"] = [(key_name(k), v / units) for k, v in counting.by_function.most_common(60)]
        out["by_thread"] = {counting.names.get(i, str(i)): v / units
                            for i, v in counting.by_thread.most_common()}
    return out


def profile(workload: str, n: int, limit: int) -> str:
    prof = Profiling()
    prof.install()
    t0 = time.perf_counter()
    RUNNERS[workload]("loopstack", n, lambda on: None)
    dt = time.perf_counter() - t0
    head = (f"cProfile of every thread ({len(prof.profiles)} threads), {dt:.2f} s of wall "
            f"time under the profiler, the whole run including set-up\n")
    return head + prof.report(limit)


# -- main -----------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="comma-separated: " + ",".join(WORKLOADS))
    ap.add_argument("--bytes", type=int, default=16 << 20, help="bulk bytes (default 16 MiB)")
    ap.add_argument("--rounds", type=int, default=2000,
                    help="round trips or connections (default 2000)")
    ap.add_argument("--top", action="store_true",
                    help="also list the most-called functions and a cProfile of every thread")
    ap.add_argument("--limit", type=int, default=20, help="rows in --top listings")
    ap.add_argument("--json", metavar="OUT", help="save the figures to OUT")
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in RUNNERS:
            ap.error(f"unknown workload {w!r}: choose from {', '.join(WORKLOADS)}")
    print(f"callcount: Python {sys.version.split()[0]}, loopstack from {loopstack.__file__}, "
          f"load average {loadavg()}")
    results: dict[str, Any] = {"loopstack_file": loopstack.__file__, "rows": {}}
    print(f"\n  {'workload':<12} {'side':<10} {'per':<11} {'calls':>9} {'c_calls':>9} "
          f"{'total':>9}   notes")
    for w in workloads:
        n = args.bytes if w == "bulk" else args.rounds
        sides = ("loopstack",) if w == "bulk" else ("loopstack", "kernel")
        for side in sides:
            r = count(w, side, n, args.top and side == "loopstack")
            results["rows"][f"{w}/{side}"] = r
            if w == "bulk":
                note = (f"{r['segments']} segments for {r['bytes'] >> 20} MiB "
                        f"({r['bytes'] / r['segments']:.0f} B/segment); "
                        f"{r['total_per_sendall']:.0f} calls per 64 KiB sendall")
            elif r.get("segments") and w in ("conn", "aio_conn"):
                note = (f"{r['segments_per_round_trip']:.2f} segments per connection, "
                        f"{r['total_per_segment']:.0f} calls per segment")
            elif r.get("segments"):
                note = (f"{r['segments_per_round_trip']:.2f} segments per round trip, "
                        f"{r['total_per_segment']:.0f} calls per segment")
            else:
                note = "the benchmark's own Python (and asyncio's) only"
            print(f"  {w:<12} {side:<10} {UNIT[w]:<11} {r['calls_per']:>9.1f} "
                  f"{r['c_calls_per']:>9.1f} {r['total_per']:>9.1f}   {note}", flush=True)
    if args.top:
        for w in workloads:
            r = results["rows"][f"{w}/loopstack"]
            print(f"\n== {w}: most-called functions, calls per {UNIT[w]} (loopstack) ==")
            print("  by thread: " + ", ".join(f"{k} {v:.1f}" for k, v in r["by_thread"].items()))
            for name, per in r["top"][: args.limit]:
                print(f"  {per:8.2f}  {name}")
            n = args.bytes if w == "bulk" else args.rounds
            text = profile(w, n, args.limit)
            results["rows"][f"{w}/loopstack"]["cprofile"] = text
            print(f"\n== {w}: " + text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"figures saved to {args.json}")


if __name__ == "__main__":
    main()
