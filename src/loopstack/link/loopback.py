"""The loopback device `lo` (Linux drivers/net/loopback.c).

MTU 65536; transmit hands the packet straight to the stack's receive
backlog, so each packet counts once as TX and once as RX. Checksums are
offloaded (see Interface.checksum_offload).
"""

from __future__ import annotations

from .interface import Interface

LOOPBACK_MTU = 65536


class Loopback(Interface):
    kind = "loopback"
    is_loopback = True

    def __init__(self, name: str = "lo", mtu: int = LOOPBACK_MTU) -> None:
        super().__init__(name, mtu)

    def _xmit(self, packet: bytes) -> None:
        self._receive(packet, "in")
