"""The pytest plugin, exercised on an inner test file through pytester."""

from __future__ import annotations

import re
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
        assert loopstack_stack.sockets()[0]["local"][0] == "127.0.0.7"


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
