"""ssl.SSLContext.wrap_socket on loopstack sockets (tls.py): what code that
uses the ssl module's sockets directly relies on."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loopstack
from loopstack.tls import TLSSocket

from .conftest import Certs


@pytest.fixture
def tls_pair(certs: Certs) -> Iterator[tuple[Any, Any, socket.socket]]:
    """A TLS client and the server's accepted TLS socket (handshake done),
    both blocking, over a patched stack; and the plain listening socket."""
    with loopstack.patch():
        listener = socket.create_server(("127.0.0.1", 0))
        server_ctx = certs.server_context()
        accepted: list[Any] = []

        def accept() -> None:
            conn, _ = listener.accept()
            accepted.append(server_ctx.wrap_socket(conn, server_side=True))

        t = threading.Thread(target=accept)
        t.start()
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        client = certs.client_context().wrap_socket(raw, server_hostname="localhost")
        t.join(10)
        yield client, accepted[0], listener
        client.close()
        accepted[0].close()
        listener.close()


def test_what_a_tls_socket_reports(tls_pair: tuple[Any, Any, socket.socket]) -> None:
    client, server, _ = tls_pair
    assert isinstance(client, TLSSocket) and isinstance(server, TLSSocket)
    assert type(client) is ssl.SSLSocket and type(server) is ssl.SSLSocket  # the real class
    assert client.version() == server.version() == "TLSv1.3"
    assert client.cipher() == server.cipher()
    assert ("DNS", "localhost") in client.getpeercert()["subjectAltName"]
    assert client.getpeercert(binary_form=True)[:1] == b"\x30"  # DER
    assert server.getpeercert() is None  # the client showed no certificate
    assert client.getpeername() == server.getsockname()
    client.sendall(b"x" * 100_000)
    got = b""
    while len(got) < 100_000:
        got += server.recv(65536)
    assert got == b"x" * 100_000


def test_makefile_and_sendfile(tls_pair: tuple[Any, Any, socket.socket], tmp_path: Path) -> None:
    client, server, _ = tls_pair
    blob = os.urandom(200_000)
    (tmp_path / "blob").write_bytes(blob)
    with open(tmp_path / "blob", "rb") as f:
        assert server.sendfile(f, offset=1000) == len(blob) - 1000
    reader = client.makefile("rb")
    assert reader.read(len(blob) - 1000) == blob[1000:]
    writer = server.makefile("w", encoding="ascii")
    writer.write("line one\nline two\n")
    writer.flush()
    assert reader.readline() == b"line one\n"
    assert reader.readline() == b"line two\n"
    reader.close()
    writer.close()


def test_unwrap_back_to_plain_text(tls_pair: tuple[Any, Any, socket.socket]) -> None:
    """STARTTLS in reverse (as ftplib's CCC does): both sides shut TLS down
    and keep talking in the clear over the same connection."""
    client, server, _ = tls_pair
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(server.unwrap()))
    t.start()
    assert client.unwrap() is client  # as SSLSocket.unwrap: the same object, in the clear
    t.join(10)
    assert done == [server]
    client.sendall(b"in the clear")
    assert server.recv(100) == b"in the clear"
    assert client._sslobj is None
    with pytest.raises(ValueError):
        client.read(10)
    with pytest.raises(ValueError):
        client.unwrap()


def test_non_blocking_tls_loses_nothing_when_buffers_fill(
        tls_pair: tuple[Any, Any, socket.socket]) -> None:
    """A non-blocking writer that outruns its reader: send() raises
    SSLWantWriteError when no room is left, and every byte it accepted
    arrives, in order, once the reader catches up."""
    client, server, _ = tls_pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # small, so they fill
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    server.setblocking(False)
    client.setblocking(False)
    payload = os.urandom(3_000_000)
    sent, received, blocked = 0, bytearray(), 0
    while len(received) < len(payload):
        while sent < len(payload):  # the writer runs ahead until it is stopped
            try:
                sent += server.send(payload[sent : sent + 65536])
            except ssl.SSLWantWriteError:
                blocked += 1
                break
        try:
            received += client.recv(16384)
        except ssl.SSLWantReadError:
            pass
    assert blocked > 0  # the buffers did fill
    assert bytes(received) == payload


def test_data_behind_the_handshake_stays_visible_to_select(certs: Certs) -> None:
    """A select()-driven server (asyncore style, as CPython's poplib and
    smtplib test servers are) finishes its handshake when the client's last
    handshake message and its first request have both arrived. The request
    must still make the socket readable: TLS reads one record at a time, as
    OpenSSL does from a kernel socket, instead of swallowing it."""
    import select

    with loopstack.patch():
        listener = socket.create_server(("127.0.0.1", 0))
        client_done = threading.Event()

        def client() -> None:
            raw = socket.create_connection(listener.getsockname(), timeout=10)
            tls = certs.client_context().wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"CAPA\r\n")  # right behind the handshake's Finished
            client_done.set()
            assert tls.recv(100) == b"+OK\r\n"
            tls.close()

        t = threading.Thread(target=client)
        t.start()
        conn, _ = listener.accept()
        conn.setblocking(False)
        server = certs.server_context().wrap_socket(conn, server_side=True,
                                                    do_handshake_on_connect=False)
        while True:
            try:
                server.do_handshake()
                break
            except ssl.SSLWantReadError:
                # Once our flight is out, the client answers with Finished and
                # the request back to back: wait for both before reading on.
                client_done.wait(0.2)
        assert client_done.wait(5)
        readable, _, _ = select.select([server], [], [], 2)
        assert readable == [server], "the request was read with the handshake and hidden"
        assert server.recv(100) == b"CAPA\r\n"
        server.setblocking(True)
        server.sendall(b"+OK\r\n")
        t.join(5)
        server.close()
        listener.close()


def test_a_refused_certificate_reaches_the_server_as_an_alert(certs: Certs) -> None:
    """The client refuses the server's certificate and keeps its socket
    open: the server learns it from the client's alert at once, as with
    OpenSSL on kernel sockets (CPython's imaplib tests rely on it), instead
    of waiting for a handshake message that never comes."""
    with loopstack.patch():
        listener = socket.create_server(("127.0.0.1", 0))
        outcome: list[BaseException | None] = []

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(5)
            try:
                certs.server_context().wrap_socket(conn, server_side=True)
                outcome.append(None)
            except (ssl.SSLError, OSError) as e:
                outcome.append(e)
            conn.close()

        t = threading.Thread(target=serve)
        t.start()
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
        t.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], ssl.SSLError), outcome
        assert "UNKNOWN_CA" in str(outcome[0]).upper()
        raw.close()
        listener.close()
