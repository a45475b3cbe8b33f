"""Drop-in behaviour that differed from the kernel because of code outside
the drop-in layer (stack.py, socket.py, stream.py). Each test states what
the kernel does. Those still marked xfail (strict) wait for their owners' fixes,
each of which will show up as an XPASS that fails the run and asks for the
mark's removal; the unmarked ones were fixed and stay as regression tests."""

from __future__ import annotations

import gc
import socket
import threading
import time

import pytest

import loopstack


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_dropped_socket_is_closed_when_collected() -> None:
    """The stack keeps no strong reference to a socket object: one dropped
    unclosed is closed when collected (socket.py __del__)."""
    with loopstack.patch():
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        del client
        gc.collect()
        conn.settimeout(1)
        assert conn.recv(10) == b""  # the kernel: EOF, the peer was closed
        conn.close()
        server.close()


def test_a_thread_blocks_on_a_virtual_clock_until_another_thread_sends() -> None:
    stack = loopstack.Stack(clock="virtual")
    with loopstack.patch(stack):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        got: list[object] = []

        def receive() -> None:
            try:
                got.append(rx.recv(100))
            except OSError as e:
                got.append(e)

        t = threading.Thread(target=receive)
        t.start()
        time.sleep(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"hello", rx.getsockname())
        t.join(5)
        rx.close()
    stack.close()
    assert got == [b"hello"]


def test_a_listener_is_not_readable_until_a_connection_waits() -> None:
    import select

    with loopstack.patch():
        s = socket.socket()
        s.setblocking(False)
        s.fileno()  # asyncore registers the descriptor before bind and listen
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert select.select([s], [], [], 0)[0] == []  # the kernel: nothing to accept
        s.close()


def test_so_oobinline() -> None:
    with loopstack.patch():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 1


def test_recvmsg_into_rejects_a_read_only_buffer_before_receiving() -> None:
    with loopstack.patch():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"datagram", rx.getsockname())
        with pytest.raises(TypeError):
            rx.recvmsg_into([b"read-only"])
        buf = bytearray(8)
        try:
            assert rx.recvmsg_into([buf])[0] == 8 and buf == b"datagram"
        finally:
            rx.close()
