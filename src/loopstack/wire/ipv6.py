"""IPv6 header (RFC 8200 3) and its extension-header chain (RFC 8200 4).

Parsing walks hop-by-hop, routing, fragment and destination-options headers
to the upper layer, keeping each one as a record. Addresses are 16-byte
``bytes``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import MalformedPacket

_FIXED = struct.Struct("!IHBB16s16s")
_FRAG_BODY = struct.Struct("!HI")
FIXED_LEN = 40

HOP_BY_HOP = 0
ROUTING = 43
FRAGMENT = 44
DEST_OPTIONS = 60
NO_NEXT_HEADER = 59
EXTENSION_HEADERS = frozenset((HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTIONS))


@dataclass(slots=True)
class IPv6ExtHeader:
    """One extension header. ``body`` is everything after its next-header
    and length bytes (for a fragment header, whose second byte is reserved:
    offset/flags and identification, 6 bytes)."""

    kind: int
    body: bytes

    @property
    def wire_length(self) -> int:
        return 2 + len(self.body)

    # Fragment header (RFC 8200 4.5)
    @classmethod
    def fragment(cls, offset: int, more: bool, ident: int) -> IPv6ExtHeader:
        if offset % 8:
            raise ValueError("fragment offset must be a multiple of 8")
        return cls(FRAGMENT, _FRAG_BODY.pack(offset | int(more), ident))

    @property
    def frag_offset(self) -> int:
        return int.from_bytes(self.body[0:2], "big") & 0xFFF8

    @property
    def frag_more(self) -> bool:
        return bool(self.body[1] & 1)

    @property
    def frag_ident(self) -> int:
        return int.from_bytes(self.body[2:6], "big")

    # Hop-by-hop and destination options (RFC 8200 4.2)
    @classmethod
    def with_options(cls, kind: int, options: list[tuple[int, bytes]]) -> IPv6ExtHeader:
        tlvs = b"".join(bytes((t, len(d))) + d for t, d in options)
        pad = (-(2 + len(tlvs))) % 8
        if pad == 1:
            tlvs += b"\x00"  # Pad1
        elif pad:
            tlvs += bytes((1, pad - 2)) + b"\x00" * (pad - 2)  # PadN
        return cls(kind, tlvs)

    def options(self) -> list[tuple[int, bytes]]:
        """The TLV options of a hop-by-hop or destination-options header,
        Pad1 and PadN included."""
        out: list[tuple[int, bytes]] = []
        body = self.body
        i = 0
        while i < len(body):
            opt = body[i]
            if opt == 0:
                out.append((0, b""))
                i += 1
                continue
            if i + 2 > len(body) or i + 2 + body[i + 1] > len(body):
                raise MalformedPacket("IPv6 option overruns its header")
            n = body[i + 1]
            out.append((opt, bytes(body[i + 2 : i + 2 + n])))
            i += 2 + n
        return out

    # Routing header (RFC 8200 4.4)
    @property
    def routing_type(self) -> int:
        return self.body[0]

    @property
    def segments_left(self) -> int:
        return self.body[1]


@dataclass(slots=True)
class IPv6Header:
    src: bytes
    dst: bytes
    upper_proto: int  # protocol after the extension headers (59: none)
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    ext: list[IPv6ExtHeader] = field(default_factory=list)
    payload_length: int = 0  # set by parse and build: everything after the fixed header
    upper_offset: int = FIXED_LEN  # offset of the upper-layer data in the packet

    @property
    def total_length(self) -> int:
        return FIXED_LEN + self.payload_length

    @property
    def next_header(self) -> int:
        """The Next Header field of the fixed header."""
        return self.ext[0].kind if self.ext else self.upper_proto

    def fragment_header(self) -> IPv6ExtHeader | None:
        for e in self.ext:
            if e.kind == FRAGMENT:
                return e
        return None

    def fragment_header_offset(self) -> int:
        """Offset of the fragment header in the packet (ValueError if none)."""
        off = FIXED_LEN
        for e in self.ext:
            if e.kind == FRAGMENT:
                return off
            off += e.wire_length
        raise ValueError("no fragment header")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> IPv6Header:
        """Parse the fixed header and walk the extension headers. The walk
        stops at the upper layer, at No Next Header, or after the fragment
        header of a non-first fragment (whose data is not an upper header)."""
        if len(data) < FIXED_LEN:
            raise MalformedPacket("truncated IPv6 header")
        vtf, plen, nh, hlim, src, dst = _FIXED.unpack_from(data)
        if vtf >> 28 != 6:
            raise MalformedPacket(f"IP version {vtf >> 28} is not 6")
        end = FIXED_LEN + plen
        if end > len(data):
            raise MalformedPacket(f"truncated IPv6 packet: {len(data)} of {end} bytes")
        ext: list[IPv6ExtHeader] = []
        off = FIXED_LEN
        while nh in EXTENSION_HEADERS:
            if nh == HOP_BY_HOP and ext:
                raise MalformedPacket("hop-by-hop header not first")
            if off + 8 > end:
                raise MalformedPacket("truncated IPv6 extension header")
            kind = nh
            nh = data[off]
            length = 8 if kind == FRAGMENT else (data[off + 1] + 1) * 8
            if off + length > end:
                raise MalformedPacket("truncated IPv6 extension header")
            hdr = IPv6ExtHeader(kind, bytes(data[off + 2 : off + length]))
            ext.append(hdr)
            off += length
            if kind == FRAGMENT and hdr.frag_offset != 0:
                break
        return cls(
            src=bytes(src),
            dst=bytes(dst),
            upper_proto=nh,
            hop_limit=hlim,
            traffic_class=(vtf >> 20) & 0xFF,
            flow_label=vtf & 0xFFFFF,
            ext=ext,
            payload_length=plen,
            upper_offset=off,
        )

    def build(self, payload: bytes | bytearray | memoryview = b"") -> bytes:
        """Fixed header, extension headers (linked in order) and payload."""
        parts: list[bytes | bytearray | memoryview] = [b""]
        kinds = [e.kind for e in self.ext] + [self.upper_proto]
        for i, e in enumerate(self.ext):
            if e.kind == FRAGMENT:
                if len(e.body) != 6:
                    raise ValueError("fragment header body must be 6 bytes")
                parts.append(bytes((kinds[i + 1], 0)) + e.body)
                continue
            if (2 + len(e.body)) % 8:
                raise ValueError("extension header length must be a multiple of 8")
            parts.append(bytes((kinds[i + 1], (2 + len(e.body)) // 8 - 1)) + e.body)
        ext_len = sum(len(p) for p in parts)
        plen = ext_len + len(payload)
        if plen > 0xFFFF:
            raise ValueError(f"IPv6 payload of {plen} bytes exceeds 65535 (no jumbograms)")
        vtf = (6 << 28) | (self.traffic_class << 20) | self.flow_label
        parts[0] = _FIXED.pack(vtf, plen, kinds[0], self.hop_limit, self.src, self.dst)
        parts.append(payload)
        self.payload_length = plen
        self.upper_offset = FIXED_LEN + ext_len
        return b"".join(parts)
