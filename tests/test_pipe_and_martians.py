"""The pipe NIC as a peer drives it, and what arrives from outside that must
never be accepted (RFC 1122 3.2.1.3, RFC 4291 2.5.3, Linux ip_route_input_slow)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.packet import Packet, Raw

import loopstack
from loopstack.link.pipe import PipeInterface

Piped = tuple[loopstack.Stack, PipeInterface]


def rebuilt_by_scapy(pkt: Packet) -> bytes:
    """``pkt`` with its checksum fields computed by scapy."""
    pkt = pkt.copy()
    layer = pkt
    while layer:
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                delattr(layer, name)
        layer = layer.payload
    return bytes(pkt)


def inject_and_watch(stack: loopstack.Stack, eth: PipeInterface, pkt: bytes,
                     tools: SimpleNamespace) -> tuple[list[bytes], dict[str, int]]:
    """Inject ``pkt``; what the stack sent anywhere (eth0 or lo), and the counter deltas."""
    on_lo: list[bytes] = []
    handle = stack.lo.tap(lambda p, d: on_lo.append(p))
    before = stack.stats()
    eth.inject(pkt)
    stack.advance(1.0)
    handle.remove()
    return tools.read_all(eth) + on_lo, tools.delta(before, stack.stats())


# -- the peer's echo --------------------------------------------------------------


def test_ipv4_echo_through_pipe(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    req = IP(src="192.0.2.2", dst="192.0.2.1", id=77) / ICMP(id=0x1234, seq=9) / Raw(
        bytes(range(200)))
    eth.inject(bytes(req))
    out = eth.read()
    assert out is not None and eth.read() is None
    a = IP(out)
    assert rebuilt_by_scapy(a) == out  # checksums valid, as scapy computes them
    assert tools.checksums_ok(out)
    assert (a.src, a.dst, a.ttl, a.frag) == ("192.0.2.1", "192.0.2.2", 64, 0)
    assert (a[ICMP].type, a[ICMP].code, a[ICMP].id, a[ICMP].seq) == (0, 0, 0x1234, 9)
    assert bytes(a[ICMP].payload) == bytes(range(200))
    assert stack.lo.stats.tx_packets == 0  # the reply left through eth0 only


def test_echo_reply_has_df_clear(piped: Piped) -> None:
    # Linux answers echoes from its ICMP control socket, which icmp_sk_init()
    # sets to IP_PMTUDISC_DONT: the reply's DF bit is clear (tcpdump -v on lo
    # shows the request "flags [DF]" and the reply "flags [none]").
    stack, eth = piped
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1", flags="DF") / ICMP()))
    out = eth.read()
    assert out is not None
    assert not IP(out).flags.DF
    seen: list[bytes] = []
    stack.lo.tap(lambda p, d: seen.append(p))
    stack.ping("127.0.0.1")
    assert IP(seen[0]).flags.DF  # the request: IP_PMTUDISC_WANT, and it fits
    assert not IP(seen[1]).flags.DF


def test_ipv6_echo_through_pipe(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    req = IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest(
        id=0x4321, seq=2, data=b"loopstack" * 20)
    eth.inject(bytes(req))
    out = eth.read()
    assert out is not None and eth.read() is None
    a = IPv6(out)
    assert rebuilt_by_scapy(a) == out
    assert tools.checksums_ok(out)
    assert (a.src, a.dst, a.hlim) == ("2001:db8::1", "2001:db8::2", 64)
    e = a[ICMPv6EchoReply]
    assert (e.id, e.seq, e.data) == (0x4321, 2, b"loopstack" * 20)


def test_interface_counters(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    req4 = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP() / Raw(bytes(100)))
    req6 = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest(data=bytes(60)))
    eth.inject(req4)
    eth.inject(req6)
    out = tools.read_all(eth)
    assert [len(p) for p in out] == [len(req4), len(req6)]
    s = eth.stats
    assert (s.rx_packets, s.rx_bytes) == (2, len(req4) + len(req6))
    assert (s.tx_packets, s.tx_bytes) == (2, len(req4) + len(req6))
    assert (s.rx_errors, s.rx_dropped, s.tx_errors, s.tx_dropped) == (0, 0, 0, 0)
    info = {i.name: i for i in stack.interfaces()}["eth0"]
    assert info.stats == s.as_dict()
    lines = info.show().splitlines()
    assert lines[-3].split() == [str(len(req4) + len(req6)), "2", "0", "0"]
    assert lines[-1].split() == [str(len(req4) + len(req6)), "2", "0", "0"]
    # Counted at the device, even when IP then refuses the packet.
    eth.inject(bytes(IP(src="127.0.0.9", dst="192.0.2.1") / ICMP()))
    assert eth.stats.rx_packets == 3


def test_down_interface_drops(piped: Piped) -> None:
    stack, eth = piped
    eth.up = False
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP()))
    assert eth.read() is None
    assert eth.stats.rx_dropped == 1
    assert stack.stats()["Ip"]["InReceives"] == 0


# -- martians -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "counter"),
    [
        ("127.0.0.5", "192.0.2.1", "RtCache.in_martian_src"),
        ("127.0.0.1", "192.0.2.1", "RtCache.in_martian_src"),
        ("192.0.2.2", "127.0.0.1", "RtCache.in_martian_dst"),
        ("192.0.2.2", "127.9.9.9", "RtCache.in_martian_dst"),
        ("224.0.0.1", "192.0.2.1", "RtCache.in_martian_src"),
        ("255.255.255.255", "192.0.2.1", "RtCache.in_martian_src"),
    ],
)
def test_ipv4_martians_are_dropped(piped: Piped, tools: SimpleNamespace,
                                   src: str, dst: str, counter: str) -> None:
    stack, eth = piped
    sent, d = inject_and_watch(stack, eth, bytes(IP(src=src, dst=dst) / ICMP(id=1, seq=1)), tools)
    assert sent == []
    assert d[counter] == 1
    assert "Ip.InDelivers" not in d and "Icmp.InMsgs" not in d


@pytest.mark.parametrize("src", ["0.0.0.0", "0.1.2.3"])
def test_ipv4_zero_network_source_is_martian(piped: Piped, tools: SimpleNamespace,
                                             src: str) -> None:
    # Linux ip_route_input_slow(): ipv4_is_zeronet(saddr) -> martian_source.
    stack, eth = piped
    sent, d = inject_and_watch(stack, eth, bytes(IP(src=src, dst="192.0.2.1") / ICMP()), tools)
    assert sent == []  # in particular no echo reply sent to ourselves over lo
    assert d.get("RtCache.in_martian_src") == 1
    assert "Icmp.InMsgs" not in d


def test_ipv4_own_address_as_source_is_martian(piped: Piped, tools: SimpleNamespace) -> None:
    # Linux fib_validate_source(): a local address as the source of a packet
    # from outside is refused (accept_local = 0) -> martian source.
    stack, eth = piped
    sent, d = inject_and_watch(
        stack, eth, bytes(IP(src="192.0.2.1", dst="192.0.2.1") / ICMP()), tools)
    assert sent == []
    assert d.get("RtCache.in_martian_src") == 1


@pytest.mark.parametrize(
    ("src", "dst"), [("::1", "2001:db8::1"), ("2001:db8::2", "::1"), ("::1", "::1")]
)
def test_ipv6_loopback_from_outside_is_dropped(piped: Piped, tools: SimpleNamespace,
                                               src: str, dst: str) -> None:
    stack, eth = piped
    pkt = bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest())
    sent, d = inject_and_watch(stack, eth, pkt, tools)
    assert sent == []
    assert d["Ip6.InHdrErrors"] == 1
    assert "Ip6.InDelivers" not in d


def test_ipv6_multicast_source_is_dropped(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    pkt = bytes(IPv6(src="ff02::1", dst="2001:db8::1") / ICMPv6EchoRequest())
    sent, d = inject_and_watch(stack, eth, pkt, tools)
    assert sent == [] and d["Ip6.InHdrErrors"] == 1


def test_loopback_addresses_are_fine_on_lo(vstack: loopstack.Stack) -> None:
    # The same packets that are martians on eth0 are ordinary on lo.
    seen: list[bytes] = []
    vstack.lo.tap(lambda p, d: seen.append(p))
    with vstack.lock:
        vstack.lo.transmit(bytes(IP(src="127.0.0.5", dst="127.0.0.1") / ICMP(id=1)))
        vstack.lo.transmit(bytes(IPv6(src="::1", dst="::1") / ICMPv6EchoRequest(id=1)))
    assert len(seen) == 4
    assert IP(seen[1]).dst == "127.0.0.5" and ICMPv6EchoReply in IPv6(seen[3])
    assert vstack.stats()["RtCache"] == {"in_martian_src": 0, "in_martian_dst": 0}


# -- header errors ------------------------------------------------------------------


def test_bad_ipv4_header_checksum(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    good = bytearray(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP()))
    good[10] ^= 0x5A
    sent, d = inject_and_watch(stack, eth, bytes(good), tools)
    assert sent == []
    assert d["IpExt.InCsumErrors"] == 1 and d["Ip.InHdrErrors"] == 1
    assert "Ip.InDelivers" not in d


def test_ipv4_header_checksum_is_verified_on_lo_too(vstack: loopstack.Stack,
                                                    tools: SimpleNamespace) -> None:
    # Linux verifies the IPv4 header checksum on every device (ip_rcv_core).
    bad = bytearray(bytes(IP(src="127.0.0.1", dst="127.0.0.1") / ICMP()))
    bad[10] ^= 0x5A
    before = vstack.stats()
    with vstack.lock:
        vstack.lo.transmit(bytes(bad))
    d = tools.delta(before, vstack.stats())
    assert d["IpExt.InCsumErrors"] == 1 and "Icmp.InMsgs" not in d


@pytest.mark.parametrize(
    ("pkt", "counter"),
    [
        (IP(src="192.0.2.2", dst="192.0.2.77") / ICMP(), "Ip.InAddrErrors"),
        (IP(src="192.0.2.2", dst="198.51.100.1") / ICMP(), "Ip.InAddrErrors"),
        (IPv6(src="2001:db8::2", dst="2001:db8::77") / ICMPv6EchoRequest(), "Ip6.InAddrErrors"),
    ],
)
def test_not_our_address(piped: Piped, tools: SimpleNamespace, pkt: Packet,
                         counter: str) -> None:
    stack, eth = piped
    sent, d = inject_and_watch(stack, eth, bytes(pkt), tools)
    assert sent == []
    assert d[counter] == 1


def test_truncated_ipv4_counts_in_truncated_pkts_only(piped: Piped,
                                                      tools: SimpleNamespace) -> None:
    # Linux ip_rcv_core(): skb->len < tot_len -> InTruncatedPkts, `goto drop`
    # (not InHdrErrors).
    stack, eth = piped
    pkt = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP() / Raw(bytes(40)))
    sent, d = inject_and_watch(stack, eth, pkt[:-10], tools)
    assert sent == []
    assert d.get("IpExt.InTruncatedPkts") == 1
    assert "Ip.InHdrErrors" not in d


def test_runt_ipv4_counts_in_hdr_errors_only(piped: Piped, tools: SimpleNamespace) -> None:
    # Linux ip_rcv_core(): fewer than 20 bytes fail pskb_may_pull -> inhdr_error.
    stack, eth = piped
    pkt = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP())
    sent, d = inject_and_watch(stack, eth, pkt[:12], tools)
    assert sent == []
    assert d.get("Ip.InHdrErrors") == 1
    assert "IpExt.InTruncatedPkts" not in d


def test_truncated_ipv6_counts_truncated_and_hdr_errors(piped: Piped,
                                                        tools: SimpleNamespace) -> None:
    # Linux ip6_rcv_core(): `truncated:` counts InTruncatedPkts and falls
    # through to `err:`, which counts InHdrErrors.
    stack, eth = piped
    pkt = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest(data=bytes(40)))
    sent, d = inject_and_watch(stack, eth, pkt[:-10], tools)
    assert sent == []
    assert d.get("Ip6.InTruncatedPkts") == 1
    assert d.get("Ip6.InHdrErrors") == 1


def test_link_padding_is_ignored(piped: Piped) -> None:
    # Bytes after the IP total length (Ethernet padding) are trimmed, not refused.
    stack, eth = piped
    pkt = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=5, seq=6)) + bytes(18)
    eth.inject(pkt)
    out = eth.read()
    assert out is not None and len(out) == 28 and IP(out)[ICMP].id == 5
    pkt6 = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest(id=5)) + bytes(7)
    eth.inject(pkt6)
    out = eth.read()
    assert out is not None and len(out) == 48


def test_neither_ipv4_nor_ipv6_is_an_rx_error(piped: Piped) -> None:
    stack, eth = piped
    eth.inject(b"\x50" + bytes(39))
    eth.inject(b"")
    assert eth.read() is None
    assert eth.stats.rx_errors == 2
