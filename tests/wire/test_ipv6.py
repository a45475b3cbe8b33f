"""IPv6 header and extension-header chains (RFC 8200) against scapy, and
round trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    RouterAlert,
)
from scapy.packet import Raw

from loopstack.wire.ipv6 import (
    DEST_OPTIONS,
    EXTENSION_HEADERS,
    FRAGMENT,
    HOP_BY_HOP,
    ROUTING,
    IPv6ExtHeader,
    IPv6Header,
)

from .oracle import a6, rebuilt_by_scapy

SRC, DST = a6("2001:db8::1"), a6("2001:db8::2")
HOP1, HOP2 = a6("2001:db8:1::1"), a6("2001:db8:2::2")


def routing_type0(*addresses: bytes, segments_left: int) -> IPv6ExtHeader:
    # RFC 8200 4.4 layout; type 0 (RFC 2460 4.4) carries a reserved word, then addresses.
    return IPv6ExtHeader(ROUTING, bytes((0, segments_left)) + bytes(4) + b"".join(addresses))


def test_loopstack_chain_dissected_by_scapy() -> None:
    h = IPv6Header(
        src=SRC,
        dst=DST,
        upper_proto=17,
        hop_limit=9,
        traffic_class=0x2E,
        flow_label=0xABCDE,
        ext=[
            IPv6ExtHeader.with_options(HOP_BY_HOP, [(5, b"\x00\x00")]),  # router alert, RFC 2711
            routing_type0(HOP1, HOP2, segments_left=2),
            IPv6ExtHeader.with_options(DEST_OPTIONS, [(0x1E, b"hello")]),
            IPv6ExtHeader.fragment(0, True, 0xCAFEF00D),
        ],
    )
    udp = bytes(UDP(sport=5, dport=7, len=16, chksum=0x1234)) + b"datagram"
    data = h.build(udp)
    p = IPv6(data)
    assert (p.version, p.tc, p.fl, p.hlim, p.nh, p.plen) == (6, 0x2E, 0xABCDE, 9, 0, len(data) - 40)
    assert (p.src, p.dst) == ("2001:db8::1", "2001:db8::2")
    hbh = p[IPv6ExtHdrHopByHop]
    assert (hbh.nh, hbh.len) == (ROUTING, 0)
    assert isinstance(hbh.options[0], RouterAlert)
    rh = p[IPv6ExtHdrRouting]
    assert (rh.nh, rh.type, rh.segleft, rh.len) == (DEST_OPTIONS, 0, 2, 4)
    assert rh.addresses == ["2001:db8:1::1", "2001:db8:2::2"]
    do = p[IPv6ExtHdrDestOpt]
    assert do.nh == FRAGMENT
    assert (do.options[0].otype, do.options[0].optdata) == (0x1E, b"hello")
    frag = p[IPv6ExtHdrFragment]
    assert (frag.nh, frag.offset, frag.m, frag.id) == (17, 0, 1, 0xCAFEF00D)
    assert (p[UDP].sport, p[UDP].dport, bytes(p[UDP].payload)) == (5, 7, b"datagram")
    assert h.upper_offset == 40 + 8 + 40 + 16 + 8
    assert rebuilt_by_scapy(p) == data


def test_loopstack_non_first_fragment_dissected_by_scapy() -> None:
    h = IPv6Header(SRC, DST, 6, ext=[IPv6ExtHeader.fragment(1232, False, 99)])
    data = h.build(b"\xaa" * 100)
    p = IPv6(data)
    frag = p[IPv6ExtHdrFragment]
    assert (frag.nh, frag.offset, frag.m, frag.id) == (6, 154, 0, 99)
    assert bytes(frag.payload) == b"\xaa" * 100
    assert rebuilt_by_scapy(p) == data


def test_scapy_chain_parsed_by_loopstack() -> None:
    pkt = (
        IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=1, tc=3, fl=77)
        / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
        / IPv6ExtHdrRouting(addresses=["2001:db8:1::1"], segleft=1)
        / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 4)])
        / IPv6ExtHdrFragment(m=1, id=0x01020304)
        / UDP(sport=53, dport=1053)
        / Raw(b"q")
    )
    data = bytes(pkt)
    h = IPv6Header.parse(data)
    assert (h.src, h.dst, h.hop_limit, h.traffic_class, h.flow_label) == (SRC, DST, 1, 3, 77)
    assert [e.kind for e in h.ext] == [HOP_BY_HOP, ROUTING, DEST_OPTIONS, FRAGMENT]
    assert (h.next_header, h.upper_proto, h.payload_length) == (0, 17, len(data) - 40)
    hbh, rh, do, frag = h.ext
    assert hbh.options() == [(5, b"\x00\x00"), (1, b"")]  # scapy pads with an empty PadN
    assert (rh.routing_type, rh.segments_left, rh.body[6:]) == (0, 1, a6("2001:db8:1::1"))
    assert do.options() == [(1, b"\x00" * 4)]
    assert (frag.frag_offset, frag.frag_more, frag.frag_ident) == (0, True, 0x01020304)
    assert data[h.upper_offset :] == bytes(pkt[UDP])
    assert h.build(data[h.upper_offset :]) == data


def test_scapy_non_first_fragment_parsed_by_loopstack() -> None:
    pkt = IPv6(src="::1", dst="::1") / IPv6ExtHdrFragment(nh=58, offset=10, id=5) / Raw(b"z" * 9)
    data = bytes(pkt)
    h = IPv6Header.parse(data)
    assert (h.upper_proto, h.upper_offset) == (58, 48)
    frag = h.fragment_header()
    assert frag is not None and h.fragment_header_offset() == 40
    assert (frag.frag_offset, frag.frag_more, frag.frag_ident) == (80, False, 5)
    assert h.build(data[48:]) == data


addresses = st.binary(min_size=16, max_size=16)
tlv = st.tuples(st.integers(2, 255), st.binary(max_size=12))
options_header = st.builds(
    IPv6ExtHeader.with_options,
    st.sampled_from([HOP_BY_HOP, DEST_OPTIONS]),
    st.lists(tlv, max_size=3),
)
routing_header = st.builds(
    lambda kind, left, addrs: IPv6ExtHeader(ROUTING, bytes((kind, left)) + bytes(4) + addrs),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 3).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)),
)
first_fragment = st.builds(
    IPv6ExtHeader.fragment, st.just(0), st.booleans(), st.integers(0, 2**32 - 1)
)
later_fragment = st.builds(
    IPv6ExtHeader.fragment,
    st.integers(1, 0x1FFF).map(lambda n: n * 8),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)


@st.composite
def ext_chains(draw: st.DrawFn) -> list[IPv6ExtHeader]:
    chain = draw(st.lists(st.one_of(options_header, routing_header, first_fragment), max_size=4))
    if draw(st.booleans()):  # the walk stops at a non-first fragment: nothing after it
        chain.append(draw(later_fragment))
    # RFC 8200 4.1: hop-by-hop only straight after the fixed header.
    hop_first = [e for e in chain[:1] if e.kind == HOP_BY_HOP]
    return hop_first + [e for e in chain if e.kind != HOP_BY_HOP]


ipv6_headers = st.builds(
    IPv6Header,
    src=addresses,
    dst=addresses,
    upper_proto=st.integers(0, 255).filter(lambda n: n not in EXTENSION_HEADERS),
    hop_limit=st.integers(0, 255),
    traffic_class=st.integers(0, 255),
    flow_label=st.integers(0, 0xFFFFF),
    ext=ext_chains(),
)


@settings(max_examples=150)
@given(ipv6_headers, st.binary(max_size=64))
def test_parse_build_round_trip(h: IPv6Header, payload: bytes) -> None:
    data = h.build(payload)
    assert IPv6Header.parse(data) == h
    assert data[h.upper_offset :] == payload


@settings(max_examples=100)
@given(ipv6_headers, st.binary(max_size=64))
def test_build_parse_round_trip(h: IPv6Header, payload: bytes) -> None:
    data = h.build(payload)
    parsed = IPv6Header.parse(data)
    assert parsed.build(data[parsed.upper_offset :]) == data
    for e in parsed.ext:
        if e.kind in (HOP_BY_HOP, DEST_OPTIONS):
            rebuilt = IPv6ExtHeader.with_options(e.kind, [o for o in e.options() if o[0] > 1])
            assert rebuilt == e
