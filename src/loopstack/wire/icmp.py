"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: parse and build.

Both share one layout: type, code, checksum, a 32-bit "rest of header" whose
meaning depends on the type (identifier and sequence for echo, next-hop MTU
for fragmentation-needed and packet-too-big, a pointer for parameter
problem), then the body (echo data, or as much of the invoking packet as
fits). ICMPv6 checksums cover the IPv6 pseudo-header (RFC 4443 2.3).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import checksum, ones_sum, pseudo_sum_v6
from .errors import MalformedPacket

_HDR = struct.Struct("!BBHI")
HEADER_LEN = 8
PROTO_ICMP = 1
PROTO_ICMPV6 = 58

# ICMPv4 types and codes (RFC 792, RFC 1191)
ECHO_REPLY = 0
DEST_UNREACH = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4
EXC_TTL = 0
EXC_FRAGTIME = 1
ICMPV4_ERRORS = frozenset((DEST_UNREACH, 4, 5, TIME_EXCEEDED, PARAM_PROBLEM))

# ICMPv6 types and codes (RFC 4443)
V6_DEST_UNREACH = 1
V6_PACKET_TOO_BIG = 2
V6_TIME_EXCEEDED = 3
V6_PARAM_PROBLEM = 4
V6_ECHO_REQUEST = 128
V6_ECHO_REPLY = 129
V6_UNREACH_NOROUTE = 0
V6_UNREACH_ADMIN = 1
V6_UNREACH_ADDR = 3
V6_UNREACH_PORT = 4
V6_EXC_HOPLIMIT = 0
V6_EXC_FRAGTIME = 1
V6_PARAM_HEADER = 0
V6_PARAM_NEXT_HEADER = 1
V6_PARAM_OPTION = 2

# RFC 1812 4.3.2.3 / RFC 4443 2.4(c): an error carries as much of the
# invoking packet as fits in 576 (v4) or 1280 (v6) bytes.
MAX_ERROR_V4 = 576
MAX_ERROR_V6 = 1280


@dataclass(slots=True)
class ICMPMessage:
    """An ICMPv4 or ICMPv6 message (``v6`` tells which)."""

    type: int
    code: int
    rest: int = 0  # the 32-bit field after the checksum
    body: bytes | bytearray | memoryview = b""
    v6: bool = False
    checksum: int = 0  # as read by parse, as written by build

    @property
    def is_error(self) -> bool:
        """RFC 4443 2.1: v6 types below 128 are errors; RFC 1122 3.2.2 for v4."""
        return self.type < 128 if self.v6 else self.type in ICMPV4_ERRORS

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """Next-hop MTU: low 16 bits in ICMPv4 frag-needed (RFC 1191), 32 in v6 PTB."""
        return self.rest if self.v6 else self.rest & 0xFFFF

    @property
    def pointer(self) -> int:
        """Parameter-problem pointer: top byte in v4 (RFC 792), 32 bits in v6."""
        return self.rest if self.v6 else self.rest >> 24

    @classmethod
    def echo(
        cls, ident: int, seq: int, data: bytes = b"", *, reply: bool = False, v6: bool = False
    ) -> ICMPMessage:
        if v6:
            kind = V6_ECHO_REPLY if reply else V6_ECHO_REQUEST
        else:
            kind = ECHO_REPLY if reply else ECHO_REQUEST
        return cls(kind, 0, (ident << 16) | seq, data, v6)

    @classmethod
    def error(
        cls, type: int, code: int, invoking: bytes | memoryview, *, info: int = 0, v6: bool = False
    ) -> ICMPMessage:
        """An error message quoting the invoking packet, truncated so the whole
        IP datagram stays within 576 (v4) or 1280 (v6) bytes."""
        room = (MAX_ERROR_V6 - 40 if v6 else MAX_ERROR_V4 - 20) - HEADER_LEN
        return cls(type, code, info, bytes(invoking[:room]), v6)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, *, v6: bool = False) -> ICMPMessage:
        if len(data) < HEADER_LEN:
            raise MalformedPacket("truncated ICMPv6 header" if v6 else "truncated ICMP header")
        kind, code, csum, rest = _HDR.unpack_from(data)
        return cls(kind, code, rest, data[HEADER_LEN:], v6, csum)

    def build(self, src: bytes = b"", dst: bytes = b"", *, with_checksum: bool = True) -> bytes:
        """Wire bytes. ICMPv6 needs ``src`` and ``dst`` for its pseudo-header
        checksum; ICMPv4 ignores them. ``with_checksum=False`` leaves the
        field zero (checksum offload on the loopback)."""
        head = _HDR.pack(self.type, self.code, 0, self.rest)
        csum = 0
        if with_checksum:
            total = len(head) + len(self.body)
            initial = pseudo_sum_v6(src, dst, PROTO_ICMPV6, total) if self.v6 else 0
            csum = checksum(head + bytes(self.body), initial)
        self.checksum = csum
        return b"".join((head[:2], csum.to_bytes(2, "big"), head[4:], self.body))


def icmp_checksum_ok(data: bytes | bytearray | memoryview, src: bytes = b"", dst: bytes = b"",
                     *, v6: bool = False) -> bool:
    """True when the ICMP message ``data`` carries a valid checksum."""
    initial = pseudo_sum_v6(src, dst, PROTO_ICMPV6, len(data)) if v6 else 0
    return ones_sum(data, initial) == 0xFFFF
