"""TCP header (RFC 9293 3.1) and its options: parse, build and checksum.

Options are typed records: MSS (RFC 9293 3.2), window scale and timestamps
(RFC 7323 2.2, 3.2), SACK-permitted and SACK (RFC 2018 2, 3), the two
one-byte kinds NOP and EOL, and any other kind kept byte for byte. Parsing
runs once per received segment, so the usual NOP, NOP, Timestamps block is
recognised without walking the options.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from .checksum import checked_pseudo_sum, checksum, ones_sum, verify
from .errors import MalformedPacket

_FIXED = struct.Struct("!HHIIHHHH")
_MSS = struct.Struct("!BBH")
_WSCALE = struct.Struct("!BBB")
_TIMESTAMPS = struct.Struct("!BBII")
_TS_VALUES = struct.Struct("!II")
_SACK_BLOCK = struct.Struct("!II")
FIXED_LEN = 20
MAX_OPTIONS_LEN = 40  # data offset is 4 bits: at most 60 bytes of header
PROTO_TCP = 6

# Control bits (RFC 9293 3.1; ECE and CWR from RFC 3168 6.1). The four
# reserved bits before them are kept in bits 8-11 of ``flags``.
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80
FLAGS_MASK = 0x0FFF

# Option kinds
KIND_EOL = 0
KIND_NOP = 1
KIND_MSS = 2
KIND_WSCALE = 3
KIND_SACK_PERMITTED = 4
KIND_SACK = 5
KIND_TIMESTAMPS = 8

# The whole-option lengths that RFC 9293 3.2, RFC 7323 and RFC 2018 fix.
_FIXED_OPTION_LENGTHS = {KIND_MSS: 4, KIND_WSCALE: 3, KIND_SACK_PERMITTED: 2, KIND_TIMESTAMPS: 10}
_NOP_NOP_TIMESTAMPS = bytes((KIND_NOP, KIND_NOP, KIND_TIMESTAMPS, 10))


@dataclass(slots=True)
class MSSOption:
    """Maximum segment size the sender can receive (RFC 9293 3.7.1); SYN only."""

    mss: int

    def build(self) -> bytes:
        return _MSS.pack(KIND_MSS, 4, self.mss)


@dataclass(slots=True)
class WindowScaleOption:
    """Window scale shift count (RFC 7323 2.2); SYN only. Kept as sent: the
    clamp to 14 (RFC 7323 2.3) is the receiver's business."""

    shift: int

    def build(self) -> bytes:
        return _WSCALE.pack(KIND_WSCALE, 3, self.shift)


@dataclass(slots=True)
class SackPermittedOption:
    """The sender can receive SACK blocks (RFC 2018 2); SYN only."""

    def build(self) -> bytes:
        return bytes((KIND_SACK_PERMITTED, 2))


@dataclass(slots=True)
class SackOption:
    """Selective acknowledgment (RFC 2018 3): (left edge, right edge) pairs
    of received sequence space, right edges exclusive."""

    blocks: tuple[tuple[int, int], ...]

    def build(self) -> bytes:
        head = bytes((KIND_SACK, 2 + 8 * len(self.blocks)))
        return head + b"".join(_SACK_BLOCK.pack(left, right) for left, right in self.blocks)


@dataclass(slots=True)
class TimestampsOption:
    """Timestamp value and echo reply (RFC 7323 3.2)."""

    tsval: int
    tsecr: int

    def build(self) -> bytes:
        return _TIMESTAMPS.pack(KIND_TIMESTAMPS, 10, self.tsval, self.tsecr)


@dataclass(slots=True)
class NopOption:
    """No-operation, used to align the next option (RFC 9293 3.2)."""

    def build(self) -> bytes:
        return b"\x01"


@dataclass(slots=True)
class EolOption:
    """End of option list (RFC 9293 3.2); what follows it is padding."""

    def build(self) -> bytes:
        return b"\x00"


@dataclass(slots=True)
class UnknownOption:
    """An option of a kind not interpreted here, kept byte for byte; ``data``
    is everything after its kind and length bytes."""

    kind: int
    data: bytes

    def build(self) -> bytes:
        if len(self.data) > MAX_OPTIONS_LEN - 2:
            raise ValueError(f"TCP option kind {self.kind} is longer than 40 bytes")
        return bytes((self.kind, 2 + len(self.data))) + self.data


TCPOption: TypeAlias = (
    MSSOption
    | WindowScaleOption
    | SackPermittedOption
    | SackOption
    | TimestampsOption
    | NopOption
    | EolOption
    | UnknownOption
)
_Opt = TypeVar("_Opt", bound=TCPOption)

# Stateless options are shared between parsed headers.
_NOP = NopOption()
_EOL = EolOption()
_SACK_PERMITTED = SackPermittedOption()


def _parse_options(data: bytes | bytearray | memoryview, end: int) -> list[TCPOption]:
    """The options in ``data[20:end]`` (RFC 9293 3.2: kind, length, data;
    EOL and NOP are a lone kind byte). Bytes after an EOL are padding."""
    options: list[TCPOption] = []
    i = FIXED_LEN
    while i < end:
        kind = data[i]
        if kind == KIND_NOP:
            options.append(_NOP)
            i += 1
            continue
        if kind == KIND_EOL:
            options.append(_EOL)
            break
        if i + 1 >= end:
            raise MalformedPacket(f"TCP option kind {kind} has no length byte")
        length = data[i + 1]
        if length < 2:
            raise MalformedPacket(f"TCP option kind {kind} has length {length}")
        if i + length > end:
            raise MalformedPacket(f"TCP option kind {kind} overruns the header")
        fixed = _FIXED_OPTION_LENGTHS.get(kind)
        if fixed is not None and length != fixed:
            raise MalformedPacket(f"TCP option kind {kind} has length {length}, not {fixed}")
        if kind == KIND_TIMESTAMPS:
            options.append(TimestampsOption(*_TS_VALUES.unpack_from(data, i + 2)))
        elif kind == KIND_MSS:
            options.append(MSSOption(int.from_bytes(data[i + 2 : i + 4], "big")))
        elif kind == KIND_WSCALE:
            options.append(WindowScaleOption(data[i + 2]))
        elif kind == KIND_SACK_PERMITTED:
            options.append(_SACK_PERMITTED)
        elif kind == KIND_SACK:
            if length < 10 or (length - 2) % 8:
                raise MalformedPacket(f"TCP SACK option has length {length}, not 2 + 8n")
            edges = struct.unpack_from(f"!{(length - 2) // 4}I", data, i + 2)
            options.append(SackOption(tuple(zip(edges[::2], edges[1::2], strict=True))))
        else:
            options.append(UnknownOption(kind, bytes(data[i + 2 : i + length])))
        i += length
    return options


def _encode_options(options: list[TCPOption]) -> bytes:
    """The options in order, padded with zero (EOL) bytes to a multiple of 4."""
    raw = b"".join([opt.build() for opt in options])
    if len(raw) % 4:
        raw += bytes(4 - len(raw) % 4)
    if len(raw) > MAX_OPTIONS_LEN:
        raise ValueError(f"TCP options take {len(raw)} bytes; at most 40 fit")
    return raw


def _pseudo(src: bytes, dst: bytes, length: int) -> int:
    return checked_pseudo_sum(src, dst, PROTO_TCP, length, "TCP")


@dataclass(slots=True)
class TCPHeader:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    options: list[TCPOption] = field(default_factory=list)
    data_offset: int = 0  # header length in 32-bit words; set by parse and build
    checksum: int = 0  # as read by parse, as written by build

    @property
    def header_length(self) -> int:
        """Header length in bytes: ``data_offset * 4`` once parsed or built,
        before that the length ``build`` will give."""
        if self.data_offset:
            return self.data_offset * 4
        return FIXED_LEN + len(_encode_options(self.options))

    def _find(self, kind: type[_Opt]) -> _Opt | None:
        for opt in self.options:
            if isinstance(opt, kind):
                return opt
        return None

    @property
    def mss(self) -> int | None:
        opt = self._find(MSSOption)
        return None if opt is None else opt.mss

    @property
    def wscale(self) -> int | None:
        opt = self._find(WindowScaleOption)
        return None if opt is None else opt.shift

    @property
    def sack_permitted(self) -> bool:
        return self._find(SackPermittedOption) is not None

    @property
    def timestamps(self) -> tuple[int, int] | None:
        """(TSval, TSecr), or None without the option."""
        opt = self._find(TimestampsOption)
        return None if opt is None else (opt.tsval, opt.tsecr)

    @property
    def sack_blocks(self) -> tuple[tuple[int, int], ...] | None:
        opt = self._find(SackOption)
        return None if opt is None else opt.blocks

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> TCPHeader:
        """Parse the header at the start of ``data``; the payload is
        ``data[h.header_length:]``. The checksum is not checked here: see
        :func:`tcp_checksum_ok`."""
        if len(data) < FIXED_LEN:
            raise MalformedPacket("truncated TCP header")
        sport, dport, seq, ack, offset_flags, window, csum, urgent = _FIXED.unpack_from(data)
        data_offset = offset_flags >> 12
        header_length = data_offset * 4
        if header_length < FIXED_LEN:
            raise MalformedPacket(f"bad TCP data offset {data_offset}")
        if header_length > len(data):
            raise MalformedPacket(f"truncated TCP header: {len(data)} of {header_length} bytes")
        options: list[TCPOption]
        if header_length == FIXED_LEN:
            options = []
        elif header_length == 32 and data[20:24] == _NOP_NOP_TIMESTAMPS:
            # RFC 7323 Appendix A layout, on nearly every segment after the SYN.
            options = [_NOP, _NOP, TimestampsOption(*_TS_VALUES.unpack_from(data, 24))]
        else:
            options = _parse_options(data, header_length)
        return cls(
            sport,
            dport,
            seq,
            ack,
            offset_flags & FLAGS_MASK,
            window,
            urgent,
            options,
            data_offset,
            csum,
        )

    def build(
        self,
        payload: bytes | bytearray | memoryview = b"",
        src: bytes = b"",
        dst: bytes = b"",
        *,
        with_checksum: bool = True,
    ) -> bytes:
        """Header (options in the given order, padded to 4 bytes) plus
        payload. The checksum covers the pseudo-header of ``src`` and ``dst``
        (RFC 9293 3.1); ``with_checksum=False`` leaves it zero."""
        if self.flags > FLAGS_MASK:
            raise ValueError(f"TCP flags {self.flags:#x} do not fit in 12 bits")
        options = _encode_options(self.options) if self.options else b""
        data_offset = (FIXED_LEN + len(options)) // 4
        offset_flags = (data_offset << 12) | self.flags
        head = _FIXED.pack(
            self.sport, self.dport, self.seq, self.ack, offset_flags, self.window, 0, self.urgent
        )
        csum = 0
        if with_checksum:
            # Header lengths are multiples of 4, so the header's sum and the
            # payload's add up without joining them.
            length = FIXED_LEN + len(options) + len(payload)
            initial = _pseudo(src, dst, length) + ones_sum(head) + ones_sum(options)
            csum = checksum(payload, initial)
            head = _FIXED.pack(
                self.sport,
                self.dport,
                self.seq,
                self.ack,
                offset_flags,
                self.window,
                csum,
                self.urgent,
            )
        self.data_offset = data_offset
        self.checksum = csum
        return b"".join((head, options, payload))


def tcp_checksum_ok(data: bytes | bytearray | memoryview, src: bytes, dst: bytes) -> bool:
    """True when the TCP segment ``data`` (header and payload, nothing after)
    has a valid checksum for the pseudo-header of ``src`` and ``dst``."""
    return verify(data, _pseudo(src, dst, len(data)))
