"""IP_TOS, IP_RECVTOS and SO_PRIORITY on the kernel and on loopstack: what
the options read back (a byte; a stream's ECN bits kept; the priority a TOS
implies, set only when the TOS changes), the TOS a UDP datagram carries
(the socket's, or an IP_TOS control message's) and what IP_RECVTOS shows."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

import loopstack

IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)


def both(fn: Callable[[], Any]) -> tuple[Any, Any]:
    kernel = fn()
    with loopstack.patch():
        virtual = fn()
    return kernel, virtual


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_options_read_back(family: int, kind: int) -> None:
    def run() -> list[Any]:
        s = socket.socket(family, kind)
        out: list[Any] = [s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
                          s.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY),
                          s.getsockopt(socket.IPPROTO_IP, IP_RECVTOS)]
        for value in (0x10, 0x1FF, 0x13, -1, 0x2C, b"\x08", 0x28):
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, value)
            out.append((s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
                        s.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, 3)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)  # unchanged: priority stays
        out.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)  # changed: 6
        out.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY))
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, 9)  # root: allowed
            out.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY))
        except OSError as e:
            out.append(errno.errorcode[e.errno or 0])
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        out.append(s.getsockopt(socket.IPPROTO_IP, IP_RECVTOS))
        out.append(s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS, 1))  # a short buffer: a byte
        s.close()
        return out

    kernel, virtual = both(run)
    assert virtual == kernel


def _tos_of(cmsgs: list[tuple[int, int, bytes]]) -> list[int]:
    return [data[0] for level, kind, data in cmsgs
            if level == socket.IPPROTO_IP and kind == socket.IP_TOS]


def test_datagrams_carry_the_tos() -> None:
    def run() -> list[Any]:
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        r.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out: list[Any] = []
        s.sendto(b"plain", r.getsockname())
        data, anc, _, _ = r.recvmsg(100, 1024)
        out.append((data, _tos_of(anc), [k for _, k, _ in anc]))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xB8)
        s.sendto(b"marked", r.getsockname())
        data, anc, _, _ = r.recvmsg(100, 1024)
        out.append((data, _tos_of(anc)))
        s.sendmsg([b"int"], [(socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", 0x20))], 0,
                   r.getsockname())
        s.sendmsg([b"byte"], [(socket.IPPROTO_IP, socket.IP_TOS, b"\x48")], 0,
                   r.getsockname())
        for _ in range(2):
            data, anc, _, _ = r.recvmsg(100, 1024)
            out.append((data, _tos_of(anc)))
        for bad in (struct.pack("i", 256), struct.pack("i", -1), b"\x01\x02"):
            try:
                s.sendmsg([b"bad"], [(socket.IPPROTO_IP, socket.IP_TOS, bad)], 0,
                           r.getsockname())
                out.append("sent")
            except OSError as e:
                out.append(errno.errorcode[e.errno or 0])
        r.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 0)
        s.sendto(b"quiet", r.getsockname())
        data, anc, _, _ = r.recvmsg(100, 1024)
        out.append((data, _tos_of(anc)))
        r.close()
        s.close()
        return out

    kernel, virtual = both(run)
    assert kernel[1] == (b"marked", [0xB8])
    assert virtual == kernel


def test_a_marked_datagram_shows_its_tos_in_a_capture(tmp_path: Any) -> None:
    """The byte path for a TOS other than 0: the IP header carries it."""
    with loopstack.patch() as stack:
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
        seen: list[bytes] = []
        stack.lo.tap(lambda packet, direction: seen.append(bytes(packet)))
        s.sendto(b"x", r.getsockname())
        assert r.recv(10) == b"x"
        r.close()
        s.close()
    ip = [f for f in seen if len(f) >= 28 and f[0] >> 4 == 4]
    assert ip and ip[0][1] == 0x28
