"""UDP (RFC 768) over IPv4 and IPv6 against scapy, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from loopstack.wire.errors import MalformedPacket
from loopstack.wire.ipv4 import IPv4Header
from loopstack.wire.ipv6 import IPv6Header
from loopstack.wire.udp import PROTO_UDP, UDPHeader, udp_checksum_ok

from .oracle import a4, a6, rebuilt_by_scapy

SRC4, DST4 = a4("127.0.0.1"), a4("127.0.0.53")
SRC6, DST6 = a6("::1"), a6("2001:db8::53")


def test_loopstack_udp_over_ipv4_dissected_by_scapy() -> None:
    h = UDPHeader(40000, 53)
    data = IPv4Header(SRC4, DST4, PROTO_UDP).build(h.build(b"query", SRC4, DST4))
    p = IP(data)
    assert (p[UDP].sport, p[UDP].dport, p[UDP].len, p[UDP].chksum) == (40000, 53, 13, h.checksum)
    assert bytes(p[UDP].payload) == b"query"
    assert rebuilt_by_scapy(p) == data


def test_loopstack_udp_over_ipv6_dissected_by_scapy() -> None:
    h = UDPHeader(5353, 5353)
    data = IPv6Header(SRC6, DST6, PROTO_UDP).build(h.build(b"x" * 33, SRC6, DST6))
    p = IPv6(data)
    assert (p[UDP].sport, p[UDP].len, p[UDP].chksum) == (5353, 41, h.checksum)
    assert rebuilt_by_scapy(p) == data


@pytest.mark.parametrize("v6", [False, True])
def test_scapy_udp_parsed_by_loopstack(v6: bool) -> None:
    if v6:
        src, dst, ip = SRC6, DST6, IPv6(src="::1", dst="2001:db8::53")
    else:
        src, dst, ip = SRC4, DST4, IP(src="127.0.0.1", dst="127.0.0.53")
    segment = bytes((ip / UDP(sport=1234, dport=4321) / Raw(b"hello"))[UDP])
    h = UDPHeader.parse(segment + b"\x00\x00")  # IP-layer padding after the datagram
    assert (h.sport, h.dport, h.length) == (1234, 4321, 13)
    assert h.checksum == UDP(segment).chksum
    assert udp_checksum_ok(segment, src, dst)
    assert not udp_checksum_ok(segment[:-1] + b"?", src, dst)
    assert h.build(segment[8 : h.length], src, dst) == segment


def test_zero_checksum_means_none_on_ipv4_only() -> None:
    # RFC 768: zero is "no checksum"; RFC 8200 8.1: not allowed over IPv6.
    data = UDPHeader(1, 2).build(b"abc", with_checksum=False)
    assert data[6:8] == b"\x00\x00"
    assert udp_checksum_ok(data, SRC4, DST4)
    assert not udp_checksum_ok(data, SRC6, DST6)


def test_computed_zero_is_sent_as_all_ones() -> None:
    # Choose payload words that bring the sum to 0xFFFF, whose complement is zero.
    h = UDPHeader(1, 2)
    first = h.build(b"\x00\x00", SRC4, DST4)
    fix = (first[6] << 8 | first[7]).to_bytes(2, "big")
    data = UDPHeader(1, 2).build(fix, SRC4, DST4)
    assert data[6:8] == b"\xff\xff"
    assert udp_checksum_ok(data, SRC4, DST4)
    p = IP(IPv4Header(SRC4, DST4, PROTO_UDP).build(data))
    assert rebuilt_by_scapy(p) == bytes(p)


def test_bad_lengths_and_addresses() -> None:
    with pytest.raises(MalformedPacket):
        UDPHeader.parse(b"\x00\x01\x00\x02\x00\x07\x00\x00")
    with pytest.raises(MalformedPacket):
        UDPHeader.parse(b"\x00\x01\x00\x02\x00\x10\x00\x00")
    with pytest.raises(ValueError, match="with_checksum=False"):
        UDPHeader(1, 2).build(b"")
    with pytest.raises(ValueError):
        UDPHeader(1, 2).build(bytes(65528), with_checksum=False)


headers = st.builds(UDPHeader, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
address_pairs = st.one_of(
    st.tuples(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4)),
    st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
)


@settings(max_examples=150)
@given(headers, st.binary(max_size=100), address_pairs)
def test_parse_build_round_trip(h: UDPHeader, payload: bytes, addrs: tuple[bytes, bytes]) -> None:
    data = h.build(payload, *addrs)
    assert UDPHeader.parse(data) == h
    assert udp_checksum_ok(data, *addrs)
    assert data[8 : h.length] == payload


@settings(max_examples=150)
@given(st.binary(min_size=8, max_size=100), address_pairs)
def test_build_parse_round_trip(raw: bytes, addrs: tuple[bytes, bytes]) -> None:
    raw = raw[:4] + len(raw).to_bytes(2, "big") + raw[6:]
    h = UDPHeader.parse(raw)
    assert h.build(raw[8:], with_checksum=False) == raw[:6] + b"\x00\x00" + raw[8:]
    valid = h.build(raw[8:], *addrs)
    assert UDPHeader.parse(valid).build(valid[8:], *addrs) == valid
