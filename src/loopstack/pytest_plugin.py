"""The pytest plugin (entry point ``pytest11``): tests on a virtual loopback.

Fixtures:
- ``loopstack_stack``: the test's stack. With ``--loopstack`` it is the one
  the test runs patched on; otherwise a fresh one, closed after the test
  and not patched in.
- ``loopstack_patch``: the test runs with the standard library patched to
  that stack, which the fixture yields.

Options:
- ``--loopstack``: every test runs patched, fixtures included: their setup
  and teardown run patched too, so a session-scoped fixture can start the
  server that every test talks to.
- ``--loopstack-scope test|class|module|session``: how long one stack lives
  under ``--loopstack`` (default ``session``: the machine has one loopback).
  A test whose fixtures live longer than that runs on the stack of the
  widest of them (see "Scopes" below).
- ``--loopstack-clock virtual``: the stacks run on virtual time: it moves
  only when every thread is blocked (Stack.wait_for explains the rule), so
  a suite with 200 ms delays and 30 s timeouts costs no wall time and
  repeats with its seed. Time also moves for programs that wait in select
  or asyncio (``Stack.autojump``); asyncio's own timers stay real unless
  the test runs its loop with ``loopstack.aio``.
- ``--loopstack-netem SPEC``: netem on lo for every stack the plugin makes.
- ``--loopstack-seed N``: seed them. Without it each stack gets a random
  seed; either way a failing test's report prints the seed to replay it with.
- ``--loopstack-pcap DIR``: capture each test on its stack; keep the pcap and
  the socket table (taken when the test failed) of the tests that fail.
  Under pytest-xdist the file names start with the worker's id (``gw0-``).
- ``--loopstack-report DIR``: record each test on its stack (packets, the
  ones netem drops, cwnd/ssthresh/RTT, counters) and write a report page
  (``loopstack report``'s ladder diagrams and time-sequence graphs) for
  each test that fails, next to its pcap; the failure's summary line names
  the page.
- ``--loopstack-forward VPORT:HOST:PORT`` (repeatable): each stack gets a
  virtual listener on 127.0.0.1:VPORT relayed to a real service on the host
  (``Stack.forward``), so a patched suite still reaches, say, a database on
  the host's 127.0.0.1:5432. The target is not tried when a stack is made
  (a session fixture may start it later): a connection it refuses resets
  the virtual client.

A patched test's stack is shared with the processes the test starts: forks,
``multiprocessing`` and Python subprocesses attach to it.

Scopes. A stack is made when the first test that needs it starts and closed
when the run leaves its scope (the session, the module, the class, the
test), after the fixtures of that scope are torn down. A fixture scoped
wider than ``--loopstack-scope`` cannot live on a narrower stack, and a test
can only reach a server on its own stack, so a test runs on the stack of
the widest scope among its fixtures and those of every test it shares a
fixture instance with, and so on (``_assign``): with ``--loopstack-scope
test``, the tests of a module that use a module-scoped server fixture share
that module's stack; the module's other tests still get a stack each. A
package-scoped fixture widens to the session. Fixtures of pytest itself,
pytest-xdist, pytest-asyncio, anyio and loopstack never widen a stack (they
make no sockets); every other fixture may (a plugin's server fixture
counts). Fixtures requested with ``request.getfixturevalue`` are not known
in advance: one scoped wider than its test's stack keeps that stack open
until it is torn down, and gets a warning (other tests cannot reach it).
Every fixture is set up and torn down patched to the stack it was set up on.

Under pytest-xdist (``-n``) each worker is its own process: its own stacks,
captures named after the worker, reports that say which worker ran the test.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from .link.netem import NetemSpec
from .patch import patch, prepare
from .report.recorder import Recorder
from .stack import Stack

# --loopstack-scope's names, and pytest's scopes from narrow to wide.
_SCOPE_OPTION = {"test": "function", "class": "class", "module": "module", "session": "session"}
_RANK = {"function": 0, "class": 1, "module": 2, "package": 3, "session": 4}
# Packages whose fixtures make no sockets: they never widen a test's stack.
_QUIET_PACKAGES = frozenset({"_pytest", "pytest", "pluggy", "xdist", "pytest_asyncio", "anyio",
                             "loopstack"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loopstack", "tests on a virtual loopback (loopstack)")
    group.addoption("--loopstack", action="store_true", default=False,
                    help="run every test, and its fixtures, with the standard library patched "
                    "to a loopstack stack")
    group.addoption("--loopstack-scope", choices=tuple(_SCOPE_OPTION), default="session",
                    help="how long one stack lives under --loopstack: a stack per test, class, "
                    "module, or one for the session (default); tests whose fixtures live "
                    "longer share the stack of the widest of them")
    group.addoption("--loopstack-clock", choices=("real", "virtual"), default="real",
                    help="the stacks' clock: real (default) or virtual (time moves only when "
                    "every thread is blocked, so delays and timeouts cost no wall time)")
    group.addoption("--loopstack-netem", metavar="SPEC", default=None,
                    help='netem spec for lo, e.g. "delay 10ms loss 1%%"')
    group.addoption("--loopstack-seed", metavar="N", type=int, default=None,
                    help="seed for every stack (failures print the seed for replay)")
    group.addoption("--loopstack-pcap", metavar="DIR", default=None,
                    help="keep a pcap and the socket table of each failing test in DIR")
    group.addoption("--loopstack-report", metavar="DIR", default=None,
                    help="write a report page (ladder diagrams, time-sequence graphs) of each "
                    "failing test in DIR, next to its pcap")
    group.addoption("--loopstack-forward", metavar="VPORT:HOST:PORT", action="append",
                    default=[], help="relay virtual 127.0.0.1:VPORT of every stack to a real "
                    "service at HOST:PORT on the host (repeatable)")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> None:
    # Before conftest files import code that takes socket.socket's methods (patch.prepare).
    if getattr(early_config.known_args_namespace, "loopstack", False):
        prepare()


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


def _worker() -> str | None:
    """pytest-xdist's id for this worker process ("gw0"), or None."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def _new_stack(config: pytest.Config) -> Stack:
    """A stack with the options' seed, netem and forwards."""
    seed = config.getoption("--loopstack-seed")
    if seed is None:  # still print one, so a failure can be replayed
        seed = random.SystemRandom().randrange(1 << 32)
    stack = Stack(clock=config.getoption("--loopstack-clock"), seed=seed)
    if stack.clock.is_virtual:  # programs that wait in select or asyncio move time too
        stack.autojump()
    spec = config.getoption("--loopstack-netem")
    if spec:
        stack.lo.netem(spec)
    for vport, host, port in _forwards(config):  # closed with the stack
        stack.forward(vport, to=(host, port), check=False)
    return stack


# -- which stack a test runs on (--loopstack) ------------------------------------------
def _quiet_fixture(fixturedef: Any) -> bool:
    module = getattr(getattr(fixturedef, "func", None), "__module__", None) or ""
    return module.partition(".")[0] in _QUIET_PACKAGES


def _wide_fixtures(item: pytest.Item) -> Iterator[Any]:
    """The fixtures of ``item``'s closure that outlive it and may make sockets."""
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in defs:
            if getattr(fixturedef, "scope", "function") != "function" and not _quiet_fixture(
                    fixturedef):
                yield fixturedef


def _scope_node(item: pytest.Item, scope: str) -> Any:
    """The collection node whose lifetime a stack (or fixture) of ``scope`` has."""
    node: Any = None
    if scope == "class":
        node = item.getparent(pytest.Class)  # none: pytest makes it the test's own
    elif scope == "module":
        node = item.getparent(pytest.Module) or item.parent  # a non-Python test: its file
    elif scope in ("package", "session"):
        node = item.session
    return item if node is None else node


def _assign(items: list[pytest.Item], configured: str) -> dict[pytest.Item, str]:
    """The scope of the stack each test runs on: the configured one, widened
    to that of the widest fixture used by the test or by any test that
    shares a fixture instance with it (and so on): tests that share a
    server must share its stack."""
    group = list(range(len(items)))  # union-find over the tests

    def find(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    owner: dict[tuple[int, int], int] = {}  # fixture instance -> a test that uses it
    widest = [_RANK[configured]] * len(items)
    for i, item in enumerate(items):
        for fixturedef in _wide_fixtures(item):
            key = (id(fixturedef), id(_scope_node(item, fixturedef.scope)))
            j = find(owner.setdefault(key, i))
            k = find(i)
            widest[k] = max(widest[k], _RANK[fixturedef.scope])
            if j != k:
                group[k] = j
                widest[j] = max(widest[j], widest[k])
    names = {rank: name for name, rank in _RANK.items()}
    out = {}
    for i, item in enumerate(items):
        scope = names[widest[find(i)]]
        out[item] = "session" if scope == "package" else scope
    return out


class _Stacks:
    """The stacks of a ``--loopstack`` run, one per scope node, each closed
    when the run leaves its node."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.scope = _SCOPE_OPTION[config.getoption("--loopstack-scope")]
        self.open: dict[Any, tuple[Stack, str]] = {}  # node -> (stack, scope)
        self.kept: list[tuple[Any, Stack]] = []  # stacks also kept open until a node is left
        self.current: tuple[Stack, str] | None = None  # the running test's
        self.scopes: dict[pytest.Item, str] = {}  # each test's stack scope (_assign)

    def for_item(self, item: pytest.Item) -> tuple[Stack, str]:
        if item not in self.scopes:  # first test, or one added after collection
            self.scopes.update(_assign(list(item.session.items) + [item], self.scope))
        scope = self.scopes[item]
        node = _scope_node(item, scope)
        entry = self.open.get(node)
        if entry is None:
            entry = self.open[node] = (_new_stack(self.config), scope)
        return entry

    def keep(self, stack: Stack, node: Any) -> None:
        """Keep ``stack`` open until the run leaves ``node`` too."""
        self.kept.append((node, stack))

    def leave(self, nextitem: pytest.Item | None) -> None:
        """Close the stacks of the nodes the run leaves before ``nextitem``."""
        staying = set() if nextitem is None else set(nextitem.listchain())
        left = [self.open.pop(n)[0] for n in list(self.open) if n not in staying]
        left += [stack for n, stack in self.kept if n not in staying]
        self.kept = [(n, stack) for n, stack in self.kept if n in staying]
        needed = {id(stack) for stack, _ in self.open.values()}
        needed |= {id(stack) for _, stack in self.kept}
        for stack in left:
            if id(stack) not in needed:
                stack.close()

    def close(self) -> None:
        for stack, _ in self.open.values():
            stack.close()
        for _, stack in self.kept:
            stack.close()
        self.open.clear()
        self.kept.clear()


_STACKS = pytest.StashKey[_Stacks]()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.getoption("--loopstack"):
        session.config.stash[_STACKS] = _Stacks(session.config)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # After the runner's own sessionfinish, which tears down what an early
    # stop (-x, Ctrl-C) left set up, patched to its stacks.
    stacks = session.config.stash.get(_STACKS, None)
    if stacks is not None:
        stacks.close()


# -- one test: its stack, capture and report notes ---------------------------------------
class _Test:
    """One test's view of its stack: the capture taken while it runs (when
    --loopstack-pcap is given) and what its report says if it fails."""

    def __init__(self, item: pytest.Item, stack: Stack, scope: str, owned: bool) -> None:
        self.stack = stack
        self.scope = scope
        self.owned = owned  # a fixture's fresh stack, closed with the test
        self.nodeid = item.nodeid
        self.pcap_path: str | None = None
        self.capture: Any = None
        self.recorder: Recorder | None = None
        self.page: str | None = None
        self.failed = False
        pcap_dir = item.config.getoption("--loopstack-pcap")
        report_dir = item.config.getoption("--loopstack-report")
        if pcap_dir or report_dir:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
            worker = _worker()
            if worker is not None:
                name = f"{worker}-{name}"
            folder = pcap_dir or report_dir
            os.makedirs(folder, exist_ok=True)
            self.pcap_path = os.path.join(folder, name + ".pcap")
            if report_dir:
                os.makedirs(report_dir, exist_ok=True)
                self.recorder = stack.report(os.path.join(report_dir, name + ".html"),
                                             pcap=self.pcap_path)
            else:
                self.capture = stack.capture(self.pcap_path)

    def fail(self) -> tuple[str, str]:
        """The test failed: keep its socket table; what its report should say."""
        from .cli.tables import socket_table

        self.failed = True
        table = "\n".join(socket_table(self.stack)) + "\n"
        seed = self.stack.seed
        notes = [f"seed: {seed} (replay with --loopstack-seed {seed})"]
        if self.stack.clock.is_virtual:
            notes.append(f"virtual time: {self.stack.now():.6f} s")
        if self.scope != "function":
            notes.append(f"stack: {self.scope}-scoped, shared with other tests "
                         "(--loopstack-scope test isolates the tests its fixtures allow)")
        worker = _worker()
        if worker is not None:
            notes.append(f"worker: {worker}")
        if self.recorder is not None:
            self.recorder.freeze()  # the report's socket table: as the test failed
            self.page = self.recorder.page
            notes.append(f"report: {self.page}")
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
        """Keep the capture, socket table and report of a failure; drop the rest."""
        if self.recorder is not None:
            self.recorder.stop()
            if self.failed:
                try:
                    self.recorder.write(title=f"loopstack report: {self.nodeid} failed")
                except (OSError, ValueError) as e:
                    warnings.warn(pytest.PytestWarning(
                        f"loopstack: the report of {self.nodeid} could not be written: {e}"),
                        stacklevel=1)
            else:
                os.unlink(self.recorder.pcap)
            self.recorder = None
        if self.capture is not None:
            self.capture.stop()
            self.capture = None
            assert self.pcap_path is not None
            if not self.failed:
                os.unlink(self.pcap_path)
        if self.owned:
            self.stack.close()


_KEY = pytest.StashKey[_Test]()


def _test(item: pytest.Item) -> _Test:
    """The test's record; without --loopstack a fixture asking for it makes
    the test a fresh stack of its own."""
    test = item.stash.get(_KEY, None)
    if test is None:
        test = item.stash[_KEY] = _Test(item, _new_stack(item.config), "function", owned=True)
    return test


@pytest.fixture
def loopstack_stack(request: pytest.FixtureRequest) -> Stack:
    """The test's loopstack stack: with --loopstack the one it runs patched
    on; otherwise a fresh one, closed after the test."""
    return _test(request.node).stack


@pytest.fixture
def loopstack_patch(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Run the test with the standard library patched to its stack."""
    stack = _test(request.node).stack
    if request.config.getoption("--loopstack"):  # already patched for the whole test
        yield stack
        return
    with patch(stack, children=True):
        yield stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, None, None]:
    stacks = item.config.stash.get(_STACKS, None)
    if stacks is None:
        yield
        test = item.stash.get(_KEY, None)
        if test is not None:
            test.finish()
        return
    stack, scope = stacks.for_item(item)
    test = item.stash[_KEY] = _Test(item, stack, scope, owned=False)
    stacks.current = (stack, scope)
    try:
        with patch(stack, children=True):  # subprocesses share the test's stack
            yield
    finally:
        stacks.current = None
        test.finish()
        stacks.leave(nextitem)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest
                         ) -> Generator[None, None, None]:
    """A fixture that outlives its test is torn down patched to the stack it
    was set up on (a later test may run on another stack by then)."""
    stacks = request.config.stash.get(_STACKS, None)
    current = None if stacks is None else stacks.current
    if current is None or fixturedef.scope == "function":
        yield
        return
    stack, scope = current
    if _RANK[fixturedef.scope] > _RANK[scope] and not _quiet_fixture(fixturedef):
        # Requested with getfixturevalue: its tests could not be put on one
        # stack in advance. Keep this one open for its teardown at least.
        assert stacks is not None
        stacks.keep(stack, request.node)
        warnings.warn(pytest.PytestWarning(
            f"loopstack: the {fixturedef.scope}-scoped fixture {fixturedef.argname!r} is set "
            f"up on a {scope}-scoped stack, which other tests cannot reach; request it as an "
            f"argument (not with getfixturevalue) so that its tests share a "
            f"{fixturedef.scope}-scoped stack"), stacklevel=1)
    entered: list[AbstractContextManager[Stack]] = []
    fixturedef.addfinalizer(_leave(entered))  # runs after the fixture's own teardown
    yield
    fixturedef.addfinalizer(_enter(stack, entered))  # runs before it


def _enter(stack: Stack, entered: list[AbstractContextManager[Stack]]) -> Callable[[], None]:
    def enter() -> None:
        if not stack._closed:
            cm = patch(stack, children=True)
            cm.__enter__()
            entered.append(cm)
    return enter


def _leave(entered: list[AbstractContextManager[Stack]]) -> Callable[[], None]:
    def leave() -> None:
        if entered:
            entered.pop().__exit__(None, None, None)
    return leave


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    test = item.stash.get(_KEY, None)
    if test is not None and report.failed and not test.failed:
        report.sections.append(test.fail())
        if test.page is not None:
            _name_page(item.config, report, test.page)


_PAGES = pytest.StashKey[list[tuple[str, str]]]()


def _name_page(config: pytest.Config, report: pytest.TestReport, page: str) -> None:
    """Put the report page at the front of the failure's one-line summary,
    and list it at the end of the run."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and isinstance(getattr(crash, "message", None), str):
        crash.message = f"[loopstack report: {page}] {crash.message}"
    config.stash.setdefault(_PAGES, []).append((report.nodeid, page))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    pages = config.stash.get(_PAGES, [])
    if pages:
        terminalreporter.section("loopstack reports")
        for nodeid, page in pages:
            terminalreporter.write_line(f"{nodeid}: {page}")
