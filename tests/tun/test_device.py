"""The TUN device itself: what the kernel sees of it, counters on both
sides, checksums, captures, closing, and the errors a user can meet."""

from __future__ import annotations

import errno
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from loopstack import Stack
from loopstack.link.tun import TunInterface
from loopstack.wire.checksums import fill_checksums
from loopstack.wire.pcap import read_capture

from .conftest import KERNEL4, KERNEL6, LS4, LS6, TUN, Kernel, make_tun, require_root, sh

TRY_ADD_TUN = """
import sys
from loopstack import Stack
stack = Stack()
try:
    stack.add_tun(sys.argv[1], "192.0.2.2/24", peer="192.0.2.1/24")
    print("created")
except OSError as e:
    print(e.errno, e.strerror)
finally:
    stack.close()
"""


def kernel_link(kernel: Kernel) -> dict[str, object]:
    shown = json.loads(kernel.sh("ip", "-j", "-s", "addr", "show", "dev", TUN).stdout)
    link: dict[str, object] = shown[0]
    return link


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` (a callable) until true or ``timeout``: for state
    another process changes; never a timing assertion."""
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():  # type: ignore[operator]
            return True
        done.wait(0.02)
    return bool(predicate())  # type: ignore[operator]


def test_the_kernel_sees_the_device(netns: str, kernel: Kernel) -> None:
    """Up, the MTU asked for, the peer addresses (IPv6 without DAD), and a
    TUN device (no link-layer address: IP packets only)."""
    stack, iface = make_tun(netns, mtu=9000)
    try:
        link = kernel_link(kernel)
        assert link["mtu"] == 9000 and link["link_type"] == "none"
        assert "UP" in link["flags"]  # type: ignore[operator]
        addrs = {(a["local"], a["prefixlen"]) for a in link["addr_info"]  # type: ignore[attr-defined]
                 if a.get("scope") == "global"}
        assert addrs == {(KERNEL4, 24), (KERNEL6, 64)}
        assert stack.interface(TUN).mtu == 9000
        # 8000 bytes fit one packet at MTU 9000: no fragments either way.
        result = stack.ping(KERNEL4, count=1, size=8000, timeout=5)
        assert result.received == 1
        assert stack.stats()["Ip"]["FragCreates"] == 0
        info = next(i for i in stack.interfaces() if i.name == TUN)
        assert info.kind == "tun" and f"{LS4}/24" in info.addresses
    finally:
        stack.close()


def test_counters_match_the_kernels(tun: tuple[Stack, TunInterface], kernel: Kernel) -> None:
    """What loopstack counts as received the kernel counts as sent, and
    the other way round (`ip -s link` on both sides)."""
    stack, iface = tun
    assert stack.ping(KERNEL4, count=3, interval=0.01, size=3000, timeout=5).received == 3
    assert stack.ping(KERNEL6, count=3, interval=0.01, timeout=5).received == 3

    def same() -> bool:
        k = kernel_link(kernel)["stats64"]  # type: ignore[index]
        s = iface.stats
        return bool(k["tx"]["packets"] == s.rx_packets and k["tx"]["bytes"] == s.rx_bytes  # type: ignore[index]
                    and k["rx"]["packets"] == s.tx_packets and k["rx"]["bytes"] == s.tx_bytes)  # type: ignore[index]

    assert wait_until(same), (kernel_link(kernel)["stats64"], iface.stats)
    assert iface.stats.tx_packets >= 9 + 3 and iface.stats.rx_packets >= 9 + 3


def test_checksums_are_verified_on_the_way_in(tun: tuple[Stack, TunInterface],
                                              kernel: Kernel) -> None:
    """A datagram with a bad UDP checksum is dropped and counted
    (InCsumErrors, RFC 1122 4.1.3.4); the same with a good one arrives."""
    stack, _ = tun
    with stack.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 5300))
        sock.settimeout(5)
        kernel.run("raw-udp", LS4, "5300", "1234")
        assert wait_until(lambda: stack.stats()["Udp"]["InCsumErrors"] == 1)
        good = fill_checksums(_udp_packet(b"checksum?"))
        kernel.run("raw-udp", LS4, "5300", good[26:28].hex())
        assert sock.recvfrom(100) == (b"checksum?", (KERNEL4, 40000))
    assert stack.stats()["Udp"]["InCsumErrors"] == 1


def _udp_packet(payload: bytes) -> bytes:
    """The IPv4 packet raw-udp sends, to compute its correct checksum."""
    header = bytes.fromhex("45000000000000004011" "0000") + socket.inet_aton(KERNEL4) \
        + socket.inet_aton(LS4)
    udp = (40000).to_bytes(2, "big") + (5300).to_bytes(2, "big") \
        + (8 + len(payload)).to_bytes(2, "big") + b"\0\0" + payload
    total = (len(header) + len(udp)).to_bytes(2, "big")
    return header[:2] + total + header[4:] + udp


def test_capture_has_both_directions_with_checksums(tun: tuple[Stack, TunInterface],
                                                    kernel: Kernel, tmp_path: Path) -> None:
    """A capture of the device holds what the kernel sent and what
    loopstack sent, every checksum correct as it crossed the device."""
    stack, iface = tun
    path = tmp_path / "tun.pcapng"
    with stack.capture(str(path), [TUN]):
        kernel.run("ping", LS4, "100", "2")
        stack.ping(KERNEL6, count=2, interval=0.01, timeout=5)
    with open(path, "rb") as f:
        records = read_capture(f)
    directions = {r.direction for r in records}
    assert directions == {"in", "out"}
    echoes = [r for r in records if r.frame[14] >> 4 in (4, 6)]
    assert len(echoes) >= 8
    for r in echoes:
        packet = r.frame[14:]
        assert fill_checksums(packet) == packet, r


def test_close_removes_the_device(tun: tuple[Stack, TunInterface], kernel: Kernel) -> None:
    stack, iface = tun
    reader = [t for t in threading.enumerate() if t.name == f"loopstack tun {TUN}"]
    assert len(reader) == 1
    iface.close()
    assert kernel.sh("ip", "link", "show", TUN, check=False).returncode != 0
    assert not reader[0].is_alive()
    assert iface.closed and not iface.up
    assert stack.ping(KERNEL4, count=1, timeout=0.2).received == 0  # sent nowhere, counted
    assert iface.stats.tx_dropped >= 1
    iface.close()  # idempotent


def test_an_idle_device_costs_no_cpu(tun: tuple[Stack, TunInterface]) -> None:
    """The reader sleeps in poll(): idle, its thread gathers no CPU time
    (a busy loop would gather the whole half second, 50 ticks)."""
    reader = next(t for t in threading.enumerate() if t.name == f"loopstack tun {TUN}")

    def ticks() -> int:
        fields = Path(f"/proc/self/task/{reader.native_id}/stat").read_text().rsplit(")", 1)[1]
        return int(fields.split()[11]) + int(fields.split()[12])  # utime + stime

    before = ticks()
    threading.Event().wait(0.5)
    assert ticks() - before <= 5


def test_closing_the_stack_removes_the_device(netns: str, kernel: Kernel) -> None:
    stack, iface = make_tun(netns)
    stack.close()
    assert kernel.sh("ip", "link", "show", TUN, check=False).returncode != 0
    assert iface.closed
    assert not [t for t in threading.enumerate() if t.name == f"loopstack tun {TUN}"]


def test_a_device_removed_from_outside_stops_the_reader(tun: tuple[Stack, TunInterface],
                                                        kernel: Kernel) -> None:
    """`ip link del` under the stack's feet: the reader sees the device go,
    stops (no busy loop), and the interface goes down with the reason."""
    stack, iface = tun
    kernel.sh("ip", "link", "del", TUN)
    assert iface.wait(5)
    assert not iface.up and iface.error is not None and iface.error.errno == errno.ENODEV
    assert iface.stats.rx_errors == 1
    iface.close()


def test_a_name_already_taken(tun: tuple[Stack, TunInterface], netns: str) -> None:
    other = Stack()
    try:
        with pytest.raises(OSError) as caught:
            other.add_tun(TUN, "198.51.100.2/24", netns=netns)
        assert caught.value.errno == errno.EBUSY
        assert f"an interface called '{TUN}' already exists" in caught.value.strerror
        assert "choose another name" in caught.value.strerror
    finally:
        other.close()
    assert tun[0].ping(KERNEL4, count=1, timeout=5).received == 1  # the first one is untouched


def test_a_namespace_that_does_not_exist() -> None:
    require_root()
    with Stack() as stack:
        with pytest.raises(OSError) as caught:
            stack.add_tun(TUN, "192.0.2.2/24", netns="lstk-no-such-namespace")
        assert caught.value.errno == errno.ENOENT
        assert caught.value.strerror == (
            "there is no network namespace 'lstk-no-such-namespace': create it with "
            "`ip netns add lstk-no-such-namespace`, or leave netns out")
        assert TUN not in [i.name for i in stack.interfaces()]


def test_without_dev_net_tun(kernel: Kernel) -> None:
    """In a mount namespace of its own where /dev/net is empty."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare for a mount namespace")
    script = f"mount -t tmpfs none /dev/net && exec {sys.executable} -c '{TRY_ADD_TUN}' x0"
    done = kernel.sh("unshare", "-m", "--propagation", "private", "sh", "-c", script)
    code, _, text = done.stdout.strip().partition(" ")
    assert int(code) == errno.ENOENT
    assert text.startswith("/dev/net/tun is missing: load the tun module (modprobe tun)")


def test_without_cap_net_admin(kernel: Kernel) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux's setpriv to drop CAP_NET_ADMIN")
    done = kernel.sh("setpriv", "--bounding-set", "-net_admin", sys.executable, "-c",
                     TRY_ADD_TUN, "x0")
    code, _, text = done.stdout.strip().partition(" ")
    assert int(code) == errno.EPERM
    assert "needs CAP_NET_ADMIN): run as root" in text


def test_arguments_are_checked_before_anything_is_made() -> None:
    with Stack() as stack:
        with pytest.raises(ValueError, match="MTU 20 out of range"):
            stack.add_tun("x0", "192.0.2.2/24", mtu=20)
        with pytest.raises(ValueError, match="has no prefix length"):
            stack.add_tun("x0", "192.0.2.2/24", peer="192.0.2.1")
        with pytest.raises(ValueError, match="bad network namespace name"):
            stack.add_tun("x0", "192.0.2.2/24", netns="a/b")
        with pytest.raises(ValueError, match="already exists"):
            stack.add_tun("lo", "192.0.2.2/24")
        with pytest.raises(ValueError):
            stack.add_tun("x0", "192.0.2.256/24")
    with Stack(clock="virtual") as stack, pytest.raises(ValueError, match="real clock"):
        stack.add_tun("x0", "192.0.2.2/24")


def test_ipv6_address_added_later(netns: str, kernel: Kernel) -> None:
    """`stack.add_address(name, ...)` on a TUN; the kernel's IPv6 address
    is the user's to add (nodad)."""
    stack = Stack()
    try:
        stack.add_tun(TUN, "198.51.100.2/24", peer="198.51.100.1/24", netns=netns)
        stack.add_address(TUN, f"{LS6}/64")
        kernel.sh("ip", "addr", "add", f"{KERNEL6}/64", "dev", TUN, "nodad")
        assert kernel.run("ping", LS6, "56", "1")["replies"][0]["intact"]
        assert stack.ping("198.51.100.1", count=1, timeout=5).received == 1
    finally:
        stack.close()


def test_subprocess_leaves_nothing(netns: str) -> None:
    """A process that exits without closing: the kernel removes the device
    with the last descriptor."""
    code = (f"from loopstack import Stack; Stack().add_tun('{TUN}', '192.0.2.2/24', "
            f"netns='{netns}'); print('made')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert done.stdout.strip() == "made", done.stderr
    assert sh("ip", "-n", netns, "link", "show", TUN, check=False).returncode != 0
