"""The pytest plugin's --loopstack-report, and `loopstack run --report`:
pages written for what failed, and for a run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .pages import arrows, by_class, connections, remote_fetches

pytest_plugins = ["pytester"]

INNER = '''
import socket


def test_passes():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            conn, _ = server.accept()
            client.sendall(b"fine")
            assert conn.recv(10) == b"fine"
            conn.close()


def test_fails_mid_conversation():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    client.sendall(b"evidence")
    assert conn.recv(100) == b"something else"


def test_passes_too():
    assert socket.gethostbyname("localhost") == "127.0.0.1"
'''


def test_one_failing_test_one_page(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_inner=INNER)
    reports = tmp_path / "reports"
    result = pytester.runpytest_subprocess("--loopstack", "--loopstack-scope", "test",
                                           "--loopstack-netem", "delay 1ms",
                                           "--loopstack-report", str(reports),
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    pages = sorted(reports.glob("*.html"))
    assert [p.name for p in pages] == ["test_inner.py_test_fails_mid_conversation.html"]
    # Its capture is beside it; the passing tests left nothing.
    assert sorted(p.name for p in reports.iterdir()) == [
        "test_inner.py_test_fails_mid_conversation.html",
        "test_inner.py_test_fails_mid_conversation.pcap",
        "test_inner.py_test_fails_mid_conversation.sockets.txt"]
    out = result.stdout.str()
    # The failure's summary line names the page (cut to the terminal's width
    # like every summary line), and the run's end lists it in full.
    result.stdout.fnmatch_lines(["FAILED test_inner.py::test_fails_mid_conversation - "
                                 "[[]loopstack report: *"])
    assert f"test_inner.py::test_fails_mid_conversation: {pages[0]}" in out
    html = pages[0].read_text()
    assert "test_fails_mid_conversation failed" in html
    (c,) = connections(html)  # only this test's connection
    assert c["packets"] == len(arrows(by_class(html, "ladder")[0])) >= 4
    assert "Sockets at the end" in html and "ESTAB" in html  # as the test failed
    assert remote_fetches(html) == []


def test_without_failures_no_page(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_inner=INNER)
    reports = tmp_path / "reports"
    result = pytester.runpytest_subprocess("--loopstack", "--loopstack-report", str(reports),
                                           "-k", "passes", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, deselected=1)
    assert list(reports.glob("*")) == []


def test_loopstack_run_report(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent('''
        import socket, threading
        server = socket.create_server(("127.0.0.1", 8000))
        def serve():
            conn, _ = server.accept()
            while conn.recv(65536):
                pass
            conn.sendall(b"bye")
            conn.close()
        t = threading.Thread(target=serve)
        t.start()
        c = socket.create_connection(("127.0.0.1", 8000))
        c.sendall(bytes(50000))
        c.shutdown(socket.SHUT_WR)
        print(c.recv(10).decode())
        c.close()
        t.join()
    '''))
    out = tmp_path / "rep"
    proc = subprocess.run([sys.executable, "-m", "loopstack", "run", "--clock", "virtual",
                           "--seed", "5", "--netem", "delay 2ms", "--report", str(out), "--",
                           str(prog)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "bye"
    assert f"loopstack: report: {out / 'index.html'}" in proc.stderr
    html = (out / "index.html").read_text()
    assert (out / "capture.pcap").exists()
    (c,) = connections(html)
    assert c["retrans"] == 0 and c["dropped"] == 0
    assert len(by_class(html, "cc")) == 2  # the run's own cwnd and RTT
    assert "lo: netem" in html and "virtual clock, seed 5" in html
