"""The pytest plugin (entry point ``pytest11``): tests on a virtual loopback.

Fixtures:
- ``loopstack_stack``: the test's own fresh :class:`~loopstack.Stack`,
  closed afterwards (not patched in, unless ``--loopstack`` is given).
- ``loopstack_patch``: the test runs with the standard library patched to
  its fresh stack, which the fixture yields.

Options:
- ``--loopstack``: every test runs patched, each on a fresh stack.
- ``--loopstack-netem SPEC``: netem on lo for those stacks.
- ``--loopstack-seed N``: seed them. Without it each stack gets a random
  seed; either way a failing test's report prints the seed to replay it with.
- ``--loopstack-pcap DIR``: capture each test's stack; keep the pcap and
  the socket table (taken when the test failed) of the tests that fail.
- ``--loopstack-forward VPORT:HOST:PORT`` (repeatable): each stack gets a
  virtual listener on 127.0.0.1:VPORT relayed to a real service on the host
  (``Stack.forward``), so a patched suite still reaches, say, a database on
  the host's 127.0.0.1:5432. The target is not tried when a stack is made
  (a session fixture may start it later): a connection it refuses resets
  the virtual client.

The options apply to every stack the plugin makes: ``--loopstack``'s and the
fixtures'. A patched test's stack is shared with the processes the test
starts: forks, ``multiprocessing`` and Python subprocesses attach to it.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from .link.netem import NetemSpec
from .patch import patch
from .stack import Stack


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loopstack", "tests on a virtual loopback (loopstack)")
    group.addoption("--loopstack", action="store_true", default=False,
                    help="run every test with the standard library patched to a fresh stack")
    group.addoption("--loopstack-netem", metavar="SPEC", default=None,
                    help='netem spec for lo, e.g. "delay 10ms loss 1%%"')
    group.addoption("--loopstack-seed", metavar="N", type=int, default=None,
                    help="seed for every stack (failures print the seed for replay)")
    group.addoption("--loopstack-pcap", metavar="DIR", default=None,
                    help="keep a pcap and the socket table of each failing test in DIR")
    group.addoption("--loopstack-forward", metavar="VPORT:HOST:PORT", action="append",
                    default=[], help="relay virtual 127.0.0.1:VPORT of every stack to a real "
                    "service at HOST:PORT on the host (repeatable)")


def pytest_configure(config: pytest.Config) -> None:
    spec = config.getoption("--loopstack-netem", None)
    if spec:
        try:
            NetemSpec.parse(spec)
        except ValueError as e:
            raise pytest.UsageError(f"--loopstack-netem {spec!r}: {e}") from None
    _forwards(config)


def _forwards(config: pytest.Config) -> list[tuple[int, str, int]]:
    """--loopstack-forward's specs as (virtual port, host, port)."""
    specs = config.getoption("--loopstack-forward", None) or []
    if not specs:
        return []
    from .host.bridge import parse_forward

    out: list[tuple[int, str, int]] = []
    for spec in specs:
        try:
            forward = parse_forward(spec)
        except ValueError as e:
            raise pytest.UsageError(f"--loopstack-forward {spec!r}: {e}") from None
        if any(f[0] == forward[0] for f in out):
            raise pytest.UsageError(f"--loopstack-forward {spec!r}: virtual port {forward[0]} "
                                    "is forwarded twice: give each forward its own port")
        out.append(forward)
    return out


class _Session:
    """One test's stack, with its capture when --loopstack-pcap is given."""

    def __init__(self, item: pytest.Item) -> None:
        config = item.config
        seed = config.getoption("--loopstack-seed")
        if seed is None:  # still print one, so a failure can be replayed
            seed = random.SystemRandom().randrange(1 << 32)
        self.stack = Stack(seed=seed)
        spec = config.getoption("--loopstack-netem")
        if spec:
            self.stack.lo.netem(spec)
        for vport, host, port in _forwards(config):  # closed with the stack
            self.stack.forward(vport, to=(host, port), check=False)
        self.pcap_path: str | None = None
        self.capture: Any = None
        self.failed = False
        pcap_dir = config.getoption("--loopstack-pcap")
        if pcap_dir:
            os.makedirs(pcap_dir, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
            self.pcap_path = os.path.join(pcap_dir, name + ".pcap")
            self.capture = self.stack.capture(self.pcap_path)

    def fail(self) -> tuple[str, str]:
        """The test failed: keep its socket table; what its report should say."""
        from .cli.report import socket_table

        self.failed = True
        table = "\n".join(socket_table(self.stack)) + "\n"
        seed = self.stack.seed
        notes = [f"seed: {seed} (replay with --loopstack-seed {seed})"]
        if self.pcap_path is not None:
            with open(self._table_path(), "w") as f:
                f.write(table)
            notes.append(f"pcap: {self.pcap_path}\nsockets: {self._table_path()}")
        notes.append("sockets when the test failed:\n" + table)
        return ("loopstack", "\n".join(notes))

    def _table_path(self) -> str:
        assert self.pcap_path is not None
        return self.pcap_path[:-5] + ".sockets.txt"

    def finish(self) -> None:
        """Keep the capture and socket table of a failure; drop the rest."""
        if self.capture is not None:
            self.capture.stop()
            assert self.pcap_path is not None
            if not self.failed:
                os.unlink(self.pcap_path)
        self.stack.close()


_KEY = pytest.StashKey[_Session]()


def _session(item: pytest.Item) -> _Session:
    session = item.stash.get(_KEY, None)
    if session is None:
        session = item.stash[_KEY] = _Session(item)
    return session


@pytest.fixture
def loopstack_stack(request: pytest.FixtureRequest) -> Stack:
    """The test's fresh loopstack stack (closed after the test)."""
    return _session(request.node).stack


@pytest.fixture
def loopstack_patch(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Run the test with the standard library patched to its fresh stack."""
    stack = _session(request.node).stack
    if request.config.getoption("--loopstack"):  # already patched for the whole test
        yield stack
        return
    with patch(stack, children=True):
        yield stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, None, None]:
    if not item.config.getoption("--loopstack"):
        yield
        return
    with patch(_session(item).stack, children=True):  # subprocesses share the test's stack
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    session = item.stash.get(_KEY, None)
    if session is None:
        return
    if report.failed and not session.failed:
        report.sections.append(session.fail())
    if report.when == "teardown":
        session.finish()
