"""The pytest plugin's stack lifetimes (``--loopstack-scope``): servers
started by session-, module- and class-scoped fixtures are reachable from
every test that uses them, whatever the scope; each fixture is set up and
torn down patched to its stack; pcaps stay per test on a shared stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.utils import rdpcap

pytest_plugins = ["pytester"]

CONFTEST = '''
import json
import os
import socket
import socketserver
import threading
from contextlib import contextmanager

import pytest

from loopstack.patch import current
from loopstack.socket import Socket

SEEN = []        # (nodeid, the stack the test ran on)
EVENTS = []      # fixture setups and teardowns, in order


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(1000):
            self.request.sendall(data)


def echo(address, message):
    with socket.create_connection(address, timeout=5) as c:
        assert isinstance(c, Socket)
        c.sendall(message)
        return c.recv(100)


@contextmanager
def serving(name):
    """A ThreadingTCPServer echo server in a thread, on the stack patched in now."""
    stack = current()[0]
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    assert isinstance(server.socket, Socket)  # set up patched
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    EVENTS.append("up " + name)
    try:
        yield server.server_address
    finally:
        # Torn down patched to the same stack: the server is still reachable.
        assert current()[0] is stack
        assert echo(server.server_address, b"bye") == b"bye"
        server.shutdown()
        server.server_close()
        thread.join(5)
        EVENTS.append("down " + name)


@pytest.fixture(scope="session")
def session_server():
    with serving("session") as address:
        yield address


@pytest.fixture(autouse=True)
def _seen(request, loopstack_stack):
    SEEN.append((request.node.nodeid, loopstack_stack))


def pytest_sessionfinish(session):
    ids = {}
    stacks = {nodeid: ids.setdefault(id(stack), len(ids)) for nodeid, stack in SEEN}
    with open(os.environ["SCOPES_OUT"], "w") as f:
        json.dump({"stacks": stacks, "events": EVENTS}, f)
'''

TEST_ONE = '''
import socket

import pytest

from conftest import echo, serving
from loopstack.socket import Socket


@pytest.fixture(scope="module")
def module_server():
    with serving("module one") as address:
        yield address


def test_session_1(session_server):
    assert echo(session_server, b"s1") == b"s1"


def test_module_1(module_server):
    assert echo(module_server, b"m1") == b"m1"


def test_plain_1():
    with socket.socket() as s:
        assert isinstance(s, Socket)


class TestClass:
    @pytest.fixture(scope="class")
    @classmethod
    def class_server(cls):
        with serving("class") as address:
            yield address

    def test_class_1(self, class_server, session_server):
        assert echo(class_server, b"c1") == b"c1"
        assert echo(session_server, b"c1s") == b"c1s"

    def test_class_2(self, class_server):
        assert echo(class_server, b"c2") == b"c2"


def test_plain_2():
    with socket.socket() as s:
        assert isinstance(s, Socket)
'''

TEST_TWO = '''
import pytest

from conftest import echo, serving


@pytest.fixture(scope="module")
def module_server():
    with serving("module two") as address:
        yield address


def test_session_2(session_server):
    assert echo(session_server, b"s2") == b"s2"


def test_module_2(module_server, session_server):
    assert echo(module_server, b"m2") == b"m2"
    assert echo(session_server, b"m2s") == b"m2s"


def test_plain_3(module_server):
    assert echo(module_server, b"p3") == b"p3"


def test_plain_4():
    pass


class TestPlain:
    def test_a(self):
        pass

    def test_b(self):
        pass
'''

ONE = "test_one.py::"
TWO = "test_two.py::"
S1, M1, P1 = ONE + "test_session_1", ONE + "test_module_1", ONE + "test_plain_1"
C1, C2, P2 = ONE + "TestClass::test_class_1", ONE + "TestClass::test_class_2", ONE + "test_plain_2"
S2, M2, P3, P4 = (TWO + "test_session_2", TWO + "test_module_2", TWO + "test_plain_3",
                  TWO + "test_plain_4")
A, B = TWO + "TestPlain::test_a", TWO + "TestPlain::test_b"

# Which tests share a stack, per --loopstack-scope. A test runs on the stack
# of the widest scope among its fixtures and those of every test it shares a
# fixture instance with: the session server's users, then the class's and
# the second module's servers' users with them. Module one's server widens
# its test to the module's stack.
SERVED = {S1, C1, C2, S2, M2, P3}
SHARING = {
    "session": [SERVED | {M1, P1, P2, P4, A, B}],
    "module": [SERVED, {M1, P1, P2}, {P4, A, B}],
    "class": [SERVED, {M1}, {P1}, {P2}, {P4}, {A, B}],
    "test": [SERVED, {M1}, {P1}, {P2}, {P4}, {A}, {B}],
}


def _groups(stacks: dict[str, int]) -> list[set[str]]:
    by_stack: dict[int, set[str]] = {}
    for nodeid, stack in stacks.items():
        by_stack.setdefault(stack, set()).add(nodeid)
    return sorted(by_stack.values(), key=lambda g: (-len(g), sorted(g)))


def _expected(scope: str) -> list[set[str]]:
    return sorted(SHARING[scope], key=lambda g: (-len(g), sorted(g)))


@pytest.mark.parametrize("scope", ["session", "module", "class", "test"])
def test_scoped_server_fixtures_in_every_scope(pytester: pytest.Pytester, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               scope: str) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_one=TEST_ONE, test_two=TEST_TWO)
    out = tmp_path / "scopes.json"
    monkeypatch.setenv("SCOPES_OUT", str(out))
    result = pytester.runpytest("--loopstack", "--loopstack-scope", scope,
                                "-p", "no:cacheprovider", "-W", "error::pytest.PytestWarning")
    result.assert_outcomes(passed=12)
    got = json.loads(out.read_text())
    assert _groups(got["stacks"]) == _expected(scope)
    # Every server was torn down (the teardown talks to it, patched), in
    # pytest's order: the class's and modules' before the session's.
    events = got["events"]
    assert sorted(events) == sorted(f"{e} {n}" for e in ("up", "down")
                                    for n in ("session", "module one", "class", "module two"))
    assert events.index("down class") < events.index("down module one") < events.index(
        "up module two")
    assert events[-1] == "down session"


def test_a_failing_test_keeps_its_own_capture_on_a_shared_stack(
        pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_pair='''
        from conftest import echo

        def test_before(session_server):
            assert echo(session_server, b"before") == b"before"

        def test_fails(session_server):
            assert echo(session_server, b"during") == b"something else"

        def test_after(session_server):
            assert echo(session_server, b"after") == b"after"
    ''')
    monkeypatch.setenv("SCOPES_OUT", str(tmp_path / "scopes.json"))
    pcaps = tmp_path / "pcaps"
    result = pytester.runpytest("--loopstack", "--loopstack-pcap", str(pcaps),
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    assert "stack: session-scoped" in result.stdout.str()
    kept = sorted(p.name for p in pcaps.iterdir())
    assert kept == ["test_pair.py_test_fails.pcap", "test_pair.py_test_fails.sockets.txt"]
    payloads = {bytes(p[TCP].payload) for p in rdpcap(str(pcaps / kept[0])) if TCP in p}
    assert b"during" in payloads
    assert not payloads & {b"before", b"after"}  # the other tests' traffic is not in it
    # The table is the shared stack's at the time of failure: the session's
    # server is listening on it.
    assert "LISTEN" in (pcaps / kept[1]).read_text()


def test_a_fixture_requested_dynamically_is_warned_about(pytester: pytest.Pytester,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_dynamic='''
        from conftest import echo

        def test_dynamic(request):
            address = request.getfixturevalue("session_server")
            assert echo(address, b"x") == b"x"
    ''')
    monkeypatch.setenv("SCOPES_OUT", str(tmp_path / "scopes.json"))
    result = pytester.runpytest("--loopstack", "--loopstack-scope", "test",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*session-scoped fixture 'session_server' is set up on a "
                                 "function-scoped stack*"])
