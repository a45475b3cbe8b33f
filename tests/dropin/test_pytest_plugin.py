"""The pytest plugin, exercised on an inner test file through pytester."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.utils import rdpcap

pytest_plugins = ["pytester"]

INNER = '''
import socket

import loopstack
from loopstack.socket import Socket


def test_runs_patched():
    with socket.socket() as s:
        assert isinstance(s, Socket)


def test_fails_mid_conversation():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    client.sendall(b"evidence")
    assert conn.recv(100) == b"something else"


def test_stack_fixture(loopstack_stack):
    assert isinstance(loopstack_stack, loopstack.Stack)
    with loopstack_stack.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.7", 0))
        # The session's stack is shared: the failed test's sockets are still open.
        assert [r for r in loopstack_stack.sockets() if r["local"][0] == "127.0.0.7"]


def test_patch_fixture(loopstack_patch):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        assert u.stack is loopstack_patch
    assert socket.gethostbyname("localhost") == "127.0.0.1"
'''


def test_loopstack_option_seed_and_pcap(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_inner=INNER)
    pcaps = tmp_path / "pcaps"
    result = pytester.runpytest("--loopstack", "--loopstack-seed", "42",
                                "--loopstack-pcap", str(pcaps), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    out = result.stdout.str()
    assert "seed: 42 (replay with --loopstack-seed 42)" in out
    # Only the failing test's capture and socket table are kept.
    kept = sorted(p.name for p in pcaps.iterdir())
    assert kept == ["test_inner.py_test_fails_mid_conversation.pcap",
                    "test_inner.py_test_fails_mid_conversation.sockets.txt"]
    table = (pcaps / kept[1]).read_text()
    assert re.search(r"tcp\s+LISTEN", table)
    assert len(re.findall(r"tcp\s+ESTAB", table)) == 2
    assert "ESTAB" in out  # the table is in the report too
    packets = rdpcap(str(pcaps / kept[0]))
    assert any(TCP in p and bytes(p[TCP].payload) == b"evidence" for p in packets)


def test_without_the_option_only_fixtures_patch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-k", "not mid_conversation", "-p", "no:cacheprovider")
    # Not patched: the plain socket is the kernel's; the fixtures still work.
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_runs_patched*", "*assert False*"])
    assert "seed:" not in result.stdout.str()  # a test without a stack has no notes
    # The fixtures' stacks get a random seed, printed when such a test fails.
    pytester.makepyfile(test_inner_seeded='''
        def test_fails(loopstack_patch):
            assert False
    ''')
    result = pytester.runpytest("test_inner_seeded.py", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert re.search(r"seed: (\d+) \(replay with --loopstack-seed \1\)", result.stdout.str())


def test_netem_option_applies_and_is_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner_netem='''
        import time, socket

        def test_slow(loopstack_patch):
            assert loopstack_patch.lo.qdisc is not None
            server = socket.create_server(("127.0.0.1", 0))
            start = time.monotonic()
            socket.create_connection(server.getsockname()).close()
            assert time.monotonic() - start >= 0.04  # SYN and SYN-ACK, 20 ms each
    ''')
    pytester.runpytest("--loopstack-netem", "delay 20ms",
                       "-p", "no:cacheprovider").assert_outcomes(passed=1)
    bad = pytester.runpytest("--loopstack-netem", "delay sideways", "-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--loopstack-netem 'delay sideways'" in bad.stderr.str()


# -- pytest-xdist: each worker its own stacks, captures named after it ---------------------
XDIST_CONFTEST = '''
import json
import os
import socket
import sys

from loopstack.readiness import making
from loopstack.socket import loopstack_event

_INET = (socket.AF_INET, socket.AF_INET6)
KERNEL = []  # what reached the kernel's socket module for the network


def _audit(event, args):
    if making():
        return  # a readiness descriptor's kernel pair (readiness.py)
    if loopstack_event():
        return  # loopstack's own event, for one of its sockets (socket.py)
    if event == "socket.__new__" and args[1] in _INET:
        KERNEL.append([event, args[1]])
    elif event in ("socket.bind", "socket.connect", "socket.sendto") and isinstance(
            args[1], tuple):
        KERNEL.append([event, list(args[1])])


sys.addaudithook(_audit)


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:  # the controller runs no test
        with open(os.path.join(os.environ["KERNEL_OUT"], worker + ".json"), "w") as f:
            json.dump(KERNEL, f)
'''

XDIST_MODULE = '''
import os
import socket

from loopstack.socket import Socket

PORT = int(os.environ["FIXED_PORT"])  # also bound on the real kernel while this runs


def connect_and_echo(message):
    with socket.create_server(("127.0.0.1", PORT)) as server:
        with socket.create_connection(("127.0.0.1", PORT), timeout=5) as client:
            assert isinstance(client, Socket)
            conn, _ = server.accept()
            with conn:
                client.sendall(message)
                assert conn.recv(100) == message
'''


def _xdist_suite(pytester: pytest.Pytester, modules: int, tests: int, failing: int = 0) -> None:
    pytester.makeconftest(XDIST_CONFTEST)
    for m in range(modules):
        body = [XDIST_MODULE]
        for t in range(tests):
            body.append(f"def test_conn_{t}():\n    connect_and_echo(b'm{m}t{t}')\n")
        for t in range(failing):
            body.append(f"def test_fails_{t}():\n    connect_and_echo(b'f{m}t{t}')\n"
                        "    assert False\n")
        pytester.makepyfile(**{f"test_x{m}": "\n\n".join(body)})


@pytest.fixture
def real_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[int]:
    """A port held by a real listening socket on the host's 127.0.0.1 while
    the inner suite binds it on its stacks; where the audit logs go."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    monkeypatch.setenv("FIXED_PORT", str(port))
    monkeypatch.setenv("KERNEL_OUT", str(tmp_path))
    try:
        yield port
    finally:
        holder.close()


def test_xdist_fifty_connections_never_reach_the_kernel(pytester: pytest.Pytester,
                                                        real_port: int,
                                                        tmp_path: Path) -> None:
    _xdist_suite(pytester, modules=5, tests=10)
    result = pytester.runpytest_subprocess("-n", "2", "--loopstack", "-p", "no:cacheprovider",
                                           timeout=300)
    result.assert_outcomes(passed=50)
    logs = sorted(tmp_path.glob("gw*.json"))
    assert [p.name for p in logs] == ["gw0.json", "gw1.json"]  # both workers ran tests
    for log in logs:
        assert json.loads(log.read_text()) == [], f"{log.name}: the kernel saw the network"


def test_xdist_pcaps_and_reports_per_worker(pytester: pytest.Pytester, real_port: int,
                                            tmp_path: Path) -> None:
    _xdist_suite(pytester, modules=4, tests=2, failing=1)
    pcaps = tmp_path / "pcaps"
    result = pytester.runpytest_subprocess("-n", "2", "--loopstack", "--loopstack-pcap",
                                           str(pcaps), "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=8, failed=4)
    out = result.stdout.str()
    kept = sorted(p.name for p in pcaps.iterdir())
    assert len(kept) == 8, kept  # a pcap and a socket table per failure, nothing else
    for m in range(4):
        found = [k for k in kept if re.fullmatch(rf"(gw[01])-test_x{m}.py_test_fails_0\.pcap", k)]
        assert len(found) == 1, kept
        worker = found[0][:3]
        assert found[0][:-5] + ".sockets.txt" in kept
        # The report says which worker ran it, and names the same file.
        assert f"worker: {worker}" in out
        assert str(pcaps / found[0]) in out
        payloads = {bytes(p[TCP].payload) for p in rdpcap(str(pcaps / found[0])) if TCP in p}
        assert f"f{m}t0".encode() in payloads
