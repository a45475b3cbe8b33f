"""TLS over loopstack sockets fails and reports as it does over kernel
sockets (tls.py). Each scenario runs twice, the same code on the kernel's
loopback and under loopstack.patch(), and what the program can observe
(types, exception classes, OpenSSL reasons, messages, what the peer sees)
must be the same."""

from __future__ import annotations

import errno
import gc
import re
import select
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import loopstack

from .conftest import Certs


def both(scenario: Callable[[], Any]) -> tuple[Any, Any]:
    """What ``scenario`` returns on kernel sockets, and under the patch."""
    kernel = scenario()
    with loopstack.patch():
        emulated = scenario()
    return kernel, emulated


def same(scenario: Callable[[], Any]) -> Any:
    kernel, emulated = both(scenario)
    assert emulated == kernel
    return kernel


def describe(e: BaseException) -> tuple[Any, ...]:
    """An exception as a program tells it apart: its class, errno, OpenSSL
    library and reason, and its text without _ssl.c's source location."""
    text = re.sub(r"\s*\(_ssl\.c:\d+\)|^_ssl\.c:\d+: ", "", str(e))
    return (type(e).__name__, getattr(e, "errno", None), getattr(e, "library", None),
            getattr(e, "reason", None), text)


class Server:
    """A listener on 127.0.0.1 whose accepted connection ``handle`` gets in a
    thread; what it returns (or raises, described) is ``result``."""

    def __init__(self, handle: Callable[[socket.socket], Any]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.result: Any = None
        self._handle = handle
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        try:
            self.result = self._handle(conn)
        except Exception as e:  # noqa: BLE001 - the outcome is compared
            self.result = describe(e)
        finally:
            conn.close()

    def join(self) -> Any:
        self._thread.join(20)
        assert not self._thread.is_alive()
        self.listener.close()
        return self.result


def connect(address: Any) -> socket.socket:
    return socket.create_connection(address, timeout=10)


# -- what the object is ---------------------------------------------------------------
def test_an_sslsocket_with_its_attributes(certs: Certs) -> None:
    def scenario() -> Any:
        def serve(conn: socket.socket) -> Any:
            with certs.server_context().wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(100))
                return (type(tls) is ssl.SSLSocket, tls.server_side, tls.server_hostname,
                        tls.getpeercert())

        server = Server(serve)
        ctx = certs.client_context()
        raw = connect(server.address)
        timeout = raw.gettimeout()
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        seen = (type(tls) is ssl.SSLSocket, isinstance(tls, socket.socket), tls.context is ctx,
                tls.server_side, tls.server_hostname, tls.do_handshake_on_connect,
                tls.suppress_ragged_eofs, tls.gettimeout() == timeout, raw.fileno(),
                repr(tls).startswith("<ssl.SSLSocket fd="), tls.family, tls.type,
                tls.version(), tls.cipher()[1], tls.session is not None, tls.session_reused,
                tls.selected_alpn_protocol(), tls.compression(), tls.pending(),
                tls.getpeercert()["subjectAltName"][0], len(tls.get_channel_binding()))
        tls.sendall(b"echo")
        seen += (tls.recv(100),)
        tls.close()
        return seen, server.join()

    result = same(scenario)
    assert result[0][0] is True and result[1][0] is True


def test_the_contexts_sslsocket_class_is_used(certs: Certs) -> None:
    class MySSLSocket(ssl.SSLSocket):
        pass

    def scenario() -> Any:
        ctx = certs.client_context()
        ctx.sslsocket_class = MySSLSocket
        with ctx.wrap_socket(socket.socket(), server_hostname="localhost") as s:
            return type(s) is MySSLSocket, s.fileno() != -1, s._sslobj, s.version()

    assert same(scenario)[0] is True


def test_what_wrap_socket_refuses(certs: Certs) -> None:
    """SSLSocket._create's checks, and a connected non-blocking socket with
    do_handshake_on_connect, which closes the socket it made."""
    def scenario() -> Any:
        out = []
        server_ctx, client_ctx = certs.server_context(), certs.client_context()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                client_ctx.wrap_socket(udp, server_hostname="localhost")
            except NotImplementedError as e:
                out.append(describe(e))
        for ctx, kwargs in ((server_ctx, {"server_side": True, "server_hostname": "x"}),
                            (client_ctx, {}),
                            (server_ctx, {"server_side": True, "session": object()})):
            with socket.socket() as plain:
                try:
                    ctx.wrap_socket(plain, **kwargs)
                except ValueError as e:
                    out.append(describe(e))
                out.append(plain.fileno() != -1)  # the checks come before the takeover
        listener = socket.create_server(("127.0.0.1", 0))
        raw = connect(listener.getsockname())
        conn, _ = listener.accept()
        raw.setblocking(False)
        try:
            client_ctx.wrap_socket(raw, server_hostname="localhost")
        except ValueError as e:
            out.append(describe(e))
        conn.settimeout(10)
        out.append(conn.recv(10))  # closed: the peer sees the end at once
        conn.close()
        listener.close()
        return out

    out = same(scenario)
    assert out[-1] == b""


def test_type_checks_and_pickling(certs: Certs) -> None:
    def scenario() -> Any:
        import pickle

        with certs.client_context().wrap_socket(socket.socket(),
                                                server_hostname="localhost") as s:
            try:
                pickle.dumps(s)
            except TypeError as e:
                text = str(e)
            try:
                s.dup()
            except NotImplementedError as e:
                dup = describe(e)
            return text, dup, type(s).__mro__ == ssl.SSLSocket.__mro__

    same(scenario)


# -- failures --------------------------------------------------------------------------
def test_a_refused_certificate_on_both_ends(certs: Certs) -> None:
    """The client's CERTIFICATE_VERIFY_FAILED, the server's alert, and the
    client's socket closed by the failed wrap_socket."""
    def scenario() -> Any:
        def serve(conn: socket.socket) -> Any:
            certs.server_context().wrap_socket(conn, server_side=True)

        server = Server(serve)
        raw = connect(server.address)
        try:
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
            client = None
        except ssl.SSLCertVerificationError as e:
            client = describe(e) + (e.verify_code, e.verify_message)
        return client, raw.fileno(), server.join()

    client, fd, server = same(scenario)
    assert client[3] == "CERTIFICATE_VERIFY_FAILED" and fd == -1
    assert server[0] == "SSLError" and server[3] == "TLSV1_ALERT_UNKNOWN_CA"


def test_a_plain_text_client_and_a_dropped_socket(certs: Certs) -> None:
    """A client that speaks HTTP to a TLS server: the server's OpenSSL
    reason, and its socket, dropped after the failed handshake, closed so
    the client sees the end of the stream (a reset, since OpenSSL read
    only the first record's header of the request: the rest is unread)."""
    def scenario() -> Any:
        def serve(conn: socket.socket) -> Any:
            ctx = certs.server_context()
            try:
                ctx.wrap_socket(conn, server_side=True)
            except ssl.SSLError as e:
                return describe(e)  # the SSLSocket dropped here is closed, conn detached
            return None

        server = Server(serve)
        raw = connect(server.address)
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        got: Any = b""
        try:
            while chunk := raw.recv(1000):
                got += chunk
        except OSError as e:  # the rest of the request unread: a reset
            got = describe(e)
        raw.close()
        return got, server.join()

    got, server = same(scenario)
    assert server[0] == "SSLError" and server[3] == "HTTP_REQUEST"
    assert got[0] == "ConnectionResetError"


def test_a_reset_under_read_and_write(certs: Certs) -> None:
    """The peer resets the connection: _ssl's read and write say
    SSLEOFError with no OpenSSL reason (SSL_read_ex/SSL_write_ex report
    the failed recv/send as an EOF); with suppress_ragged_eofs, read gives
    b""; unwrap (SSL_shutdown) says ConnectionResetError."""
    def scenario() -> Any:
        out = []
        for op in ("read", "ragged read", "write", "unwrap"):
            done = threading.Event()

            def serve(conn: socket.socket, done: threading.Event = done) -> Any:
                tls = certs.server_context().wrap_socket(conn, server_side=True)
                tls.recv(10)  # the client's go: its handshake is complete
                tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                tls.close()  # RST
                done.set()

            server = Server(serve)
            tls = certs.client_context().wrap_socket(
                connect(server.address), server_hostname="localhost",
                suppress_ragged_eofs=op == "ragged read")
            tls.sendall(b"go")
            assert done.wait(10)
            server.join()
            try:
                if op.endswith("read"):
                    out.append(tls.recv(10))
                    out.append(tls.recv(10))
                elif op == "write":
                    for _ in range(100):  # the first may land before the reset is seen
                        tls.sendall(b"x" * 1000)
                else:
                    tls.unwrap()
            except OSError as e:
                out.append(describe(e))
            tls.close()
        return out

    out = same(scenario)
    assert out[0][0] == "SSLEOFError" and out[0][3] is None


@pytest.mark.parametrize("reset", [False, True])
def test_the_peer_leaves_during_the_handshake(certs: Certs, reset: bool) -> None:
    """A server that closes (or resets) instead of answering the
    ClientHello: UNEXPECTED_EOF_WHILE_READING, or the socket's own
    ConnectionResetError; the client's socket is closed either way."""
    def scenario() -> Any:
        listener = socket.create_server(("127.0.0.1", 0))
        raw = connect(listener.getsockname())
        conn, _ = listener.accept()
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        try:
            certs.client_context().wrap_socket(raw, server_hostname="localhost")
            out = None
        except OSError as e:
            out = describe(e)
        listener.close()
        return out, raw.fileno()

    out = same(scenario)
    assert out[0][0] == ("ConnectionResetError" if reset else "SSLEOFError")


def test_timeouts_say_which_operation(certs: Certs) -> None:
    def scenario() -> Any:
        out = []
        listener = socket.create_server(("127.0.0.1", 0))
        raw = connect(listener.getsockname())
        conn, _ = listener.accept()
        raw.settimeout(0.05)
        try:
            certs.client_context().wrap_socket(raw, server_hostname="localhost")
        except TimeoutError as e:
            out.append((describe(e), raw.fileno()))
        conn.close()

        def serve(conn: socket.socket) -> Any:
            with certs.server_context().wrap_socket(conn, server_side=True) as tls:
                return tls.recv(10)  # until the client goes

        server = Server(serve)
        tls = certs.client_context().wrap_socket(connect(server.address),
                                                 server_hostname="localhost")
        tls.settimeout(0.05)
        try:
            tls.recv(10)
        except TimeoutError as e:
            out.append(describe(e))
        tls.settimeout(10)
        tls.sendall(b"bye")
        out.append(server.join())
        tls.close()
        listener.close()
        return out

    out = same(scenario)
    assert out[0][0][4] == "The handshake operation timed out"
    assert out[1][4] == "The read operation timed out"


def test_closed_socket_errors(certs: Certs) -> None:
    def scenario() -> Any:
        def serve(conn: socket.socket) -> Any:
            with certs.server_context().wrap_socket(conn, server_side=True) as tls:
                return tls.recv(10)

        server = Server(serve)
        tls = certs.client_context().wrap_socket(connect(server.address),
                                                 server_hostname="localhost")
        tls.close()
        out: list[Any] = [server.join(), tls.fileno(), "[closed]" in repr(tls), tls._closed,
                          tls.version(), tls.cipher(), tls.pending(), tls._sslobj]
        for call in (lambda: tls.recv(1), lambda: tls.send(b"x"), tls.getpeername,
                     tls.getpeercert, lambda: tls.read(1), tls.unwrap, tls.do_handshake,
                     lambda: tls.settimeout(1)):
            try:
                out.append(call())
            except (OSError, ValueError, AttributeError) as e:
                out.append(describe(e))
        return out

    out = same(scenario)
    assert out[1] == -1 and out[8][1] == errno.EBADF


def test_collected_unclosed_warns_with_its_repr(certs: Certs) -> None:
    def scenario() -> Any:
        gc.collect()  # (what earlier tests left)
        s: Any = certs.client_context().wrap_socket(socket.socket(socket.AF_INET),
                                                    server_hostname="localhost")
        r = repr(s)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = None
            gc.collect()
        found = [str(w.message) for w in caught
                 if issubclass(w.category, ResourceWarning) and "SSLSocket" in str(w.message)]
        return len(found), bool(found) and r in found[0]

    assert same(scenario) == (1, True)


# -- non-blocking and readiness -------------------------------------------------------
def test_non_blocking_handshake_driven_by_select(certs: Certs) -> None:
    """do_handshake on non-blocking sockets raises SSLWantReadError (never
    anything else on loopback) until done, and select() on the sockets
    says when to call again; then a blocking recv never sees one."""
    def scenario() -> Any:
        listener = socket.create_server(("127.0.0.1", 0))
        raw = connect(listener.getsockname())
        conn, _ = listener.accept()
        client = certs.client_context().wrap_socket(raw, server_hostname="localhost",
                                                    do_handshake_on_connect=False)
        server = certs.server_context().wrap_socket(conn, server_side=True,
                                                    do_handshake_on_connect=False)
        client.setblocking(False)
        server.setblocking(False)
        pending = {client, server}
        raised = set()
        for _ in range(100):
            for s in list(pending):
                try:
                    s.do_handshake()
                    pending.discard(s)
                except ssl.SSLWantReadError as e:
                    raised.add((type(e).__name__, e.args[0]))
            if not pending:
                break
            readable, _, _ = select.select(list(pending), [], [], 10)
            assert readable
        client.setblocking(True)
        server.setblocking(True)
        server.sendall(b"after")
        got = client.recv(100)
        out = (sorted(raised), got, client.version(), server.version())
        client.close()
        server.close()
        listener.close()
        return out

    out = same(scenario)
    assert out[0] == [("SSLWantReadError", ssl.SSL_ERROR_WANT_READ)] and out[1] == b"after"


def test_pending_data_is_not_readable_to_select(certs: Certs) -> None:
    """What a record brought beyond the bytes asked for waits in the TLS
    object (pending()), not in the socket: select() does not see it."""
    def scenario() -> Any:
        def serve(conn: socket.socket) -> Any:
            with certs.server_context().wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"0123456789")
                return tls.recv(10)

        server = Server(serve)
        tls = certs.client_context().wrap_socket(connect(server.address),
                                                 server_hostname="localhost")
        first = tls.recv(4)
        out = (first, tls.pending(), select.select([tls], [], [], 0.05)[0] == [tls],
               tls.recv(100))
        tls.sendall(b"bye")
        out += (server.join(),)
        tls.close()
        return out

    assert same(scenario) == (b"0123", 6, False, b"456789", b"bye")


# -- TLS on and off, and callbacks --------------------------------------------------------
def test_unwrap_connect_and_sni_callback(certs: Certs) -> None:
    """A socket wrapped before it connects, connect_ex, unwrap back to
    clear text; the server's sni_callback gets the SSLSocket and the name."""
    def scenario() -> Any:
        seen: list[Any] = []

        def serve(conn: socket.socket) -> Any:
            ctx = certs.server_context()
            ctx.sni_callback = lambda obj, name, c: seen.append((type(obj) is ssl.SSLSocket,
                                                                 name, c is ctx))
            tls = ctx.wrap_socket(conn, server_side=True)
            data = tls.recv(10)
            plain = tls.unwrap()
            out = (data, plain is tls, plain.recv(10))
            plain.sendall(b"clear back")
            plain.close()
            return out

        server = Server(serve)
        tls = certs.client_context().wrap_socket(socket.socket(), server_hostname="localhost")
        before = (tls._sslobj, tls.version(), tls.getblocking())
        rc = tls.connect_ex(server.address)
        tls.sendall(b"tls")
        plain = tls.unwrap()
        plain.sendall(b"clear")
        out = (before, rc, plain is tls, tls._sslobj, tls.recv(100), server.join(), seen)
        tls.close()
        return out

    out = same(scenario)
    assert out[5] == (b"tls", True, b"clear") and out[6] == [(True, "localhost", True)]


def test_a_wrapper_of_a_socket_is_wrapped_through_its_descriptor(certs: Certs) -> None:
    """wrap_socket of an object that passes its calls to a socket (as
    CPython's asyncio test servers do) takes the descriptor and detaches
    the socket, as SSLSocket._create does with a kernel socket."""
    class Wrapper:
        def __init__(self, sock: socket.socket) -> None:
            self._sock = sock

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sock, name)

    def scenario() -> Any:
        def serve(conn: socket.socket) -> Any:
            with certs.server_context().wrap_socket(Wrapper(conn), server_side=True) as tls:
                tls.sendall(tls.recv(10))
                return type(tls) is ssl.SSLSocket, conn.fileno()

        server = Server(serve)
        with certs.client_context().wrap_socket(connect(server.address),
                                                server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            return tls.recv(10), server.join()

    assert same(scenario) == (b"ping", (True, -1))


@pytest.mark.parametrize("blocking", [True, False])
def test_makefile_over_tls(certs: Certs, blocking: bool) -> None:
    def scenario() -> Any:
        def serve(conn: socket.socket) -> Any:
            with certs.server_context().wrap_socket(conn, server_side=True) as tls:
                f = tls.makefile("rwb")
                line = f.readline()
                f.write(line.upper())
                f.flush()
                f.close()
                return line

        server = Server(serve)
        tls = certs.client_context().wrap_socket(connect(server.address),
                                                 server_hostname="localhost")
        tls.sendall(b"hello\n")
        if not blocking:
            select.select([tls], [], [], 10)
        f = tls.makefile("rb")
        tls.close()  # the file keeps the socket open
        out = (f.readline(), tls.fileno() != -1, server.join())
        f.close()
        return out

    assert same(scenario) == (b"HELLO\n", True, b"hello\n")
