"""The connection fast paths (transport/tcp/fastpath.py: SYN and SYN-ACK
as records on an unobserved lo, the listener's SYN handling from the
record, the handshake's and the close's segments predicted) against the
general path: the same randomized sequence of connection set-ups and
teardowns (connects, accepts, closes in either order, RSTs by SO_LINGER 0,
refused connects, simultaneous opens and closes, listeners whose backlog
overflows, SYN cookies, IPv4, IPv6 and v4-mapped, a capture for a while,
time moving) on a virtual-clock stack, once with the fast paths and once
without, must leave after every step the same snapshot: every slot of
every TCB the stack knows (connections, listeners), every timer's state
and deadline, every counter, lo's statistics, the IP ID, the clock, each
call's result and the sockets' readiness."""

from __future__ import annotations

import errno
import importlib
import random
import socket
import struct
from typing import Any

import pytest

import loopstack
from loopstack.transport.tcp import fastpath

from .conftest import off_and_on
from .test_fast_path_equivalence import _readiness, _tcb

DELAYS = (0.0, 0.0, 0.0005, 0.001, 0.04, 0.2, 1.0, 3.0, 61.0)


def _snapshot(stack: loopstack.Stack, socks: list[Any], log: list[Any]) -> dict[str, Any]:
    tcp = stack.tcp
    snap: dict[str, Any] = {
        "stats": stack.stats(),
        "lo": stack.lo.stats.as_dict(),
        "ident": stack.ipv4._ident,
        "now": stack.clock.now_ns(),
        "log": list(log),
        "tw": tcp.tw_count,
        "orphans": tcp.orphans,
        "conns": {k: _tcb(t) for k, t in tcp.conns.items()},
        "listeners": {port: [_tcb(t) for t in ts] for port, ts in tcp.listeners.items()},
        "ports": {p: [(b.local_addr, b.local_port, b.remote_port) for b in bs]
                  for p, bs in stack.tcp_ports.by_port.items()},
    }
    ready = []
    for s in socks:
        core = loopstack.socket.implementation(s)
        if core._closed:
            ready.append(None)
            continue
        ready.append((_tcb(core._tcb), _readiness(s)))
    snap["sockets"] = ready
    return snap


class _World:
    """The sockets of one run, and the operations drawn on them."""

    def __init__(self, stack: loopstack.Stack, rng: random.Random, log: list[Any]) -> None:
        self.stack = stack
        self.rng = rng
        self.log = log
        self.listeners: list[tuple[Any, int, tuple[Any, ...]]] = []  # (sock, family, addr)
        self.socks: list[Any] = []  # clients and accepted, open or closed
        self.everything: list[Any] = []  # for the snapshot, in creation order
        self.tap: Any = None

    def open_socks(self) -> list[Any]:
        return [s for s in self.socks if not loopstack.socket.implementation(s)._closed]

    def new(self, family: int) -> Any:
        s = self.stack.socket(family, socket.SOCK_STREAM)
        rng = self.rng
        if rng.random() < 0.1:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, rng.choice((500, 1000, 1460)))
        if rng.random() < 0.1:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rng.choice((4096, 20000, 90000)))
        if rng.random() < 0.1:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rng.random() < 0.05:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.everything.append(s)
        return s

    def listen(self) -> None:
        rng = self.rng
        kind = rng.randrange(3)
        family = socket.AF_INET if kind == 0 else socket.AF_INET6
        host = ("127.0.0.1", "::1", "::")[kind]
        lst = self.new(family)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((host, 0))
        backlog = rng.choice((0, 1, 2, 8, 128))
        lst.listen(backlog)
        lst.setblocking(False)
        port = lst.getsockname()[1]
        targets: tuple[Any, ...]
        if kind == 0:
            targets = ((socket.AF_INET, ("127.0.0.1", port)),
                       (socket.AF_INET6, ("::ffff:127.0.0.1", port)))
        elif kind == 1:
            targets = ((socket.AF_INET6, ("::1", port)),)
        else:
            targets = ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::1", port)),
                       (socket.AF_INET6, ("::ffff:127.0.0.1", port)))
        self.listeners.append((lst, family, targets))
        self.log.append(("listen", kind, backlog))

    def connect(self) -> None:
        rng = self.rng
        if self.listeners and rng.random() < 0.9:
            lst, _, targets = rng.choice(self.listeners)
            family, addr = rng.choice(targets)
        else:  # a port nobody listens on: refused
            family, addr = rng.choice(((socket.AF_INET, ("127.0.0.1", 9)),
                                       (socket.AF_INET6, ("::1", 9))))
        c = self.new(family)
        c.setblocking(False)
        self.socks.append(c)
        self.log.append(("connect", c.connect_ex(addr)))

    def accept(self) -> None:
        if not self.listeners:
            return
        lst, _, _ = self.rng.choice(self.listeners)
        try:
            s, peer = lst.accept()
        except OSError as e:
            self.log.append(("accept", e.errno))
            return
        s.setblocking(False)
        self.socks.append(s)
        self.everything.append(s)
        self.log.append(("accept", peer))

    def close(self, linger0: bool) -> None:
        open_ = self.open_socks()
        if not open_:
            return
        s = self.rng.choice(open_)
        if linger0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.log.append(("close", linger0))

    def peers(self) -> list[tuple[Any, Any]]:
        """Open pairs whose ends are both ours (a client and its accepted end)."""
        by_name: dict[Any, tuple[int, Any]] = {}
        for i, s in enumerate(self.open_socks()):
            try:
                by_name[(s.getsockname()[:2], s.getpeername()[:2])] = (i, s)
            except OSError:
                pass
        out = []
        for (name, peer), (i, s) in by_name.items():
            other = by_name.get((peer, name))
            if other is not None and i < other[0]:
                out.append((s, other[1]))
        return out

    def close_both(self) -> None:
        """Simultaneous close: both FINs leave before either arrives (the
        backlog drains when the outermost operation ends)."""
        pairs = self.peers()
        if not pairs:
            return
        a, b = self.rng.choice(pairs)
        if self.rng.random() < 0.5:
            a, b = b, a
        with self.stack.locked:
            a.close()
            b.close()
        self.log.append(("close_both",))

    def simultaneous_open(self) -> None:
        """Two sockets bound to known ports connect to each other at once."""
        rng = self.rng
        family, host = rng.choice(((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")))
        a, b = self.new(family), self.new(family)
        for s in (a, b):
            s.bind((host, 0))
            s.setblocking(False)
        pa, pb = a.getsockname()[:2], b.getsockname()[:2]
        with self.stack.locked:
            ra = a.connect_ex(pb)
            rb = b.connect_ex(pa)
        self.socks += [a, b]
        self.log.append(("simopen", ra, rb))

    def data(self) -> None:
        open_ = self.open_socks()
        if not open_:
            return
        s = self.rng.choice(open_)
        try:
            if self.rng.random() < 0.5:
                self.log.append(("send", s.send(b"x" * self.rng.choice((1, 10, 3000)))))
            else:
                self.log.append(("recv", s.recv(5000)))
        except OSError as e:
            self.log.append(("data", e.errno))

    def shutdown(self) -> None:
        open_ = self.open_socks()
        if not open_:
            return
        s = self.rng.choice(open_)
        try:
            s.shutdown(self.rng.choice((socket.SHUT_WR, socket.SHUT_RDWR)))
            self.log.append(("shutdown",))
        except OSError as e:
            self.log.append(("shutdown", e.errno))

    def so_error(self) -> None:
        open_ = self.open_socks()
        if open_:
            s = self.rng.choice(open_)
            self.log.append(("so_error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))

    def close_listener(self) -> None:
        if not self.listeners:
            return
        k = self.rng.randrange(len(self.listeners))
        lst, _, _ = self.listeners.pop(k)
        lst.close()
        self.log.append(("close_listener",))

    def toggle_tap(self) -> None:
        if self.tap is None:
            self.tap = self.stack.lo.tap(lambda pkt, direction: self.log.append(bytes(pkt)))
        else:
            self.tap.remove()
            self.tap = None
        self.log.append(("tap", self.tap is not None))


def _drive(seed: int, steps: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    stack = loopstack.Stack(clock="virtual", seed=seed)
    log: list[Any] = []
    snaps: list[dict[str, Any]] = []
    tcp = stack.tcp
    if rng.random() < 0.2:
        tcp.sack = False
    if rng.random() < 0.2:
        tcp.timestamps = False
    if rng.random() < 0.2:
        tcp.window_scaling = False
    if rng.random() < 0.2:
        tcp.syncookies = False
    w = _World(stack, rng, log)
    try:
        for _ in range(steps):
            op = rng.random()
            try:
                if op < 0.08:
                    if len(w.listeners) < 3:
                        w.listen()
                elif op < 0.35:
                    w.connect()
                elif op < 0.50:
                    w.accept()
                elif op < 0.62:
                    w.close(False)
                elif op < 0.66:
                    w.close(True)
                elif op < 0.70:
                    w.close_both()
                elif op < 0.72:
                    w.simultaneous_open()
                elif op < 0.78:
                    w.data()
                elif op < 0.81:
                    w.shutdown()
                elif op < 0.83:
                    w.so_error()
                elif op < 0.85:
                    w.close_listener()
                elif op < 0.87:
                    w.toggle_tap()
                else:
                    d = rng.choice(DELAYS)
                    stack.advance(d)
                    log.append(("advance", d))
            except OSError as e:
                log.append(("error", type(e).__name__, e.errno))
            snaps.append(_snapshot(stack, w.everything, log))
            log.clear()
        for s in w.everything:
            s.close()
        stack.advance(130)
        snaps.append(_snapshot(stack, [], [("end", stack.sockets())]))
    finally:
        stack.close()
    return snaps


def _compare(seed: int, steps: int) -> int:
    general, fast = off_and_on(lambda: _drive(seed, steps))
    assert len(fast) == len(general)
    for step, (a, b) in enumerate(zip(fast, general, strict=True)):
        if a != b:
            diffs: dict[str, Any] = {}
            for k in a.keys() | b.keys():
                va, vb = a.get(k), b.get(k)
                if va == vb:
                    continue
                if isinstance(va, dict) and isinstance(vb, dict):
                    diffs[k] = {f: (va.get(f), vb.get(f)) for f in va.keys() | vb.keys()
                                if va.get(f) != vb.get(f)}
                else:
                    diffs[k] = (va, vb)
            pytest.fail(f"seed {seed}: step {step} differs (fast, general): {diffs}")
    return len(fast)


@pytest.mark.parametrize("seed", range(16))
def test_conn_path_is_the_general_path(seed: int) -> None:
    assert _compare(seed, 200) == 201


def test_conn_path_is_taken() -> None:
    """Such runs do use the connection fast paths (else the comparison
    says nothing): SYNs and SYN-ACKs cross lo as records, and none do
    with the switch off."""
    tcp = importlib.import_module("loopstack.transport.tcp")
    counts = {"syn_records": 0}
    original = tcp.TCP.input_record

    def counting(self: Any, rec: Any) -> None:
        if rec.segment.flags & 0x02:  # SYN
            counts["syn_records"] += 1
        original(self, rec)

    def run(enabled: bool) -> int:
        saved = fastpath.enabled
        counts["syn_records"] = 0
        fastpath.enabled = enabled
        try:
            for seed in (1, 2):
                _drive(seed, 150)
        finally:
            fastpath.enabled = saved
        return counts["syn_records"]

    tcp.TCP.input_record = counting  # type: ignore[method-assign]
    try:
        fast, general = run(True), run(False)
    finally:
        tcp.TCP.input_record = original  # type: ignore[method-assign]
    assert fast > 40, fast
    assert general == 0, general


def test_refused_and_overflow_happen() -> None:
    """The runs reach the cases the comparison is for: refused connects,
    resets, listen overflows, TIME-WAIT."""
    totals: dict[str, int] = {}
    for seed in (5, 6, 7):
        last = _drive(seed, 200)[-2]["stats"]
        for group, key in (("Tcp", "OutRsts"), ("TcpExt", "ListenOverflows"),
                           ("Tcp", "PassiveOpens"), ("Tcp", "ActiveOpens"),
                           ("Tcp", "AttemptFails"), ("TcpExt", "TCPAbortOnLinger")):
            totals[key] = totals.get(key, 0) + int(last[group].get(key, 0))
    assert all(v > 0 for v in totals.values()), totals
    assert errno.ECONNREFUSED  # (the log records refused connects by their errno)


@pytest.mark.parametrize("ts,sack,ws", [(a, b, c) for a in (0, 1) for b in (0, 1)
                                        for c in (0, 1)])
def test_syn_record_bytes_are_the_syn_bytes(ts: int, sack: int, ws: int) -> None:
    """A SYN or SYN-ACK record turned into bytes (build_segment, through
    pack_syn_options) is byte for byte what the byte path sends, for every
    option set: captured SYNs parsed and rebuilt."""
    from loopstack.transport.tcp.output import build_segment
    from loopstack.transport.tcp.segment import parse_segment

    stack = loopstack.Stack(clock="virtual", seed=ts * 4 + sack * 2 + ws)
    try:
        stack.tcp.timestamps, stack.tcp.sack, stack.tcp.window_scaling = \
            bool(ts), bool(sack), bool(ws)
        seen: list[bytes] = []
        stack.lo.tap(lambda pkt, direction: seen.append(bytes(pkt)))
        lst = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(lst.getsockname())
        syns = [p[20:] for p in seen if p[9] == 6 and p[20 + 13] & 0x02]
        assert len(syns) >= 2  # the SYN and the SYN-ACK (a tap sees each once per direction)
        for raw in syns:
            assert build_segment(parse_segment(memoryview(raw))) == raw
    finally:
        stack.close()
