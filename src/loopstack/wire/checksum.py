"""The Internet checksum (RFC 1071) and the pseudo-header sums of RFC 768,
RFC 9293 3.1 and RFC 8200 8.1.

The one's-complement sum of 16-bit words equals the buffer read as one big
integer modulo 0xFFFF, because 2**16 == 1 (mod 0xFFFF). ``int.from_bytes``
does that read in C, which makes this the fastest pure-Python checksum.
"""

from __future__ import annotations

import struct

_PSEUDO6 = struct.Struct("!16s16sII")


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """One's-complement 16-bit sum of ``data`` (odd length padded with a zero
    byte) plus ``initial``, folded to 16 bits. Returns 0xFFFF rather than 0
    for a non-zero sum, as one's-complement arithmetic does."""
    n = len(data)
    value = int.from_bytes(data, "big")
    if n & 1:
        value <<= 8
    total = value + initial
    if total == 0:
        return 0
    folded = total % 0xFFFF
    return folded if folded else 0xFFFF


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data``: the complement of its one's sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_sum_v4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Sum of the IPv4 pseudo-header (RFC 9293 3.1, RFC 768)."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length


def pseudo_sum_v6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """Sum of the IPv6 pseudo-header (RFC 8200 8.1)."""
    return ones_sum(_PSEUDO6.pack(src, dst, length, next_header))


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Pseudo-header sum for either family, chosen by the address length."""
    if len(src) == 4:
        return pseudo_sum_v4(src, dst, proto, length)
    return pseudo_sum_v6(src, dst, proto, length)


def checked_pseudo_sum(src: bytes, dst: bytes, proto: int, length: int, what: str) -> int:
    """:func:`pseudo_sum` for builders: a clear error when the addresses
    needed for ``what``'s checksum are missing or of mixed families."""
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError(
            f"the {what} checksum needs 4-byte (IPv4) or 16-byte (IPv6) src and dst addresses;"
            " pass them, or build with with_checksum=False"
        )
    return pseudo_sum(src, dst, proto, length)


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when ``data`` (checksum field included) sums to 0xFFFF."""
    return ones_sum(data, initial) == 0xFFFF
