"""Every checksum of a whole IP packet, filled in or checked at once.

The loopback skips checksums the way Linux does; a packet written to a
capture or sent out of another interface gets them here: the IPv4 header
checksum (RFC 791 3.1) and the TCP, UDP, ICMP or ICMPv6 checksum with its
pseudo-header (RFC 9293 3.1, RFC 768, RFC 792, RFC 4443 2.3, RFC 8200 8.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .checksum import checksum, pseudo_sum, verify
from .errors import MalformedPacket
from .icmp import PROTO_ICMP, PROTO_ICMPV6
from .ipv4 import IPv4Header
from .ipv6 import ROUTING, IPv6Header
from .tcp import PROTO_TCP
from .udp import PROTO_UDP

# Per IP version, the upper layers with a checksum: (offset of the field,
# the header length that must be there for it to exist).
_V4_CHECKSUMS = {PROTO_TCP: (16, 20), PROTO_UDP: (6, 8), PROTO_ICMP: (2, 8)}
_V6_CHECKSUMS = {PROTO_TCP: (16, 20), PROTO_UDP: (6, 8), PROTO_ICMPV6: (2, 8)}

_ROUTING_SRH = 4  # RFC 8754 2: the final destination is Segment List[0]


@dataclass(slots=True)
class _UpperLayer:
    """The upper-layer data of an IP packet and what its checksum needs."""

    proto: int
    start: int
    end: int
    src: bytes
    dst: bytes  # the final destination, for the pseudo-header
    v6: bool
    fragment: bool


@dataclass(slots=True)
class _ChecksumSpan:
    """The bytes an upper-layer checksum covers and where its field is."""

    start: int
    end: int
    field: int
    initial: int  # pseudo-header sum; 0 for ICMPv4, which has none
    udp: bool


def _final_destination(h: IPv6Header) -> bytes:
    """RFC 8200 8.1: with a Routing header whose segments are not all
    visited yet, the pseudo-header carries the final destination, which
    the routing header holds; otherwise the Destination Address."""
    for ext in h.ext:
        if ext.kind == ROUTING and ext.segments_left > 0:
            addresses = ext.body[6:]  # after type, segments left and 4 more bytes
            if len(addresses) < 16:
                raise MalformedPacket("routing header without addresses")
            if ext.routing_type == _ROUTING_SRH:
                return addresses[:16]
            # Types 0 (RFC 2460 4.4) and 2 (RFC 6275 6.4) end with the final one.
            if ext.routing_type in (0, 2):
                if len(addresses) % 16:
                    raise MalformedPacket("routing header addresses not 16-byte aligned")
                return addresses[-16:]
    return h.dst


def _upper_layer(packet: bytes) -> _UpperLayer:
    version = packet[0] >> 4 if packet else 0
    if version == 4:
        h4 = IPv4Header.parse(packet)
        return _UpperLayer(
            h4.proto, h4.header_length, h4.total_length, h4.src, h4.dst, False, h4.is_fragment
        )
    if version == 6:
        h6 = IPv6Header.parse(packet)
        frag = h6.fragment_header()
        # An atomic fragment (offset 0, M clear; RFC 6946) is a whole datagram.
        fragment = frag is not None and (frag.frag_offset != 0 or frag.frag_more)
        return _UpperLayer(
            h6.upper_proto,
            h6.upper_offset,
            h6.total_length,
            h6.src,
            _final_destination(h6),
            True,
            fragment,
        )
    raise MalformedPacket(f"IP version {version} is neither 4 nor 6")


def _checksum_span(packet: bytes, u: _UpperLayer) -> _ChecksumSpan | None:
    """Where the upper-layer checksum is, or None for a protocol without
    one known here (ICMP and ICMPv6 count only in their own IP version)."""
    known = (_V6_CHECKSUMS if u.v6 else _V4_CHECKSUMS).get(u.proto)
    if known is None:
        return None
    field_offset, min_header = known
    length = u.end - u.start
    if length < min_header:
        raise MalformedPacket(f"truncated protocol {u.proto} header")
    if u.proto == PROTO_UDP:
        # The checksum covers the UDP length, not link or IP padding (RFC 768).
        length = int.from_bytes(packet[u.start + 4 : u.start + 6], "big")
        if length < 8 or u.start + length > u.end:
            raise MalformedPacket(f"bad UDP length {length}")
    initial = 0 if u.proto == PROTO_ICMP else pseudo_sum(u.src, u.dst, u.proto, length)
    udp = u.proto == PROTO_UDP
    return _ChecksumSpan(u.start, u.start + length, u.start + field_offset, initial, udp)


def fill_checksums(packet: bytes) -> bytes:
    """``packet`` with its IPv4 header checksum and its TCP, UDP, ICMP or
    ICMPv6 checksum recomputed. A fragment gets only the IPv4 header
    checksum: the upper-layer checksum covers the reassembled datagram.
    Malformed input comes back unchanged."""
    try:
        u = _upper_layer(packet)
        span = None if u.fragment else _checksum_span(packet, u)
    except MalformedPacket:
        return packet
    buf = bytearray(packet)
    if not u.v6:
        buf[10:12] = b"\x00\x00"
        buf[10:12] = checksum(buf[: u.start]).to_bytes(2, "big")
    if span is not None:
        buf[span.field : span.field + 2] = b"\x00\x00"
        csum = checksum(buf[span.start : span.end], span.initial)
        if span.udp and csum == 0:
            csum = 0xFFFF  # RFC 768: zero would mean "no checksum"
        buf[span.field : span.field + 2] = csum.to_bytes(2, "big")
    return bytes(buf)


def l4_checksum_ok(packet: bytes) -> bool:
    """True when the TCP, UDP, ICMP or ICMPv6 checksum of the whole IP
    packet ``packet`` is valid, or when its protocol has no checksum known
    here. False for fragments, which cannot be checked alone, and for
    malformed packets. A zero UDP checksum is accepted over IPv4 only
    (RFC 768, RFC 8200 8.1)."""
    try:
        u = _upper_layer(packet)
        if u.fragment:
            return False
        span = _checksum_span(packet, u)
    except MalformedPacket:
        return False
    if span is None:
        return True
    if span.udp and packet[span.field : span.field + 2] == b"\x00\x00":
        return not u.v6
    return verify(packet[span.start : span.end], span.initial)
