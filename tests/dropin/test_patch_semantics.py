"""What loopstack.patch intercepts and what it leaves alone: AF_UNIX stays
real, the world outside the stack is unreachable, unknown names are unknown
without a DNS query, everything comes back on exit, patches nest, names
imported before the patch are caught, and threads may patch concurrently."""

from __future__ import annotations

import errno
import importlib
import os
import socket
import ssl
import threading
from pathlib import Path
from socket import socket as imported_early  # bound before any patch

import pytest
import requests

import loopstack
from loopstack import sendfile as lsf
from loopstack.socket import Socket

from .conftest import KernelLog, watch_kernel

patch_module = importlib.import_module("loopstack.patch")

ORIGINALS = {name: getattr(socket, name) for name in (
    "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
    "getfqdn", "create_connection", "create_server", "socketpair")}
WRAP_SOCKET = ssl.SSLContext.wrap_socket


def assert_unpatched() -> None:
    assert "__new__" not in socket.socket.__dict__
    for name, fn in ORIGINALS.items():
        assert getattr(socket, name) is fn, name
    assert ssl.SSLContext.wrap_socket is WRAP_SOCKET
    assert patch_module.current() is None
    with socket.socket() as s:
        assert type(s) is socket.socket


def test_unix_sockets_and_socketpair_stay_real(kernel: KernelLog, tmp_path: Path) -> None:
    with loopstack.patch():
        a, b = socket.socketpair()
        with a, b:
            assert type(a) is socket.socket and a.family == socket.AF_UNIX
            a.sendall(b"ping")
            assert b.recv(4) == b"ping"
        path = str(tmp_path / "sock")
        with socket.socket(socket.AF_UNIX) as server:
            assert type(server) is socket.socket
            server.bind(path)
            server.listen()
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"over unix")
                    assert conn.recv(9) == b"over unix"
        inet = socket.socket()
        assert isinstance(inet, Socket)
        inet.close()
    assert kernel.unix_sockets() >= 4


@pytest.mark.parametrize("family,address", [
    (socket.AF_INET, ("192.0.2.1", 80)),  # TEST-NET-1 (RFC 5737): no route on the stack
    (socket.AF_INET6, ("2001:db8::1", 80)),  # the IPv6 documentation prefix (RFC 3849)
])
def test_outside_the_stack_is_unreachable(kernel: KernelLog, family: int,
                                          address: tuple[str, int]) -> None:
    with loopstack.patch() as stack:
        with pytest.raises(OSError) as e:
            socket.create_connection(address, timeout=2)
        assert e.value.errno == errno.ENETUNREACH
        with socket.socket(family, socket.SOCK_DGRAM) as u, pytest.raises(OSError) as e:
            u.sendto(b"x", address)
        assert e.value.errno == errno.ENETUNREACH
        out = stack.stats()["Ip" if family == socket.AF_INET else "Ip6"]
        assert out["OutNoRoutes"] >= 2
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://{address[0] if family == socket.AF_INET else '[2001:db8::1]'}/",
                         timeout=2)


def test_unknown_names_fail_without_dns(kernel: KernelLog) -> None:
    with loopstack.patch() as stack:
        with pytest.raises(socket.gaierror) as e:
            socket.getaddrinfo("www.example.com", 80)
        assert e.value.errno == socket.EAI_NONAME
        with pytest.raises(socket.gaierror):
            socket.gethostbyname("no-such-host.invalid")
        with pytest.raises(socket.gaierror):
            socket.create_connection(("www.python.org", 443), timeout=2)
        with pytest.raises(requests.exceptions.ConnectionError, match="NameResolutionError|"
                           "Failed to resolve|Name or service not known"):
            requests.get("http://www.example.com/", timeout=2)
        # The stack's own hosts table answers.
        stack.hosts["db.test"] = ["127.0.0.9"]
        assert socket.gethostbyname("db.test") == "127.0.0.9"
        assert socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4] == ("127.0.0.1", 80)
        assert socket.getfqdn() == "localhost"
    # The kernel fixture checks that no name reached the system resolver.
    assert not [e for e in kernel.events if "gethost" in e[0] or "getaddrinfo" in e[0]]


def test_everything_restored_on_exit() -> None:
    assert_unpatched()
    with loopstack.patch():
        assert "__new__" in socket.socket.__dict__
        assert socket.getaddrinfo is not ORIGINALS["getaddrinfo"]
        assert ssl.SSLContext.wrap_socket is not WRAP_SOCKET
    assert_unpatched()
    with pytest.raises(RuntimeError), loopstack.patch():
        raise RuntimeError("the patch must come off on the way out")
    assert_unpatched()


def test_an_own_stack_is_closed_a_given_one_is_not() -> None:
    with loopstack.patch() as own:
        pass
    assert own._closed
    given = loopstack.Stack()
    with loopstack.patch(given) as st:
        assert st is given
    assert not given._closed
    given.close()


def test_nesting_inner_wins_outer_restored() -> None:
    outer, inner = loopstack.Stack(), loopstack.Stack()
    inner.hosts["only-inner.test"] = ["127.0.0.5"]
    with loopstack.patch(outer):
        a = socket.socket()
        assert a.stack is outer
        with loopstack.patch(inner):
            b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            assert b.stack is inner
            assert socket.gethostbyname("only-inner.test") == "127.0.0.5"
        c = socket.socket()
        assert c.stack is outer
        with pytest.raises(socket.gaierror):
            socket.gethostbyname("only-inner.test")
        for s in (a, b, c):
            s.close()
    assert_unpatched()
    outer.close()
    inner.close()


def test_names_imported_before_the_patch_are_intercepted() -> None:
    with watch_kernel() as log, loopstack.patch() as stack:
        s = imported_early(socket.AF_INET, socket.SOCK_STREAM)
        assert isinstance(s, Socket) and s.stack is stack
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert stack.sockets()[0]["state"] == "LISTEN"
        s.close()
    assert log.inet() == []
    with imported_early() as real:
        assert type(real) is socket.socket


def test_threads_entering_and_leaving_patches() -> None:
    """Two threads each enter and leave their own patch 200 times. A patch
    is process-wide, so a socket may land on either thread's stack; what
    must hold is that while a thread's patch is active every socket it makes
    is a loopstack one, that nothing raises, and that all is restored."""
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        try:
            start.wait()
            for _ in range(200):
                with loopstack.patch():
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    assert isinstance(s, Socket), type(s)
                    s.close()
                    assert isinstance(socket.getaddrinfo("localhost", 1), list)
        except BaseException as e:  # noqa: B036 - reported below
            errors.append(e)

    with watch_kernel() as log:
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    assert log.inet() == []
    assert_unpatched()


def test_tls_wrap_of_a_kernel_socket_stays_the_kernels() -> None:
    """Under the patch SSLContext.wrap_socket hands loopstack sockets to
    tls.py and any other socket to the ssl module, unchanged."""
    ctx = ssl.create_default_context()
    with loopstack.patch():
        a, b = socket.socketpair()
        with a, b:
            wrapped = ctx.wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
            assert isinstance(wrapped, ssl.SSLSocket)
            wrapped.close()


def test_sendfile_and_the_descriptor(tmp_path: Path) -> None:
    """Under the patch os.sendfile on a loopstack descriptor sends the file
    (sendfile.py), and socket.sendfile takes that path; the real
    os.sendfile refuses the descriptor (readiness.py: O_APPEND) with EINVAL
    instead of pouring the file into a descriptor that carries no data."""
    blob = os.urandom(100_000)
    (tmp_path / "blob").write_bytes(blob)
    with loopstack.patch():
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with open(tmp_path / "blob", "rb") as f:
            assert os.sendfile is not lsf._REAL
            assert os.sendfile(client.fileno(), f.fileno(), 0, 1000) == 1000
            assert f.tell() == 0  # an offset given: the position stays
            assert lsf._REAL is not None
            with pytest.raises(OSError) as e:
                lsf._REAL(client.fileno(), f.fileno(), 0, 1000)
            assert e.value.errno == errno.EINVAL
            assert client.sendfile(f, 1000) == len(blob) - 1000
            assert f.tell() == len(blob)
        client.close()
        got = b""
        while data := conn.recv(65536):
            got += data
        assert got == blob
        conn.close()
        server.close()
    assert os.sendfile is lsf._REAL  # the patch's end restores it
