"""What IP hands to a transport for each datagram it delivers (the part of
Linux's skb control block that matters here), and the result of a route
lookup for output."""

from __future__ import annotations

from dataclasses import dataclass

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
