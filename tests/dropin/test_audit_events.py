"""Audit events (PEP 578) of loopstack's sockets and name lookups: the
same events, with the same arguments, in the same order, as CPython's
socket module raises for the kernel's (issue 9: test_audit.test_socket).

Each scenario runs on the kernel, then under ``loopstack.patch()`` (or in
a process attached to a stack), and the two logs are compared once the
ports the two systems picked are written as PORT and the socket objects
as the program's names for them: the socket an event names must be the
object the program holds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loopstack
from loopstack.socket import implementation, loopstack_event

TIMEOUT = 60

_log: list[tuple[str, tuple[Any, ...], bool]] | None = None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _log is not None and event.startswith("socket."):
        _log.append((event, tuple(args), loopstack_event()))


sys.addaudithook(_hook)  # (hooks stay: idle unless a test records)


def _plain(value: Any, held: list[Any]) -> Any:
    """An event argument as a comparable value: a socket object as its
    index among the objects the program holds (``?`` for another object),
    a port as PORT."""
    if type(value) is int and value >= 1024:
        return "PORT"  # (getaddrinfo's port)
    if isinstance(value, socket.socket):
        for i, obj in enumerate(held):
            if obj is value:
                return f"sock{i}"
        return "?"
    if isinstance(value, tuple) and len(value) >= 2 and isinstance(value[0], str) and \
            isinstance(value[1], int) and value[1] >= 1024:
        return (value[0], "PORT", *value[2:])
    return value


def record(scenario: Callable[[list[Any]], None]) -> list[Any]:
    """The socket events ``scenario`` raises, arguments made comparable."""
    global _log
    held: list[Any] = []
    log: list[tuple[str, tuple[Any, ...], bool]] = []
    _log = log
    try:
        scenario(held)
    finally:
        _log = None
    out = [[event, [_plain(a, held) for a in args]] for event, args, _ in log]
    for sock in held:
        sock.close()
    return out


def both(scenario: Callable[[list[Any]], None]) -> tuple[list[Any], list[Any]]:
    kernel = record(scenario)
    with loopstack.patch():
        virtual = record(scenario)
    return kernel, virtual


def tcp(held: list[Any]) -> None:
    server = socket.socket()
    held.append(server)
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.append(client)
    client.connect(server.getsockname())
    conn, _ = server.accept()
    held.append(conn)
    client.sendall(b"x")
    conn.recv(1)
    held.append(client.dup())
    other = socket.socket(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    held.append(other)
    held.append(socket.socket())
    held[-1].connect_ex(server.getsockname())
    new = socket.create_connection(server.getsockname())
    held.append(new)


def udp(held: list[Any]) -> None:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.append(a)
    a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.append(b)
    b.sendto(b"1", a.getsockname())
    b.sendto(b"2", 0, a.getsockname())
    b.sendmsg([b"3"], [], 0, a.getsockname())
    b.connect(a.getsockname())
    b.sendmsg([b"4"])
    b.send(b"5")
    for _ in range(5):
        a.recv(10)


def errors(held: list[Any]) -> None:
    """Arguments CPython refuses before its event raise none; a closed
    socket's call raises the event, then EBADF."""
    s = socket.socket()
    held.append(s)
    for call in (lambda: s.bind("nowhere"), lambda: s.connect(("127.0.0.1", 70000)),
                 lambda: socket.getaddrinfo("localhost", 1.5),
                 lambda: socket.getaddrinfo(5, 80),
                 lambda: socket.gethostbyname(5),
                 lambda: socket.getnameinfo(("127.0.0.1",), 0)):
        try:
            call()
        except (TypeError, OSError, OverflowError):
            pass
    s.close()
    try:
        s.bind(("127.0.0.1", 0))
    except OSError:
        pass


def names(held: list[Any]) -> None:
    socket.getaddrinfo("localhost", 80)
    socket.getaddrinfo("127.0.0.1", "http", socket.AF_INET, socket.SOCK_STREAM, 6)
    socket.getaddrinfo(host=b"localhost", port=None, type=socket.SOCK_DGRAM)
    socket.gethostbyname("localhost")
    socket.gethostbyname_ex("localhost")
    socket.gethostbyaddr("127.0.0.1")
    socket.getnameinfo(("127.0.0.1", 80), 0)
    try:
        socket.getaddrinfo("no-such-host.invalid", 80)
    except socket.gaierror:
        pass


def test_tcp_sockets_raise_the_kernels_events() -> None:
    kernel, virtual = both(tcp)
    assert virtual == kernel
    assert [e for e, _ in kernel][:3] == ["socket.__new__", "socket.bind", "socket.__new__"]


def test_udp_sockets_raise_the_kernels_events() -> None:
    kernel, virtual = both(udp)
    assert virtual == kernel
    assert ["socket.sendmsg", ["sock1", None]] in kernel


def test_refused_arguments_raise_no_event() -> None:
    kernel, virtual = both(errors)
    assert virtual == kernel
    assert kernel[-1] == ["socket.bind", ["sock0", ("127.0.0.1", 0)]]


def test_name_lookups_raise_the_kernels_events() -> None:
    kernel, virtual = both(names)
    assert virtual == kernel
    assert ["socket.gethostbyname", ["localhost"]] in kernel
    # The resolver's own work (services from /etc/services, the host's
    # name) raises nothing more: getservbyname or gethostname would.
    assert not any(e in ("socket.getservbyname", "socket.gethostname") for e, _ in virtual)


def test_loopstacks_events_are_marked() -> None:
    """loopstack_event() is true for loopstack's events only: a hook that
    guards the kernel tells them apart; the event names the front."""
    global _log
    log: list[tuple[str, tuple[Any, ...], bool]] = []
    with loopstack.patch():
        _log = log
        try:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            u = socket.socket(socket.AF_UNIX)  # a kernel socket, under the patch too
        finally:
            _log = None
        assert log[0][1][0] is s and log[1][1][0] is s
        assert type(s) is socket.socket and implementation(s) is not s
        s.close()
        u.close()
    assert [(e, ours) for e, _, ours in log] == [
        ("socket.__new__", True), ("socket.bind", True), ("socket.__new__", False)]


def test_a_hook_that_refuses_stops_the_call() -> None:
    """As on the kernel, an exception from a hook ends the call before it
    happens: no socket is made, nothing is bound."""
    refuse = {"on": False}

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if refuse["on"] and event in ("socket.__new__", "socket.bind"):
            raise PermissionError(event)

    sys.addaudithook(hook)
    with loopstack.patch() as stack:
        s = socket.socket()
        refuse["on"] = True
        try:
            try:
                s.bind(("127.0.0.1", 0))
            except PermissionError:
                pass
            try:
                socket.socket()
            except PermissionError:
                pass
        finally:
            refuse["on"] = False
        assert s.getsockname() == ("0.0.0.0", 0)
        assert len(stack.sockets()) == 1
        s.close()


# -- an attached process: its own events, none of loopstack's machinery ----------------------
CHILD = '''
import json, socket, sys

log = []


def plain(value):
    if isinstance(value, socket.socket):
        return "S"
    if type(value) is int and value >= 1024:
        return "PORT"
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def hook(event, args):
    if event.startswith("socket."):
        log.append([event, [plain(a) for a in args]])


sys.addaudithook(hook)
socket.gethostname()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen()
c = socket.create_connection(s.getsockname())
conn, _ = s.accept()
c.sendall(b"x")
assert conn.recv(1) == b"x"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("127.0.0.1", 9))
u.sendmsg([b"x"], [], 0, ("127.0.0.1", 9))
socket.gethostbyname("localhost")
for obj in (s, c, conn, u):
    obj.close()
print(json.dumps(log))
'''


def _child_events(code: str, env: dict[str, str] | None = None) -> list[Any]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_an_attached_process_raises_its_events_and_no_others(tmp_path: Path) -> None:
    """A process attached to the stack sees exactly the kernel's events for
    its calls: none for its connections to the owner (made by the owner,
    passed over SCM_RIGHTS), and the owner raises none for the calls it
    runs for it."""
    kernel = _child_events(textwrap.dedent(CHILD))
    global _log
    log: list[tuple[str, tuple[Any, ...], bool]] = []
    with loopstack.patch(children=True):
        env = dict(os.environ)
        _log = log
        try:
            attached = _child_events(textwrap.dedent(CHILD), env)
        finally:
            _log = None
    assert attached == kernel
    assert kernel[:3] == [["socket.gethostname", []], ["socket.__new__", ["S", 2, 1, 0]],
                          ["socket.bind", ["S", ["127.0.0.1", 0]]]]
    assert [e for e in log if e[2]] == []  # the owner raised none of loopstack's
