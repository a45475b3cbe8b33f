"""TCP header and options (RFC 9293 3.1, RFC 7323, RFC 2018) against scapy,
and round trips."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from loopstack.wire import tcp
from loopstack.wire.checksum import checksum, pseudo_sum
from loopstack.wire.errors import MalformedPacket
from loopstack.wire.ipv4 import IPv4Header
from loopstack.wire.ipv6 import IPv6Header
from loopstack.wire.tcp import (
    EolOption,
    MSSOption,
    NopOption,
    SackOption,
    SackPermittedOption,
    TCPHeader,
    TCPOption,
    TimestampsOption,
    UnknownOption,
    WindowScaleOption,
    tcp_checksum_ok,
)

from .oracle import a4, a6, rebuilt_by_scapy

SRC4, DST4 = a4("127.0.0.1"), a4("127.0.0.1")
SRC6, DST6 = a6("::1"), a6("::2")

SYN_OPTIONS: list[TCPOption] = [
    MSSOption(65495),
    SackPermittedOption(),
    TimestampsOption(0xDEADBEEF, 0),
    NopOption(),
    WindowScaleOption(7),
    UnknownOption(253, b"exp"),  # RFC 4727 experimental kind
]
SYN_SCAPY = [
    ("MSS", 65495),
    ("SAckOK", b""),
    ("Timestamp", (0xDEADBEEF, 0)),
    ("NOP", None),
    ("WScale", 7),
    (253, b"exp"),
]
ACK_OPTIONS: list[TCPOption] = [
    NopOption(),
    NopOption(),
    TimestampsOption(5, 6),
    NopOption(),
    NopOption(),
    SackOption(((1000, 2000), (3000, 4000))),
]
ACK_SCAPY = [
    ("NOP", None),
    ("NOP", None),
    ("Timestamp", (5, 6)),
    ("NOP", None),
    ("NOP", None),
    ("SAck", (1000, 2000, 3000, 4000)),
]


def scapy_options(segment: TCP) -> list[tuple[object, object]]:
    return [o for o in segment.options if o[0] != "EOL"]


@pytest.mark.parametrize(
    ("options", "expected"), [(SYN_OPTIONS, SYN_SCAPY), (ACK_OPTIONS, ACK_SCAPY), ([], [])]
)
@pytest.mark.parametrize("v6", [False, True])
def test_loopstack_tcp_dissected_by_scapy(
    options: list[TCPOption], expected: list[tuple[object, object]], v6: bool
) -> None:
    h = TCPHeader(
        40000,
        80,
        seq=0xFFFFFFF0,
        ack=12345,
        flags=tcp.SYN | tcp.ACK | tcp.ECE | tcp.CWR | tcp.URG | tcp.PSH,
        window=65535,
        urgent=3,
        options=options,
    )
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    segment = h.build(b"GET /", src, dst)
    if v6:
        data = IPv6Header(src, dst, tcp.PROTO_TCP).build(segment)
        p = IPv6(data)
    else:
        data = IPv4Header(src, dst, tcp.PROTO_TCP).build(segment)
        p = IP(data)
    t = p[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, t.window, t.urgptr) == (
        40000, 80, 0xFFFFFFF0, 12345, 65535, 3)
    assert (int(t.flags), t.dataofs * 4, t.chksum) == (0xFA, h.header_length, h.checksum)
    assert scapy_options(t) == expected
    assert bytes(t.payload) == b"GET /"
    assert rebuilt_by_scapy(p) == data


@pytest.mark.parametrize("v6", [False, True])
def test_scapy_tcp_parsed_by_loopstack(v6: bool) -> None:
    ip = IPv6(src="::1", dst="::2") if v6 else IP(src="127.0.0.1", dst="127.0.0.1")
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    for scapy_opts, ours in ((SYN_SCAPY, SYN_OPTIONS), (ACK_SCAPY, ACK_OPTIONS)):
        pkt = ip / TCP(sport=1, dport=2, seq=3, ack=4, flags="FRA", window=5, options=scapy_opts)
        segment = bytes((pkt / Raw(b"data"))[TCP])
        h = TCPHeader.parse(segment)
        assert (h.sport, h.dport, h.seq, h.ack, h.window, h.urgent) == (1, 2, 3, 4, 5, 0)
        assert h.flags == tcp.FIN | tcp.RST | tcp.ACK
        assert [o for o in h.options if not isinstance(o, EolOption)] == ours
        assert segment[h.header_length :] == b"data"
        assert h.checksum == TCP(segment).chksum
        assert tcp_checksum_ok(segment, src, dst)
        assert not tcp_checksum_ok(segment, dst, dst if v6 else a4("127.0.0.2"))
        assert h.build(b"data", src, dst) == segment


def test_option_lookups() -> None:
    syn = TCPHeader(1, 2, 0, 0, tcp.SYN, 100, options=SYN_OPTIONS)
    assert (syn.mss, syn.wscale, syn.sack_permitted) == (65495, 7, True)
    assert (syn.timestamps, syn.sack_blocks) == ((0xDEADBEEF, 0), None)
    ack = TCPHeader(1, 2, 0, 0, tcp.ACK, 100, options=ACK_OPTIONS)
    assert (ack.mss, ack.wscale, ack.sack_permitted) == (None, None, False)
    assert ack.sack_blocks == ((1000, 2000), (3000, 4000))
    assert TCPHeader(1, 2, 0, 0, 0, 0).timestamps is None


def test_header_length_before_and_after_build() -> None:
    h = TCPHeader(1, 2, 0, 0, tcp.SYN, 100, options=[MSSOption(1460), WindowScaleOption(2)])
    assert h.header_length == 28
    h.build(with_checksum=False)
    assert (h.data_offset, h.header_length) == (7, 28)


def test_timestamps_fast_path_equals_general_walk() -> None:
    common = TCPHeader(1, 2, 3, 4, tcp.ACK, 5, options=ACK_OPTIONS[:3]).build(b"x", SRC4, DST4)
    parsed = TCPHeader.parse(common)
    assert parsed.options == [NopOption(), NopOption(), TimestampsOption(5, 6)]
    assert parsed.timestamps == (5, 6)
    # The same 12 bytes in another order go through the general walk.
    other = TCPHeader(1, 2, 3, 4, tcp.ACK, 5, options=[TimestampsOption(5, 6), NopOption(),
                                                        NopOption()])
    assert TCPHeader.parse(other.build(b"x", SRC4, DST4)).timestamps == (5, 6)


def test_eol_padding() -> None:
    h = TCPHeader(1, 2, 0, 0, tcp.SYN, 0, options=[MSSOption(536), WindowScaleOption(0)])
    data = h.build(with_checksum=False)
    assert data[20:] == bytes((2, 4, 2, 24, 3, 3, 0, 0))
    assert TCPHeader.parse(data).options == [MSSOption(536), WindowScaleOption(0), EolOption()]


def with_options(raw_options: bytes, data_offset: int | None = None) -> bytes:
    offset = data_offset if data_offset is not None else (20 + len(raw_options)) // 4
    return struct.pack("!HHIIHHHH", 1, 2, 0, 0, offset << 12 | tcp.ACK, 0, 0, 0) + raw_options


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 19,
        with_options(b"", 4),  # data offset below 5
        with_options(b"", 6),  # header longer than the data
        with_options(b"\x01\x01\x01\x02"),  # kind without its length byte
        with_options(b"\x1e\x01\x00\x00"),  # option length 1
        with_options(b"\x1e\x00\x00\x00"),  # option length 0
        with_options(b"\x1e\x08\x00\x00"),  # overruns the header
        with_options(b"\x02\x03\x05\x00"),  # MSS of length 3
        with_options(b"\x03\x04\x05\x00"),  # window scale of length 4
        with_options(b"\x04\x03\x00\x00"),  # SACK-permitted of length 3
        with_options(b"\x08\x08" + bytes(6)),  # timestamps of length 8
        with_options(b"\x05\x02\x00\x00"),  # SACK without blocks
        with_options(b"\x05\x06" + bytes(6)),  # SACK of length 6
        with_options(b"\x05\x0b" + bytes(10)),  # SACK of length 11
    ],
)
def test_malformed_headers(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        TCPHeader.parse(data)


def test_options_longer_than_40_bytes_refused() -> None:
    # 34 + 4 + 3 = 41 bytes
    too_many: list[TCPOption] = [SackOption(((1, 2),) * 4), MSSOption(1), WindowScaleOption(1)]
    h = TCPHeader(1, 2, 0, 0, 0, 0, options=too_many)
    with pytest.raises(ValueError):
        h.build(with_checksum=False)
    with pytest.raises(ValueError):
        TCPHeader(1, 2, 0, 0, 0, 0, options=[UnknownOption(99, bytes(39))]).build()
    with pytest.raises(ValueError, match="with_checksum=False"):
        TCPHeader(1, 2, 0, 0, 0, 0).build(b"", b"", b"")


def test_bytes_after_eol_are_padding() -> None:
    data = with_options(b"\x02\x04\x05\xb4\x00\xff\xff\xff")
    assert TCPHeader.parse(data).options == [MSSOption(1460), EolOption()]


option = st.one_of(
    st.builds(MSSOption, st.integers(0, 0xFFFF)),
    st.builds(WindowScaleOption, st.integers(0, 255)),
    st.just(SackPermittedOption()),
    st.builds(
        SackOption,
        st.lists(
            st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=3
        ).map(tuple),
    ),
    st.builds(TimestampsOption, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.just(NopOption()),
    st.builds(
        UnknownOption,
        st.integers(6, 255).filter(lambda k: k != tcp.KIND_TIMESTAMPS),
        st.binary(max_size=8),
    ),
)


def fits(options: list[TCPOption]) -> bool:
    return sum(len(o.build()) for o in options) <= 40


option_lists = st.lists(option, max_size=6).filter(fits)
headers = st.builds(
    TCPHeader,
    sport=st.integers(0, 0xFFFF),
    dport=st.integers(0, 0xFFFF),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 0xFFF),
    window=st.integers(0, 0xFFFF),
    urgent=st.integers(0, 0xFFFF),
    options=option_lists,
)


@settings(max_examples=200)
@given(headers, st.binary(max_size=64))
def test_parse_build_round_trip(h: TCPHeader, payload: bytes) -> None:
    data = h.build(payload, SRC6, DST6)
    parsed = TCPHeader.parse(data)
    if sum(len(o.build()) for o in h.options) % 4:
        h.options.append(EolOption())  # the padding reads back as an EOL
    assert parsed == h
    assert TCPHeader.parse(memoryview(data)) == TCPHeader.parse(bytearray(data)) == parsed
    assert data[parsed.header_length :] == payload
    assert tcp_checksum_ok(data, SRC6, DST6)


@settings(max_examples=200)
@given(headers, st.binary(max_size=64), st.booleans())
def test_build_parse_round_trip(h: TCPHeader, payload: bytes, v6: bool) -> None:
    # Wire bytes assembled here, independently of TCPHeader.build.
    raw_options = b"".join(o.build() for o in h.options)
    raw_options += bytes(-len(raw_options) % 4)
    head = struct.pack(
        "!HHIIHHHH", h.sport, h.dport, h.seq, h.ack,
        ((20 + len(raw_options)) // 4) << 12 | h.flags, h.window, 0, h.urgent,
    )
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    segment = head + raw_options + payload
    csum = checksum(segment, pseudo_sum(src, dst, tcp.PROTO_TCP, len(segment)))
    segment = segment[:16] + csum.to_bytes(2, "big") + segment[18:]
    parsed = TCPHeader.parse(segment)
    assert parsed.build(segment[parsed.header_length :], src, dst) == segment
