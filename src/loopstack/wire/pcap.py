"""Capture files: classic pcap (draft-ietf-opsawg-pcap) with nanosecond
timestamps, and pcapng (draft-ietf-opsawg-pcapng), written and read.

Writers take frames as they are (add an Ethernet header with
:func:`ethernet_frame` for ``LINKTYPE_ETHERNET``) and write little-endian;
:func:`read_capture` reads both formats in either byte order. The caller
opens and closes the file; the writers only flush it on ``close()``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Self

from .errors import MalformedPacket

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # bare IPv4 or IPv6 packets, told apart by the version nibble
DEFAULT_SNAPLEN = 262144

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
_ZERO_MACS = bytes(12)

# Classic pcap (draft-ietf-opsawg-pcap 4, 5)
PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
_PCAP_FILE_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")

# pcapng (draft-ietf-opsawg-pcapng 3.1, 4)
BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 0x00000001
BLOCK_SPB = 0x00000003
BLOCK_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT = 0
SHB_USERAPPL = 4
IF_NAME = 2
IF_TSRESOL = 9
IF_TSOFFSET = 14
EPB_FLAGS = 2
_DIRECTION_BITS = {"in": 1, "out": 2}  # epb_flags bits 0-1 (draft 4.3.1)
_DIRECTIONS = {1: "in", 2: "out"}


def ethernet_frame(ip_packet: bytes | bytearray | memoryview) -> bytes:
    """``ip_packet`` behind an Ethernet header with all-zero MAC addresses,
    the frame ``tcpdump -i lo`` captures on Linux. The EtherType follows the
    IP version nibble."""
    if not ip_packet:
        raise ValueError("an empty packet has no IP version for the EtherType")
    version = ip_packet[0] >> 4
    if version == 4:
        ethertype = ETHERTYPE_IPV4
    elif version == 6:
        ethertype = ETHERTYPE_IPV6
    else:
        raise ValueError(f"IP version {version} has no EtherType here; expected 4 or 6")
    return b"".join((_ZERO_MACS, ethertype.to_bytes(2, "big"), ip_packet))


@dataclass(slots=True)
class CaptureRecord:
    """One captured frame. ``interface`` and ``direction`` ("in", "out")
    come from pcapng and are None when the file does not say."""

    ts_ns: int
    linktype: int
    frame: bytes
    interface: str | None = None
    direction: str | None = None


class _Writer:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def close(self) -> None:
        """Flush what was written; the file itself stays open."""
        self._file.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PcapWriter(_Writer):
    """Classic pcap with nanosecond timestamps (magic 0xa1b23c4d)."""

    def __init__(
        self, file: BinaryIO, linktype: int = LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN
    ) -> None:
        super().__init__(file)
        self.linktype = linktype
        self.snaplen = snaplen
        file.write(_PCAP_FILE_HEADER.pack(PCAP_MAGIC_NSEC, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_ns: int, frame: bytes | bytearray | memoryview) -> None:
        """One record; frames longer than the snaplen are cut to it."""
        captured = frame[: self.snaplen]
        seconds, nanoseconds = divmod(ts_ns, 1_000_000_000)
        self._file.write(_PCAP_RECORD.pack(seconds, nanoseconds, len(captured), len(frame)))
        self._file.write(captured)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    """A pcapng option: code, length, value padded to 32 bits (draft 3.5)."""
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(block_type: int, body: bytes) -> bytes:
    """A pcapng block: type, total length, body, total length (draft 3.1)."""
    total = 12 + len(body)
    return b"".join((struct.pack("<II", block_type, total), body, struct.pack("<I", total)))


def _options(options: list[bytes]) -> bytes:
    """An options list ends with opt_endofopt; an empty one is left out."""
    return (b"".join(options) + _option(OPT_ENDOFOPT, b"")) if options else b""


class PcapngWriter(_Writer):
    """pcapng: one section, interfaces added with :meth:`add_interface`,
    packets as Enhanced Packet Blocks with nanosecond timestamps."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self._snaplens: list[int] = []
        # Section Header Block (draft 4.1); section length -1: not given.
        body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        body += _options([_option(SHB_USERAPPL, b"loopstack")])
        file.write(_block(BLOCK_SHB, body))

    def add_interface(self, name: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> int:
        """Write an Interface Description Block (draft 4.2) and return the
        interface id that :meth:`write` takes."""
        body = struct.pack("<HHI", linktype, 0, snaplen) + _options(
            [_option(IF_NAME, name.encode()), _option(IF_TSRESOL, bytes((9,)))]
        )
        self._file.write(_block(BLOCK_IDB, body))
        self._snaplens.append(snaplen)
        return len(self._snaplens) - 1

    def write(
        self,
        iface_id: int,
        ts_ns: int,
        frame: bytes | bytearray | memoryview,
        direction: str | None = None,
    ) -> None:
        """One Enhanced Packet Block (draft 4.3); ``direction`` is "in",
        "out" or None."""
        if not 0 <= iface_id < len(self._snaplens):
            raise ValueError(f"interface {iface_id} was not added; call add_interface first")
        options = []
        if direction is not None:
            if direction not in _DIRECTION_BITS:
                raise ValueError(f'direction {direction!r} is not "in", "out" or None')
            options.append(_option(EPB_FLAGS, struct.pack("<I", _DIRECTION_BITS[direction])))
        captured = bytes(frame[: self._snaplens[iface_id]])
        head = struct.pack(
            "<IIIII", iface_id, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(captured), len(frame)
        )
        self._file.write(_block(BLOCK_EPB, head + _pad4(captured) + _options(options)))


def read_capture(file: BinaryIO) -> list[CaptureRecord]:
    """Every frame in a pcap or pcapng file, in file order. Raises
    MalformedPacket when the file is neither or is cut short."""
    data = file.read()
    if len(data) < 4:
        raise MalformedPacket("not a capture file: shorter than 4 bytes")
    if int.from_bytes(data[:4], "little") == BLOCK_SHB:
        return _read_pcapng(data)
    return _read_pcap(data)


def _read_pcap(data: bytes) -> list[CaptureRecord]:
    for order in "<>":
        magic = struct.unpack_from(order + "I", data)[0]
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            break
    else:
        raise MalformedPacket("not a pcap or pcapng file")
    if len(data) < 24:
        raise MalformedPacket("truncated pcap file header")
    unit_ns = 1 if magic == PCAP_MAGIC_NSEC else 1000
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF  # FCS bits above
    record = struct.Struct(order + "IIII")
    records = []
    off = 24
    while off < len(data):
        if off + 16 > len(data):
            raise MalformedPacket("truncated pcap record header")
        seconds, fraction, caplen, _ = record.unpack_from(data, off)
        off += 16
        if off + caplen > len(data):
            raise MalformedPacket("truncated pcap record")
        ts_ns = seconds * 1_000_000_000 + fraction * unit_ns
        records.append(CaptureRecord(ts_ns, linktype, data[off : off + caplen]))
        off += caplen
    return records


@dataclass(slots=True)
class PcapngInterface:
    """One pcapng Interface Description Block: link type, name, time resolution."""

    linktype: int
    name: str | None = None
    tsresol: int = 6  # draft 4.2: microseconds unless if_tsresol says otherwise
    tsoffset: int = 0  # seconds

    def ts_ns(self, units: int) -> int:
        """Units to nanoseconds (draft 4.2 if_tsresol: the high bit set means
        negative powers of two, clear means of ten; if_tsoffset in seconds)."""
        if self.tsresol & 0x80:
            ns = (units * 1_000_000_000) >> (self.tsresol & 0x7F)
        elif self.tsresol <= 9:
            ns = units * 10 ** (9 - self.tsresol)
        else:
            ns = units // 10 ** (self.tsresol - 9)
        return ns + self.tsoffset * 1_000_000_000


def _read_options(data: bytes, off: int, end: int, order: str) -> dict[int, bytes]:
    """The options of a block body from ``off`` to ``end`` (draft 3.5);
    the first of a repeated code wins."""
    found: dict[int, bytes] = {}
    while off + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, off)
        if code == OPT_ENDOFOPT:
            break
        off += 4
        if off + length > end:
            raise MalformedPacket(f"pcapng option {code} overruns its block")
        found.setdefault(code, data[off : off + length])
        off += length + (-length % 4)
    return found


def _read_pcapng(data: bytes) -> list[CaptureRecord]:
    records: list[CaptureRecord] = []
    interfaces: list[PcapngInterface] = []
    order = "<"
    off = 0
    while off < len(data):
        if off + 12 > len(data):
            raise MalformedPacket("truncated pcapng block header")
        if int.from_bytes(data[off : off + 4], "little") == BLOCK_SHB:
            # A new section: its byte-order magic sets the order, and
            # interface ids start again (draft 4.1).
            magic = data[off + 8 : off + 12]
            if magic == BYTE_ORDER_MAGIC.to_bytes(4, "little"):
                order = "<"
            elif magic == BYTE_ORDER_MAGIC.to_bytes(4, "big"):
                order = ">"
            else:
                raise MalformedPacket("bad pcapng byte-order magic")
            interfaces = []
        block_type, total = struct.unpack_from(order + "II", data, off)
        if total < 12 or total % 4 or off + total > len(data):
            raise MalformedPacket(f"bad pcapng block length {total}")
        body, end = off + 8, off + total - 4
        if block_type == BLOCK_IDB:
            if end - body < 8:
                raise MalformedPacket("truncated pcapng interface block")
            linktype = struct.unpack_from(order + "H", data, body)[0]
            iface = PcapngInterface(linktype)
            opts = _read_options(data, body + 8, end, order)
            if IF_NAME in opts:
                iface.name = opts[IF_NAME].rstrip(b"\x00").decode("utf-8", "replace")
            if opts.get(IF_TSRESOL):
                iface.tsresol = opts[IF_TSRESOL][0]
            if len(opts.get(IF_TSOFFSET, b"")) == 8:
                iface.tsoffset = struct.unpack(order + "q", opts[IF_TSOFFSET])[0]
            interfaces.append(iface)
        elif block_type == BLOCK_EPB:
            records.append(_read_epb(data, body, end, order, interfaces))
        elif block_type == BLOCK_SPB:
            if not interfaces or end - body < 4:
                raise MalformedPacket("pcapng simple packet block without interface")
            origlen = struct.unpack_from(order + "I", data, body)[0]
            caplen = min(origlen, end - body - 4)
            frame = data[body + 4 : body + 4 + caplen]
            records.append(CaptureRecord(0, interfaces[0].linktype, frame, interfaces[0].name))
        off += total
    return records


def _read_epb(
    data: bytes, body: int, end: int, order: str, interfaces: list[PcapngInterface]
) -> CaptureRecord:
    if end - body < 20:
        raise MalformedPacket("truncated pcapng enhanced packet block")
    iface_id, ts_high, ts_low, caplen, _ = struct.unpack_from(order + "IIIII", data, body)
    if iface_id >= len(interfaces):
        raise MalformedPacket(f"pcapng packet on undeclared interface {iface_id}")
    start = body + 20
    if start + caplen > end:
        raise MalformedPacket("pcapng packet overruns its block")
    iface = interfaces[iface_id]
    opts = _read_options(data, start + caplen + (-caplen % 4), end, order)
    direction = None
    if len(opts.get(EPB_FLAGS, b"")) == 4:
        direction = _DIRECTIONS.get(struct.unpack(order + "I", opts[EPB_FLAGS])[0] & 3)
    return CaptureRecord(
        iface.ts_ns((ts_high << 32) | ts_low),
        iface.linktype,
        data[start : start + caplen],
        iface.name,
        direction,
    )
