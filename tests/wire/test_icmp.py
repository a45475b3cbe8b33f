"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages against scapy, and round
trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, IPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
)
from scapy.packet import Packet, Raw

from loopstack.wire import icmp
from loopstack.wire.icmp import ICMPMessage, icmp_checksum_ok
from loopstack.wire.ipv4 import IPv4Header
from loopstack.wire.ipv6 import IPv6Header
from loopstack.wire.udp import UDPHeader

from .oracle import a4, a6, rebuilt_by_scapy

SRC4, DST4 = a4("127.0.0.1"), a4("127.0.0.2")
SRC6, DST6 = a6("::1"), a6("fe80::1")


def invoking_v4() -> bytes:
    udp = UDPHeader(40000, 33434).build(b"probe", DST4, SRC4)
    return IPv4Header(DST4, SRC4, 17, ttl=1).build(udp)


def invoking_v6() -> bytes:
    udp = UDPHeader(40000, 33434).build(b"probe", DST6, SRC6)
    return IPv6Header(DST6, SRC6, 17, hop_limit=1).build(udp)


def in_ipv4(msg: ICMPMessage) -> bytes:
    return IPv4Header(SRC4, DST4, icmp.PROTO_ICMP).build(msg.build())


def in_ipv6(msg: ICMPMessage) -> bytes:
    return IPv6Header(SRC6, DST6, icmp.PROTO_ICMPV6).build(msg.build(SRC6, DST6))


# (loopstack message, the scapy layer it must dissect as, fields scapy must show)
V4_CASES: list[tuple[ICMPMessage, Any, dict[str, Any]]] = [
    (ICMPMessage.echo(0x1234, 7, b"ping"), ICMP, {"type": 8, "id": 0x1234, "seq": 7}),
    (ICMPMessage.echo(1, 2, b"pong", reply=True), ICMP, {"type": 0, "id": 1, "seq": 2}),
    (
        ICMPMessage.error(icmp.DEST_UNREACH, icmp.UNREACH_PORT, invoking_v4()),
        ICMP,
        {"type": 3, "code": 3},
    ),
    (
        ICMPMessage.error(
            icmp.DEST_UNREACH, icmp.UNREACH_FRAG_NEEDED, invoking_v4(), info=1400
        ),
        ICMP,
        {"type": 3, "code": 4, "nexthopmtu": 1400},
    ),
    (
        ICMPMessage.error(icmp.TIME_EXCEEDED, icmp.EXC_TTL, invoking_v4()),
        ICMP,
        {"type": 11, "code": 0},
    ),
    (
        ICMPMessage.error(icmp.PARAM_PROBLEM, 0, invoking_v4(), info=20 << 24),
        ICMP,
        {"type": 12, "ptr": 20},
    ),
]
V6_CASES: list[tuple[ICMPMessage, Any, dict[str, Any]]] = [
    (ICMPMessage.echo(9, 10, b"ping6", v6=True), ICMPv6EchoRequest, {"id": 9, "seq": 10}),
    (ICMPMessage.echo(9, 11, b"", reply=True, v6=True), ICMPv6EchoReply, {"id": 9, "seq": 11}),
    (
        ICMPMessage.error(icmp.V6_DEST_UNREACH, icmp.V6_UNREACH_PORT, invoking_v6(), v6=True),
        ICMPv6DestUnreach,
        {"code": 4},
    ),
    (
        ICMPMessage.error(icmp.V6_PACKET_TOO_BIG, 0, invoking_v6(), info=1280, v6=True),
        ICMPv6PacketTooBig,
        {"mtu": 1280},
    ),
    (
        ICMPMessage.error(icmp.V6_TIME_EXCEEDED, icmp.V6_EXC_HOPLIMIT, invoking_v6(), v6=True),
        ICMPv6TimeExceeded,
        {"code": 0},
    ),
    (
        ICMPMessage.error(
            icmp.V6_PARAM_PROBLEM, icmp.V6_PARAM_NEXT_HEADER, invoking_v6(), info=6, v6=True
        ),
        ICMPv6ParamProblem,
        {"code": 1, "ptr": 6},
    ),
]


@pytest.mark.parametrize(("msg", "layer", "fields"), V4_CASES)
def test_loopstack_icmpv4_dissected_by_scapy(
    msg: ICMPMessage, layer: Any, fields: dict[str, Any]
) -> None:
    data = in_ipv4(msg)
    p = IP(data)
    got = p[layer]
    assert {k: getattr(got, k) for k in fields} == fields
    assert got.chksum == msg.checksum
    if msg.is_error:
        quoted = p[IPerror]
        assert (quoted.ttl, quoted.proto, quoted[UDPerror].dport) == (1, 17, 33434)
    else:
        assert bytes(got.payload) == msg.body
    assert rebuilt_by_scapy(p) == data


@pytest.mark.parametrize(("msg", "layer", "fields"), V6_CASES)
def test_loopstack_icmpv6_dissected_by_scapy(
    msg: ICMPMessage, layer: Any, fields: dict[str, Any]
) -> None:
    data = in_ipv6(msg)
    p = IPv6(data)
    got = p[layer]
    assert {k: getattr(got, k) for k in fields} == fields
    assert (got.type, got.cksum) == (msg.type, msg.checksum)
    if msg.is_error:
        quoted = p[IPerror6]
        assert (quoted.hlim, quoted.nh, quoted[UDPerror].dport) == (1, 17, 33434)
    else:
        assert got.data == msg.body
    assert rebuilt_by_scapy(p) == data


def parse_v4(pkt: Packet) -> tuple[ICMPMessage, bytes]:
    data = bytes(pkt)
    h = IPv4Header.parse(data)
    body = data[h.header_length : h.total_length]
    return ICMPMessage.parse(body), body


def parse_v6(pkt: Packet) -> tuple[ICMPMessage, bytes]:
    data = bytes(pkt)
    h = IPv6Header.parse(data)
    body = data[h.upper_offset :]
    return ICMPMessage.parse(body, v6=True), body


def test_scapy_icmpv4_parsed_by_loopstack() -> None:
    base = IP(src="127.0.0.1", dst="127.0.0.2")
    quote = IPerror(src="127.0.0.2", dst="127.0.0.1") / UDPerror(sport=1, dport=2)

    m, body = parse_v4(base / ICMP(type=8, id=77, seq=3) / Raw(b"abc"))
    assert (m.type, m.code, m.ident, m.seq, m.body, m.is_error) == (8, 0, 77, 3, b"abc", False)
    assert icmp_checksum_ok(body)

    m, body = parse_v4(base / ICMP(type=3, code=3) / quote)
    assert (m.type, m.code, m.is_error, m.body) == (3, 3, True, bytes(quote))
    assert icmp_checksum_ok(body)

    m, body = parse_v4(base / ICMP(type=3, code=4, nexthopmtu=576) / quote)
    assert (m.code, m.mtu) == (4, 576)
    assert icmp_checksum_ok(body)

    m, body = parse_v4(base / ICMP(type=11, code=1) / quote)
    assert (m.type, m.code) == (11, 1)

    m, body = parse_v4(base / ICMP(type=12, ptr=9) / quote)
    assert (m.type, m.pointer) == (12, 9)
    assert icmp_checksum_ok(body)
    assert not icmp_checksum_ok(body[:-1] + bytes((body[-1] ^ 0x40,)))


def test_scapy_icmpv6_parsed_by_loopstack() -> None:
    base = IPv6(src="::1", dst="fe80::1")
    quote = IPerror6(src="fe80::1", dst="::1") / UDPerror(sport=1, dport=2)
    cases: list[tuple[Packet, dict[str, Any]]] = [
        (ICMPv6EchoRequest(id=5, seq=6, data=b"hi"), {"type": 128, "ident": 5, "seq": 6}),
        (ICMPv6EchoReply(id=5, seq=7), {"type": 129, "ident": 5, "seq": 7}),
        (ICMPv6DestUnreach(code=4) / quote, {"type": 1, "code": 4}),
        (ICMPv6PacketTooBig(mtu=1400) / quote, {"type": 2, "mtu": 1400}),
        (ICMPv6TimeExceeded(code=1) / quote, {"type": 3, "code": 1}),
        (ICMPv6ParamProblem(code=2, ptr=42) / quote, {"type": 4, "code": 2, "pointer": 42}),
    ]
    for layer, fields in cases:
        m, body = parse_v6(base / layer)
        assert {k: getattr(m, k) for k in fields} == fields
        assert m.is_error == (m.type < 128)
        assert icmp_checksum_ok(body, SRC6, DST6, v6=True)
        assert not icmp_checksum_ok(body, SRC6, SRC6, v6=True)


def test_error_quote_is_cut_to_fit_minimum_mtu() -> None:
    big = bytes(2000)
    assert len(ICMPMessage.error(3, 1, big).build()) + 20 == 576
    assert len(ICMPMessage.error(1, 0, big, v6=True).build(SRC6, DST6)) + 40 == 1280


messages = st.builds(
    ICMPMessage,
    type=st.integers(0, 255),
    code=st.integers(0, 255),
    rest=st.integers(0, 2**32 - 1),
    body=st.binary(max_size=64),
    v6=st.booleans(),
)


@settings(max_examples=150)
@given(messages)
def test_parse_build_round_trip(m: ICMPMessage) -> None:
    data = m.build(SRC6, DST6)
    assert ICMPMessage.parse(data, v6=m.v6) == m
    assert icmp_checksum_ok(data, SRC6, DST6, v6=m.v6)


@settings(max_examples=150)
@given(st.binary(min_size=8, max_size=80), st.booleans())
def test_build_parse_round_trip(raw: bytes, v6: bool) -> None:
    m = ICMPMessage.parse(raw, v6=v6)
    assert m.build(with_checksum=False) == raw[:2] + b"\x00\x00" + raw[4:]
    valid = m.build(SRC6, DST6)  # the same message with a valid checksum
    assert ICMPMessage.parse(valid, v6=v6).build(SRC6, DST6) == valid
