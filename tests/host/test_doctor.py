"""`loopstack doctor`: the machine's real loopback, checked inside a
network namespace each test makes (its own lo, its own /etc/hosts through
/etc/netns/NAME/hosts, its own listening sockets), removed afterwards."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopstack.host.doctor import hosts_has_ipv6_localhost, scope_of

CLI = [sys.executable, "-m", "loopstack", "doctor"]
KEYS = {"proto", "address", "port", "pid", "process", "scope"}
GAP = "127.0.0.1 localhost\n127.0.1.1 thishost\n"
FULL = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
SERVERS = """
import socket, sys
made = []
for family, kind, address, port in [
        (socket.AF_INET, socket.SOCK_STREAM, "0.0.0.0", 7001),
        (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", 7002),
        (socket.AF_INET6, socket.SOCK_STREAM, "::1", 7003),
        (socket.AF_INET, socket.SOCK_STREAM, "198.51.100.5", 7004),
        (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", 7005)]:
    s = socket.socket(family, kind)
    s.bind((address, port))
    if kind == socket.SOCK_STREAM:
        s.listen()
    made.append(s)
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


class Namespace:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                              text=True, timeout=timeout)

    def hosts(self, text: str) -> None:
        """The /etc/hosts that programs in this namespace see (`ip netns exec`
        bind-mounts /etc/netns/NAME/hosts over it)."""
        folder = Path("/etc/netns") / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts").write_text(text)

    def doctor(self, *args: str, prefix: tuple[str, ...] = ()) -> tuple[int, Any]:
        done = self.run(*prefix, *CLI, "--json", *args)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def ns() -> Iterator[Namespace]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2's ip to make a network namespace")
    name = f"lstk-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield Namespace(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def checks(report: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_json_shape_and_the_ipv6_localhost_gap(ns: Namespace) -> None:
    """With no '::1 localhost' line, doctor says so plainly, fails that one
    check, and everything else holds: exit status 1."""
    ns.hosts(GAP)
    code, report = ns.doctor()
    assert set(report) == {"checks", "listening"}
    for c in report["checks"]:
        assert set(c) == {"name", "ok", "detail"}
        assert isinstance(c["ok"], bool) and isinstance(c["detail"], str) and c["detail"]
    by_name = checks(report)
    assert list(by_name) == ["lo", "localhost", "localhost ::1", "icmp 127.0.0.1",
                             "tcp 127.0.0.1", "udp 127.0.0.1", "icmp ::1", "tcp ::1", "udp ::1"]
    assert by_name["localhost"] == {"name": "localhost", "ok": True,
                                    "detail": "resolves to 127.0.0.1"}
    gap = by_name["localhost ::1"]
    assert not gap["ok"]
    assert gap["detail"].startswith("/etc/hosts has no '::1 localhost' line")
    assert "add '::1 localhost ip6-localhost ip6-loopback' to /etc/hosts" in gap["detail"]
    assert [n for n, c in by_name.items() if not c["ok"]] == ["localhost ::1"]
    assert code == 1
    assert by_name["lo"]["detail"] == "up, 127.0.0.1/8, ::1/128"
    for address in ("127.0.0.1", "::1"):
        assert by_name[f"icmp {address}"]["detail"].endswith("ms (raw socket)")
        assert " ms, round trip " in by_name[f"tcp {address}"]["detail"]
        assert by_name[f"udp {address}"]["detail"].startswith("round trip ")


def test_all_checks_hold_with_a_full_hosts_file(ns: Namespace) -> None:
    ns.hosts(FULL)
    code, report = ns.doctor()
    by_name = checks(report)
    # In the resolver's order: RFC 6724 puts ::1 first where IPv6 is up.
    assert by_name["localhost"]["detail"] in ("resolves to ::1, 127.0.0.1",
                                              "resolves to 127.0.0.1, ::1")
    assert by_name["localhost ::1"]["ok"]
    assert code == 0, report


def test_listening_sockets_and_their_scope(ns: Namespace) -> None:
    ns.hosts(FULL)
    assert ns.run("ip", "addr", "add", "198.51.100.5/32", "dev", "lo").returncode == 0
    server = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", SERVERS],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        _, report = ns.doctor()
        human = ns.run(*CLI)
    finally:
        server.kill()  # by its PID: the process this test started
        server.wait(10)
    for entry in report["listening"]:
        assert set(entry) == KEYS
    found = {(e["proto"], e["address"], e["port"]): e for e in report["listening"]}
    assert found[("tcp", "0.0.0.0", 7001)]["scope"] == "all"
    assert found[("tcp", "127.0.0.1", 7002)]["scope"] == "loopback"
    assert found[("tcp6", "::1", 7003)]["scope"] == "loopback"
    assert found[("tcp", "198.51.100.5", 7004)]["scope"] == "external"
    assert found[("udp", "127.0.0.1", 7005)]["scope"] == "loopback"
    assert {e["pid"] for e in found.values()} == {server.pid}
    assert all(e["process"] and e["process"].startswith("python") for e in found.values())
    assert len(found) == 5  # doctor's own probes are not listed
    lines = human.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert ["PROTO", "ADDRESS", "PORT", "PID", "PROCESS", "SCOPE"] in [x.split() for x in lines]
    row = next(x.split() for x in lines if x.startswith("tcp ") and " 7001 " in x)
    assert row[0:3] == ["tcp", "0.0.0.0", "7001"] and row[-1] == "all"
    assert lines[-1] == ("5 listening, 2 reachable from outside this machine "
                         "(scope all or external).")


def test_icmp_without_root_is_skipped_with_the_reason(ns: Namespace) -> None:
    """No CAP_NET_RAW and net.ipv4.ping_group_range excluding us: skipped,
    saying why; allowing our group makes it use an ICMP datagram socket."""
    ns.hosts(FULL)
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux's setpriv to drop CAP_NET_RAW")
    no_raw = ("setpriv", "--bounding-set", "-net_raw")
    assert ns.run("sysctl", "-w", "net.ipv4.ping_group_range=1 0").returncode == 0
    code, report = ns.doctor(prefix=no_raw)
    icmp = checks(report)["icmp 127.0.0.1"]
    assert icmp["ok"] and icmp["detail"].startswith("skipped: raw sockets need root")
    assert "net.ipv4.ping_group_range (1 0) excludes group 0" in icmp["detail"]
    assert code == 0
    assert ns.run("sysctl", "-w", "net.ipv4.ping_group_range=0 0").returncode == 0
    _, report = ns.doctor(prefix=no_raw)
    for address in ("127.0.0.1", "::1"):
        assert checks(report)[f"icmp {address}"]["detail"].endswith("(ICMP datagram socket)")


def test_usage_error_exits_2() -> None:
    done = subprocess.run(CLI + ["--frobnicate"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("loopstack doctor: unrecognized arguments: --frobnicate")


def test_scope_of() -> None:
    assert scope_of("127.0.0.53") == "loopback"
    assert scope_of("::1") == "loopback"
    assert scope_of("::ffff:127.0.0.1") == "loopback"
    assert scope_of("0.0.0.0") == "all"
    assert scope_of("::") == "all"
    assert scope_of("192.0.2.7") == "external"
    assert scope_of("fe80::1%eth0") == "external"


def test_hosts_file_lines(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    for text, expected in [
        (GAP, False),
        (FULL, True),
        ("::1\tip6-localhost localhost # both\n", True),
        ("# ::1 localhost\n", False),
        ("0:0:0:0:0:0:0:1 localhost\n", True),
        ("::1 ip6-localhost\n", False),
    ]:
        hosts.write_text(text)
        assert hosts_has_ipv6_localhost(str(hosts)) is expected, text
    assert hosts_has_ipv6_localhost(str(tmp_path / "missing")) is False
