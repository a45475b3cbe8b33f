"""What asyncio's selector reports for a TCP socket, step by step through a
connection's life: the kernel's sockets under selectors.DefaultSelector
against loopstack's under the in-process StackSelector (selector.py), whose
answers come from StreamSocket._sync_fd (its established-connection branch
and the general one) and from select()'s look at its candidates."""

from __future__ import annotations

import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import loopstack
from loopstack.selector import RealDefaultSelector, StackSelector
from loopstack.socket import implementation

RW = selectors.EVENT_READ | selectors.EVENT_WRITE
Step = Callable[[dict[str, Any]], None]


@contextmanager
def _side(name: str) -> Iterator[type[selectors.BaseSelector]]:
    if name == "kernel":
        yield RealDefaultSelector
    else:
        with loopstack.patch():
            yield StackSelector


def _masks(sel: selectors.BaseSelector, socks: dict[str, Any], kernel: bool) -> dict[str, int]:
    if kernel:
        time.sleep(0.01)  # (the kernel's loopback delivers in softirq context)
    got = {key.fileobj: mask for key, mask in sel.select(0)}
    # (A socket closed while registered: see the test below.)
    return {name: got.get(s, 0) for name, s in socks.items() if s.fileno() >= 0}


def _run(side: str, steps: list[tuple[str, Step]]) -> list[tuple[str, dict[str, int]]]:
    with _side(side) as selector_class:
        srv = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        socks = {"c": c, "a": a}
        sel = selector_class()
        seen = []
        try:
            if side == "loopstack":
                assert isinstance(sel, StackSelector)
            for s in socks.values():
                sel.register(s, RW)
            seen.append(("start", _masks(sel, socks, side == "kernel")))
            for what, step in steps:
                step(socks)
                seen.append((what, _masks(sel, socks, side == "kernel")))
                if side == "loopstack":
                    # The stored states are the socket's own answers.
                    for s in socks.values():
                        impl = implementation(s)
                        rd = impl._efd
                        if rd is not None and not impl._closed:
                            assert bool(rd.want_readable) == impl._readable(), what
                            assert bool(rd.want_writable) == impl._writable(), what
        finally:
            sel.close()
            for s in (c, a, srv):
                s.close()
        return seen


def _drain(s: Any) -> None:
    s.setblocking(False)
    try:
        while s.recv(65536):
            pass
    except BlockingIOError:
        pass
    finally:
        s.setblocking(True)


LIVES: dict[str, list[tuple[str, Step]]] = {
    "data and half-closes": [
        ("c sends", lambda s: s["c"].send(b"hello")),
        ("a reads part", lambda s: s["a"].recv(2)),
        ("a reads the rest", lambda s: s["a"].recv(100)),
        ("a sends", lambda s: s["a"].send(b"back")),
        ("c reads", lambda s: s["c"].recv(100)),
        ("a shuts its reading side", lambda s: s["a"].shutdown(socket.SHUT_RD)),
        ("c shuts its writing side", lambda s: s["c"].shutdown(socket.SHUT_WR)),
        ("a sends after c's FIN", lambda s: s["a"].send(b"more")),
        ("c reads it", lambda s: s["c"].recv(100)),
        ("a shuts its writing side", lambda s: s["a"].shutdown(socket.SHUT_WR)),
        ("c reads EOF", lambda s: s["c"].recv(100)),
    ],
    "reset by the peer": [
        ("c sends", lambda s: s["c"].send(b"x")),
        ("a aborts", lambda s: (s["a"].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                  struct.pack("ii", 1, 0)),
                                s["a"].close())),
        ("c takes the error", lambda s: s["c"].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)),
    ],
    "urgent data": [
        ("c sends an urgent byte", lambda s: s["c"].send(b"!", socket.MSG_OOB)),
        ("a reads it out of band", lambda s: s["a"].recv(1, socket.MSG_OOB)),
        ("c sends plain data", lambda s: s["c"].send(b"abc")),
        ("a drains", lambda s: _drain(s["a"])),
    ],
    "peer closes": [
        ("c sends", lambda s: s["c"].send(b"data")),
        ("a reads and closes", lambda s: (s["a"].recv(10), s["a"].close())),
        ("c reads EOF", lambda s: s["c"].recv(10)),
    ],
}


@pytest.mark.parametrize("life", sorted(LIVES))
def test_readiness_through_a_connections_life_is_the_kernels(life: str) -> None:
    steps = LIVES[life]
    kernel = _run("kernel", steps)
    ours = _run("loopstack", steps)
    assert ours == kernel


def test_a_socket_closed_while_registered_is_no_longer_reported() -> None:
    # (epoll drops a descriptor closed while registered; asyncio unregisters
    # first, so only other programs see this)
    seen = {}
    for side in ("kernel", "loopstack"):
        with _side(side) as selector_class:
            srv = socket.create_server(("127.0.0.1", 0))
            c = socket.create_connection(srv.getsockname())
            a, _ = srv.accept()
            sel = selector_class()
            try:
                sel.register(a, RW)
                a.close()
                if side == "kernel":
                    time.sleep(0.01)
                seen[side] = [mask for key, mask in sel.select(0) if key.fileobj is a]
            finally:
                sel.close()
                for s in (c, a, srv):
                    s.close()
    assert seen["loopstack"] == seen["kernel"] == []
