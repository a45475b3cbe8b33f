"""patch(passthrough=True): sockets stay on the stack until they aim at an
address the stack has no route for; then they are real kernel sockets."""

from __future__ import annotations

import errno
import socket

import pytest

import loopstack
from loopstack.socket import implementation


def test_routable_destinations_stay_virtual() -> None:
    with loopstack.patch(passthrough=True) as stack:
        srv = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        c.sendall(b"virtual")
        assert a.recv(7) == b"virtual"
        assert type(c) is socket.socket  # a front (socket.py) for the passthrough socket
        assert "PassthroughSocket virtual" in repr(implementation(c))
        assert stack.stats()["Tcp"]["ActiveOpens"] == 1
        for x in (a, c, srv):
            x.close()


def test_unroutable_destination_becomes_a_real_socket() -> None:
    # 192.0.2.1 (TEST-NET-1) is outside the stack. A UDP connect sends nothing:
    # the test only checks which kind of socket answers.
    with loopstack.patch(passthrough=True):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            u.connect(("192.0.2.1", 9))
        except OSError as e:  # a host with no route at all says so itself
            assert e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
        assert type(u) is socket.socket
        assert "PassthroughSocket real" in repr(implementation(u))
        assert u.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1  # carried over
        u.close()


def test_without_passthrough_the_same_destination_is_unreachable() -> None:
    with loopstack.patch():
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError) as e:
            u.connect(("192.0.2.1", 9))
        assert e.value.errno == errno.ENETUNREACH
        u.close()
