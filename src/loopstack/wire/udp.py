"""UDP header (RFC 768): parse, build and checksum.

The checksum covers a pseudo-header taken from the IP layer (RFC 768 for
IPv4, RFC 8200 8.1 for IPv6), so building and checking need the addresses:
4-byte ``bytes`` for IPv4, 16-byte for IPv6.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import checked_pseudo_sum, checksum, ones_sum, verify
from .errors import MalformedPacket

_HDR = struct.Struct("!HHHH")
HEADER_LEN = 8
PROTO_UDP = 17
MAX_LENGTH = 0xFFFF


def _pseudo(src: bytes, dst: bytes, length: int) -> int:
    return checked_pseudo_sum(src, dst, PROTO_UDP, length, "UDP")


@dataclass(slots=True)
class UDPHeader:
    sport: int
    dport: int
    length: int = 0  # header plus payload; set by parse and build
    checksum: int = 0  # as read by parse, as written by build

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> UDPHeader:
        """Parse the header at the start of ``data``; the payload is
        ``data[8:h.length]`` (bytes after it are IP-layer padding). The
        checksum is not checked here: see :func:`udp_checksum_ok`."""
        if len(data) < HEADER_LEN:
            raise MalformedPacket("truncated UDP header")
        sport, dport, length, csum = _HDR.unpack_from(data)
        if length < HEADER_LEN:
            raise MalformedPacket(f"UDP length {length} shorter than its header")
        if length > len(data):
            raise MalformedPacket(f"truncated UDP datagram: {len(data)} of {length} bytes")
        return cls(sport, dport, length, csum)

    def build(
        self,
        payload: bytes | bytearray | memoryview = b"",
        src: bytes = b"",
        dst: bytes = b"",
        *,
        with_checksum: bool = True,
    ) -> bytes:
        """Header plus payload, with length and checksum filled in.
        ``with_checksum=False`` leaves the checksum zero, which IPv4 reads as
        "no checksum" (RFC 768) and the loopback never checks."""
        length = HEADER_LEN + len(payload)
        if length > MAX_LENGTH:
            raise ValueError(f"UDP datagram of {length} bytes exceeds 65535")
        csum = 0
        if with_checksum:
            # The header is 8 bytes, an even length, so its sum and the
            # payload's add up without joining them.
            initial = _pseudo(src, dst, length) + ones_sum(
                _HDR.pack(self.sport, self.dport, length, 0)
            )
            # RFC 768: a computed zero is sent as all ones; zero means "none".
            csum = checksum(payload, initial) or 0xFFFF
        self.length = length
        self.checksum = csum
        return b"".join((_HDR.pack(self.sport, self.dport, length, csum), payload))


def udp_checksum_ok(data: bytes | bytearray | memoryview, src: bytes, dst: bytes) -> bool:
    """True when the UDP datagram at the start of ``data`` has a valid
    checksum. Over IPv4 a zero checksum means none was sent and is accepted
    (RFC 768); over IPv6 it is invalid (RFC 8200 8.1)."""
    if len(data) < HEADER_LEN:
        return False
    _, _, length, csum = _HDR.unpack_from(data)
    if length < HEADER_LEN or length > len(data):
        return False
    if csum == 0:
        return len(src) == 4
    return verify(data[:length], _pseudo(src, dst, length))
