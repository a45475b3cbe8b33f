"""The TCP fast paths (transport/tcp/fastpath.py: the send-side prediction
in output.py, header prediction and the fused receive in input.py) against
the general path: the same randomized sequence of operations (sends of
many sizes, bytes and bytearrays, urgent data, reads of every kind,
TCP_NODELAY and TCP_QUICKACK toggles, shutdowns, a capture switched on and
off, loss for a while, time moving) on a virtual-clock stack, once with
the fast paths and once without, must leave after every step the same
snapshot: every TCB slot of both ends (object identities aside), every
timer's state and deadline, every counter, lo's statistics, the IP ID,
what each side read and each call's result, and the sockets' readiness."""

from __future__ import annotations

import importlib
import random
import socket
import zlib
from collections import deque
from typing import Any

import pytest

import loopstack
from loopstack.clock import Timer
from loopstack.transport.tcp import TCB, fastpath
from loopstack.transport.tcp.bufq import ByteQueue

from .conftest import off_and_on

# Slots that hold objects whose identity differs between runs (the
# connection's owner, callbacks, the protocol, the route, the listener).
_IDENTITY = {"tcp", "wake", "owner", "listener", "_listen_state", "route"}


def _value(v: Any) -> Any:
    if isinstance(v, Timer):
        return ("timer", v.active, v.deadline if v.active else None)
    if isinstance(v, ByteQueue):
        return ("bytes", v.size, zlib.crc32(v.copy(0, v.size)))
    if isinstance(v, deque):
        return ("deque", [_value(x) for x in v])
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_value(x) for x in v)
    if isinstance(v, memoryview):
        return bytes(v)
    if hasattr(type(v), "__slots__") and not isinstance(v, (int, str, bytes)):
        slots: list[str] = []
        for cls in type(v).__mro__:
            slots += list(getattr(cls, "__slots__", ()))
        return (type(v).__name__, {s: _value(getattr(v, s)) for s in slots if hasattr(v, s)})
    return v


def _tcb(t: TCB) -> dict[str, Any]:
    out = {s: _value(getattr(t, s)) for s in TCB.__slots__ if s not in _IDENTITY}
    out["route"] = None if t.route is None else (t.route.src, t.route.dst)
    return out


def _readiness(sock: Any) -> Any:
    core = loopstack.socket.implementation(sock) if hasattr(loopstack, "socket") else sock
    efd = getattr(core, "_efd", None)
    shown = None if efd is None else (efd.readable, efd.writable, efd.urgent)
    with core._stack.locked:
        return (core._readable(), core._writable(), core._urgent(), shown)


def _snapshot(stack: loopstack.Stack, socks: list[Any], log: list[Any]) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "stats": stack.stats(),
        "lo": stack.lo.stats.as_dict(),
        "ident": stack.ipv4._ident,
        "now": stack.clock.now_ns(),
        "log": list(log),
    }
    for i, s in enumerate(socks):
        core = loopstack.socket.implementation(s)
        snap[f"tcb{i}"] = _tcb(core._tcb)
        snap[f"ready{i}"] = _readiness(s)
    return snap


def _payload(rng: random.Random, n: int) -> Any:
    data = bytes(rng.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1)
    data = data[:n]
    return bytearray(data) if rng.random() < 0.3 else data


SIZES = (1, 1, 1, 2, 7, 100, 536, 1000, 1448, 4000, 32000, 65483, 65536, 100000, 300000)
DELAYS = (0.0, 0.0, 0.0, 0.0005, 0.001, 0.004, 0.02, 0.041, 0.2, 0.5, 2.0)


def _drive(seed: int, steps: int, no_timestamps: bool = False) -> list[dict[str, Any]]:
    """One run: the operations drawn from ``seed``; a snapshot after each.
    ``no_timestamps``: timestamps off whatever the seed draws (RTT timed by
    Karn's one segment, the send loop's other branch)."""
    rng = random.Random(seed)
    stack = loopstack.Stack(clock="virtual", seed=seed)
    snaps: list[dict[str, Any]] = []
    log: list[Any] = []
    try:
        srv = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        cli = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        for s in (srv, cli):
            if rng.random() < 0.3:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rng.choice((4096, 20000, 90000)))
            if rng.random() < 0.3:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rng.choice((4096, 20000, 90000)))
        if rng.random() < 0.2:
            stack.tcp.sack = False  # net.ipv4.tcp_sack = 0
        if rng.random() < 0.2 or no_timestamps:
            stack.tcp.timestamps = False  # net.ipv4.tcp_timestamps = 0
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        cli.settimeout(30)
        cli.connect(srv.getsockname())
        conn, _ = srv.accept()
        ends = [cli, conn]
        for s in ends:
            s.setblocking(False)
        if rng.random() < 0.5:
            ends[rng.randrange(2)].fileno()  # readiness kept on a descriptor too
        tap = None
        tap_left = loss_left = 0
        lossy = False
        for step in range(steps):
            if tap is not None:
                tap_left -= 1
                if tap_left <= 0:
                    tap.remove()
                    tap = None
            if lossy:
                loss_left -= 1
                if loss_left <= 0:
                    lossy = False
                    stack.lo.netem(None)
            op = rng.random()
            i = rng.randrange(2)
            s = ends[i]
            try:
                if op < 0.30:
                    n = rng.choice(SIZES)
                    flags = socket.MSG_OOB if rng.random() < 0.03 else 0
                    log.append(("send", i, n, flags, s.send(_payload(rng, n), flags)))
                elif op < 0.55:
                    n = rng.choice((1, 1, 10, 1000, 65536, 1 << 20))
                    kind = rng.random()
                    if kind < 0.6:
                        log.append(("recv", i, s.recv(n)))
                    elif kind < 0.85:
                        buf = bytearray(n)
                        got = s.recv_into(buf)
                        log.append(("recv_into", i, got, bytes(buf[:got])))
                    else:
                        log.append(("peek", i, s.recv(n, socket.MSG_PEEK)))
                elif op < 0.75:
                    d = rng.choice(DELAYS)
                    stack.advance(d)
                    log.append(("advance", d))
                elif op < 0.82:
                    v = rng.randrange(2)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, v)
                    log.append(("nodelay", i, v))
                elif op < 0.86:
                    v = rng.randrange(3)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, v)
                    log.append(("quickack", i, v))
                elif op < 0.88:
                    log.append(("nothing",))
                elif op < 0.90:
                    # A capture for a while: the byte path, the fast path off.
                    if tap is None:
                        tap = stack.lo.tap(lambda pkt, direction: log.append(len(pkt)))
                        tap_left = rng.randrange(3, 20)
                    log.append(("tap", True))
                elif op < 0.915:
                    # Loss for a while (netem: the byte path): recovery, RACK, TLP.
                    if not lossy:
                        lossy = True
                        stack.lo.netem("loss 20%")
                        loss_left = rng.randrange(3, 25)
                    log.append(("netem", True))
                elif op < 0.94:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
                    log.append(("oobinline", i))
                elif op < 0.95:
                    log.append(("oob", i, s.recv(1, socket.MSG_OOB)))
                elif op < 0.96 and step > steps * 0.85:
                    s.shutdown(socket.SHUT_WR)
                    log.append(("shutdown", i))
                elif op >= 0.96:
                    # A burst: small sends back to back (Nagle, the ACK policy).
                    for _ in range(rng.randrange(2, 6)):
                        log.append(("burst", i, s.send(b"z" * rng.choice((1, 3, 50)))))
                else:
                    log.append(("nothing",))
            except OSError as e:
                log.append(("error", type(e).__name__, e.errno))
            snaps.append(_snapshot(stack, ends, log))
            log.clear()
        stack.lo.netem(None)
        for s in ends:
            s.close()
        srv.close()
        stack.advance(130)
        snaps.append(_snapshot(stack, [], [("end", stack.sockets())]))
    finally:
        stack.close()
    return snaps


def _compare(seed: int, steps: int, no_timestamps: bool = False) -> int:
    general, fast = off_and_on(lambda: _drive(seed, steps, no_timestamps))
    assert len(fast) == len(general)
    for step, (a, b) in enumerate(zip(fast, general, strict=True)):
        if a != b:
            diffs = {}
            for k in a.keys() | b.keys():
                if a.get(k) != b.get(k):
                    va, vb = a.get(k), b.get(k)
                    if isinstance(va, dict) and isinstance(vb, dict):
                        diffs[k] = {f: (va.get(f), vb.get(f)) for f in va.keys() | vb.keys()
                                    if va.get(f) != vb.get(f)}
                    else:
                        diffs[k] = (va, vb)
            pytest.fail(f"seed {seed}: step {step} differs (fast, general): {diffs}")
    return len(fast)


@pytest.mark.parametrize("seed", range(16))
def test_fast_path_is_the_general_path(seed: int) -> None:
    assert _compare(seed, 300) == 301


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_without_timestamps(seed: int) -> None:
    """The same without timestamps: the send-side prediction's loop times
    one segment per round trip (rtt_seq), as the general loop does."""
    assert _compare(100 + seed, 300, no_timestamps=True) == 301


def test_fast_path_is_taken() -> None:
    """The fast paths are used in such runs (else the comparison says
    nothing): header prediction takes segments, and data segments leave
    as records built by the send-side prediction."""
    tcp_input = importlib.import_module("loopstack.transport.tcp.input")
    tcp_output = importlib.import_module("loopstack.transport.tcp.output")
    predicted = tcp_input._predicted
    send_record = tcp_output._send_record
    counts = {"predicted": 0, "records": 0}

    def counting_predicted(*a: Any) -> bool:
        done = predicted(*a)
        counts["predicted"] += done
        return done

    def counting_send_record(*a: Any) -> bool:
        done = send_record(*a)
        counts["records"] += done
        return done

    def run(enabled: bool) -> dict[str, int]:
        saved = fastpath.enabled
        counts.update(predicted=0, records=0)
        fastpath.enabled = enabled
        try:
            for seed in (3, 4, 5):
                _drive(seed, 200)
        finally:
            fastpath.enabled = saved
        return dict(counts)

    tcp_input._predicted = counting_predicted
    tcp_output._send_record = counting_send_record
    try:
        fast, general = run(True), run(False)
    finally:
        tcp_input._predicted = predicted
        tcp_output._send_record = send_record
    assert fast["predicted"] > 50 and fast["records"] > 50, fast
    assert general == {"predicted": 0, "records": 0}, general
