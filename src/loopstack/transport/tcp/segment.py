"""An arriving segment as TCP input sees it: header fields, options and
payload, parsed once (with a fast path for the common timestamps-only
option block)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...wire.errors import MalformedPacket

_FIXED = struct.Struct("!HHIIHHHH")
_TS_BLOCK = struct.Struct("!4sII")
_NOP_NOP_TS = bytes((1, 1, 8, 10))
_TS_VALUES = struct.Struct("!II")
_SACK_BLOCK = struct.Struct("!II")


@dataclass(slots=True)
class Segment:
    sport: int
    dport: int
    seq: int  # wire values (32-bit)
    ack: int
    flags: int
    window: int  # as sent (unscaled)
    payload: memoryview
    mss: int | None = None
    wscale: int | None = None
    sack_ok: bool = False
    tsval: int | None = None
    tsecr: int = 0
    sack: tuple[tuple[int, int], ...] = ()
    urg_ptr: int = 0  # the urgent pointer field, meaningful with URG (RFC 9293 3.1)
    hdr_len: int = 20  # data offset, in bytes


def parse_segment(data: memoryview) -> Segment:
    """Raises MalformedPacket for a header that does not hold together
    (options never make it fail: see _parse_options)."""
    if len(data) < 20:
        raise MalformedPacket("truncated TCP header")
    sport, dport, seq, ack, off_flags, window, _, urg_ptr = _FIXED.unpack_from(data)
    hlen = (off_flags >> 12) * 4
    if hlen < 20 or hlen > len(data):
        raise MalformedPacket(f"bad TCP data offset {hlen // 4}")
    seg = Segment(sport, dport, seq, ack, off_flags & 0x0FFF, window, data[hlen:])
    if urg_ptr:
        seg.urg_ptr = urg_ptr
    if hlen == 20:
        return seg
    seg.hdr_len = hlen
    if hlen == 32 and data[20:24] == _NOP_NOP_TS:
        _, seg.tsval, seg.tsecr = _TS_BLOCK.unpack_from(data, 20)
        return seg
    _parse_options(seg, data[20:hlen])
    return seg


def _parse_options(seg: Segment, opts: memoryview) -> None:
    """Linux tcp_parse_options(): take what makes sense, skip an option of
    the wrong size, stop at a length that cannot be; never reject the
    segment for its options."""
    i = 0
    n = len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:  # EOL
            return
        if kind == 1:  # NOP
            i += 1
            continue
        if i + 1 >= n:
            return
        size = opts[i + 1]
        if size < 2 or i + size > n:
            return  # "silly options": stop here
        body = opts[i + 2 : i + size]
        if kind == 2 and size == 4:
            seg.mss = (body[0] << 8) | body[1]
        elif kind == 3 and size == 3:
            seg.wscale = body[0]
        elif kind == 4 and size == 2:
            seg.sack_ok = True
        elif kind == 8 and size == 10:
            seg.tsval, seg.tsecr = _TS_VALUES.unpack_from(body)
        elif kind == 5 and size >= 10 and (size - 2) % 8 == 0:
            seg.sack = tuple(_SACK_BLOCK.iter_unpack(body))
        i += size
