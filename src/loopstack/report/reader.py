"""A forgiving capture reader for reports: pcap and pcapng, either byte
order, streamed record by record from a memory map.

Unlike :func:`loopstack.wire.pcap.read_capture` (strict, for tests), it
never gives up on a file it recognised: a record cut short or a block that
makes no sense ends the reading, and :class:`ReadNotes` says what was left.
Only a file that is not a capture at all raises :class:`NotACapture`.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..wire.pcap import (
    BLOCK_EPB,
    BLOCK_IDB,
    BLOCK_SHB,
    BLOCK_SPB,
    BYTE_ORDER_MAGIC,
    IF_NAME,
    IF_TSOFFSET,
    IF_TSRESOL,
    PCAP_MAGIC_NSEC,
    PCAP_MAGIC_USEC,
    PcapngInterface,
)

# (timestamp in ns, link type, frame)
Record = tuple[int, int, bytes]


class NotACapture(ValueError):
    """The file cannot be read as a capture at all (one sentence, for the CLI)."""


@dataclass
class ReadNotes:
    """What the reader could not use."""

    format: str = ""
    records: int = 0
    trailing_bytes: int = 0  # left unread at the end (a cut-off record or block)
    why_stopped: str = ""
    skipped_blocks: int = 0  # pcapng blocks of kinds that carry no packets we use
    interfaces: list[str] = field(default_factory=list)


class _Source:
    """The file's bytes: a memory map, or the bytes of a small or special file."""

    def __init__(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > 0:
                    try:
                        self.data: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0,
                                                                 access=mmap.ACCESS_READ)
                        return
                    except (OSError, ValueError):
                        pass
                self.data = f.read()
        except IsADirectoryError:
            raise NotACapture(f"{path} is a directory, not a capture file") from None
        except FileNotFoundError:
            raise NotACapture(f"{path}: no such file") from None
        except PermissionError:
            raise NotACapture(f"{path}: permission denied") from None
        except OSError as e:
            raise NotACapture(f"{path}: {e.strerror or e}") from None

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap):
            self.data.close()


def read_records(path: str, notes: ReadNotes) -> Iterator[Record]:
    """Every record of ``path`` that can be read, in file order. Raises
    NotACapture before yielding anything when the file is not a capture."""
    src = _Source(path)
    data = src.data
    name = path
    try:
        if len(data) < 4:
            raise NotACapture(f"{name} is not a capture file: it is only {len(data)} bytes long")
        if int.from_bytes(data[:4], "little") == BLOCK_SHB:
            notes.format = "pcapng"
            yield from _pcapng(data, notes)
            return
        for order in "<>":
            magic = struct.unpack_from(order + "I", data)[0]
            if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
                break
        else:
            raise NotACapture(f"{name} is not a pcap or pcapng file (its first bytes are "
                              f"{bytes(data[:4]).hex()}, not a capture's magic number)")
        notes.format = "pcap" + (" (nanosecond)" if magic == PCAP_MAGIC_NSEC else "")
        if len(data) < 24:
            raise NotACapture(f"{name} is a pcap file cut off inside its 24-byte header")
        yield from _pcap(data, order, 1 if magic == PCAP_MAGIC_NSEC else 1000, notes)
    finally:
        src.close()


def _pcap(data: bytes | mmap.mmap, order: str, unit_ns: int, notes: ReadNotes
          ) -> Iterator[Record]:
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF  # FCS bits above
    head = struct.Struct(order + "IIII").unpack_from
    off, end = 24, len(data)
    count = 0
    while off < end:
        if off + 16 > end:
            notes.why_stopped = "the file ends inside a record header"
            break
        seconds, fraction, caplen, _ = head(data, off)
        if caplen > 0x4000000:  # 64 MiB: no real snap length; the file is damaged here
            notes.why_stopped = f"a record claims {caplen} bytes: the file is damaged there"
            break
        off += 16
        if off + caplen > end:
            off -= 16
            notes.why_stopped = "the file ends inside a record (a cut-off capture)"
            break
        count += 1
        yield seconds * 1_000_000_000 + fraction * unit_ns, linktype, data[off : off + caplen]
        off += caplen
    notes.records = count
    notes.trailing_bytes = end - off


def _options(data: bytes | mmap.mmap, off: int, end: int, order: str) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while off + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, off)
        if code == 0:
            break
        off += 4
        if off + length > end:
            break
        found.setdefault(code, bytes(data[off : off + length]))
        off += length + (-length % 4)
    return found


def _pcapng(data: bytes | mmap.mmap, notes: ReadNotes) -> Iterator[Record]:
    ifaces: list[PcapngInterface] = []
    order = "<"
    off, end = 0, len(data)
    count = 0
    while off < end:
        if off + 12 > end:
            notes.why_stopped = "the file ends inside a block header"
            break
        if int.from_bytes(data[off : off + 4], "little") == BLOCK_SHB:
            magic = bytes(data[off + 8 : off + 12])
            if magic == BYTE_ORDER_MAGIC.to_bytes(4, "little"):
                order = "<"
            elif magic == BYTE_ORDER_MAGIC.to_bytes(4, "big"):
                order = ">"
            else:
                if off == 0:
                    raise NotACapture("the file starts like pcapng but its byte-order magic "
                                      "is wrong: it is not a capture")
                notes.why_stopped = "a section header with a bad byte-order magic"
                break
            ifaces = []
        block_type, total = struct.unpack_from(order + "II", data, off)
        if total < 12 or total % 4:
            notes.why_stopped = f"a block with an impossible length ({total})"
            break
        if off + total > end:
            notes.why_stopped = "the file ends inside a block (a cut-off capture)"
            break
        body, bend = off + 8, off + total - 4
        if block_type == BLOCK_EPB and bend - body >= 20:
            iface_id, hi, lo, caplen, _ = struct.unpack_from(order + "IIIII", data, body)
            if iface_id < len(ifaces) and body + 20 + caplen <= bend:
                iface = ifaces[iface_id]
                count += 1
                yield (iface.ts_ns((hi << 32) | lo), iface.linktype,
                       data[body + 20 : body + 20 + caplen])
            else:
                notes.skipped_blocks += 1
        elif block_type == BLOCK_IDB and bend - body >= 8:
            iface = PcapngInterface(struct.unpack_from(order + "H", data, body)[0])
            opts = _options(data, body + 8, bend, order)
            if opts.get(IF_TSRESOL):
                iface.tsresol = opts[IF_TSRESOL][0]
            if len(opts.get(IF_TSOFFSET, b"")) == 8:
                iface.tsoffset = struct.unpack(order + "q", opts[IF_TSOFFSET])[0]
            if IF_NAME in opts:
                notes.interfaces.append(opts[IF_NAME].rstrip(b"\0").decode("utf-8", "replace"))
            ifaces.append(iface)
        elif block_type == BLOCK_SPB and ifaces and bend - body >= 4:
            origlen = struct.unpack_from(order + "I", data, body)[0]
            caplen = min(origlen, bend - body - 4)
            count += 1
            yield 0, ifaces[0].linktype, data[body + 4 : body + 4 + caplen]
        elif block_type != BLOCK_SHB:
            notes.skipped_blocks += 1
        off += total
    notes.records = count
    notes.trailing_bytes = end - off
