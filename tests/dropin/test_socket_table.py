"""Stack.sockets(): one row per socket, as `ss` shows one socket however many
descriptors or objects refer to it."""

from __future__ import annotations

import socket

from loopstack import Stack


def test_dup_shows_one_row() -> None:
    stack = Stack()
    try:
        srv = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        copy = srv.dup()
        udp = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp2 = udp.dup()
        rows = stack.sockets()
        listening = [r for r in rows if r["proto"] == "tcp" and r["local"][1] == port]
        assert len(listening) == 1 and listening[0]["state"] == "LISTEN"
        assert len([r for r in rows if r["proto"] == "udp"]) == 1
        srv.close()  # the dup keeps the socket: still one row
        rows = stack.sockets()
        assert len([r for r in rows if r["proto"] == "tcp"]) == 1
        copy.close()
        udp.close()
        udp2.close()
        assert stack.sockets() == []
    finally:
        stack.close()


def test_fromfd_under_patch_shows_one_row() -> None:
    import loopstack

    with loopstack.patch() as stack:
        srv = socket.create_server(("127.0.0.1", 0))
        other = socket.fromfd(srv.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        assert len([r for r in stack.sockets() if r["state"] == "LISTEN"]) == 1
        srv.close()
        assert len([r for r in stack.sockets() if r["state"] == "LISTEN"]) == 1
        other.close()
        assert stack.sockets() == []
