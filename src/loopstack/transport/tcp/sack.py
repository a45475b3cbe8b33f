"""SACK: the receiver's blocks (RFC 2018 4) and the sender's scoreboard of
SACKed ranges (what a retransmission after a timeout skips, RFC 6675 5.1;
loss detection is RACK's, rack.py). Sequence numbers here are unwrapped
integers."""

from __future__ import annotations

from bisect import bisect_left


class Scoreboard:
    """Ranges the peer has SACKed above snd_una, sorted and disjoint."""

    __slots__ = ("ranges",)

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def clear(self) -> None:
        self.ranges.clear()

    def add(self, start: int, end: int) -> bool:
        """Record a SACK block; True if it told us something new."""
        if end <= start:
            return False
        merged: list[tuple[int, int]] = []
        new = True
        for s, e in self.ranges:
            if e < start or s > end:
                merged.append((s, e))
            else:
                if s <= start and e >= end:
                    new = False
                start, end = min(s, start), max(e, end)
        i = bisect_left(merged, (start, end))
        merged.insert(i, (start, end))
        self.ranges = merged
        return new

    def advance(self, snd_una: int) -> None:
        """Forget what is cumulatively acknowledged."""
        r = self.ranges
        while r and r[0][1] <= snd_una:
            r.pop(0)
        if r and r[0][0] < snd_una:
            r[0] = (snd_una, r[0][1])

    def sacked_bytes(self) -> int:
        return sum(e - s for s, e in self.ranges)

    def is_sacked(self, seq: int) -> bool:
        for s, e in self.ranges:
            if s <= seq < e:
                return True
            if s > seq:
                break
        return False


def receiver_blocks(ooo: list[tuple[int, int]], recent: tuple[int, int] | None,
                    limit: int) -> list[tuple[int, int]]:
    """RFC 2018 4: the block holding the most recent segment first, then the
    others (most recent first as far as we know: highest first), up to
    ``limit`` blocks. ``ooo`` is the out-of-order queue as disjoint ranges."""
    blocks: list[tuple[int, int]] = []
    if recent is not None:
        for s, e in ooo:
            if s <= recent[0] and recent[1] <= e:
                blocks.append((s, e))
                break
    for s, e in reversed(ooo):
        if len(blocks) >= limit:
            break
        if (s, e) not in blocks:
            blocks.append((s, e))
    return blocks[:limit]
