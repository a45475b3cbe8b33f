"""Local port bookkeeping shared by UDP and TCP: who is bound where, bind
conflicts as Linux decides them, and ephemeral port selection.

Addresses are kept per family as the socket sees them: 4 bytes for AF_INET
sockets, 16 for AF_INET6 ones (a v4-mapped ::ffff:a.b.c.d included). A
dual-stack AF_INET6 socket on :: covers every IPv4 address too (RFC 3493
3.7, Linux bindv6only = 0).
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Collection, Iterator
from typing import Protocol

from ..ip.addr import V4_ANY, V6_ANY

EPHEMERAL_LOW = 32768  # ip_local_port_range
EPHEMERAL_HIGH = 60999
V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


class Bound(Protocol):
    """What the port table needs to know about a bound socket."""

    local_addr: bytes
    local_port: int
    v6only: bool
    reuseaddr: bool
    reuseport: bool
    listening: bool


def v4_of(addr: bytes) -> bytes | None:
    """The IPv4 address an address stands for (itself, or a v4-mapped one)."""
    if len(addr) == 4:
        return addr
    if addr[:12] == V4_MAPPED_PREFIX:
        return addr[12:]
    return None


def mapped(addr4: bytes) -> bytes:
    return V4_MAPPED_PREFIX + addr4


def _v4_view(s: Bound) -> bytes | None:
    """Which IPv4 addresses ``s`` covers: an address, V4_ANY for all, or None."""
    if len(s.local_addr) == 4:
        return s.local_addr
    if s.local_addr == V6_ANY:
        return None if s.v6only else V4_ANY
    return v4_of(s.local_addr)


def _v6_view(s: Bound) -> bytes | None:
    """Which IPv6 addresses ``s`` covers (never any for an AF_INET socket)."""
    if len(s.local_addr) == 4:
        return None
    if v4_of(s.local_addr) is not None:
        return None
    return s.local_addr


def addresses_overlap(a: Bound, b: Bound) -> bool:
    a4, b4 = _v4_view(a), _v4_view(b)
    if a4 is not None and b4 is not None and (a4 == V4_ANY or b4 == V4_ANY or a4 == b4):
        return True
    a6, b6 = _v6_view(a), _v6_view(b)
    return a6 is not None and b6 is not None and (a6 == V6_ANY or b6 == V6_ANY or a6 == b6)


_EMPTY: dict[Bound, None] = {}


def in_use() -> OSError:
    return OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


class PortTable:
    """Bound sockets of one protocol, by port. ``tcp`` selects TCP's
    stricter SO_REUSEADDR rule (no sharing with a listener)."""

    def __init__(self, rng: random.Random, *, tcp: bool) -> None:
        self._rng = rng
        self._tcp = tcp
        # port -> its bound sockets, in the order they were bound (a dict
        # used as an ordered set: a busy server's port holds every
        # TIME-WAIT connection it accepted, and one leaves in O(1)).
        self.by_port: dict[int, dict[Bound, None]] = {}
        self.low = EPHEMERAL_LOW
        self.high = EPHEMERAL_HIGH

    def conflicts(self, s: Bound, port: int) -> bool:
        for other in self.by_port.get(port, ()):
            if other is s or not addresses_overlap(s, other):
                continue
            if s.reuseport and other.reuseport:
                continue  # same user: every socket here is ours
            if s.reuseaddr and other.reuseaddr and not (self._tcp and other.listening):
                continue
            return True
        return False

    def bind(self, s: Bound, port: int, *, odd_first: bool = True) -> int:
        """Bind ``s`` to ``port`` (0: pick an ephemeral one). Raises EADDRINUSE."""
        if port == 0:
            port = self.pick(s, odd_first=odd_first)
        elif self.conflicts(s, port):
            raise in_use()
        s.local_port = port
        self.add(s, port)
        return port

    def add(self, s: Bound, port: int) -> None:
        """Put ``s`` (its port already chosen and checked) in ``port``'s bucket."""
        bucket = self.by_port.get(port)
        if bucket is None:
            self.by_port[port] = {s: None}
        else:
            bucket[s] = None

    def pick(self, s: Bound, *, odd_first: bool = True) -> int:
        """A free ephemeral port from a random start. TCP tries one parity
        first (Linux: bind() favours odd ports and connect() even ones, RFC
        6056); UDP has no preference (udp_lib_get_port scans from a random
        port in odd-multiple strides, either parity alike)."""
        span = self.high - self.low + 1
        start = self._rng.randrange(span)
        if not self._tcp:
            for i in range(span):
                port = self.low + (start + i) % span
                if not self.conflicts(s, port):
                    return port
            raise in_use()
        for parity in ((1, 0) if odd_first else (0, 1)):
            for i in range(span):
                port = self.low + (start + i) % span
                if port % 2 != parity:
                    continue
                if not self.conflicts(s, port):
                    return port
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))

    def unbind(self, s: Bound) -> None:
        bucket = self.by_port.get(s.local_port)
        if bucket and s in bucket:
            del bucket[s]
            if not bucket:
                del self.by_port[s.local_port]

    def at(self, port: int) -> Collection[Bound]:
        """The sockets bound to ``port``, in the order they were bound (do
        not bind or unbind while iterating over it)."""
        return self.by_port.get(port, _EMPTY).keys()

    def __iter__(self) -> Iterator[Bound]:
        for bucket in self.by_port.values():
            yield from bucket
