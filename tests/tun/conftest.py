"""The TUN tests: a loopstack stack on one side of a real TUN device, the
Linux kernel on the other, inside a network namespace each test makes and
removes (even when it fails).

    def test_x(tun, kernel):
        stack, iface = tun                       # loopstack: 192.0.2.2, 2001:db8::2
        kernel.run("ping", "192.0.2.2", "56", "3")   # the kernel: 192.0.2.1, 2001:db8::1

``kernel.run`` and ``kernel.start`` run tests/tun/kernel.py inside the
namespace (kernel sockets only); every wait is bounded, and every process
started is killed by its PID when the test ends.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopstack import Stack
from loopstack.link.tun import TunInterface

KERNEL_PY = str(Path(__file__).with_name("kernel.py"))
TUN = "lstk0"
LS4, KERNEL4 = "192.0.2.2", "192.0.2.1"
LS6, KERNEL6 = "2001:db8::2", "2001:db8::1"
COMMAND_TIMEOUT = 60.0  # seconds any one kernel-side command may take


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_ADMIN) for TUN devices and network namespaces")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("/dev/net/tun is missing (no tun module)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip to make network namespaces")


def sh(*argv: str, timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with lo up; deleted afterwards, always."""
    require_root()
    name = f"lstk-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


class Process:
    """A kernel-side program started in the namespace; its output lines
    arrive through a reader thread, so every wait has a timeout."""

    def __init__(self, argv: list[str]) -> None:
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def text(self, timeout: float = COMMAND_TIMEOUT) -> str:
        """The next line it prints (AssertionError on EOF, queue.Empty on time-out)."""
        text = self.lines.get(timeout=timeout)
        if text is None:
            assert self.popen.stderr is not None
            self.popen.wait(5)
            raise AssertionError(f"the program ended: {self.popen.stderr.read()}")
        return text

    def line(self, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """The next line it prints, a JSON object."""
        value: dict[str, Any] = json.loads(self.text(timeout))
        return value

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()  # by its PID: only what this test started
        self.popen.wait(5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


class Kernel:
    """The kernel's side of the device: programs run inside the namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._started: list[Process] = []

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, sys.executable, KERNEL_PY, *args]

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Run a kernel.py command to its end; its last JSON line."""
        done = sh(*self.argv(*args), timeout=timeout, check=False)
        assert done.returncode == 0, f"kernel.py {' '.join(args)} failed: {done.stderr}"
        value: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return value

    def start(self, *args: str, argv: list[str] | None = None) -> Process:
        """Start a kernel.py command, or any ``argv``; stopped when the test ends."""
        p = Process(argv or self.argv(*args))
        self._started.append(p)
        return p

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command (ip, tc, sysctl) inside the namespace."""
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)

    def close(self) -> None:
        for p in self._started:
            p.stop()


@pytest.fixture
def kernel(netns: str) -> Iterator[Kernel]:
    k = Kernel(netns)
    try:
        yield k
    finally:
        k.close()


def make_tun(netns: str, *, mtu: int = 1500) -> tuple[Stack, TunInterface]:
    stack = Stack()
    try:
        iface = stack.add_tun(TUN, [f"{LS4}/24", f"{LS6}/64"],
                              peer=[f"{KERNEL4}/24", f"{KERNEL6}/64"], netns=netns, mtu=mtu)
    except BaseException:
        stack.close()
        raise
    assert isinstance(iface, TunInterface)
    return stack, iface


@pytest.fixture
def tun(netns: str) -> Iterator[tuple[Stack, TunInterface]]:
    """A stack whose TUN device lstk0 lives in the test's namespace."""
    stack, iface = make_tun(netns)
    try:
        yield stack, iface
    finally:
        stack.close()
