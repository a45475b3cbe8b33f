"""What IP hands to a transport for each datagram it delivers (the part of
Linux's skb control block that matters here), and the result of a route
lookup for output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..link.interface import Interface
from .route import Route


@dataclass(slots=True)
class Inbound:
    iface: Interface
    src: bytes
    dst: bytes
    proto: int  # upper-layer protocol
    ttl: int  # TTL or hop limit as received
    packet: bytes  # the whole IP datagram (reassembled), for ICMP quotes and raw access
    payload: memoryview  # the upper-layer bytes
    broadcast: bool = False  # sent to a broadcast or multicast address

    @property
    def verify_checksums(self) -> bool:
        """Transports verify checksums unless the interface offloads them (lo)."""
        return not self.iface.checksum_offload


@dataclass(slots=True)
class OutRoute:
    route: Route
    iface: Interface
    src: bytes
    dst: bytes
    broadcast: bool = False

    @property
    def needs_checksums(self) -> bool:
        return not self.iface.checksum_offload


class Record:
    """A datagram crossing an unobserved lo as its parsed transport record,
    not as bytes (Linux hands an skb with parsed headers from layer to
    layer; DESIGN.md, Performance). It holds what the bytes would say: the
    IP header's fields (``ident`` taken from the same counter, ``ttl``
    resolved) and the transport's own record, ``segment``, which
    ``build(segment)`` turns into the transport header and payload. IP
    counts it as it counts the bytes, and turns it into the very bytes
    (``packet()``) wherever a path needs them."""

    __slots__ = ("iface", "src", "dst", "proto", "ttl", "ident", "length", "segment",
                 "build", "deliver", "to_bytes")

    def __init__(self, iface: Interface, src: bytes, dst: bytes, proto: int, ttl: int,
                 ident: int, length: int, segment: Any, build: Callable[[Any], bytes],
                 deliver: Callable[[Record], None], to_bytes: Callable[[Record], bytes]) -> None:
        self.iface = iface
        self.src = src
        self.dst = dst
        self.proto = proto
        self.ttl = ttl
        self.ident = ident
        self.length = length  # of the whole datagram, as the bytes would be
        self.segment = segment
        self.build = build
        self.deliver = deliver  # the receiving IP's record input
        self.to_bytes = to_bytes

    def packet(self) -> bytes:
        """The datagram as the byte path would have built it."""
        return self.to_bytes(self)
