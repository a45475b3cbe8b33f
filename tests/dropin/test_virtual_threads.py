"""Virtual time with threads: on a virtual clock, blocking calls in several
threads (a ThreadingHTTPServer and its handlers, client threads) move the
clock only when every thread is blocked, so threaded programs get virtual
time as asyncio programs do (loopstack.aio): a slow network costs no wall
time and one seed repeats a run.

Every scenario runs under ``bounded``: if virtual time ever stopped moving
the test would fail after a real-time limit instead of hanging."""

from __future__ import annotations

import asyncio
import http.client
import selectors
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

import loopstack
import loopstack.aio

pytest_plugins = ["pytester"]

T = TypeVar("T")
LIMIT = 60.0  # real seconds any scenario may take before it counts as hung


def bounded(stack: loopstack.Stack, fn: Callable[[], T], limit: float = LIMIT) -> T:
    """fn() in a thread; if it has not returned within ``limit`` real
    seconds, close the stack (which ends every blocked call) and fail."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        stack.close()
        thread.join(10)
        pytest.fail(f"virtual time stopped moving: still running after {limit} s")
    if errors:
        raise errors[0]
    return out[0]


class Handler(BaseHTTPRequestHandler):
    """Answers a GET with its path. No Date header: the bytes of a run
    depend on virtual time only."""

    protocol_version = "HTTP/1.0"  # a connection per request

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return "Thu, 01 Jan 1970 00:00:00 GMT"

    def version_string(self) -> str:
        return "loopstack-test"

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def http_server(stack: loopstack.Stack) -> Iterator[int]:
    """http.server's ThreadingHTTPServer on the stack, serving from a thread; its port."""
    with loopstack.patch(stack):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def get(port: int, path: str, timeout: float = 30) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        conn.close()


def http_requests(stack: loopstack.Stack, count: int) -> float:
    """``count`` requests, one after the other; the virtual seconds they took."""
    with http_server(stack) as port:
        def client() -> float:
            start = stack.now()
            with loopstack.patch(stack):
                for i in range(count):
                    assert get(port, f"/{i}") == f"/{i}".encode()
            return stack.now() - start
        return bounded(stack, client)


def test_threaded_http_server_with_200ms_delay_costs_no_wall_time() -> None:
    """The issue's figure: 100 requests to a ThreadingHTTPServer through
    ``delay 200ms`` on lo. Each costs a handshake (SYN, SYN-ACK: 400 ms) and
    a request and its response (400 ms), so 80 s of virtual time; the wall
    time is printed (benchmarks/bench_virtual_threads.py measures it)."""
    stack = loopstack.Stack(clock="virtual", seed=1)
    stack.lo.netem("delay 200ms")
    wall = time.perf_counter()
    elapsed = http_requests(stack, 100)
    wall = time.perf_counter() - wall
    print(f"100 requests: {elapsed:.3f} s of virtual time in {wall:.3f} s of wall time")
    assert elapsed >= 100 * 0.4
    assert elapsed == pytest.approx(80.0, abs=1e-6)  # no jump ever outran a thread
    assert stack.stats()["Tcp"]["RetransSegs"] == 0
    stack.close()


def _traced_run(seed: int, pcap: Path) -> tuple[bytes, float]:
    stack = loopstack.Stack(clock="virtual", seed=seed)
    stack.lo.netem("delay 50ms loss 5%")
    with stack.capture(str(pcap)):
        elapsed = http_requests(stack, 20)
    stack.close()
    return pcap.read_bytes(), elapsed


def test_same_seed_same_capture(tmp_path: Path) -> None:
    """A server thread, a handler thread per request and the client: the
    same seed gives the same packets at the same virtual times, byte for
    byte, losses and retransmissions included."""
    first, t1 = _traced_run(5, tmp_path / "a.pcap")
    again, t2 = _traced_run(5, tmp_path / "b.pcap")
    other, _ = _traced_run(6, tmp_path / "c.pcap")
    assert first == again and t1 == t2
    assert other != first


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(1000):
                self.request.sendall(data)
        except OSError:  # the test closed the stack before the client's FIN arrived
            pass


@contextmanager
def echo_server(stack: loopstack.Stack,
                handler: type[socketserver.BaseRequestHandler] = Echo) -> Iterator[int]:
    """socketserver.ThreadingTCPServer on the stack, serving from a thread; its port."""
    with loopstack.patch(stack):
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_client_threads_wait_together() -> None:
    """Four client threads, ten round trips each over 100 ms each way: they
    wait at the same time, so the whole run takes one client's virtual
    time (a 200 ms handshake and ten 200 ms round trips), not four."""
    stack = loopstack.Stack(clock="virtual", seed=2)
    stack.lo.netem("delay 100ms")
    with echo_server(stack) as port:
        def clients() -> tuple[list[float], float]:
            times: list[float] = []
            start = stack.now()

            def client(n: int) -> None:
                t0 = stack.now()
                with stack.create_connection(("127.0.0.1", port), timeout=30) as c:
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for i in range(10):
                        message = b"client %d round %d" % (n, i)
                        c.sendall(message)
                        assert c.recv(100) == message
                times.append(stack.now() - t0)

            threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return times, stack.now() - start

        times, total = bounded(stack, clients)
    assert times == [pytest.approx(2.2, abs=1e-6)] * 4
    assert total == pytest.approx(2.2, abs=1e-6)
    stack.close()


class Busy(socketserver.BaseRequestHandler):
    """Computes for a while (real time, on a CPU) before it answers."""

    def handle(self) -> None:
        data = self.request.recv(1000)
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
        self.request.sendall(data)


def test_a_thread_at_work_holds_time_back() -> None:
    """The handler computes for 200 ms of real time; the client's 1 s
    timeout does not fire, since time waits for a running thread. The
    exchange takes its network time and nothing more."""
    stack = loopstack.Stack(clock="virtual", seed=3)
    stack.lo.netem("delay 100ms")
    with echo_server(stack, Busy) as port:
        def exchange() -> float:
            start = stack.now()
            with stack.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"work")
                assert c.recv(100) == b"work"
            return stack.now() - start
        elapsed = bounded(stack, exchange)
    assert elapsed == pytest.approx(0.4, abs=1e-6)  # handshake, then one round trip
    stack.close()


class Sleepy(socketserver.BaseRequestHandler):
    """Sleeps (real time, off the CPU and outside the stack) before it answers."""

    def handle(self) -> None:
        data = self.request.recv(1000)
        time.sleep(0.3)
        try:
            self.request.sendall(data)
        except OSError:  # the client gave up and reset the connection
            pass


def test_a_thread_asleep_outside_the_stack_is_invisible() -> None:
    """The documented limit: a thread blocked outside the stack (here in
    time.sleep) cannot be told from an idle one, so time jumps past it: the
    client's 1 s timeout fires at its virtual deadline, in a moment of wall
    time, while the handler sleeps."""
    stack = loopstack.Stack(clock="virtual", seed=4)
    stack.lo.netem("delay 100ms")
    with echo_server(stack, Sleepy) as port:
        def exchange() -> float:
            with stack.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"hello")
                start = stack.now()
                with pytest.raises(TimeoutError):
                    c.recv(100)
                return stack.now() - start
        assert bounded(stack, exchange) == pytest.approx(1.0, abs=1e-6)
    stack.close()


def test_timeouts_in_several_threads_fire_in_deadline_order() -> None:
    """Threads blocked with different timeouts, nothing else scheduled: each
    wakes at its own virtual deadline, in order."""
    stack = loopstack.Stack(clock="virtual", seed=5)

    def run() -> list[tuple[float, float]]:
        woke: list[tuple[float, float]] = []
        lock = threading.Lock()
        listener = stack.create_server(("127.0.0.1", 0))

        def wait(timeout: float) -> None:
            with stack.create_connection(listener.getsockname(), timeout=timeout) as c:
                with pytest.raises(TimeoutError):
                    c.recv(10)  # nobody ever sends
                with lock:
                    woke.append((timeout, stack.now()))

        threads = [threading.Thread(target=wait, args=(t,)) for t in (3.0, 1.0, 2.5, 0.5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        listener.close()
        return woke

    woke = bounded(stack, run)
    assert [t for t, _ in woke] == [0.5, 1.0, 2.5, 3.0]
    for timeout, at in woke:
        assert at == pytest.approx(timeout, abs=1e-6)  # connecting took no time: no netem
    stack.close()


def test_closing_the_stack_ends_blocked_threads() -> None:
    stack = loopstack.Stack(clock="virtual", seed=6)
    listener = stack.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def accept() -> None:
        try:
            listener.accept()  # blocks: no timeout, nothing scheduled
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=accept, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.1)  # let them block
    stack.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 2


def test_autojump_moves_time_for_programs_that_wait_in_select() -> None:
    """A client that waits in selectors (not in a blocking call) gets its
    replies once autojump's thread moves time whenever the process is idle."""
    stack = loopstack.Stack(clock="virtual", seed=7)
    stack.lo.netem("delay 200ms")
    stack.autojump()
    with echo_server(stack) as port:
        def exchange() -> float:
            c = stack.create_connection(("127.0.0.1", port), timeout=30)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.setblocking(False)
            start = stack.now()
            with selectors.DefaultSelector() as sel:
                sel.register(c, selectors.EVENT_READ)
                for i in range(10):
                    c.send(b"%d" % i)
                    assert sel.select(LIMIT), "no reply"
                    assert c.recv(100) == b"%d" % i
            c.close()
            return stack.now() - start
        assert bounded(stack, exchange) == pytest.approx(4.0, abs=1e-6)  # 10 x 400 ms
    stack.close()


def test_an_asyncio_client_and_a_threaded_server_share_virtual_time() -> None:
    """loopstack.aio's loop drives the stack's time while it runs, and jumps
    only when the server's threads are blocked: every request costs its
    network time exactly, and the client's 5 s timeouts never fire early."""
    stack = loopstack.Stack(clock="virtual", seed=9)
    stack.lo.netem("delay 200ms")

    async def client(port: int) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(10):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(f"GET /{i} HTTP/1.0\r\n\r\n".encode())
            reply = await asyncio.wait_for(r.read(), 5)  # to the server's FIN
            assert reply.endswith(f"\r\n\r\n/{i}".encode()), reply
            w.close()
        return loop.time() - start

    with http_server(stack) as port:
        elapsed = bounded(stack, lambda: loopstack.aio.run(client(port), stack=stack))
    assert elapsed == pytest.approx(8.0, abs=1e-6)  # 10 x (handshake + request and reply)
    stack.close()


def test_a_thread_waiting_while_the_loop_drives_wakes_at_its_deadline() -> None:
    """A thread blocked in recv with a 2 s timeout while an asyncio task
    sleeps 5 s: the loop, which moves time, stops at the thread's deadline."""
    stack = loopstack.Stack(clock="virtual", seed=10)
    listener = stack.create_server(("127.0.0.1", 0))
    idle = stack.create_connection(listener.getsockname())
    idle.settimeout(2)
    woke: list[float] = []

    def wait() -> None:
        with pytest.raises(TimeoutError):
            idle.recv(10)  # nobody sends
        woke.append(stack.now())

    async def main() -> float:
        start = asyncio.get_running_loop().time()
        thread = threading.Thread(target=wait)
        thread.start()  # running, then blocked: the loop waits for it either way
        await asyncio.sleep(5)
        await asyncio.to_thread(thread.join, 10)
        return start

    start = bounded(stack, lambda: loopstack.aio.run(main(), stack=stack))
    assert woke == [pytest.approx(start + 2.0, abs=1e-6)]
    assert stack.now() == pytest.approx(start + 5.0, abs=1e-6)
    stack.close()


def test_one_thread_alone_keeps_the_old_rule() -> None:
    """A single thread blocked with nothing scheduled and no other thread to
    act: its call fails at once instead of hanging (the deadlock is
    reported as a timeout, as before threads were supported). In a fresh
    interpreter, so that no other thread exists."""
    code = (
        "import loopstack\n"
        "stack = loopstack.Stack(clock='virtual')\n"
        "listener = stack.create_server(('127.0.0.1', 0))\n"
        "try:\n"
        "    listener.accept()\n"
        "except TimeoutError:\n"
        "    print('timed out at', stack.now())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=LIMIT)
    assert done.stdout == "timed out at 0.0\n", done.stderr


pytest_plugins = ["pytester"]


def test_pytest_option_runs_a_threaded_suite_on_virtual_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner_virtual='''
        import asyncio
        import http.client
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import pytest


        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass


        @pytest.fixture(scope="session")
        def server():
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                      daemon=True)
            thread.start()
            yield httpd.server_address[1]
            httpd.shutdown()
            httpd.server_close()


        def test_requests(server, loopstack_stack):
            assert loopstack_stack.clock.is_virtual
            start, wall = loopstack_stack.now(), time.perf_counter()
            for _ in range(10):
                conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
                conn.request("GET", "/")
                assert conn.getresponse().read() == b"ok"
                conn.close()
            assert loopstack_stack.now() - start >= 10 * 0.4
            assert time.perf_counter() - wall < 30  # 8 s of virtual time, no such wall time


        def test_plain_asyncio(loopstack_stack):
            async def main():
                async def echo(r, w):
                    w.write(await r.read(100))
                    await w.drain()
                    w.close()
                srv = await asyncio.start_server(echo, "127.0.0.1", 0)
                port = srv.sockets[0].getsockname()[1]
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"hi")
                assert await asyncio.wait_for(r.read(100), 30) == b"hi"
                w.close()
                srv.close()
            start = loopstack_stack.now()
            asyncio.run(main())
            assert loopstack_stack.now() - start >= 0.8  # handshake and a round trip


        def test_fails(loopstack_stack):
            assert False
    ''')
    result = pytester.runpytest("--loopstack", "--loopstack-clock", "virtual",
                                "--loopstack-netem", "delay 200ms", "--loopstack-seed", "1",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*virtual time: *s"])
