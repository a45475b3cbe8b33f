"""Random and mutated bytes into every parser: MalformedPacket is the only
exception that may come out (DESIGN.md, Testing 6)."""

from __future__ import annotations

import io
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopstack.wire.checksums import fill_checksums, l4_checksum_ok
from loopstack.wire.errors import MalformedPacket
from loopstack.wire.icmp import PROTO_ICMP, PROTO_ICMPV6, ICMPMessage
from loopstack.wire.ipv4 import IPv4Header
from loopstack.wire.ipv6 import (
    DEST_OPTIONS,
    FRAGMENT,
    HOP_BY_HOP,
    ROUTING,
    IPv6ExtHeader,
    IPv6Header,
)
from loopstack.wire.pcap import (
    LINKTYPE_RAW,
    PcapngWriter,
    PcapWriter,
    ethernet_frame,
    read_capture,
)
from loopstack.wire.tcp import (
    PROTO_TCP,
    MSSOption,
    SackOption,
    SackPermittedOption,
    TCPHeader,
    TimestampsOption,
    UnknownOption,
    WindowScaleOption,
)
from loopstack.wire.udp import PROTO_UDP, UDPHeader

from .oracle import a4, a6

SRC4, DST4 = a4("127.0.0.1"), a4("127.0.0.1")
SRC6, DST6 = a6("::1"), a6("::1")


def walk_ipv6(data: bytes) -> list[object]:
    """Parse, then read every extension header the way IP input will."""
    seen: list[object] = []
    for e in IPv6Header.parse(data).ext:
        if e.kind in (HOP_BY_HOP, DEST_OPTIONS):
            seen.append(e.options())
        elif e.kind == ROUTING:
            seen.append((e.routing_type, e.segments_left))
        elif e.kind == FRAGMENT:
            seen.append((e.frag_offset, e.frag_more, e.frag_ident))
    return seen


def walk_tcp(data: bytes) -> tuple[object, ...]:
    h = TCPHeader.parse(data)
    return (h.mss, h.wscale, h.sack_permitted, h.timestamps, h.sack_blocks, h.header_length)


PARSERS: list[Callable[[bytes], object]] = [
    IPv4Header.parse,
    walk_ipv6,
    ICMPMessage.parse,
    lambda data: ICMPMessage.parse(data, v6=True),
    UDPHeader.parse,
    walk_tcp,
    lambda data: read_capture(io.BytesIO(data)),
]


def feed(data: bytes) -> None:
    for parse in PARSERS:
        try:
            parse(data)
        except MalformedPacket:
            pass
    fill_checksums(data)
    l4_checksum_ok(data)


def tcp_syn() -> bytes:
    options = [MSSOption(65495), SackPermittedOption(), TimestampsOption(1, 0),
               WindowScaleOption(7), UnknownOption(99, b"??")]
    return TCPHeader(1, 2, 3, 0, 2, 65535, options=options).build(b"", SRC4, DST4)


def tcp_sack() -> bytes:
    h = TCPHeader(1, 2, 3, 4, 0x10, 100, options=[SackOption(((1, 2), (3, 4)))])
    return h.build(b"data", SRC6, DST6)


def corpus() -> list[bytes]:
    """Valid packets of every kind: IP with upper layers, and bare upper layers."""
    upper4 = [
        (PROTO_TCP, tcp_syn()),
        (PROTO_UDP, UDPHeader(1, 2).build(b"dns", SRC4, DST4)),
        (PROTO_ICMP, ICMPMessage.echo(1, 1, b"ping").build()),
    ]
    packets = [IPv4Header(SRC4, DST4, p, options=b"\x01\x01\x01\x00").build(u) for p, u in upper4]
    packets += [IPv4Header(SRC4, DST4, PROTO_UDP, mf=True).build(upper4[1][1])]
    ext = [
        IPv6ExtHeader.with_options(HOP_BY_HOP, [(5, b"\x00\x00")]),
        IPv6ExtHeader(ROUTING, bytes((0, 1, 0, 0, 0, 0)) + DST6),
        IPv6ExtHeader.with_options(DEST_OPTIONS, [(0x1E, b"abc")]),
        IPv6ExtHeader.fragment(0, True, 9),
    ]
    packets += [
        IPv6Header(SRC6, DST6, PROTO_TCP, ext=ext).build(tcp_sack()),
        IPv6Header(SRC6, DST6, PROTO_ICMPV6).build(
            ICMPMessage.echo(1, 2, v6=True).build(SRC6, DST6)
        ),
        IPv6Header(SRC6, DST6, PROTO_UDP, ext=[IPv6ExtHeader.fragment(64, False, 9)]).build(b"x"),
    ]
    return packets + [u for _, u in upper4] + [tcp_sack()]


def captures(packets: list[bytes]) -> list[bytes]:
    pcap, pcapng = io.BytesIO(), io.BytesIO()
    w = PcapWriter(pcap)
    ng = PcapngWriter(pcapng)
    raw = ng.add_interface("lo", LINKTYPE_RAW)
    for i, packet in enumerate(packets[:3]):
        w.write(i, ethernet_frame(packet))
        ng.write(raw, i, packet, "in" if i % 2 else None)
    return [pcap.getvalue(), pcapng.getvalue()]


CORPUS = corpus()
CAPTURES = captures(CORPUS)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "truncate", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif how == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(FUZZ, max_examples=600)
@given(st.binary(max_size=160))
def test_random_bytes(data: bytes) -> None:
    feed(data)


@settings(FUZZ, max_examples=1500)
@given(mutated(CORPUS))
def test_mutated_packets(data: bytes) -> None:
    feed(data)
    # Also from the upper layer of an IPv4 packet that still parses.
    if data[:1] == b"\x45":
        feed(data[20:])


@settings(FUZZ, max_examples=400)
@given(mutated(CAPTURES))
def test_mutated_capture_files(data: bytes) -> None:
    try:
        read_capture(io.BytesIO(data))
    except MalformedPacket:
        pass


def test_corpus_is_valid() -> None:
    # The IP packets: three whole IPv4 ones, then fragments except the echo.
    checked = [l4_checksum_ok(packet) for packet in CORPUS[:7]]
    assert checked == [True, True, True, False, False, True, False]
    for capture in CAPTURES:
        assert len(read_capture(io.BytesIO(capture))) == 3
