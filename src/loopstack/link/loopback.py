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

    def transmit(self, packet: bytes) -> None:
        """The hot path: with no netem and no taps, count the packet out and
        in and hand it straight to the stack."""
        if self._netem is not None or self._taps or self.rules or not self.up:
            super().transmit(packet)
            return
        stats = self.stats
        n = len(packet)
        stats.tx_packets += 1
        stats.tx_bytes += n
        stats.rx_packets += 1
        stats.rx_bytes += n
        self._rx_handler(self, packet)

    def carries_records(self) -> bool:
        """Whether a transport segment may cross now as its parsed record
        (``transmit_record``) instead of bytes: nothing watches or changes
        what crosses lo (no capture or other tap, no netem, no path rule)
        and it is up. The record path counts exactly as :meth:`transmit`."""
        return self._netem is None and not self._taps and not self.rules and self.up

    def transmit_record(self, record: object, length: int) -> None:
        """A packet of ``length`` bytes, given as its record (see
        ip/packet.py, ``Record``): counted out and in as :meth:`transmit`
        counts it, and handed to the stack (interface ``None`` marks a record)."""
        stats = self.stats
        stats.tx_packets += 1
        stats.tx_bytes += length
        stats.rx_packets += 1
        stats.rx_bytes += length
        self._rx_handler(None, record)  # type: ignore[arg-type]  # (the stack's _netif_rx)

    def _xmit(self, packet: bytes) -> None:
        self._receive(packet, "in")
