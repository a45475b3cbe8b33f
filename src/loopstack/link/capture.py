"""Packet capture to pcap or pcapng files that Wireshark, tshark, tcpdump
and scapy read.

Frames are written as `tcpdump -i lo` writes them on Linux: Ethernet with
zero MAC addresses (LINKTYPE_ETHERNET). Checksums the loopback left out
(offload) are filled in, so the file shows correct checksums; packets that
netem corrupted keep their damage.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import BinaryIO

from ..wire.checksums import fill_checksums
from ..wire.pcap import LINKTYPE_ETHERNET, PcapngWriter, PcapWriter, ethernet_frame
from .interface import Interface, TapHandle

_open: weakref.WeakSet[Capture] = weakref.WeakSet()


def flush_all() -> None:
    """Write out every open capture's buffer (before a fork: a child's copy
    of an unwritten buffer would reach the file a second time)."""
    for cap in list(_open):
        if not cap._file.closed:
            cap._file.flush()


class Capture:
    """Writes every packet crossing ``interfaces`` until ``stop()``."""

    def __init__(
        self,
        path: str,
        interfaces: Iterable[Interface],
        now_ns: Callable[[], int],
        fmt: str | None = None,
    ) -> None:
        if fmt is None:
            fmt = "pcapng" if path.endswith(".pcapng") else "pcap"
        if fmt not in ("pcap", "pcapng"):
            raise ValueError(f"unknown capture format {fmt!r}: use 'pcap' or 'pcapng'")
        self.path = path
        self.format = fmt
        self.packets = 0
        self._now_ns = now_ns
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in stop()
        self._pcap: PcapWriter | None = None
        self._pcapng: PcapngWriter | None = None
        self._handles: list[TapHandle] = []
        _open.add(self)
        ifaces = list(interfaces)
        if fmt == "pcap":
            self._pcap = PcapWriter(self._file, LINKTYPE_ETHERNET)
            for iface in ifaces:
                self._handles.append(iface.tap(self._pcap_writer(iface)))
        else:
            self._pcapng = PcapngWriter(self._file)
            for iface in ifaces:
                idx = self._pcapng.add_interface(iface.name, LINKTYPE_ETHERNET)
                self._handles.append(iface.tap(self._pcapng_writer(idx, iface)))

    @staticmethod
    def _frame(iface: Interface, packet: bytes) -> bytes:
        # Only offloaded checksums are filled in: real damage (netem corrupt,
        # a bad packet injected on a NIC) stays visible.
        if iface.checksum_offload:
            packet = fill_checksums(packet)
        return ethernet_frame(packet)

    def _pcap_writer(self, iface: Interface) -> Callable[[bytes, str], None]:
        writer = self._pcap
        assert writer is not None

        def write(packet: bytes, direction: str) -> None:
            writer.write(self._now_ns(), self._frame(iface, packet))
            self.packets += 1

        return write

    def _pcapng_writer(self, idx: int, iface: Interface) -> Callable[[bytes, str], None]:
        writer = self._pcapng
        assert writer is not None

        def write(packet: bytes, direction: str) -> None:
            writer.write(idx, self._now_ns(), self._frame(iface, packet), direction)
            self.packets += 1

        return write

    def flush(self) -> None:
        """Write out what is buffered, so the file can be read while the
        capture goes on (a report written mid-run)."""
        if not self._file.closed:
            self._file.flush()

    def stop(self) -> None:
        """Detach from the interfaces and close the file (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if not self._file.closed:
            if self._pcap is not None:
                self._pcap.close()
            if self._pcapng is not None:
                self._pcapng.close()
            self._file.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
