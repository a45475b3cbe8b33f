"""Per-path impairments: netem, or a cut, for packets between particular
addresses — `tc filter ... u32 match ip src A dst B` in front of a netem
class, reduced to what clusters in one process need (DESIGN: nodes on
127.0.0.2, 127.0.0.3, ... split like a real network)."""

from __future__ import annotations

from dataclasses import dataclass

from .netem import Netem


def _prefix(text: str) -> tuple[int, int, int]:
    """(family width, network as int, prefix length) for "a.b.c.d[/n]" or "x::y[/n]"."""
    import socket

    addr, _, plen = text.partition("/")
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        raw = socket.inet_pton(fam, addr)
    except OSError:
        raise ValueError(f"{text!r} is not an address or prefix (use e.g. 127.0.0.2 or "
                         f"127.0.0.0/24)") from None
    width = len(raw) * 8
    n = width if not plen else int(plen) if plen.isdigit() else -1
    if not 0 <= n <= width:
        raise ValueError(f"bad prefix length in {text!r}: use 0 to {width}")
    value = int.from_bytes(raw, "big") >> (width - n) if n else 0
    return width, value, n


@dataclass
class PathRule:
    """Packets from ``src`` to ``dst`` (prefixes) get ``netem``, or are
    dropped when ``netem`` is None (a partition)."""

    src: str
    dst: str
    netem: Netem | None

    def __post_init__(self) -> None:
        self._s = _prefix(self.src)
        self._d = _prefix(self.dst)
        if self._s[0] != self._d[0]:
            raise ValueError(f"{self.src} and {self.dst} are of different families")
        self.dropped = 0

    def matches(self, packet: bytes) -> bool:
        width = self._s[0]
        if width == 32:
            if len(packet) < 20 or packet[0] >> 4 != 4:
                return False
            src, dst = packet[12:16], packet[16:20]
        else:
            if len(packet) < 40 or packet[0] >> 4 != 6:
                return False
            src, dst = packet[8:24], packet[24:40]
        return _in(src, self._s) and _in(dst, self._d)


def _in(addr: bytes, prefix: tuple[int, int, int]) -> bool:
    width, value, n = prefix
    return not n or int.from_bytes(addr, "big") >> (width - n) == value
