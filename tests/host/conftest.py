"""Shared pieces of the tests that meet the real operating system: free
ports the kernel picks, a real echo service on the host's loopback, and a
headless Chromium (installed with apt-get when missing and we are root,
as in CI)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
APT_TIMEOUT = 900  # seconds: apt-get update, then the install, each at most this


def pick_port(family: int = socket.AF_INET) -> int:
    """A port the kernel says is free on the host's loopback now."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[..., int]:
    return pick_port


class RealEcho:
    """An echo service on the host's real 127.0.0.1 (kernel sockets, a
    thread per connection): what a database would be to a forward."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # the accept loop looks at `stop` this often
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.stop = threading.Event()
        self.accepted = 0
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._spawn(self._echo, conn)

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        self.listener.close()


@pytest.fixture
def real_echo() -> Iterator[RealEcho]:
    echo = RealEcho()
    try:
        yield echo
    finally:
        echo.close()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's chromium: installed with apt-get (bounded by
    APT_TIMEOUT) when missing and this user is root; otherwise the test
    is skipped with the reason."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and only root may apt-get install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=APT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"{' '.join(argv)} failed, so chromium is missing: {e}")
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            pytest.skip(f"{' '.join(argv)} exited {done.returncode}, so chromium is "
                        f"missing: {last}")
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if not found:
        pytest.skip("apt-get installed chromium but there is no chromium command")
    return found
