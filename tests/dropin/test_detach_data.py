"""A detached stream socket's descriptor carries the connection's data, as a
kernel socket's does (issue 9): multiprocessing.connection's Listener and
Client (``Connection(s.detach())``, then os.read/os.write on the number),
managers over TCP, os.read/os.write directly, detach then
``socket.socket(fileno=fd)`` with data in flight both ways, os.close of a
detached descriptor. Each case runs the same code on the kernel and on
loopstack and compares what it saw."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

import pytest

import loopstack
from loopstack.socket import Socket

TIMEOUT = 120  # seconds for one program


def both(fn: Callable[[], Any]) -> tuple[Any, Any]:
    """``fn`` on the kernel, then under loopstack.patch(): both results."""
    kernel = fn()
    with loopstack.patch():
        virtual = fn()
    return kernel, virtual


def _pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname()[:2])  # blocking: its descriptor too
    a, _ = srv.accept()
    a.settimeout(30)
    return srv, c, a


def _read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _read_to_eof(read: Callable[[int], bytes]) -> bytes:
    out = bytearray()
    while chunk := read(65536):
        out += chunk
    return bytes(out)


def _in_thread(fn: Callable[[], Any]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


# -- in one process -----------------------------------------------------------------
def test_listener_and_client_exchange_objects_both_ways() -> None:
    def exchange() -> list[Any]:
        seen: list[Any] = []
        with Listener(("127.0.0.1", 0)) as listener:
            def serve() -> None:
                with listener.accept() as conn:
                    for _ in range(3):
                        obj = conn.recv()
                        seen.append(("server", obj))
                        conn.send({"echo": obj, "big": b"s" * 200_000})
                    conn.send_bytes(b"last")

            t = _in_thread(serve)
            with Client(listener.address) as conn:
                for obj in (1, "two", [b"x" * 300_000, 3.0]):
                    conn.send(obj)
                    reply = conn.recv()
                    seen.append(("client", reply["echo"] == obj, len(reply["big"])))
                seen.append(("client", conn.recv_bytes()))
                seen.append(("poll", conn.poll(0.1)))
            t.join(30)
        return seen

    kernel, virtual = both(exchange)
    assert virtual == kernel
    assert ("client", b"last") in virtual


def test_os_read_and_write_on_a_detached_descriptor() -> None:
    def rw() -> list[Any]:
        seen: list[Any] = []
        srv, c, a = _pair()
        fd = c.detach()
        assert c.fileno() == -1
        os.write(fd, b"ping")
        seen.append(a.recv(4))
        a.sendall(b"pong" * 1000)
        seen.append(_read_exact(fd, 4000) == b"pong" * 1000)
        big = os.urandom(3 << 20)  # more than every buffer on the way: back-pressure
        t = _in_thread(lambda: (a.sendall(big), a.shutdown(socket.SHUT_WR)))
        seen.append(_read_to_eof(lambda n: os.read(fd, n)) == big)
        t.join(30)
        got: list[bytes] = []
        t = _in_thread(lambda: got.append(_read_to_eof(a.recv)))
        os.write(fd, big[:100_000])
        os.close(fd)  # the peer sees EOF after the data
        t.join(30)
        seen.append(got == [big[:100_000]])
        a.close()
        srv.close()
        return seen

    kernel, virtual = both(rw)
    assert virtual == kernel == [b"ping", True, True, True]


def test_detached_descriptor_in_select_shows_real_data() -> None:
    def watch() -> list[Any]:
        srv, c, a = _pair()
        fd = c.detach()
        seen: list[Any] = [select.select([fd], [], [], 0)[0] == []]
        a.sendall(b"x")
        seen.append(select.select([fd], [], [], 10)[0] == [fd])
        seen.append(os.read(fd, 10))
        seen.append(select.select([fd], [], [], 0)[0] == [])
        seen.append(select.select([], [fd], [], 10)[1] == [fd])
        a.close()
        seen.append(select.select([fd], [], [], 10)[0] == [fd])
        seen.append(os.read(fd, 10))  # EOF
        os.close(fd)
        srv.close()
        return seen

    kernel, virtual = both(watch)
    assert virtual == kernel == [True, True, b"x", True, True, True, b""]


@pytest.mark.parametrize("sizes", [(10, 5, 7), (150_000, 1000, 70_000), (400_000, 1, 1 << 20)])
def test_detach_then_fileno_with_data_in_flight(sizes: tuple[int, int, int]) -> None:
    """Bytes the relay moved to the descriptor that the program had not read
    come back first, bytes the program wrote that the relay had not sent
    are sent first: nothing lost, nothing reordered."""
    inbound, read_first, outbound = sizes

    def adopt() -> list[Any]:
        srv, c, a = _pair()
        d1, d2 = os.urandom(inbound), os.urandom(inbound // 2 + 1)
        w1, w2 = os.urandom(outbound), os.urandom(outbound // 3 + 1)
        fd = c.detach()
        sender = _in_thread(lambda: a.sendall(d1))
        assert select.select([fd], [], [], 10)[0] == [fd]
        part = os.read(fd, read_first)
        writer = _in_thread(lambda: os.write(fd, w1) if outbound <= 50_000 else
                            _write_all(fd, w1))
        writer.join(30)
        sender.join(30)
        c2 = socket.socket(fileno=fd)  # data sits in the pair both ways, likely
        c2.settimeout(30)
        got: list[bytes] = []
        reader = _in_thread(lambda: got.append(_read_to_eof(a.recv)))
        c2.sendall(w2)
        c2.shutdown(socket.SHUT_WR)
        a.sendall(d2)
        a.shutdown(socket.SHUT_WR)
        rest = _read_to_eof(c2.recv)
        reader.join(30)
        seen = [part + rest == d1 + d2, got == [w1 + w2], type(c2) is socket.socket]
        c2.close()
        a.close()
        srv.close()
        return seen

    kernel, virtual = both(adopt)
    assert virtual == kernel == [True, True, True]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def test_adopted_socket_is_loopstack_again() -> None:
    with loopstack.patch():
        srv, c, a = _pair()
        fd = c.detach()
        c2 = socket.socket(fileno=fd)
        assert isinstance(c2, Socket)
        assert c2.getpeername() == a.getsockname()
        a.sendall(b"after")
        assert c2.recv(10) == b"after"
        c2.sendall(b"back")
        assert a.recv(10) == b"back"
        for s in (c2, a, srv):
            s.close()


def test_closing_a_detached_descriptor_leaves_the_stack_clean() -> None:
    stack = loopstack.Stack()
    with loopstack.patch(stack):
        fd = socket.socket().detach()  # never connected: readiness only
        os.close(fd)
        srv, c, a = _pair()
        cfd = c.detach()  # carrying
        os.close(cfd)
        assert a.recv(10) == b""  # the program closed the descriptor: the socket closed
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ufd = u.detach()
        os.close(ufd)
        # The numbers are reused by files of the program's own: the stack's
        # close must not touch them.
        r, w = os.pipe()
        a.close()
        srv.close()
    stack.close()
    os.write(w, b"still mine")
    assert os.read(r, 100) == b"still mine"
    os.close(r)
    os.close(w)


def test_run_closes_cleanly_after_the_program_closed_a_detached_descriptor() -> None:
    proc = subprocess.run([sys.executable, "-m", "loopstack", "run", "-c",
                           "import socket,os; os.close(socket.socket().detach())"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stderr) == (0, "")


# -- other processes ------------------------------------------------------------------
def _program(tmp_path: Path, body: str, *args: str, run: bool) -> str:
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(body))
    cmd = [sys.executable, *(["-m", "loopstack", "run"] if run else []), str(prog), *args]
    env = {k: v for k, v in os.environ.items() if k != "LOOPSTACK_ATTACH"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


FORKED = '''
    import contextlib, os, sys
    from multiprocessing.connection import Client, Listener
    import loopstack

    with (loopstack.patch() if sys.argv[1] == "loopstack" else contextlib.nullcontext()):
        listener = Listener(("127.0.0.1", 0))
        pid = os.fork()
        if pid == 0:
            import socket
            s = socket.create_connection(listener.address)
            number = s.fileno()
            fd = s.detach()
            print("same number", fd == number, flush=True)
            os.write(fd, b"raw from the child")
            print("child read", os.read(fd, 100), flush=True)
            os.close(fd)
            with Client(listener.address) as conn:
                conn.send({"from": "child", "data": b"c" * 500_000})
                reply = conn.recv()
                print("child got", reply["from"], len(reply["data"]), flush=True)
            os._exit(0)
        with listener.accept() as raw:
            print("parent read", os.read(raw.fileno(), 100))
            os.write(raw.fileno(), b"raw from the parent")
            print("parent eof", os.read(raw.fileno(), 100))
        with listener.accept() as conn:
            got = conn.recv()
            print("parent got", got["from"], len(got["data"]))
            conn.send({"from": "parent", "data": b"p" * 700_000})
        print("status", os.waitpid(pid, 0)[1])
        listener.close()
'''


def test_listener_and_client_with_a_forked_child(tmp_path: Path) -> None:
    """The child's Client detaches a socket of the owner's stack: the owner
    relays, the child reads and writes its descriptor."""
    kernel = _program(tmp_path, FORKED, "kernel", run=False)
    virtual = _program(tmp_path, FORKED, "loopstack", run=False)
    assert virtual.splitlines() == kernel.splitlines()
    assert "child got parent 700000" in virtual


MANAGER = '''
    import multiprocessing as mp
    import sys
    from multiprocessing.managers import SyncManager


    def client(d, lst):
        # A proxy unpickled here connects to the manager's server over TCP.
        d["child"] = list(range(3))
        d["blob"] = b"b" * 200_000
        lst.append("from the child")


    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        m = SyncManager(address=("127.0.0.1", 0), authkey=b"secret", ctx=ctx)
        m.start()
        d = m.dict()
        d["parent"] = 1
        lst = m.list([1, 2])
        p = ctx.Process(target=client, args=(d, lst))
        p.start()
        p.join(60)
        print("exit", p.exitcode)
        print("keys", sorted(d.keys()), len(d["blob"]), d["child"])
        print("list", list(lst))
        m.shutdown()
'''


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_manager_over_tcp_with_a_client_in_another_process(tmp_path: Path, method: str) -> None:
    kernel = _program(tmp_path, MANAGER, method, run=False)
    virtual = _program(tmp_path, MANAGER, method, run=True)
    assert virtual.splitlines() == kernel.splitlines()
    assert "keys ['blob', 'child', 'parent'] 200000 [0, 1, 2]" in virtual
    assert "list [1, 2, 'from the child']" in virtual


def test_a_dup_of_the_descriptor_keeps_the_socket_after_close() -> None:
    """os.dup(s.fileno()), then s.close(): the number still stands for the
    connection (multiprocessing pickles sockets this way), then closing it
    closes the socket."""
    def dup_close() -> list[Any]:
        srv, c, a = _pair()
        fd = os.dup(c.fileno())
        c.close()
        a.sendall(b"to the dup")
        seen: list[Any] = [_read_exact(fd, 10)]
        os.write(fd, b"from the dup")
        seen.append(a.recv(100))
        c2 = socket.socket(fileno=fd)
        c2.sendall(b"adopted")
        seen.append(a.recv(100))
        c2.close()
        seen.append(a.recv(100))  # EOF: the last descriptor is closed
        a.close()
        srv.close()
        return seen

    kernel, virtual = both(dup_close)
    assert virtual == kernel == [b"to the dup", b"from the dup", b"adopted", b""]
