"""IPv4 header (RFC 791 3.1): parse and build.

Options are kept as raw bytes and not interpreted beyond their length.
Addresses are 4-byte ``bytes`` (what ``socket.inet_pton`` returns).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import checksum, ones_sum
from .errors import MalformedPacket

_FIXED = struct.Struct("!BBHHHBBH4s4s")
FIXED_LEN = 20
MAX_TOTAL_LENGTH = 65535

FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF


@dataclass(slots=True)
class IPv4Header:
    src: bytes
    dst: bytes
    proto: int
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    df: bool = False
    mf: bool = False
    frag_offset: int = 0  # bytes, a multiple of 8
    options: bytes = b""
    total_length: int = 0  # set by parse and by build
    checksum: int = 0  # as read by parse, as written by build

    @property
    def header_length(self) -> int:
        """Length on the wire: build pads options to 32 bits (RFC 791 3.1)."""
        return FIXED_LEN + -(-len(self.options) // 4) * 4

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> IPv4Header:
        """Parse the header at the start of ``data``; the payload is
        ``data[h.header_length:h.total_length]``. Bytes after total_length
        (link padding) are allowed. The checksum is not checked here: see
        :func:`header_checksum_ok`."""
        if len(data) < FIXED_LEN:
            raise MalformedPacket("truncated IPv4 header")
        (ver_ihl, tos, total, ident, flags_frag, ttl, proto, csum, src, dst) = _FIXED.unpack_from(
            data
        )
        if ver_ihl >> 4 != 4:
            raise MalformedPacket(f"IP version {ver_ihl >> 4} is not 4")
        ihl = (ver_ihl & 0x0F) * 4
        if ihl < FIXED_LEN:
            raise MalformedPacket(f"bad IHL {ihl // 4}")
        if total < ihl:
            raise MalformedPacket(f"total length {total} shorter than header {ihl}")
        if total > len(data):
            raise MalformedPacket(f"truncated IPv4 packet: {len(data)} of {total} bytes")
        return cls(
            src=src,
            dst=dst,
            proto=proto,
            ttl=ttl,
            tos=tos,
            ident=ident,
            df=bool(flags_frag & FLAG_DF),
            mf=bool(flags_frag & FLAG_MF),
            frag_offset=(flags_frag & OFFSET_MASK) * 8,
            options=bytes(data[FIXED_LEN:ihl]),
            total_length=total,
            checksum=csum,
        )

    def build(self, payload: bytes | bytearray | memoryview = b"") -> bytes:
        """Header plus payload, with total length and header checksum filled in."""
        opts = self.options
        if len(opts) % 4:
            opts = opts + b"\x00" * (4 - len(opts) % 4)  # EOL padding (RFC 791)
        ihl = FIXED_LEN + len(opts)
        if ihl > 60:
            raise ValueError("IPv4 options longer than 40 bytes")
        total = ihl + len(payload)
        if total > MAX_TOTAL_LENGTH:
            raise ValueError(f"IPv4 packet of {total} bytes exceeds 65535")
        if self.frag_offset % 8:
            raise ValueError("fragment offset must be a multiple of 8")
        flags = (FLAG_DF if self.df else 0) | (FLAG_MF if self.mf else 0)
        head = _FIXED.pack(
            0x40 | (ihl // 4),
            self.tos,
            total,
            self.ident,
            flags | (self.frag_offset // 8),
            self.ttl,
            self.proto,
            0,
            self.src,
            self.dst,
        )
        csum = checksum(head + opts) if opts else checksum(head)
        self.total_length = total
        self.checksum = csum
        return b"".join((head[:10], csum.to_bytes(2, "big"), head[12:], opts, payload))


def header_checksum_ok(data: bytes | bytearray | memoryview) -> bool:
    """True when the IPv4 header at the start of ``data`` has a valid checksum."""
    ihl = (data[0] & 0x0F) * 4
    return ones_sum(data[:ihl]) == 0xFFFF


def decrement_ttl(packet: bytes) -> bytes:
    """The packet with TTL one less and the header checksum updated (RFC 1624)."""
    ihl = (packet[0] & 0x0F) * 4
    head = bytearray(packet[:ihl])
    head[8] -= 1
    head[10:12] = b"\x00\x00"
    head[10:12] = checksum(head).to_bytes(2, "big")
    return bytes(head) + packet[ihl:]
