"""Issue 10's table: every workload on the kernel's 127.0.0.1 and on
loopstack, each repetition in a fresh process, reported as ratios against
the issue's floors.

    python benchmarks/issue10.py                    # all rows, 5 repetitions
    python benchmarks/issue10.py --reps 3 --quick   # shorter repetitions
    python benchmarks/issue10.py --rows tcp_rtt,udp --json out.json
    python benchmarks/issue10.py --extra            # + rows the issue does not list
    python benchmarks/issue10.py --one tcp_rtt --side loopstack --pin 0   # one repetition

How it measures:

- Each repetition is ``issue10.py --one ROW --side kernel|loopstack --pin
  none|CPU``, a fresh interpreter that prints one JSON result; ``--pin CPU``
  pins the whole process (``os.sched_setaffinity``) before any thread starts.
- Kernel and loopstack repetitions alternate (K L L K K L ...); a row's figure
  is the median of its repetitions; the ratio is loopstack's median over the
  kernel's (a rate: at or above the floor passes; a time or a size: at or
  below it passes).
- Two-thread and asyncio workloads run unpinned and pinned to one CPU (waking
  the other CPU costs tens of microseconds on small VMs, so either figure
  alone misleads).
- Each repetition checks which network it used: on loopstack the stack's own
  counters (``Stack.stats()``) must have moved by at least the traffic
  measured and the sockets must be loopstack's; on the kernel the sockets
  must be ``socket.socket``, loopstack must not even be imported, and
  /proc/net/snmp must have moved by at least as much.
- Timed workloads run for a fixed wall-clock duration (1 s, 0.3 s with
  ``--quick``) rather than a fixed count, so fast and slow sides both get a
  stable sample.

Rows (loopstack / kernel, floor):
  tcp_bulk_64k   TCP bulk, 2 threads, sendall(64 KiB bytes), recv_into a 1 MiB
                 bytearray, MiB/s                                  >= 0.8
  tcp_bulk_1m    the same with 1 MiB sendall                      >= 0.5
  tcp_rtt        TCP 1-byte ping-pong, 2 threads, TCP_NODELAY, us  <= 1.5
  tcp_conn       connect + accept + server close + client sees EOF + close,
                 server thread, connections/s                      >= 0.5
  udp            UDP 1400 B, a connected sender thread unthrottled, datagrams
                 delivered per second at the receiver (+ loss %)   >= 0.5
  icmp           ICMP echo median RTT: kernel raw socket (packets built
                 before timing) vs Stack.ping(count=1000, interval=0)  <= 2.0
  memory         bytes per idle established TCP pair, 2000 pairs
                 (kernel: RSS + slab deltas; loopstack: RSS delta) <= 1.0
  aio_rtt        asyncio streams, asyncio.run (loopstack: under patch()),
                 1-byte ping-pong, TCP_NODELAY, us                 <= 1.0
  aio_bulk       asyncio streams, 64 KiB write + drain, MiB/s      >= 1.0
  aio_conn       asyncio open_connection + server closes + client reads EOF,
                 per second                                        >= 0.7
  aio_vt_rtt     the ping-pong under loopstack.aio.run (virtual time) against
                 the kernel's asyncio.run, us                      <= 0.7
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    loadavg,
    meminfo_slab,
    proc_snmp,
    rss_bytes,
    slabinfo,
)

HOST = "127.0.0.1"
MIB = 1 << 20


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    higher_is_better: bool  # a rate (ratio must reach the floor) or a cost (must stay below)
    floor: float
    pinned_too: bool  # also run with the process pinned to one CPU


ROWS = [
    Row("tcp_bulk_64k", "TCP bulk 2 thr, sendall 64 KiB, recv_into", "MiB/s", True, 0.8, True),
    Row("tcp_bulk_1m", "TCP bulk 2 thr, sendall 1 MiB, recv_into", "MiB/s", True, 0.5, True),
    Row("tcp_rtt", "TCP 1-byte ping-pong 2 thr, NODELAY", "us", False, 1.5, True),
    Row("tcp_conn", "TCP connect/accept/close/EOF, server thr", "conn/s", True, 0.5, True),
    Row("udp", "UDP 1400 B unthrottled sender thr, delivered", "dgram/s", True, 0.5, True),
    Row("icmp", "ICMP echo median RTT (raw sock / ping)", "us", False, 2.0, False),
    Row("memory", "memory per idle TCP pair (2000 pairs)", "bytes", False, 1.0, False),
    Row("aio_rtt", "asyncio 1-byte ping-pong, asyncio.run", "us", False, 1.0, True),
    Row("aio_bulk", "asyncio 64 KiB write+drain", "MiB/s", True, 1.0, True),
    Row("aio_conn", "asyncio open_connection+close+EOF", "conn/s", True, 0.7, True),
    Row("aio_vt_rtt", "asyncio ping-pong, aio.run (virtual) vs run", "us", False, 0.7, True),
]
# Not in the table: the same workloads as users often run them.
# Run with --extra (or by name in --rows); reported apart from the table.
EXTRA_ROWS = [
    Row("tcp_bulk_64k_nagle", "TCP bulk 64 KiB, default options (Nagle)", "MiB/s", True, 0.8,
        True),
]
BY_KEY = {r.key: r for r in ROWS + EXTRA_ROWS}
EXTRA_KEYS = {r.key for r in EXTRA_ROWS}


class CheckFailed(Exception):
    """The repetition did not run on the network it was meant to."""


# =====================================================================================
# The child: one repetition of one row on one side.
# =====================================================================================
class Net:
    """Sockets from the kernel (``socket.socket``) or from a fresh loopstack Stack."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.stack: Any = None
        if side == "loopstack":
            import loopstack

            self.stack = loopstack.Stack()

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> Any:
        s = self.stack.socket(family, type) if self.stack else socket.socket(family, type)
        expect_ours = self.stack is not None
        if type_is_loopstack(s) != expect_ours:
            raise CheckFailed(f"{self.side} run got a {type(s).__module__}.{type(s).__name__}")
        return s

    def listener(self) -> tuple[Any, tuple[str, int]]:
        lst = self.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((HOST, 0))
        lst.listen(128)
        return lst, lst.getsockname()

    def pair(self, lst: Any, addr: tuple[str, int], nodelay: bool = True) -> tuple[Any, Any]:
        c = self.socket()
        c.connect(addr)
        s, _ = lst.accept()
        if nodelay:
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c, s

    def counters(self) -> dict[str, dict[str, int]]:
        return self.stack.stats() if self.stack else proc_snmp()

    def close(self) -> None:
        if self.stack:
            self.stack.close()


def type_is_loopstack(s: Any) -> bool:
    return type(s).__module__.startswith("loopstack")


def moved(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], group: str,
          name: str, at_least: int) -> dict[str, int]:
    """Check that counter ``group.name`` moved by ``at_least``; return the delta."""
    delta = after.get(group, {}).get(name, 0) - before.get(group, {}).get(name, 0)
    if delta < at_least:
        raise CheckFailed(f"{group}.{name} moved by {delta}, expected at least {at_least}")
    return {f"{group}.{name}": delta}


def tcp_bulk(net: Net, chunk: int, dur: float, nodelay: bool = True) -> dict[str, Any]:
    lst, addr = net.listener()
    c, s = net.pair(lst, addr, nodelay)
    data = bytes(chunk)
    buf = bytearray(MIB)
    got = 0
    t_eof = 0.0

    def receiver() -> None:
        nonlocal got, t_eof
        recv_into = s.recv_into
        n = 0
        while True:
            k = recv_into(buf)
            if k == 0:
                break
            n += k
        got = n
        t_eof = time.perf_counter()

    before = net.counters()
    t = threading.Thread(target=receiver)
    t.start()
    sent = 0
    t0 = time.perf_counter()
    end = t0 + dur
    sendall = c.sendall
    clock = time.perf_counter
    while clock() < end:
        sendall(data)
        sent += chunk
    c.shutdown(socket.SHUT_WR)
    t.join()
    after = net.counters()
    for x in (c, s, lst):
        x.close()
    if got != sent:
        raise CheckFailed(f"sent {sent} bytes, received {got}")
    check = moved(before, after, "Tcp", "OutSegs", sent // 65536)
    return {"value": got / (t_eof - t0) / MIB, "bytes": got, "seconds": t_eof - t0,
            "check": check}


def tcp_rtt(net: Net, dur: float) -> dict[str, Any]:
    lst, addr = net.listener()
    c, s = net.pair(lst, addr)

    def echo() -> None:
        recv, send = s.recv, s.sendall
        while True:
            b = recv(1)
            if not b:
                return
            send(b)

    t = threading.Thread(target=echo)
    t.start()
    send, recv = c.sendall, c.recv
    for _ in range(200):  # warm up
        send(b"x")
        recv(1)
    before = net.counters()
    n = 0
    clock = time.perf_counter
    t0 = clock()
    end = t0 + dur
    while True:
        for _ in range(50):
            send(b"x")
            if recv(1) != b"x":
                raise CheckFailed("echo lost a byte")
        n += 50
        if clock() >= end:
            break
    dt = clock() - t0
    after = net.counters()
    c.shutdown(socket.SHUT_WR)
    t.join()
    for x in (c, s, lst):
        x.close()
    check = moved(before, after, "Tcp", "OutSegs", 2 * n)
    return {"value": dt / n * 1e6, "round_trips": n, "check": check}


def tcp_conn(net: Net, dur: float) -> dict[str, Any]:
    lst, addr = net.listener()
    # The server thread stops after the last connection the main thread makes:
    # `last` is set before that connection, and the count (not a flag alone)
    # decides, so a flag seen late for an earlier connection cannot make the
    # server leave the final one unaccepted (which hung the main thread's recv).
    last = 0

    def server() -> None:
        accept = lst.accept
        accepted = 0
        while True:
            s, _ = accept()
            s.close()
            accepted += 1
            if accepted == last:
                return

    t = threading.Thread(target=server)
    t.start()

    def one() -> None:
        c = net.socket()
        c.connect(addr)
        if c.recv(1) != b"":
            raise CheckFailed("expected EOF")
        c.close()

    for _ in range(20):  # warm up
        one()
    before = net.counters()
    n = 0
    clock = time.perf_counter
    t0 = clock()
    end = t0 + dur
    while clock() < end:
        one()
        n += 1
    dt = clock() - t0
    after = net.counters()
    last = 20 + n + 1
    one()
    t.join()
    lst.close()
    check = moved(before, after, "Tcp", "ActiveOpens", n)
    check.update(moved(before, after, "Tcp", "PassiveOpens", n))
    return {"value": n / dt, "connections": n, "check": check}


def udp(net: Net, dur: float) -> dict[str, Any]:
    rx = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((HOST, 0))
    tx = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    payload = bytes(1400)
    done = threading.Event()
    sent = errors = 0
    t_start = [0.0]

    def sender() -> None:
        nonlocal sent, errors
        send = tx.send
        clock = time.perf_counter
        t_start[0] = clock()
        end = t_start[0] + dur
        n = 0
        while clock() < end:
            for _ in range(32):
                try:
                    send(payload)
                except OSError:  # ENOBUFS and the like: not sent
                    errors += 1
                    n -= 1
            n += 32
        sent = n
        while not done.is_set():  # the end marker, until the receiver has seen it
            try:
                send(b"!")
            except OSError:
                pass
            done.wait(0.002)

    buf = bytearray(65536)
    recv_into = rx.recv_into
    before = net.counters()
    t = threading.Thread(target=sender)
    got = 0
    last = 0.0
    clock = time.perf_counter
    t.start()
    while True:
        k = recv_into(buf)
        if k == 1400:
            got += 1
            last = clock()
        elif k == 1:
            break
    done.set()
    t.join()
    after = net.counters()
    rx.close()
    tx.close()
    dt = last - t_start[0]
    check = moved(before, after, "Udp", "InDatagrams", got)
    return {"value": got / dt, "sent": sent, "delivered": got, "send_errors": errors,
            "loss_pct": 100.0 * (sent - got) / sent if sent else 0.0, "seconds": dt,
            "check": check}


def _icmp_checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmp_kernel(count: int) -> dict[str, Any]:
    ident = os.getpid() & 0xFFFF
    kind = "raw"
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        # ICMP_FILTER (SOL_RAW 255, option 1): pass only echo replies (type 0), as ping does
        s.setsockopt(255, 1, struct.pack("I", 0xFFFFFFFF & ~1))
    except PermissionError:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        except OSError as e:
            return {"skipped": f"no raw ICMP socket (not root) and no ICMP datagram socket: {e}"}
        kind = "dgram (unprivileged)"
    data = bytes(56)
    warm = 100
    packets = []
    for seq in range(count + warm):
        head = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
        csum = _icmp_checksum(head + data)
        packets.append(head[:2] + csum.to_bytes(2, "big") + head[4:] + data)
    raw = kind == "raw"
    rtts = []
    dst = (HOST, 0)
    before = proc_snmp()
    clock = time.perf_counter_ns
    try:
        for i, pkt in enumerate(packets):
            t0 = clock()
            s.sendto(pkt, dst)
            while True:
                r = s.recv(2048)
                off = (r[0] & 0x0F) * 4 if raw else 0
                if r[off] == 0 and (not raw or r[off + 4: off + 6] == pkt[4:6]) \
                        and r[off + 6: off + 8] == pkt[6:8]:
                    break
            t1 = clock()
            if i >= warm:
                rtts.append(t1 - t0)
    finally:
        s.close()
    after = proc_snmp()
    check = moved(before, after, "Icmp", "InEchos", count)
    return {"value": statistics.median(rtts) / 1e3, "socket": kind, "echoes": count,
            "mean_us": statistics.fmean(rtts) / 1e3, "check": check}


def icmp_loopstack(count: int) -> dict[str, Any]:
    import loopstack

    with loopstack.Stack() as stack:
        stack.ping(HOST, count=100, interval=0)  # warm up
        before = stack.stats()
        r = stack.ping(HOST, count=count, interval=0)
        after = stack.stats()
    if r.received != count:
        raise CheckFailed(f"ping: {r.received} of {count} replies")
    check = moved(before, after, "Icmp", "OutEchos", count)
    return {"value": statistics.median(r.rtts) * 1e6, "echoes": count,
            "mean_us": statistics.fmean(r.rtts) * 1e6,
            "elapsed_per_echo_us": r.elapsed / count * 1e6, "check": check}


def memory(net: Net, pairs: int) -> dict[str, Any]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * pairs + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    lst, addr = net.listener()
    for _ in range(20):  # warm up: first-use allocations are not per pair
        c, s = net.pair(lst, addr)
        c.close()
        s.close()
    held: list[Any] = []
    time.sleep(0.2)
    gc.collect()
    rss0, slab0, meminfo0 = rss_bytes(), slabinfo(), meminfo_slab()
    for _ in range(pairs):
        held.extend(net.pair(lst, addr))
    time.sleep(0.2)  # idle: pending delayed ACKs and the like settle
    gc.collect()
    rss1, slab1, meminfo1 = rss_bytes(), slabinfo(), meminfo_slab()
    out: dict[str, Any] = {"pairs": pairs, "rss_delta": rss1 - rss0}
    total = rss1 - rss0
    if net.stack is None:
        if slab0:
            # The caches a kernel TCP socket and its file allocate from; the
            # machine-wide sum is noisier (other processes) and kept for reference.
            prefixes = ("TCP", "request_sock_TCP", "tcp_bind_bucket", "sock_inode_cache",
                        "dentry", "filp", "kmalloc-")
            caches = {k: slab1.get(k, (0, 0))[0] - slab0.get(k, (0, 0))[0]
                      for k in set(slab0) | set(slab1) if k.startswith(prefixes)}
            slab = sum(caches.values())
            out["slab_method"] = ("/proc/slabinfo, active objects x object size, caches "
                                  "TCP*, request_sock_TCP*, tcp_bind_bucket, sock_inode_cache, "
                                  "dentry, filp, kmalloc-*")
            out["slab_caches"] = {k: v for k, v in caches.items() if v}
            out["slab_all_caches_delta"] = sum(v[0] for v in slab1.values()) - sum(
                v[0] for v in slab0.values())
        else:
            slab = meminfo1 - meminfo0
            out["slab_method"] = "/proc/meminfo Slab: delta"
        out["slab_delta"] = slab
        out["meminfo_slab_delta"] = meminfo1 - meminfo0
        total += slab
        connected = sum(1 for x in held if x.getpeername())
        if connected != 2 * pairs:
            raise CheckFailed(f"{connected} connected sockets, expected {2 * pairs}")
        out["check"] = {"connected sockets": connected}
    else:
        estab = net.stack.stats()["Tcp"]["CurrEstab"]
        if estab < 2 * pairs:
            raise CheckFailed(f"Tcp.CurrEstab {estab}, expected {2 * pairs}")
        out["check"] = {"Tcp.CurrEstab": estab}
    for x in held:
        x.close()
    lst.close()
    out["value"] = total / pairs
    return out


# -- asyncio --------------------------------------------------------------------------
def _nodelay(w: asyncio.StreamWriter) -> Any:
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def aio_rtt(dur: float, info: dict[str, Any]) -> dict[str, Any]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        _nodelay(w)
        while True:
            b = await r.read(1)
            if not b:
                break
            w.write(b)
        w.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection(HOST, port)
    info["socket_type"] = _sock_type(_nodelay(w))
    for _ in range(200):
        w.write(b"x")
        await r.readexactly(1)
    info["before"] = info["counters"]()
    n = 0
    clock = time.perf_counter
    t0 = clock()
    end = t0 + dur
    while True:
        for _ in range(50):
            w.write(b"x")
            await r.readexactly(1)
        n += 50
        if clock() >= end:
            break
    dt = clock() - t0
    info["after"] = info["counters"]()
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()
    info["min_segs"] = 2 * n
    return {"value": dt / n * 1e6, "round_trips": n}


async def aio_bulk(dur: float, info: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[tuple[int, float]] = loop.create_future()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = 0
        read = r.read
        while True:
            d = await read(MIB)
            if not d:
                break
            n += len(d)
        finished.set_result((n, time.perf_counter()))
        w.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection(HOST, port)
    info["socket_type"] = _sock_type(_nodelay(w))
    data = bytes(64 << 10)
    info["before"] = info["counters"]()
    sent = 0
    clock = time.perf_counter
    t0 = clock()
    end = t0 + dur
    while clock() < end:
        w.write(data)
        await w.drain()
        sent += len(data)
    w.write_eof()
    got, t_end = await finished
    info["after"] = info["counters"]()
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()
    if got != sent:
        raise CheckFailed(f"sent {sent}, received {got}")
    info["min_segs"] = sent // 65536
    return {"value": got / (t_end - t0) / MIB, "bytes": got}


async def aio_conn(dur: float, info: dict[str, Any]) -> dict[str, Any]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]

    async def one() -> None:
        r, w = await asyncio.open_connection(HOST, port)
        if "socket_type" not in info:
            info["socket_type"] = _sock_type(w.get_extra_info("socket"))
        if await r.read() != b"":
            raise CheckFailed("expected EOF")
        w.close()
        await w.wait_closed()

    for _ in range(20):
        await one()
    info["before"] = info["counters"]()
    n = 0
    clock = time.perf_counter
    t0 = clock()
    end = t0 + dur
    while clock() < end:
        await one()
        n += 1
    dt = clock() - t0
    info["after"] = info["counters"]()
    server.close()
    await server.wait_closed()
    info["min_conns"] = n
    return {"value": n / dt, "connections": n}


def _sock_type(sock: Any) -> str:
    """The class that carries out the socket's calls: a loopstack socket under
    patch() is a socket.socket front whose implementation is loopstack's."""
    inner = getattr(sock, "_sock", sock)  # asyncio's TransportSocket wraps the socket
    ls = sys.modules.get("loopstack.socket")
    if ls is not None:
        inner = ls.implementation(inner)
    return f"{type(inner).__module__}.{type(inner).__name__}"


def run_aio(side: str, workload: Callable[[float, dict[str, Any]], Coroutine[Any, Any, Any]],
            dur: float, virtual: bool) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if side == "kernel":
        info["counters"] = proc_snmp
        out = asyncio.run(workload(dur, info))
        info["loop"] = "asyncio.run"
    else:
        import loopstack
        import loopstack.aio

        if virtual:
            stack = loopstack.Stack(clock="virtual")
            info["counters"] = stack.stats
            try:
                out = loopstack.aio.run(workload(dur, info), stack=stack)
            finally:
                stack.close()
            info["loop"] = "loopstack.aio.run (virtual time)"
        else:
            with loopstack.patch() as stack:
                info["counters"] = stack.stats
                out = asyncio.run(workload(dur, info))
            info["loop"] = "asyncio.run under loopstack.patch()"
    is_ours = info["socket_type"].startswith("loopstack")
    if is_ours != (side == "loopstack"):
        raise CheckFailed(f"{side} run used a {info['socket_type']}")
    check: dict[str, Any] = {}
    if "min_conns" in info:
        check.update(moved(info["before"], info["after"], "Tcp", "ActiveOpens",
                           info["min_conns"]))
    else:
        check.update(moved(info["before"], info["after"], "Tcp", "OutSegs", info["min_segs"]))
    out.update(check=check, socket_type=info["socket_type"], loop=info["loop"])
    return out


def one(row: str, side: str, quick: bool) -> dict[str, Any]:
    dur = 0.3 if quick else 1.0
    if row == "icmp":
        return icmp_kernel(1000) if side == "kernel" else icmp_loopstack(1000)
    if row.startswith("aio_"):
        if row == "aio_bulk":
            return run_aio(side, aio_bulk, dur, False)
        if row == "aio_conn":
            return run_aio(side, aio_conn, dur, False)
        return run_aio(side, aio_rtt, dur, row == "aio_vt_rtt")
    net = Net(side)
    try:
        if row == "tcp_bulk_64k":
            return tcp_bulk(net, 64 << 10, dur)
        if row == "tcp_bulk_1m":
            return tcp_bulk(net, MIB, dur)
        if row == "tcp_bulk_64k_nagle":
            return tcp_bulk(net, 64 << 10, dur, nodelay=False)
        if row == "tcp_rtt":
            return tcp_rtt(net, dur)
        if row == "tcp_conn":
            return tcp_conn(net, dur)
        if row == "udp":
            return udp(net, dur)
        if row == "memory":
            return memory(net, 2000)
    finally:
        net.close()
    raise SystemExit(f"unknown row {row!r}")


def child(args: argparse.Namespace) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)  # a hang says where, on stderr
    if args.pin != "none":
        os.sched_setaffinity(0, {int(args.pin)})  # the whole process, before any thread
    try:
        out = one(args.one, args.side, args.quick)
    except CheckFailed as e:
        out = {"error": f"check failed: {e}"}
    out.update(row=args.one, side=args.side, pin=args.pin, pid=os.getpid())
    if args.side == "kernel":
        out["loopstack_imported"] = "loopstack" in sys.modules
        if out["loopstack_imported"] and "error" not in out:
            out["error"] = "check failed: a kernel run imported loopstack"
    else:
        out["loopstack_file"] = sys.modules["loopstack"].__file__
    print(json.dumps(out))


# =====================================================================================
# The harness: repetitions in fresh processes, medians, ratios, floors.
# =====================================================================================
def run_child(row: str, side: str, pin: str, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", row, "--side", side,
           "--pin", pin]
    if quick:
        cmd.append("--quick")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 300 s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {p.returncode}: {tail}",
                "stderr": p.stderr.strip().splitlines()[-30:]}
    return dict(json.loads(lines[-1]))


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "us":
        return f"{v:.1f} us"
    if unit == "bytes":
        return f"{v / 1000:.1f} KB"
    if v >= 100:
        return f"{v:,.0f} {unit}"
    return f"{v:.1f} {unit}"


def extra_note(row: str, reps: dict[str, list[dict[str, Any]]]) -> str:
    def med(side: str, key: str) -> float | None:
        vals = [r[key] for r in reps[side] if key in r]
        return statistics.median(vals) if vals else None

    if row == "udp":
        k, ls = med("kernel", "loss_pct"), med("loopstack", "loss_pct")
        if k is not None and ls is not None:
            return f"loss: kernel {k:.0f} %, loopstack {ls:.0f} %"
    if row == "icmp":
        e = med("loopstack", "elapsed_per_echo_us")
        kinds = {r.get("socket") for r in reps["kernel"] if "socket" in r}
        if e is not None:
            return f"kernel {'/'.join(sorted(k for k in kinds if k))} socket; " \
                   f"ping elapsed/echo {e:.1f} us"
    if row == "memory":
        rss = med("kernel", "rss_delta")
        slab = med("kernel", "slab_delta")
        methods = {r.get("slab_method") for r in reps["kernel"] if "slab_method" in r}
        if rss is not None and slab is not None:
            return (f"kernel RSS {rss / 2000:.0f} + slab {slab / 2000:.0f} B/pair "
                    f"({'; '.join(sorted(m for m in methods if m)).split(',')[0]}...)")
    return ""


def harness(args: argparse.Namespace) -> None:
    unknown = [k for k in args.rows.split(",") if k not in BY_KEY] if args.rows else []
    if unknown:
        sys.exit(f"issue10.py: unknown row {unknown[0]!r}: choose from {','.join(BY_KEY)}")
    rows = [BY_KEY[k] for k in args.rows.split(",")] if args.rows else ROWS + (
        EXTRA_ROWS if args.extra else [])
    pins = {"both": ["none", str(args.cpu)], "none": ["none"], "pinned": [str(args.cpu)]}[
        args.pins]
    started = time.time()
    load_before = loadavg()
    print(f"issue10: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{args.reps} repetitions per side, {'quick' if args.quick else '1 s'} each, "
          f"load average {load_before}", flush=True)
    results: list[dict[str, Any]] = []
    files: set[str] = set()
    for row in rows:
        for pin in (pins if row.pinned_too else ["none"]):
            reps: dict[str, list[dict[str, Any]]] = {"kernel": [], "loopstack": []}
            load = loadavg()
            for i in range(args.reps):
                order = ("kernel", "loopstack") if i % 2 == 0 else ("loopstack", "kernel")
                for side in order:
                    r = run_child(row.key, side, pin, args.quick)
                    reps[side].append(r)
                    if "loopstack_file" in r:
                        files.add(r["loopstack_file"])
            med: dict[str, float | None] = {}
            errors = []
            for side in ("kernel", "loopstack"):
                vals = [r["value"] for r in reps[side] if "value" in r]
                med[side] = statistics.median(vals) if vals else None
                errors += [f"{side}: {r.get('error') or r.get('skipped')}" for r in reps[side]
                           if "value" not in r]
            k, ls = med["kernel"], med["loopstack"]
            ratio = ls / k if k and ls else None
            if ratio is None:
                mark = "n/a"
            elif row.higher_is_better:
                mark = "PASS" if ratio >= row.floor else "below floor"
            else:
                mark = "PASS" if ratio <= row.floor else "below floor"
            floor = f"{'>=' if row.higher_is_better else '<='} {row.floor}x"
            res = {"row": row.key, "label": row.label, "unit": row.unit,
                   "pin": "unpinned" if pin == "none" else f"CPU {pin}",
                   "kernel": k, "loopstack": ls, "ratio": ratio, "floor": floor, "mark": mark,
                   "note": extra_note(row.key, reps), "errors": sorted(set(errors)),
                   "load_before": load, "repetitions": reps}
            results.append(res)
            ratio_s = f"{ratio:.2f}x" if ratio is not None else "-"
            print(f"  {row.label:<46} {res['pin']:<9} kernel {fmt(k, row.unit):>15}  "
                  f"loopstack {fmt(ls, row.unit):>15}  {ratio_s:>6} (floor {floor:<8}) "
                  f"{mark}{'  ' + res['note'] if res['note'] else ''}", flush=True)
            for e in res["errors"]:
                print(f"      ! {e}", flush=True)
    load_after = loadavg()
    print(f"load average after: {load_after}; {time.time() - started:.0f} s; "
          f"loopstack from {', '.join(sorted(files)) or '(no loopstack run)'}")
    table = [r for r in results if r["row"] not in EXTRA_KEYS]
    passed = sum(r["mark"] == "PASS" for r in table)
    if table:
        print(f"{passed} of {len(table)} rows at or past their floor")
    extra = [r for r in results if r["row"] in EXTRA_KEYS]
    if extra:
        print(f"(extra rows, not the issue's: {sum(r['mark'] == 'PASS' for r in extra)} of"
              f" {len(extra)} at or past the floor of the row they vary)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version, "cpus": os.cpu_count(), "reps": args.reps,
                       "quick": args.quick, "load_before": load_before,
                       "load_after": load_after, "loopstack_files": sorted(files),
                       "rows": results}, f, indent=1)
        print(f"figures saved to {args.json}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="repetitions per side (default 5)")
    ap.add_argument("--quick", action="store_true", help="0.3 s repetitions instead of 1 s")
    ap.add_argument("--rows", help="comma-separated row keys: " + ",".join(BY_KEY))
    ap.add_argument("--pins", choices=("both", "none", "pinned"), default="both",
                    help="unpinned and/or pinned runs of the two-thread and asyncio rows")
    ap.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default 0)")
    ap.add_argument("--json", metavar="OUT", help="save every figure to OUT")
    ap.add_argument("--extra", action="store_true",
                    help="also run the extra rows: " + ",".join(sorted(EXTRA_KEYS)))
    ap.add_argument("--one", choices=list(BY_KEY), help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=("kernel", "loopstack"), help=argparse.SUPPRESS)
    ap.add_argument("--pin", default="none", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        if not args.side:
            ap.error("--one needs --side")
        child(args)
    else:
        harness(args)


if __name__ == "__main__":
    main()
