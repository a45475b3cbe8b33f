"""IPv4 header (RFC 791) against scapy, and round trips."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, IPOption_RR, IPOption_Security
from scapy.packet import Raw

from loopstack.wire.checksum import checksum
from loopstack.wire.ipv4 import IPv4Header, decrement_ttl, header_checksum_ok

from .oracle import a4, rebuilt_by_scapy

# A NOP, then a record-route option (RFC 791 3.1) with room for three
# addresses: kept byte for byte.
RECORD_ROUTE = b"\x01" + bytes((7, 15, 4)) + bytes(12)


def test_loopstack_ipv4_with_options_dissected_by_scapy() -> None:
    h = IPv4Header(
        src=a4("127.0.0.1"),
        dst=a4("127.1.2.3"),
        proto=253,
        ttl=17,
        tos=0xB8,
        ident=0xBEEF,
        df=True,
        options=RECORD_ROUTE,
    )
    data = h.build(b"payload!")
    p = IP(data)
    assert (p.version, p.ihl, p.tos, p.len, p.id) == (4, 9, 0xB8, 44, 0xBEEF)
    assert (p.flags.DF, p.flags.MF, p.frag, p.ttl, p.proto) == (True, False, 0, 17, 253)
    assert (p.src, p.dst, p.chksum) == ("127.0.0.1", "127.1.2.3", h.checksum)
    assert b"".join(bytes(o) for o in p.options) == RECORD_ROUTE
    assert bytes(p[Raw]) == b"payload!"
    assert rebuilt_by_scapy(p) == data


def test_loopstack_ipv4_fragments_dissected_by_scapy() -> None:
    first = IPv4Header(a4("10.0.0.1"), a4("10.0.0.2"), 17, ident=7, mf=True).build(bytes(1480))
    middle = IPv4Header(a4("10.0.0.1"), a4("10.0.0.2"), 17, ident=7, mf=True, frag_offset=1480)
    last = IPv4Header(a4("10.0.0.1"), a4("10.0.0.2"), 17, ident=7, frag_offset=2960)
    for data, mf, frag in ((first, True, 0), (middle.build(bytes(1480)), True, 185),
                           (last.build(b"end"), False, 370)):
        p = IP(data)
        assert (p.id, p.flags.MF, p.flags.DF, p.frag) == (7, mf, False, frag)
        assert rebuilt_by_scapy(p) == data


def test_scapy_ipv4_parsed_by_loopstack() -> None:
    pkt = IP(
        src="192.0.2.1",
        dst="198.51.100.7",
        tos=4,
        id=4321,
        flags="MF",
        frag=100,
        ttl=3,
        proto=6,
        options=[IPOption_RR(routers=["1.1.1.1"]), IPOption_Security()],
    ) / Raw(b"abc")
    data = bytes(pkt)
    h = IPv4Header.parse(data)
    assert (h.src, h.dst, h.proto, h.ttl, h.tos, h.ident) == (
        a4("192.0.2.1"), a4("198.51.100.7"), 6, 3, 4, 4321)
    assert (h.df, h.mf, h.frag_offset, h.is_fragment) == (False, True, 800, True)
    assert h.options == data[20 : h.header_length]
    assert h.options[0] == 7 and h.total_length == len(data)
    assert data[h.header_length : h.total_length] == b"abc"
    assert h.checksum == IP(data).chksum
    assert header_checksum_ok(data)
    assert h.build(b"abc") == data


def test_df_set_and_padding_after_total_length() -> None:
    data = bytes(IP(src="1.2.3.4", dst="5.6.7.8", flags="DF", proto=1) / Raw(b"x" * 5))
    h = IPv4Header.parse(data + b"\x00" * 7)  # Ethernet minimum-frame padding
    assert h.df and not h.is_fragment
    assert h.total_length == len(data)


def test_unaligned_options_are_padded_and_counted() -> None:
    h = IPv4Header(a4("1.2.3.4"), a4("5.6.7.8"), 6, options=b"\x01\x01\x01")
    data = h.build(b"xy")
    assert h.header_length == (data[0] & 0x0F) * 4 == 24
    assert IPv4Header.parse(data).options == b"\x01\x01\x01\x00"
    assert rebuilt_by_scapy(IP(data)) == data


def test_bad_header_checksum_detected() -> None:
    data = bytearray(IPv4Header(a4("1.2.3.4"), a4("5.6.7.8"), 6).build(b""))
    assert header_checksum_ok(data)
    data[8] ^= 1
    assert not header_checksum_ok(data)


def test_decrement_ttl_keeps_checksum_valid() -> None:
    data = IPv4Header(a4("1.2.3.4"), a4("5.6.7.8"), 6, ttl=64, options=b"\x01" * 4).build(b"xy")
    out = decrement_ttl(data)
    assert IPv4Header.parse(out).ttl == 63
    assert rebuilt_by_scapy(IP(out)) == out


addresses = st.binary(min_size=4, max_size=4)
ipv4_headers = st.builds(
    IPv4Header,
    src=addresses,
    dst=addresses,
    proto=st.integers(0, 255),
    ttl=st.integers(0, 255),
    tos=st.integers(0, 255),
    ident=st.integers(0, 0xFFFF),
    df=st.booleans(),
    mf=st.booleans(),
    frag_offset=st.integers(0, 0x1FFF).map(lambda n: n * 8),
    options=st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
)


@settings(max_examples=150)
@given(ipv4_headers, st.binary(max_size=64))
def test_parse_build_round_trip(h: IPv4Header, payload: bytes) -> None:
    data = h.build(payload)
    assert IPv4Header.parse(data) == h
    assert header_checksum_ok(data)


@settings(max_examples=150)
@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0x7FFF),  # DF, MF and offset; the reserved bit stays clear
    st.integers(0, 255),
    st.integers(0, 255),
    addresses,
    addresses,
    st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    st.binary(max_size=64),
)
def test_build_parse_round_trip(
    tos: int,
    ident: int,
    flags_frag: int,
    ttl: int,
    proto: int,
    src: bytes,
    dst: bytes,
    options: bytes,
    payload: bytes,
) -> None:
    ihl = 20 + len(options)
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl // 4, tos, ihl + len(payload), ident, flags_frag, ttl, proto,
        0, src, dst,
    )
    csum = checksum(head + options).to_bytes(2, "big")
    data = head[:10] + csum + head[12:] + options + payload
    h = IPv4Header.parse(data)
    assert h.build(data[h.header_length :]) == data
