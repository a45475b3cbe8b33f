"""Descriptor numbers as the kernel hands them out (issue 9): a socket takes
its number when it is made (socket(), accept(), dup()), the lowest free one,
not when ``fileno()`` is first called; closing it frees the number; the
descriptors loopstack keeps for itself (the readiness pair's peer, the
placeholder reserved numbers are made from) stay out of the low numbers a
program's next ``open()`` gets. Each scenario runs the same code on the
kernel and under ``loopstack.patch()`` and compares the numbers, relative to
the lowest free number at the start (CPython's test_socket
``test__sendfile_use_sendfile`` depends on this)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import loopstack


def lowest_free() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


def both(fn: Callable[[int], Any]) -> tuple[Any, Any]:
    """``fn(base)`` on the kernel, then under loopstack.patch(); ``base`` is
    the lowest free number when it starts."""
    kernel = fn(lowest_free())
    with loopstack.patch():
        virtual = fn(lowest_free())
    return kernel, virtual


def test_number_taken_when_the_socket_is_made() -> None:
    def run(base: int) -> list[Any]:
        s = socket.socket()
        fd = os.open(os.curdir, os.O_RDONLY)  # after the socket: the next number
        os.close(fd)
        seen = [s.fileno() - base, fd - base]
        try:
            os.fstat(fd)
            seen.append("open")
        except OSError:
            seen.append("closed")  # fileno() did not take the freed number
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seen.append(u.fileno() - base)
        s.close()
        u.close()
        seen.append(lowest_free() - base)  # both numbers free again
        return seen

    kernel, virtual = both(run)
    assert kernel == [0, 1, "closed", 1, 0]
    assert virtual == kernel


def test_sendfile_use_sendfile_sees_the_closed_file() -> None:
    """CPython's test__sendfile_use_sendfile, on both."""

    class File:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def fileno(self) -> int:
            return self.fd

    def run(base: int) -> list[str]:
        out = []
        with socket.socket() as sock:
            fd = os.open(os.curdir, os.O_RDONLY)
            os.close(fd)
            try:
                sock._sendfile_use_sendfile(File(fd))  # type: ignore[attr-defined]
                out.append("no error")
            except Exception as e:  # noqa: BLE001 - the kind is what is compared
                out.append(type(e).__name__)
        return out

    kernel, virtual = both(run)
    assert kernel == ["_GiveupOnSendfile"]
    assert virtual == kernel


def test_accept_and_dup_take_numbers_at_once() -> None:
    def run(base: int) -> list[int]:
        srv = socket.create_server(("127.0.0.1", 0))
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        twin = conn.dup()
        nums = [srv.fileno() - base, cli.fileno() - base, conn.fileno() - base,
                twin.fileno() - base, lowest_free() - base]
        cli.close()
        nums.append(lowest_free() - base)  # the client's number is free again
        for s in (twin, conn, srv):
            s.close()
        nums.append(lowest_free() - base)
        return nums

    kernel, virtual = both(run)
    assert kernel == [0, 1, 2, 3, 4, 1, 0]
    assert virtual == kernel


def test_open_descriptors_counted_as_the_kernel_counts_them() -> None:
    """However many sockets a program has open and polled, the numbers below
    the next free one are exactly its sockets and files: nothing of
    loopstack's own sits among them."""

    def run(base: int) -> list[int]:
        socks = [socket.socket() for _ in range(5)]
        for s in socks[::2]:
            s.fileno()
        socks[1].close()
        numbers = sorted(int(n) for n in os.listdir("/proc/self/fd"))
        mine = [n - base for n in numbers if base <= n < base + 16]
        for s in socks:
            s.close()
        return mine

    kernel, virtual = both(run)
    # (listdir's own descriptor for /proc/self/fd takes the freed number 1.)
    assert kernel == [0, 1, 2, 3, 4]
    assert virtual == kernel


def test_inheritable_flag_kept_when_the_descriptor_is_made() -> None:
    def run(base: int) -> list[bool]:
        a = socket.socket()
        b = socket.socket()
        b.set_inheritable(True)
        flags = [a.get_inheritable(), b.get_inheritable(), os.get_inheritable(b.fileno())]
        a.close()
        b.close()
        return flags

    kernel, virtual = both(run)
    assert kernel == [False, True, True]
    assert virtual == kernel


def test_out_of_descriptors_is_emfile_at_socket() -> None:
    """With the descriptor limit reached, socket() itself fails with EMFILE
    (not a later fileno()), and nothing is left half-made. (At the limit a
    loopstack socket's first fileno() would fail: its readiness pair needs
    two more descriptors for a moment; docs/differences.md.)"""
    code = textwrap.dedent("""
        import errno, os, resource, socket, sys
        import loopstack
        def run():
            held = []
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as e:
                assert e.errno == errno.EMFILE, e
            os.close(held.pop())  # one number free
            s = socket.socket()  # takes the last number
            out = [s.type == socket.SOCK_STREAM]
            try:
                socket.socket()
                out.append("made")
            except OSError as e:
                out.append(errno.errorcode[e.errno])
            s.close()
            t = socket.socket()  # the number is free again
            out.append(t.type == socket.SOCK_STREAM)
            t.close()
            for fd in held:
                os.close(fd)
            return out
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        socket.socket().close()
        kernel = run()
        with loopstack.patch() as stack:
            socket.socket().close()  # the stack's own descriptors exist before the limit
            virtual = run()
            left = len(stack.sockets())
        print(kernel, virtual, left)
        sys.exit(0 if kernel == virtual == [True, "EMFILE", True] and left == 0 else 1)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
