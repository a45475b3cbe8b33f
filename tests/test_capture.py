"""Capture to pcap/pcapng, and interface taps."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

import loopstack
from loopstack.link.pipe import PipeInterface

Piped = tuple[loopstack.Stack, PipeInterface]


def test_capture_writes_each_lo_packet_once(piped: Piped, tmp_path: Path,
                                            tools: SimpleNamespace) -> None:
    stack, eth = piped
    path = tmp_path / "lo.pcap"
    with stack.capture(str(path)) as cap:
        stack.ping("127.0.0.1", count=2, interval=0.25)
        stack.ping("::1", count=2, interval=0.25)
    assert cap.packets == 8
    packets = rdpcap(str(path))
    assert len(packets) == 8
    kinds = []
    for p in packets:
        assert p[Ether].src == p[Ether].dst == "00:00:00:00:00:00"
        ip = bytes(p[Ether].payload)
        assert p[Ether].type == (0x0800 if ip[0] >> 4 == 4 else 0x86DD)
        assert tools.checksums_ok(ip)  # filled in although lo skipped them
        if IP in p:
            kinds.append(("v4", p[ICMP].type))
        else:
            kinds.append(("v6", 128 if ICMPv6EchoRequest in p else 129))
    assert kinds == [("v4", 8), ("v4", 0)] * 2 + [("v6", 128), ("v6", 129)] * 2
    times = [p.time for p in packets]
    assert times == sorted(times)
    # Virtual time: the requests go at 0, 0.25, then 0.5 + the first ping's wait.
    assert float(times[2] - times[0]) == 0.25


def test_capture_limited_to_one_interface(piped: Piped, tmp_path: Path) -> None:
    stack, eth = piped
    path = tmp_path / "eth0.pcap"
    with stack.capture(str(path), interfaces=["eth0"]) as cap:
        stack.ping("127.0.0.1", count=2, interval=0)
        eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=1, seq=1)))
        assert eth.read() is not None
    packets = rdpcap(str(path))
    assert cap.packets == len(packets) == 2
    assert [(p[IP].src, p[ICMP].type) for p in packets] == [("192.0.2.2", 8), ("192.0.2.1", 0)]


def test_capture_stops_at_the_end_of_the_block(vstack: loopstack.Stack, tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    with vstack.capture(str(path)):
        vstack.ping("127.0.0.1")
    size = path.stat().st_size
    vstack.ping("127.0.0.1", count=3, interval=0)
    assert path.stat().st_size == size
    assert len(rdpcap(str(path))) == 2


def _deterministic_run(path: Path) -> bytes:
    stack = loopstack.Stack(clock="virtual", seed=42)
    try:
        eth = stack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"])
        stack.lo.netem("delay 5ms 2ms loss 10%")  # seeded by the stack's seed
        with stack.capture(str(path)):
            stack.ping("127.0.0.1", count=5, interval=0.1, timeout=0.2)
            stack.ping("::1", count=5, interval=0.1, timeout=0.2)
            eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=9, seq=9)))
            stack.advance(1)
    finally:
        stack.close()
    return path.read_bytes()


def test_virtual_clock_and_seed_give_byte_identical_captures(tmp_path: Path) -> None:
    first = _deterministic_run(tmp_path / "a.pcap")
    second = _deterministic_run(tmp_path / "b.pcap")
    assert len(rdpcap(str(tmp_path / "a.pcap"))) > 10
    assert first == second


def test_injected_traffic_captures_are_byte_identical(tmp_path: Path) -> None:
    def run(path: Path) -> bytes:
        stack = loopstack.Stack(clock="virtual", seed=42)
        eth = stack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"])
        with stack.capture(str(path), format="pcapng"):
            for i in range(5):
                eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=9, seq=i)))
                eth.inject(bytes(IPv6(src="2001:db8::2", dst="2001:db8::1")
                                 / ICMPv6EchoRequest(id=9, seq=i)))
                stack.advance(0.5)
        stack.close()
        return path.read_bytes()

    a, b = run(tmp_path / "a.pcapng"), run(tmp_path / "b.pcapng")
    assert a == b and a[:4] == b"\x0a\x0d\x0d\x0a"
    packets = rdpcap(str(tmp_path / "a.pcapng"))
    assert len(packets) == 20
    assert [float(p.time) for p in packets[::4]] == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_pcapng_is_chosen_by_name(vstack: loopstack.Stack, tmp_path: Path,
                                  tools: SimpleNamespace) -> None:
    path = tmp_path / "x.pcapng"
    with vstack.capture(str(path)):
        vstack.ping("::1")
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    packets = rdpcap(str(path))
    assert len(packets) == 2
    assert all(tools.checksums_ok(bytes(p[Ether].payload)) for p in packets)
    assert ICMPv6EchoReply in packets[1]


def test_netem_delay_is_seen_when_the_packet_leaves(vstack: loopstack.Stack,
                                                    tmp_path: Path) -> None:
    vstack.lo.netem("delay 10ms")
    path = tmp_path / "delay.pcap"
    with vstack.capture(str(path)):
        r = vstack.ping("127.0.0.1")
    assert r.received == 1 and r.rtts == [0.02]
    assert [round(float(p.time), 6) for p in rdpcap(str(path))] == [0.01, 0.02]


def test_packets_netem_drops_are_not_captured(vstack: loopstack.Stack, tmp_path: Path) -> None:
    vstack.lo.netem("loss 100%")
    path = tmp_path / "lost.pcap"
    with vstack.capture(str(path)) as cap:
        vstack.ping("127.0.0.1", count=3, interval=0, timeout=0.1)
    assert cap.packets == 0 and len(rdpcap(str(path))) == 0


def test_netem_corruption_stays_visible_in_the_capture(vstack: loopstack.Stack,
                                                       tmp_path: Path,
                                                       tools: SimpleNamespace) -> None:
    # capture.py: "packets that netem corrupted keep their damage". One
    # flipped bit always breaks the IPv4 header or the ICMP checksum.
    vstack.lo.netem("corrupt 100%", seed=5)
    path = tmp_path / "corrupt.pcap"
    with vstack.capture(str(path)):
        r = vstack.ping("127.0.0.1", count=10, interval=0, timeout=0.1)
    assert r.received == 0
    packets = rdpcap(str(path))
    assert len(packets) == 10
    intact = [p for p in packets if tools.checksums_ok(bytes(p[Ether].payload))]
    assert intact == [], f"{len(intact)} corrupted packets show valid checksums"


# -- taps ----------------------------------------------------------------------------------


def test_tap_sees_direction_and_remove_stops_it(piped: Piped) -> None:
    stack, eth = piped
    seen: list[tuple[str, bytes]] = []
    handle = eth.tap(lambda p, d: seen.append((d, p)))
    req = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=1, seq=1))
    eth.inject(req)
    reply = eth.read()
    assert [d for d, _ in seen] == ["in", "out"]
    assert seen[0][1] == req and seen[1][1] == reply
    handle.remove()
    eth.inject(req)
    assert eth.read() is not None
    assert len(seen) == 2
    handle.remove()  # a second remove is harmless


def test_lo_tap_reports_each_packet_once_as_in(vstack: loopstack.Stack) -> None:
    seen: list[str] = []
    other: list[str] = []
    h1 = vstack.lo.tap(lambda p, d: seen.append(d))
    vstack.lo.tap(lambda p, d: other.append(d))
    vstack.ping("127.0.0.1", count=2, interval=0)
    assert seen == ["in"] * 4 and other == ["in"] * 4
    h1.remove()
    vstack.ping("127.0.0.1")
    assert len(seen) == 4 and len(other) == 6  # only the removed tap stopped
