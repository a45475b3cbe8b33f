"""fill_checksums and l4_checksum_ok on whole IP packets, against scapy."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

from loopstack.wire.checksums import fill_checksums, l4_checksum_ok
from loopstack.wire.icmp import PROTO_ICMP, PROTO_ICMPV6, ICMPMessage
from loopstack.wire.ipv4 import IPv4Header, header_checksum_ok
from loopstack.wire.ipv6 import ROUTING, IPv6ExtHeader, IPv6Header
from loopstack.wire.tcp import ACK, PROTO_TCP, PSH, TCPHeader, TimestampsOption
from loopstack.wire.udp import PROTO_UDP, UDPHeader

from .oracle import a4, a6, rebuilt_by_scapy

SRC4, DST4 = a4("127.0.0.1"), a4("127.0.0.2")
SRC6, DST6 = a6("::1"), a6("2001:db8::2")


def v4(proto: int, upper: bytes, **fields: Any) -> bytes:
    """An IPv4 packet whose header checksum is wrong on purpose."""
    data = bytearray(IPv4Header(SRC4, DST4, proto, **fields).build(upper))
    data[10] ^= 0xFF
    return bytes(data)


def v6(proto: int, upper: bytes, ext: list[IPv6ExtHeader] | None = None) -> bytes:
    return IPv6Header(SRC6, DST6, proto, ext=ext or []).build(upper)


def tcp_segment() -> bytes:
    h = TCPHeader(1, 2, 3, 4, ACK | PSH, 100, options=[TimestampsOption(1, 2)])
    return h.build(b"payload", with_checksum=False)


UNCHECKED = {
    "tcp4": v4(PROTO_TCP, tcp_segment()),
    "udp4": v4(PROTO_UDP, UDPHeader(1, 2).build(b"odd", with_checksum=False)),
    "icmp4": v4(PROTO_ICMP, ICMPMessage.echo(1, 2, b"x").build(with_checksum=False)),
    "tcp6": v6(PROTO_TCP, tcp_segment()),
    "udp6": v6(PROTO_UDP, UDPHeader(1, 2).build(b"odd", with_checksum=False)),
    "icmp6": v6(
        PROTO_ICMPV6, ICMPMessage.echo(1, 2, b"x", v6=True).build(with_checksum=False)
    ),
    # RFC 8200 8.1: the pseudo-header takes the final destination from the routing header.
    "udp6-routed": v6(
        PROTO_UDP,
        UDPHeader(1, 2).build(b"via", with_checksum=False),
        [IPv6ExtHeader(ROUTING, bytes((0, 1, 0, 0, 0, 0)) + a6("2001:db8::99"))],
    ),
    "udp6-atomic-fragment": v6(
        PROTO_UDP,
        UDPHeader(1, 2).build(b"whole", with_checksum=False),
        [IPv6ExtHeader.fragment(0, False, 7)],
    ),
}


@pytest.mark.parametrize("name", sorted(UNCHECKED))
def test_filled_checksums_are_valid_for_scapy(name: str) -> None:
    packet = UNCHECKED[name]
    assert not l4_checksum_ok(packet) or name == "udp4"  # zero UDP checksum: none, over IPv4
    filled = fill_checksums(packet)
    assert len(filled) == len(packet)
    assert l4_checksum_ok(filled)
    p = IPv6(filled) if filled[0] >> 4 == 6 else IP(filled)
    assert rebuilt_by_scapy(p) == filled
    assert fill_checksums(filled) == filled


def test_link_padding_is_kept_and_not_summed() -> None:
    packet = UNCHECKED["udp4"] + b"\xee" * 6
    filled = fill_checksums(packet)
    assert filled.endswith(b"\xee" * 6)
    assert fill_checksums(UNCHECKED["udp4"]) == filled[:-6]
    assert l4_checksum_ok(filled)


def test_ipv4_fragment_gets_only_its_header_checksum() -> None:
    packet = v4(PROTO_UDP, UDPHeader(1, 2).build(bytes(16), with_checksum=False), mf=True)
    filled = fill_checksums(packet)
    assert header_checksum_ok(filled)
    assert filled[20:] == packet[20:]
    assert not l4_checksum_ok(filled)
    later = v4(PROTO_TCP, b"\x01" * 20, frag_offset=8)
    assert fill_checksums(later)[20:] == later[20:]
    assert header_checksum_ok(fill_checksums(later))


def test_ipv6_fragment_is_left_alone() -> None:
    for frag in (IPv6ExtHeader.fragment(0, True, 1), IPv6ExtHeader.fragment(8, False, 1)):
        packet = v6(PROTO_UDP, UDPHeader(1, 2).build(bytes(16), with_checksum=False), [frag])
        assert fill_checksums(packet) == packet
        assert not l4_checksum_ok(packet)


def test_other_protocols_get_the_ipv4_header_checksum() -> None:
    packet = v4(47, b"GRE?")
    filled = fill_checksums(packet)
    assert header_checksum_ok(filled) and filled[20:] == b"GRE?"
    assert l4_checksum_ok(filled)
    # ICMPv6 numbers mean nothing over IPv4, nor ICMP's over IPv6.
    assert fill_checksums(v6(PROTO_ICMP, bytes(8))) == v6(PROTO_ICMP, bytes(8))


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45",
        b"\x75" + bytes(30),
        UNCHECKED["tcp4"][:30],  # shorter than its total length
        v4(PROTO_TCP, bytes(12)),  # TCP header cut short
        v4(PROTO_UDP, b"\x00\x01\x00\x02\x00\x40\x00\x00"),  # UDP length past the end
        v6(PROTO_UDP, b"\x00\x01\x00\x02\x00\x04\x00\x00"),  # UDP length below 8
        v6(PROTO_ICMPV6, b"\x80\x00"),
        v6(PROTO_UDP, bytes(8), [IPv6ExtHeader(ROUTING, bytes((0, 1)) + bytes(4) + bytes(8))]),
    ],
)
def test_malformed_packets_come_back_unchanged(packet: bytes) -> None:
    assert fill_checksums(packet) == packet
    assert not l4_checksum_ok(packet)


def test_corruption_is_detected() -> None:
    for name, packet in UNCHECKED.items():
        filled = bytearray(fill_checksums(packet))
        filled[-1] ^= 0x10
        assert not l4_checksum_ok(bytes(filled)), name
