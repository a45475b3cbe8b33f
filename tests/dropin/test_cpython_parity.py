"""Differences between CPython's own tests run on the kernel and under
`loopstack run` (benchmarks/cpython_tests.py), fixed where they were found.

Each test names the CPython test that showed the difference.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest

from loopstack import Stack


def _free_numbers(count: int) -> list[int]:
    """The lowest descriptor numbers that are not open (as fcntl sees them)."""
    out: list[int] = []
    n = 0
    while len(out) < count:
        try:
            fcntl.fcntl(n, fcntl.F_GETFD)
        except OSError as e:
            assert e.errno == errno.EBADF
            out.append(n)
        n += 1
    return out


def _wait_sleeping(thread: threading.Thread) -> None:
    """Until the thread is blocked in the kernel (state S in its stat)."""
    path = f"/proc/self/task/{thread.native_id}/stat"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            stat = f.read()
        if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"S":
            return
        time.sleep(0.01)
    pytest.fail("the attach server's acceptor never blocked")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_idle_attach_server_holds_no_descriptor_number() -> None:
    """test_os's FileTests.test_closerange under `loopstack run`: a thread
    blocked in accept() holds the lowest free descriptor number (Linux takes
    it when accept() is entered), so open() then dup() did not get two
    consecutive numbers. The acceptor waits in poll() instead."""
    with Stack() as stack:
        server = stack.serve_children()
        _wait_sleeping(server._acceptor)
        expected = _free_numbers(2)
        first = os.open(os.devnull, os.O_RDONLY)
        try:
            second = os.dup(first)
            os.close(second)
        finally:
            os.close(first)
        assert [first, second] == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_attach_server_still_admits_children_and_closes() -> None:
    """The acceptor that waits in poll() still takes every child, and
    close() still ends it."""
    with Stack() as stack:
        server = stack.serve_children()
        acceptor = server._acceptor
        from loopstack.host.attach import children_environment

        with children_environment(stack):
            for _ in range(2):
                done = subprocess.run(
                    [sys.executable, "-c",
                     "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
                     "print(s.getsockname()[0])"],
                    capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                assert done.stdout.strip() == "127.0.0.1"
        assert server.counters["holders"] >= 2
    acceptor.join(5)
    assert not acceptor.is_alive()
