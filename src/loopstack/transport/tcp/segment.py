"""An arriving segment as TCP input sees it: header fields, options and
payload, parsed once (with a fast path for the common timestamps-only
option block)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...wire.errors import MalformedPacket
from ...wire.tcp import TCPHeader

_FIXED = struct.Struct("!HHIIHHHH")
_TS_BLOCK = struct.Struct("!4sII")
_NOP_NOP_TS = bytes((1, 1, 8, 10))


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


def parse_segment(data: memoryview) -> Segment:
    """Raises MalformedPacket for a header that does not hold together."""
    if len(data) < 20:
        raise MalformedPacket("truncated TCP header")
    sport, dport, seq, ack, off_flags, window, _, _ = _FIXED.unpack_from(data)
    hlen = (off_flags >> 12) * 4
    if hlen < 20 or hlen > len(data):
        raise MalformedPacket(f"bad TCP data offset {hlen // 4}")
    seg = Segment(sport, dport, seq, ack, off_flags & 0x0FFF, window, data[hlen:])
    if hlen == 20:
        return seg
    if hlen == 32 and data[20:24] == _NOP_NOP_TS:
        _, seg.tsval, seg.tsecr = _TS_BLOCK.unpack_from(data, 20)
        return seg
    h = TCPHeader.parse(data[:hlen])
    seg.mss = h.mss
    seg.wscale = h.wscale
    seg.sack_ok = h.sack_permitted
    ts = h.timestamps
    if ts is not None:
        seg.tsval, seg.tsecr = ts
    blocks = h.sack_blocks
    if blocks:
        seg.sack = blocks
    return seg
