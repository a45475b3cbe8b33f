"""UDP corking (UDP_CORK and MSG_MORE; Linux udp_sendmsg's pending
datagram) on the kernel and on loopstack: the same calls, the same
datagrams received, the same errors."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import pytest

import loopstack

UDP_CORK = 1
MSG_MORE = getattr(socket, "MSG_MORE", 0x8000)


def both(fn: Callable[[], Any]) -> tuple[Any, Any]:
    kernel = fn()
    with loopstack.patch():
        virtual = fn()
    return kernel, virtual


def _drain(r: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(r.recv(70000, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return got


def _pair(family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket, Any]:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    r = socket.socket(family, socket.SOCK_DGRAM)
    r.bind((host, 0))
    s = socket.socket(family, socket.SOCK_DGRAM)
    return r, s, r.getsockname()


def _settle() -> None:
    """Let the kernel's lo deliver (softirq on send: normally at once)."""
    import time

    time.sleep(0.02)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_cork_gathers_until_uncorked(family: int) -> None:
    def run() -> list[Any]:
        r, s, addr = _pair(family)
        out: list[Any] = []
        s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
        out.append(s.getsockopt(socket.IPPROTO_UDP, UDP_CORK))
        out.append(s.sendto(b"ab", addr))
        out.append(s.sendto(b"cd", addr))
        _settle()
        out.append(_drain(r))  # nothing yet
        s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 0)
        out.append(s.getsockopt(socket.IPPROTO_UDP, UDP_CORK))
        _settle()
        out.append(_drain(r))
        out.append(s.sendto(b"ef", addr))  # uncorked: at once
        _settle()
        out.append(_drain(r))
        r.close()
        s.close()
        return out

    kernel, virtual = both(run)
    assert kernel == [1, 2, 2, [], 0, [b"abcd"], 2, [b"ef"]]
    assert virtual == kernel


def test_msg_more_and_the_first_parts_address() -> None:
    def run() -> list[Any]:
        r, s, addr = _pair()
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.1", 0))
        out: list[Any] = []
        out.append(s.sendto(b"one-", MSG_MORE, addr))
        out.append(s.sendto(b"two-", MSG_MORE, other.getsockname()))  # appended: first address
        out.append(s.sendto(b"three", 0, other.getsockname()))
        _settle()
        out.append((_drain(r), _drain(other)))
        s.connect(addr)
        out.append(s.send(b"x", MSG_MORE))
        out.append(s.send(b"y"))
        _settle()
        out.append(_drain(r))
        for x in (r, s, other):
            x.close()
        return out

    kernel, virtual = both(run)
    assert kernel == [4, 4, 5, ([b"one-two-three"], []), 1, 1, [b"xy"]]
    assert virtual == kernel


def test_too_long_in_all_drops_the_whole_datagram() -> None:
    def run() -> list[Any]:
        r, s, addr = _pair()
        out: list[Any] = []
        out.append(s.sendto(bytes(40000), MSG_MORE, addr))
        try:
            s.sendto(bytes(30000), MSG_MORE, addr)
            out.append("sent")
        except OSError as e:
            out.append(errno.errorcode[e.errno or 0])
        out.append(s.sendto(b"z", addr))
        out.append(s.sendto(bytes(65507 - 7), MSG_MORE, addr))
        out.append(s.sendto(bytes(7), addr))  # exactly the most a datagram holds
        _settle()
        out.append([len(d) for d in _drain(r)])
        r.close()
        s.close()
        return out

    kernel, virtual = both(run)
    assert kernel == [40000, "EMSGSIZE", 1, 65500, 7, [1, 65507]]
    assert virtual == kernel


def test_closing_a_corked_socket_sends_nothing() -> None:
    def run() -> list[Any]:
        r, s, addr = _pair()
        s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
        s.sendto(b"lost", addr)
        s.close()
        _settle()
        got = _drain(r)
        r.close()
        return got

    kernel, virtual = both(run)
    assert kernel == []
    assert virtual == kernel


def test_counters_count_one_datagram() -> None:
    """Stack.stats(): a gathered datagram is one OutDatagrams/InDatagrams."""
    with loopstack.patch() as stack:
        r, s, addr = _pair()
        before = stack.stats()["Udp"]
        s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
        for part in (b"a", b"b", b"c"):
            s.sendto(part, addr)
        s.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 0)
        assert r.recv(10) == b"abc"
        after = stack.stats()["Udp"]
        r.close()
        s.close()
    assert after["OutDatagrams"] - before["OutDatagrams"] == 1
    assert after["InDatagrams"] - before["InDatagrams"] == 1
