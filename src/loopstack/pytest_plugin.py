"""The pytest plugin (entry point ``pytest11``): tests on a virtual loopback.

Fixtures:
- ``loopstack_stack``: a fresh :class:`~loopstack.Stack`, closed afterwards.
- ``loopstack_patch``: the test runs with the standard library patched to a
  fresh stack, which the fixture yields.

Options:
- ``--loopstack``: every test runs patched, each on a fresh stack.
- ``--loopstack-netem SPEC``: netem on lo for those stacks.
- ``--loopstack-seed N``: seed them (printed with each failure so it can be replayed).
- ``--loopstack-pcap DIR``: capture each test; keep the pcap and the socket
  table of the tests that fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from .patch import patch
from .stack import Stack


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loopstack", "tests on a virtual loopback (loopstack)")
    group.addoption("--loopstack", action="store_true", default=False,
                    help="run every test with the standard library patched to a fresh stack")
    group.addoption("--loopstack-netem", metavar="SPEC", default=None,
                    help='netem spec for lo, e.g. "delay 10ms loss 1%%"')
    group.addoption("--loopstack-seed", metavar="N", type=int, default=None,
                    help="seed for every stack (failures print it for replay)")
    group.addoption("--loopstack-pcap", metavar="DIR", default=None,
                    help="keep a pcap and the socket table of each failing test in DIR")


def _make_stack(config: pytest.Config) -> Stack:
    seed = config.getoption("--loopstack-seed")
    stack = Stack(seed=seed)
    spec = config.getoption("--loopstack-netem")
    if spec:
        stack.lo.netem(spec)
    return stack


class _Session:
    """One test's stack, with its capture when --loopstack-pcap is given."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.stack = _make_stack(item.config)
        self.pcap_path: str | None = None
        self.capture: Any = None
        self.failed = False
        pcap_dir = item.config.getoption("--loopstack-pcap")
        if pcap_dir:
            os.makedirs(pcap_dir, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
            self.pcap_path = os.path.join(pcap_dir, name + ".pcap")
            self.capture = self.stack.capture(self.pcap_path)

    def describe(self) -> list[str]:
        """What a failing test's report should say."""
        notes = []
        if self.pcap_path is not None:
            notes.append(f"pcap: {self.pcap_path} (sockets: {self._table_path()})")
        if self.stack.seed is not None:
            notes.append(f"seed: {self.stack.seed} (replay with --loopstack-seed "
                         f"{self.stack.seed})")
        else:
            notes.append("seed: none (pass --loopstack-seed N to repeat a run exactly)")
        return notes

    def _table_path(self) -> str:
        assert self.pcap_path is not None
        return self.pcap_path[:-5] + ".sockets.txt"

    def finish(self, failed: bool) -> None:
        """Keep the capture and socket table of a failure; drop the rest."""
        if self.capture is not None:
            self.capture.stop()
            assert self.pcap_path is not None
            if failed:
                from .cli.report import socket_table

                with open(self._table_path(), "w") as f:
                    f.write("\n".join(socket_table(self.stack)) + "\n")
            else:
                os.unlink(self.pcap_path)
        self.stack.close()


_KEY = pytest.StashKey[_Session]()


@pytest.fixture
def loopstack_stack() -> Iterator[Stack]:
    """A fresh loopstack stack (not patched in)."""
    with Stack() as stack:
        yield stack


@pytest.fixture
def loopstack_patch(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Run the test with the standard library patched to a fresh stack."""
    session = request.node.stash.get(_KEY, None)
    if session is not None:  # --loopstack already patched this test
        yield session.stack
        return
    stack = _make_stack(request.config)
    try:
        with patch(stack):
            yield stack
    finally:
        stack.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, None, None]:
    if not item.config.getoption("--loopstack"):
        yield
        return
    session = _Session(item)
    item.stash[_KEY] = session
    with patch(session.stack):
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
        session.failed = True
        for note in session.describe():
            report.sections.append(("loopstack", note))
    if report.when == "teardown":
        session.finish(session.failed)
