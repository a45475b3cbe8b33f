"""The socket object under ``loopstack.patch``: a ``socket.socket`` whose C
part has no descriptor, a front for a loopstack socket (socket.py); its
descriptors (dup, detach, fromfd), its collection when dropped unclosed,
and what stays real."""

from __future__ import annotations

import gc
import os
import select
import socket
import threading
import warnings
import weakref

import pytest

import loopstack
from loopstack.socket import Socket, implementation


def test_instances_are_socket_objects_and_subclasses_stay_real() -> None:
    with loopstack.patch():
        s = socket.socket()
        assert isinstance(s, socket.socket) and isinstance(s, socket.SocketType)
        assert type(s) is socket.socket  # a front (socket.py): exactly the stdlib's class
        assert isinstance(s, Socket) and type(implementation(s)).__module__ == "loopstack.stream"
        s.close()

        class Mine(socket.socket):
            pass

        mine = Mine(socket.AF_UNIX, socket.SOCK_STREAM)  # a program's subclass: real
        assert type(mine) is Mine and not isinstance(mine, Socket)
        mine.close()
        real_class = socket.socket
        socket.socket = Mine  # type: ignore[misc]  # as test_socket's mocked module does
        try:
            made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            assert type(made) is Mine
            made.close()
        finally:
            socket.socket = real_class  # type: ignore[misc]
    with loopstack.patch(passthrough=True):
        p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert type(p) is socket.socket
        p.close()


def _pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    return server, client, conn


def test_the_stack_keeps_no_object_alive_and_a_dropped_one_is_closed() -> None:
    with loopstack.patch() as stack:
        server, client, conn = _pair()
        ref = weakref.ref(client)
        shown = repr(client)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del client
            gc.collect()
        # (gc.collect() may also collect what earlier tests left: other warnings)
        assert f"unclosed {shown}" in [str(w.message) for w in caught
                                       if w.category is ResourceWarning]
        del caught  # (a warning keeps its source)
        assert ref() is None
        conn.settimeout(5)
        assert conn.recv(10) == b""  # the peer was closed: FIN
        assert len(stack._sockets) == 2
        conn.close()
        server.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_socket_dropped_inside_the_stack_is_closed_by_a_timer() -> None:
    """Collected while this thread holds the stack lock (as inside the
    stack's own code), the close cannot run there: a timer does it."""
    with loopstack.patch() as stack:
        server, client, conn = _pair()
        ref = weakref.ref(client)
        with stack.lock:
            del client
            gc.collect()
        conn.settimeout(5)
        assert conn.recv(10) == b""
        dropped = ref()
        assert dropped is None or dropped._closed  # (the clock may still hold its timer)
        conn.close()
        server.close()


def test_dup_and_fromfd_are_objects_of_one_socket_with_their_own_numbers() -> None:
    with loopstack.patch():
        server, client, conn = _pair()
        d = client.dup()
        f = socket.fromfd(client.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        numbers = {client.fileno(), d.fileno(), f.fileno()}
        assert len(numbers) == 3
        client.close()
        d.sendall(b"a")
        f.sendall(b"b")
        conn.settimeout(5)
        got = b""
        while len(got) < 2:
            got += conn.recv(10)
        assert got == b"ab"
        conn.sendall(b"c")
        assert select.select([d, f], [], [], 5)[0] == [d, f]  # one socket, both readable
        d.close()
        assert f.recv(10) == b"c"
        f.close()
        assert conn.recv(10) == b""  # the last object closed: FIN
        for s in (conn, server):
            s.close()


def test_detach_keeps_the_socket_for_the_number() -> None:
    with loopstack.patch() as stack:
        server, client, conn = _pair()
        fd = client.detach()
        assert client.fileno() == -1 and fd >= 0
        assert len(stack.sockets()) == 3  # still open, held for the number
        again = socket.socket(fileno=fd)
        assert (again.family, again.type, again.proto) == (
            socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        again.sendall(b"x")
        conn.settimeout(5)
        assert conn.recv(10) == b"x"
        again.close()
        assert conn.recv(10) == b""
        conn.close()
        server.close()


def test_the_descriptor_mirrors_the_blocking_mode() -> None:
    import fcntl

    def nonblocking(s: socket.socket) -> bool:
        return bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)

    with loopstack.patch():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        assert s.type == socket.SOCK_STREAM and nonblocking(s)
        s.setblocking(True)
        assert not nonblocking(s)
        s.settimeout(1.5)
        assert nonblocking(s) and s.getblocking()
        s.close()
        with pytest.raises(OSError) as e:
            s.settimeout(1)
        assert e.value.errno == 9


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_objects_of_one_socket_stay_apart_in_a_forked_child() -> None:
    """In the child each object becomes its own proxy (host/attach.py): the
    child closing one leaves the other working, and the parent's too."""
    with loopstack.patch():
        server, client, conn = _pair()
        d = client.dup()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                client.close()
                d.sendall(b"child")
                d.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        conn.settimeout(5)
        got = b""
        while len(got) < 5:
            got += conn.recv(10)
        assert got == b"child"
        client.sendall(b"!")  # the parent's objects are still open
        assert conn.recv(10) == b"!"
        d.close()
        client.close()
        assert conn.recv(10) == b""
        conn.close()
        server.close()


def test_udplite_and_traffic_class_under_patch() -> None:
    with loopstack.patch():
        r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)
        r.bind(("::1", 0))
        r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x20)
        s.setsockopt(socket.IPPROTO_UDPLITE, socket.UDPLITE_SEND_CSCOV, 8)
        s.sendto(b"lite", r.getsockname())
        data, anc, _flags, _addr = r.recvmsg(10, socket.CMSG_SPACE(4))
        assert data == b"lite"
        assert anc == [(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, (0x20).to_bytes(4, "little"))]
        r.close()
        s.close()


def test_a_thread_blocked_in_recv_wakes_when_its_object_closes() -> None:
    with loopstack.patch():
        server, client, conn = _pair()
        d = conn.dup()
        errors: list[int | None] = []

        def receive() -> None:
            try:
                conn.recv(10)
            except OSError as e:
                errors.append(e.errno)

        t = threading.Thread(target=receive)
        t.start()
        while not t.is_alive():
            pass
        conn.close()  # this object only: d still holds the socket
        t.join(5)
        assert not t.is_alive()
        client.sendall(b"x")
        d.settimeout(5)
        assert d.recv(10) == b"x"
        for s in (d, client, server):
            s.close()
