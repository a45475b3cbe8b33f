"""Bridges between the host's real loopback and a stack (host/bridge.py):
``expose`` (real clients, virtual service) and ``forward`` (virtual
clients, real service). Real sockets here are the kernel's (the socket
module, unpatched); virtual ones are a plain Stack's. Every wait is bounded."""

from __future__ import annotations

import errno
import hashlib
import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import loopstack
from loopstack.host.bridge import CHUNK, parse_expose, parse_forward

WAIT = 10.0  # seconds: the bound on every wait in this file
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (bounded by WAIT): a state to reach, not a time to meet."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def recv_all(sock: Any) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def real_client(address: tuple[Any, ...], family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(address)
    return sock


class VirtualServer:
    """A server on the stack: each connection runs ``handler`` in a thread;
    what a handler returns or raises is kept in ``results``."""

    def __init__(self, stack: loopstack.Stack, handler: Callable[[Any], Any],
                 address: tuple[str, int] = ("127.0.0.1", 8080),
                 family: int = socket.AF_INET) -> None:
        self.listener = stack.create_server(address, family=family)
        self.handler = handler
        self.results: list[Any] = []
        self.conns: list[Any] = []
        self.threads: list[threading.Thread] = []
        self._start(self._accept_loop)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # the listener (or the stack) was closed
            conn.settimeout(WAIT)
            self.conns.append(conn)
            self._start(self._run, conn)

    def _run(self, conn: Any) -> None:
        try:
            self.results.append(self.handler(conn))
        except Exception as e:  # kept for the test to look at
            self.results.append(e)

    def result(self, count: int = 1) -> list[Any]:
        until(lambda: len(self.results) >= count, f"{count} server results")
        return self.results[:count]


def echo(conn: Any) -> int:
    total = 0
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
            total += len(data)
    return total


@pytest.fixture
def stack() -> Iterator[loopstack.Stack]:
    with loopstack.Stack() as st:
        yield st


@pytest.fixture
def echo_exposed(stack: loopstack.Stack) -> Any:
    VirtualServer(stack, echo)
    return stack.expose(8080, host_port=0)


# -- expose ------------------------------------------------------------------------------
def test_expose_carries_bytes_both_ways(echo_exposed: Any) -> None:
    host, port = echo_exposed.host_address
    assert host == "127.0.0.1" and port != 0
    assert echo_exposed.url == f"http://127.0.0.1:{port}/"
    with real_client(echo_exposed.host_address) as c:
        c.sendall(b"hello across the boundary")
        assert c.recv(100) == b"hello across the boundary"


def test_two_mebibytes_arrive_intact(echo_exposed: Any) -> None:
    payload = bytes(range(256)) * 8192
    with real_client(echo_exposed.host_address) as c:
        def write() -> None:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        got = recv_all(c)
        writer.join(WAIT)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_real_half_close_gets_the_answer_then_eof(stack: loopstack.Stack) -> None:
    """The real client's FIN reaches the virtual server as EOF (it answers
    only then), and the answer still flows back on the half-open connection."""
    def digest_at_eof(conn: Any) -> int:
        with conn:
            data = recv_all(conn)
            conn.sendall(f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())
        return len(data)

    server = VirtualServer(stack, digest_at_eof)
    payload = b"\x5a" * 1_000_000
    with stack.expose(8080, host_port=0) as exposure, real_client(exposure.host_address) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        answer = recv_all(c)  # the answer, then EOF
    assert answer.decode() == f"1000000 {hashlib.sha256(payload).hexdigest()}"
    assert server.result() == [1_000_000]


def test_virtual_server_closing_first_is_eof_for_the_real_client(
        stack: loopstack.Stack) -> None:
    def greet_and_close(conn: Any) -> None:
        conn.sendall(b"bye")
        conn.close()

    VirtualServer(stack, greet_and_close)
    with stack.expose(8080, host_port=0) as exposure, real_client(exposure.host_address) as c:
        assert recv_all(c) == b"bye"  # then EOF
        c.sendall(b"late")  # to a closed virtual socket: its RST comes back as one
        # (after a FIN, Linux reports an RST as a pending error, EPIPE, not to recv)
        until(lambda: c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EPIPE,
              "the relay's RST")
        until(lambda: exposure.connections == 0, "the relay to end")


def test_real_reset_after_half_close_reaches_the_virtual_server(
        stack: loopstack.Stack) -> None:
    """The real client sends its request, half-closes, then gives up with
    an RST while the virtual server is still thinking: the server's
    connection is reset at once, not when it next writes."""
    def read_to_eof(conn: Any) -> bytes:
        return recv_all(conn)  # and keep the connection open

    server = VirtualServer(stack, read_to_eof)
    with stack.expose(8080, host_port=0) as exposure:
        c = real_client(exposure.host_address)
        c.sendall(b"request")
        c.shutdown(socket.SHUT_WR)
        assert server.result() == [b"request"]
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        c.close()

        def reset() -> bool:
            return any(r["local"] == ("127.0.0.1", 8080) and r["state"] == "UNCONN"
                       for r in stack.sockets())

        until(reset, "the server's connection to be reset")
        with pytest.raises(BrokenPipeError):  # an RST in CLOSE-WAIT is EPIPE, as on Linux
            server.conns[0].sendall(b"too late")


def test_real_reset_resets_the_virtual_server(stack: loopstack.Stack) -> None:
    def read_until_error(conn: Any) -> Any:
        with conn:
            assert conn.recv(100) == b"x"
            conn.sendall(b"ok")
            return conn.recv(100)  # the real client's RST: ConnectionResetError

    server = VirtualServer(stack, read_until_error)
    with stack.expose(8080, host_port=0) as exposure:
        c = real_client(exposure.host_address)
        c.sendall(b"x")
        assert c.recv(100) == b"ok"
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        c.close()
        [outcome] = server.result()
    assert isinstance(outcome, ConnectionResetError), outcome


def test_virtual_reset_resets_the_real_client(stack: loopstack.Stack) -> None:
    def abort(conn: Any) -> None:
        conn.sendall(b"ok")
        assert conn.recv(100) == b"go"
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        conn.close()

    VirtualServer(stack, abort)
    with stack.expose(8080, host_port=0) as exposure, real_client(exposure.host_address) as c:
        assert c.recv(100) == b"ok"
        c.sendall(b"go")
        with pytest.raises(ConnectionResetError):
            c.recv(100)


def test_twenty_connections_at_once(echo_exposed: Any) -> None:
    clients = [real_client(echo_exposed.host_address) for _ in range(20)]
    try:
        for i, c in enumerate(clients):
            c.sendall(f"hello {i}".encode())
        for i, c in enumerate(clients):
            assert c.recv(100) == f"hello {i}".encode()
        assert echo_exposed.connections == 20
        payloads = [bytes([i]) * 100_000 for i in range(20)]
        results: dict[int, bytes] = {}

        def exchange(i: int) -> None:
            clients[i].sendall(payloads[i])
            clients[i].shutdown(socket.SHUT_WR)
            results[i] = recv_all(clients[i])

        threads = [threading.Thread(target=exchange, args=(i,), daemon=True) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert results == dict(enumerate(payloads))
    finally:
        for c in clients:
            c.close()
    until(lambda: echo_exposed.connections == 0, "every relay to end")


def test_a_slow_real_reader_stops_the_virtual_sender(stack: loopstack.Stack) -> None:
    """Backpressure: the real client does not read while the virtual server
    sends 8 MiB. The bridge holds at most a chunk per direction; the rest
    stays in bounded socket buffers, so the server's send queue fills and
    its sendall blocks until the client reads."""
    payload = bytes(range(256)) * (8 * 4096)
    sent = threading.Event()
    sndbuf: list[int] = []

    def flood(conn: Any) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sndbuf.append(conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        conn.settimeout(None)  # blocks for as long as the client does not read
        conn.sendall(payload)
        sent.set()
        conn.close()

    VirtualServer(stack, flood)
    with stack.expose(8080, host_port=0) as exposure:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.settimeout(WAIT)
        c.connect(exposure.host_address)
        until(lambda: bool(sndbuf), "the virtual server to start sending")

        def server_row() -> dict[str, Any]:
            return next(r for r in stack.sockets()
                        if r["local"] == ("127.0.0.1", 8080) and r["state"] == "ESTAB")

        until(lambda: server_row()["send_q"] >= sndbuf[0], "the server's send queue to fill")
        assert not sent.is_set()  # sendall is blocked: nobody took the rest
        assert exposure.in_flight <= 2 * CHUNK
        bridge_row = next(r for r in stack.sockets() if r["peer"] == ("127.0.0.1", 8080))
        assert bridge_row["recv_q"] <= 1 << 20  # bounded by the bridge's SO_RCVBUF
        got = recv_all(c)
        c.close()
    assert sent.wait(WAIT)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_host_port_taken_is_eaddrinuse(stack: loopstack.Stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:
            stack.expose(8080, host_port=port)
    assert info.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{port} on the host is already in use" in str(info.value)
    assert stack._bridges == ()
    with socket.create_server(("127.0.0.1", port)):  # ours was closed: nothing kept it
        pass


def test_ipv6(stack: loopstack.Stack) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("the host has no ::1")
    VirtualServer(stack, echo, address=("::1", 8080), family=socket.AF_INET6)
    with stack.expose(8080, host="::1", host_port=0) as exposure:
        assert exposure.address == "::1"
        assert exposure.url.startswith("http://[::1]:")
        with real_client(exposure.host_address, socket.AF_INET6) as c:
            c.sendall(b"six")
            assert c.recv(100) == b"six"


def test_no_virtual_service_resets_and_the_bridge_goes_on(stack: loopstack.Stack) -> None:
    with stack.expose(8080, host_port=0) as exposure:
        with real_client(exposure.host_address) as c:
            with pytest.raises(ConnectionResetError):
                c.recv(100)
        VirtualServer(stack, echo)
        with real_client(exposure.host_address) as c:
            c.sendall(b"now")
            assert c.recv(100) == b"now"


def test_close_resets_relays_and_stops_listening(echo_exposed: Any,
                                                stack: loopstack.Stack) -> None:
    c = real_client(echo_exposed.host_address)
    c.sendall(b"x")
    assert c.recv(100) == b"x"
    echo_exposed.close()
    echo_exposed.close()  # idempotent
    with c, pytest.raises(ConnectionResetError):
        c.recv(100)
    assert echo_exposed.connections == 0
    with pytest.raises(ConnectionRefusedError):
        real_client(echo_exposed.host_address)
    assert stack._bridges == ()


def test_stack_close_closes_its_bridges() -> None:
    stack = loopstack.Stack()
    exposure = stack.expose(8080, host_port=0)
    stack.close()
    with pytest.raises(ConnectionRefusedError):
        real_client(exposure.host_address)
    with pytest.raises(ValueError, match="the stack is closed"):
        stack.expose(8080, host_port=0)


def test_a_wildcard_host_warns_every_time(stack: loopstack.Stack,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        with stack.expose(8080, host="0.0.0.0", host_port=0) as exposure:
            port = exposure.host_address[1]
        err = capsys.readouterr().err
        assert err == (f"loopstack: warning: virtual 127.0.0.1:8080 is exposed on "
                       f"0.0.0.0:{port}, reachable from other machines\n")
    with stack.expose(8080, host_port=0):
        assert capsys.readouterr().err == ""


def test_expose_under_patch_still_listens_on_the_host(stack: loopstack.Stack) -> None:
    """Inside a patched program the bridge's sockets are still the kernel's."""
    VirtualServer(stack, echo)
    c = socket.socket()  # made before the patch: a kernel socket
    c.settimeout(WAIT)
    with c, loopstack.patch(stack), stack.expose(8080, host_port=0) as exposure:
        assert not any(r["local"] == exposure.host_address for r in stack.sockets())
        c.connect(exposure.host_address)
        c.sendall(b"real")
        assert c.recv(100) == b"real"


# -- forward -----------------------------------------------------------------------------
def test_forward_reaches_a_real_service(stack: loopstack.Stack, real_echo: Any) -> None:
    with stack.forward(5432, to=real_echo.address) as fwd:
        assert fwd.target[:2] == real_echo.address
        c = stack.create_connection(("127.0.0.1", 5432), timeout=WAIT)
        with c:
            c.sendall(b"select 1")
            assert c.recv(100) == b"select 1"
            payload = bytes(range(256)) * 4000
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)  # the real service sees EOF, echoes, closes
            assert hashlib.sha256(recv_all(c)).digest() == hashlib.sha256(payload).digest()


def test_forward_under_patch_with_unmodified_stdlib(stack: loopstack.Stack) -> None:
    """A real http.server on the host; http.client under patch reaches it
    through virtual 127.0.0.1:8000."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = b"real page for " + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    real = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    serving = threading.Thread(target=real.serve_forever, kwargs={"poll_interval": 0.05},
                               daemon=True)
    serving.start()
    try:
        with loopstack.patch(stack):
            stack.forward(8000, to=real.server_address[:2])  # type: ignore[arg-type]
            conn = http.client.HTTPConnection("127.0.0.1", 8000, timeout=WAIT)
            conn.request("GET", "/db")
            assert isinstance(conn.sock, loopstack.socket.Socket)  # type: ignore[attr-defined]
            response = conn.getresponse()
            body = response.read()
            conn.close()
        assert (response.status, body) == (200, b"real page for /db")
    finally:
        real.shutdown()
        real.server_close()
        serving.join(WAIT)


def test_unreachable_target_is_econnrefused(stack: loopstack.Stack,
                                            free_port: Callable[..., int]) -> None:
    port = free_port()
    with pytest.raises(OSError) as info:
        stack.forward(5432, to=("127.0.0.1", port))
    assert info.value.errno == errno.ECONNREFUSED
    assert f"cannot reach 127.0.0.1:{port} on the host" in str(info.value)
    assert "start the service there" in str(info.value)
    with pytest.raises(ConnectionRefusedError):  # nothing listens on the virtual port
        stack.create_connection(("127.0.0.1", 5432), timeout=WAIT)
    assert stack._bridges == ()


def test_a_target_gone_later_resets_the_virtual_client(stack: loopstack.Stack,
                                                        real_echo: Any) -> None:
    fwd = stack.forward(5432, to=real_echo.address)
    real_echo.close()  # the service stops after forward() checked it
    with stack.create_connection(("127.0.0.1", 5432), timeout=WAIT) as c:
        with pytest.raises(ConnectionResetError):
            c.recv(100)
    until(lambda: fwd.connections == 0, "the relay to end")


def test_real_service_reset_resets_the_virtual_client(stack: loopstack.Stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as real:
        real.settimeout(WAIT)
        stack.forward(5432, to=real.getsockname()[:2])
        probe, _ = real.accept()  # forward()'s check
        probe.close()
        with stack.create_connection(("127.0.0.1", 5432), timeout=WAIT) as c:
            conn, _ = real.accept()
            c.sendall(b"q")
            assert conn.recv(1) == b"q"
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            conn.close()
            with pytest.raises(ConnectionResetError):
                c.recv(100)


# -- specs -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,parsed", [
    ("8080", (8080, "127.0.0.1", 8080)),
    ("8080:0", (8080, "127.0.0.1", 0)),
    ("8080:9090", (8080, "127.0.0.1", 9090)),
    ("8080:0.0.0.0:8080", (8080, "0.0.0.0", 8080)),
    ("8080:[::1]:0", (8080, "::1", 0)),
    ("8080:localhost:80", (8080, "localhost", 80)),
])
def test_expose_specs(spec: str, parsed: tuple[int, str, int]) -> None:
    assert parse_expose(spec) == parsed


@pytest.mark.parametrize("spec", ["", "x", "0", "8080:", "8080:x", "8080:70000",
                                  "70000:80", "8080:[]:80", "-1:80"])
def test_bad_expose_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="write VPORT, VPORT:HOSTPORT or VPORT:HOST:HOSTPORT"):
        parse_expose(spec)


def test_forward_specs() -> None:
    assert parse_forward("5432:127.0.0.1:5432") == (5432, "127.0.0.1", 5432)
    assert parse_forward("5432:[::1]:6543") == (5432, "::1", 6543)
    for bad in ("5432", "5432:5432", "5432:host:", "x:h:1", "5432:h:0", ":h:1"):
        with pytest.raises(ValueError, match="write VPORT:HOST:PORT"):
            parse_forward(bad)
