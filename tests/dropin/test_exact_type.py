"""``type(s) is socket.socket`` under ``loopstack.patch`` (issue 9): the
program's object is a *front* (socket.py), an instance of the stdlib's
class itself whose calls a loopstack socket carries out; the dispatchers put
on ``socket.socket`` for that leave every other socket as it was."""

from __future__ import annotations

import gc
import inspect
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import pytest

import loopstack
from loopstack.host.remote import RemoteSocket
from loopstack.socket import _ORIGINAL, Socket, implementation
from loopstack.stream import StreamSocket


def _echo(a: socket.socket, b: socket.socket, data: bytes = b"ping") -> bytes:
    a.sendall(data)
    b.settimeout(5)
    got = b""
    while len(got) < len(data):
        got += b.recv(100)
    return got


def from_stdlib_socket(sock: Any) -> Any:
    """trio's check (trio/_socket.py, _SocketType.__init__), as it is."""
    if type(sock) is not socket.socket:
        raise TypeError(f"expected object of type 'socket.socket', not '{type(sock).__name__}'")
    return sock


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"),
                                         (socket.AF_INET6, "::1")])
def test_tcp_sockets_and_the_objects_they_give(family: int, host: str) -> None:
    with loopstack.patch():
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((host, 0))
        server.listen()
        client = socket.create_connection(server.getsockname()[:2])
        conn, address = server.accept()
        assert address == client.getsockname()
        dup = client.dup()
        fromfd = socket.fromfd(client.fileno(), family, socket.SOCK_STREAM)
        made = socket.socket(fileno=os.dup(client.fileno()))
        objects = [server, client, conn, dup, fromfd, made]
        for s in objects:
            assert type(s) is socket.socket
            assert from_stdlib_socket(s) is s
            assert type(implementation(s)) is StreamSocket and isinstance(s, Socket)
        assert len({id(implementation(s)) for s in objects}) == len(objects)
        for s in (dup, fromfd, made):
            assert _echo(s, conn) == b"ping"  # each is the client's socket
        fd = dup.detach()
        again = socket.socket(fileno=fd)
        assert type(again) is socket.socket and again.fileno() == fd
        assert _echo(conn, again, b"back") == b"back"
        with client as entered:
            assert entered is client
        for s in objects + [again]:
            s.close()


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"),
                                         (socket.AF_INET6, "::1")])
def test_udp_sockets(family: int, host: str) -> None:
    with loopstack.patch():
        a = socket.socket(family, socket.SOCK_DGRAM)
        b = socket.socket(family, socket.SOCK_DGRAM)
        a.bind((host, 0))
        assert type(a) is socket.socket and type(b) is socket.socket
        b.sendto(b"datagram", a.getsockname())
        a.settimeout(5)
        data, sender = a.recvfrom(100)
        assert data == b"datagram" and sender[1] == b.getsockname()[1]
        d = a.dup()
        assert type(d) is socket.socket and type(implementation(d)) is Socket
        for s in (a, b, d):
            s.close()


def test_what_a_front_shows() -> None:
    """repr, pickling, the closed object's answers: socket.socket's own."""
    with loopstack.patch() as stack:
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        laddr, raddr = client.getsockname(), client.getpeername()
        assert repr(client) == (f"<socket.socket fd={client.fileno()}, family=2, type=1, "
                                f"proto={client.proto}, laddr={laddr}, raddr={raddr}>")
        with pytest.raises(TypeError, match="cannot pickle 'socket' object"):
            pickle.dumps(client)
        with pytest.raises(AttributeError, match="'socket' object has no attribute 'nothing'"):
            client.nothing  # noqa: B018
        assert client.stack is stack  # loopstack's own extras reach through
        client.close()
        assert repr(client) == "<socket.socket [closed] fd=-1, family=2, type=1, proto=6>"
        assert client.fileno() == -1 and client._closed
        with pytest.raises(OSError) as e:
            client.recv(1)
        assert e.value.errno == 9
        with pytest.raises(OSError) as e:
            client.getpeername()
        assert e.value.errno == 9
        server.close()


def test_a_front_dropped_unclosed_warns_as_the_stdlib_does() -> None:
    with loopstack.patch():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        shown = repr(s)
        assert shown.startswith("<socket.socket fd=")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del s
            gc.collect()
        assert f"unclosed {shown}" in [str(w.message) for w in caught
                                       if w.category is ResourceWarning]
        del caught


def test_a_front_keeps_working_after_the_patch() -> None:
    stack = loopstack.Stack()
    with loopstack.patch(stack):
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()  # the patch is gone, the dispatchers stay
    assert type(conn) is socket.socket and type(implementation(conn)) is StreamSocket
    dup = conn.dup()
    assert type(dup) is socket.socket
    assert _echo(client, dup) == b"ping"
    assert type(socket.socket(socket.AF_INET)) is socket.socket  # a real one again
    for s in (server, client, conn, dup):
        s.close()
    stack.close()


PROBE = textwrap.dedent('''
    import _socket, json, socket

    def outcome(fn):
        try:
            return repr(fn())
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    def describe(a):
        return [repr(a), outcome(lambda: a.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)),
                outcome(lambda: a.getsockopt(socket.SOL_SOCKET, 9999)),
                outcome(lambda: a.recv(-1)), outcome(lambda: a.send("text")),
                outcome(lambda: a.connect(("127.0.0.1", 1))), outcome(lambda: a.settimeout(-1)),
                outcome(lambda: a.nothing), outcome(lambda: a.family), outcome(lambda: a.timeout),
                outcome(lambda: a.makefile("rb").name)]

    a, b = socket.socketpair()
    before = describe(a)
    from loopstack.patch import prepare
    prepare()
    assert socket.socket.recv is not _socket.socket.recv  # the dispatchers are on
    after = describe(a)
    b.sendall(b"x")
    a.close()
    closed = [repr(a), outcome(lambda: a.recv(1)), outcome(a.fileno)]
    print(json.dumps({"before": before, "after": after, "closed": closed}))
''')


def test_a_real_socket_is_unchanged_by_the_dispatchers() -> None:
    """In a fresh process: an AF_UNIX pair answers the same before and after
    the dispatchers go on (repr, errors and their words, options)."""
    import json

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["before"] == got["after"]
    assert got["after"][2] == "OSError: [Errno 92] Protocol not available"
    assert got["after"][7] == "AttributeError: 'socket' object has no attribute 'nothing'"
    assert got["closed"][1] == "OSError: [Errno 9] Bad file descriptor"
    assert got["closed"][2] == "-1"


COPIED = textwrap.dedent('''
    import socket

    class Wrapper:  # as trio's socket class: socket.socket's methods taken at import
        recv = socket.socket.recv

        def __init__(self, sock):
            self.sock = sock

    def make(fn):
        def call(sock, *args):
            return fn(sock, *args)
        return call

    send = make(socket.socket.sendall)
    accept = make(socket.socket.accept)  # socket.py's accept, which calls _accept

    import loopstack
    from loopstack.patch import prepare
    prepare()
    with loopstack.patch():
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = accept(server)
        send(client, b"copied")
        conn.settimeout(5)
        print(type(conn) is socket.socket, Wrapper.recv(conn, 100).decode())
''')


def test_methods_copied_before_the_dispatchers_serve_fronts() -> None:
    """What code took from socket.socket before prepare() (a class
    attribute, a closure's cell) is pointed at the dispatchers."""
    out = subprocess.run([sys.executable, "-c", COPIED], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "copied"]


def test_trio_takes_the_object() -> None:
    trio = pytest.importorskip("trio")
    with loopstack.patch():
        server = socket.create_server(("127.0.0.1", 0))
        server.setblocking(False)
        port = server.getsockname()[1]

        async def main() -> bytes:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(server))
            reply = b""
            async with trio.open_nursery() as nursery:
                async def serve() -> None:
                    stream = await listener.accept()
                    await stream.send_all((await stream.receive_some(100)).upper())
                    await stream.aclose()

                nursery.start_soon(serve)
                client = await trio.open_tcp_stream("127.0.0.1", port)
                await client.send_all(b"trio")
                while data := await client.receive_some(100):
                    reply += data
                await client.aclose()
            return reply

        assert trio.run(main) == b"TRIO"
        server.close()


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError) as e:
        return type(e).__name__


@pytest.mark.parametrize("name", ["recv", "send", "sendall", "accept", "connect",
                                  "settimeout", "__init__", "dup", "__repr__"])
def test_the_dispatchers_read_as_the_methods(name: str) -> None:
    with loopstack.patch():
        pass  # (the dispatchers are on)
    method = getattr(socket.socket, name)
    original = _ORIGINAL[name]
    assert method is not original
    assert _signature(method) == _signature(original)
    assert method.__name__ == original.__name__ and method.__doc__ == original.__doc__


def test_makefile_is_the_stdlibs_own_and_holds_the_front() -> None:
    """makefile() is not dispatched: socket.socket's own runs on the front,
    so the file object holds the program's object (CPython's
    testMakefileCloseSocketDestroy counts its references) and every call it
    makes goes through the dispatchers."""
    with loopstack.patch():
        srv = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        before = sys.getrefcount(c)
        f = c.makefile("rwb")
        assert sys.getrefcount(c) == before + 1
        a.sendall(b"line\n")
        assert f.readline() == b"line\n"
        f.write(b"x")
        f.flush()
        assert a.recv(1) == b"x"
        f.close()
        assert sys.getrefcount(c) == before
        for s in (c, a, srv):
            s.close()
    assert "makefile" not in _ORIGINAL
    assert socket.socket.makefile.__module__ == "socket"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_childs_fronts_go_to_the_owner() -> None:
    """After a fork the child's objects are the same fronts, carried out by
    proxies of the owner's sockets (host/attach.py, host/remote.py)."""
    with loopstack.patch():
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                if type(client) is socket.socket and type(implementation(client)) is RemoteSocket:
                    dup = client.dup()
                    if type(dup) is socket.socket:
                        dup.sendall(b"child")
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
        for s in (client, conn, server):
            s.close()
