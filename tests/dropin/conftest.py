"""Shared pieces of the drop-in tests: unmodified code (the standard
library's servers and clients, requests, aiohttp, websockets) running on a
stack through ``loopstack.patch``.

Proof that nothing reached the real network comes from the interpreter
itself: CPython raises an audit event (PEP 578) whenever its C socket module
creates a socket, connects, binds or asks the system resolver. ``kernel``
records those events while a test runs; a drop-in test asserts that none of
them concerned an Internet socket or a name lookup. loopstack's sockets and
lookups raise the same events (as a program on the kernel sees them);
``loopstack_event()`` is true while loopstack raises one, and the socket in
a socket event is then a loopstack socket (its implementation is one): those
are left out.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loopstack.passthrough import PassthroughSocket
from loopstack.readiness import making
from loopstack.socket import Socket, implementation, loopstack_event

_INET = (socket.AF_INET, socket.AF_INET6)
_RESOLVER_EVENTS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                    "socket.getnameinfo"}


class KernelLog:
    """Audit events of the kernel's socket module, from every thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def record(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.__new__":
            self.events.append((event, tuple(args[1:])))  # family, type, proto
        elif event in _RESOLVER_EVENTS:
            self.events.append((event, tuple(args)))
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            self.events.append((event, (args[1],) if len(args) > 1 else ()))

    def inet(self) -> list[tuple[str, tuple[Any, ...]]]:
        """What reached the network side of the kernel: Internet sockets
        made, addresses connected to or bound (not AF_UNIX paths), names
        asked of the system resolver."""
        out = []
        for event, args in self.events:
            if event == "socket.__new__" and args[0] in _INET:
                out.append((event, args))
            elif event in _RESOLVER_EVENTS:
                out.append((event, args))
            elif event != "socket.__new__" and args and isinstance(args[0], tuple):
                out.append((event, args))
        return out

    def unix_sockets(self) -> int:
        return sum(1 for e, a in self.events if e == "socket.__new__" and a[0] == socket.AF_UNIX)


_watching: KernelLog | None = None


def _loopstacks(event: str, args: tuple[Any, ...]) -> bool:
    """An event loopstack raised, for one of its sockets or lookups."""
    if not loopstack_event():
        return False
    if event in _RESOLVER_EVENTS or event in ("socket.gethostname", "socket.__new__"):
        return True  # (socket.__new__ comes before the loopstack socket is made)
    # (A passthrough socket is a loopstack socket until it turns real.)
    return bool(args) and isinstance(implementation(args[0]), (Socket, PassthroughSocket))


def _audit(event: str, args: tuple[Any, ...]) -> None:
    log = _watching
    # (A TCP socket's readiness descriptor is a kernel TCP pair on 127.0.0.1
    # that carries none of the program's traffic: readiness.py.)
    if log is not None and event.startswith("socket.") and not making() and \
            not _loopstacks(event, args):
        log.record(event, args)


sys.addaudithook(_audit)  # hooks cannot be removed: this one is idle unless watching


@contextmanager
def watch_kernel() -> Iterator[KernelLog]:
    global _watching
    log = KernelLog()
    _watching = log
    try:
        yield log
    finally:
        _watching = None


@pytest.fixture
def kernel() -> Iterator[KernelLog]:
    """The kernel socket module's audit log for this test; the test fails
    if an Internet socket or a name lookup reached the kernel."""
    with watch_kernel() as log:
        yield log
    assert log.inet() == [], "the kernel's socket module was used for the network"


def real_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether the host's real loopback can bind ``port`` now (a kernel socket,
    made through _socket so that no patch can intercept it)."""
    import _socket

    global _watching
    log, _watching = _watching, None  # the test's own probe is not a leak
    s = _socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()
        _watching = log


# -- certificates -----------------------------------------------------------------
class Certs:
    def __init__(self) -> None:
        import trustme

        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1", "::1")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture(scope="session")
def certs() -> Certs:
    """A CA made for this run and a certificate for localhost it signed (trustme)."""
    return Certs()


# -- an HTTP server of the standard library, in a thread ------------------------------
class EchoHandler(BaseHTTPRequestHandler):
    """Answers with JSON describing the request it got."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = json.dumps({
            "method": self.command, "path": self.path, "body": body.decode(),
            "client": list(self.client_address[:2]),
            "tls": getattr(self.connection, "version", lambda: None)(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    """Keeps the errors of its handler threads instead of printing them."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.errors: list[BaseException] = []
        self.closing = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not self.closing and exc is not None:
            self.errors.append(exc)


@contextmanager
def http_server(wrap: Callable[[socket.socket], Any] | None = None,
                expect_errors: bool = False) -> Iterator[RecordingServer]:
    """http.server's ThreadingHTTPServer on 127.0.0.1 (an ephemeral port),
    serving EchoHandler from a thread; ``wrap`` may replace its listening
    socket (TLS). Errors in handlers fail the test unless expected; those
    after the server is shut down (a kept-alive connection that the stack's
    closing ends) are ignored."""
    server = RecordingServer(("127.0.0.1", 0), EchoHandler)
    if wrap is not None:
        server.socket = wrap(server.socket)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing = True
        server.shutdown()
        server.server_close()
        thread.join(5)
    if not expect_errors:
        assert server.errors == []
