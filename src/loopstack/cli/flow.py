"""Packets as readable lines, the way tcpdump prints them on lo
(`tcpdump -i lo -n -tt`), with TCP sequence numbers relative to each
connection's start as tcpdump shows them by default."""

from __future__ import annotations

from ..ip.addr import to_text
from ..wire.errors import MalformedPacket
from ..wire.icmp import ICMPMessage
from ..wire.ipv4 import IPv4Header
from ..wire.ipv6 import IPv6Header
from ..wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    EolOption,
    MSSOption,
    NopOption,
    SackOption,
    SackPermittedOption,
    TCPHeader,
    TimestampsOption,
    WindowScaleOption,
)
from ..wire.udp import UDPHeader

_ICMP_NAMES = {0: "echo reply", 8: "echo request", 3: "destination unreachable",
               11: "time exceeded", 12: "parameter problem",
               128: "echo request", 129: "echo reply", 1: "destination unreachable",
               2: "packet too big", 4: "parameter problem"}


class FlowPrinter:
    """Formats IP packets one by one, remembering each TCP connection's ISNs."""

    def __init__(self) -> None:
        self._isn: dict[tuple[bytes, int, bytes, int], int] = {}

    def line(self, packet: bytes) -> str:
        try:
            if packet[0] >> 4 == 4:
                h4 = IPv4Header.parse(packet)
                src, dst, proto = h4.src, h4.dst, h4.proto
                payload = packet[h4.header_length : h4.total_length]
                if h4.mf or h4.frag_offset:
                    return f"IP {to_text(src)} > {to_text(dst)}: fragment {h4.frag_offset}"
            else:
                h6 = IPv6Header.parse(packet)
                src, dst, proto = h6.src, h6.dst, h6.upper_proto
                payload = packet[h6.upper_offset : h6.total_length]
            return self._transport(src, dst, proto, payload)
        except (MalformedPacket, IndexError):
            return f"malformed packet of {len(packet)} bytes"

    def _transport(self, src: bytes, dst: bytes, proto: int, data: bytes) -> str:
        fam = "IP6" if len(src) == 16 else "IP"
        if proto == 6:
            return self._tcp(fam, src, dst, data)
        if proto == 17:
            u = UDPHeader.parse(data)
            return (f"{fam} {_ep(src, u.sport)} > {_ep(dst, u.dport)}: UDP, "
                    f"length {u.length - 8}")
        if proto in (1, 58):
            m = ICMPMessage.parse(data, v6=proto == 58)
            what = _ICMP_NAMES.get(m.type, f"type {m.type}")
            extra = f", id {m.ident}, seq {m.seq}" if m.type in (0, 8, 128, 129) else ""
            kind = "ICMP6" if proto == 58 else "ICMP"
            return f"{fam} {to_text(src)} > {to_text(dst)}: {kind} {what}{extra}, " \
                   f"length {len(data)}"
        return f"{fam} {to_text(src)} > {to_text(dst)}: protocol {proto}, length {len(data)}"

    def _tcp(self, fam: str, src: bytes, dst: bytes, data: bytes) -> str:
        t = TCPHeader.parse(data)
        key = (src, t.sport, dst, t.dport)
        rev = (dst, t.dport, src, t.sport)
        if t.flags & SYN:
            self._isn[key] = t.seq
        flags = "".join(c for bit, c in ((SYN, "S"), (FIN, "F"), (PSH, "P"), (RST, "R"))
                        if t.flags & bit) + ("." if t.flags & ACK else "")
        n = len(data) - t.header_length
        parts = [f"Flags [{flags}]"]
        isn = self._isn.get(key)
        seq = (t.seq - isn) % (1 << 32) if isn is not None and not t.flags & SYN else t.seq
        if n or t.flags & (SYN | FIN | RST):
            parts.append(f"seq {seq}:{seq + n}" if n else f"seq {seq}")
        if t.flags & ACK:
            risn = self._isn.get(rev)
            parts.append(f"ack {(t.ack - risn) % (1 << 32) if risn is not None else t.ack}")
        parts.append(f"win {t.window}")
        opts = _tcp_options(t)
        if opts:
            parts.append(f"options [{opts}]")
        parts.append(f"length {n}")
        return f"{fam} {_ep(src, t.sport)} > {_ep(dst, t.dport)}: {', '.join(parts)}"


def _ep(addr: bytes, port: int) -> str:
    return f"{to_text(addr)}.{port}"


def _tcp_options(t: TCPHeader) -> str:
    out = []
    for o in t.options:
        if isinstance(o, MSSOption):
            out.append(f"mss {o.mss}")
        elif isinstance(o, SackPermittedOption):
            out.append("sackOK")
        elif isinstance(o, TimestampsOption):
            out.append(f"TS val {o.tsval} ecr {o.tsecr}")
        elif isinstance(o, NopOption):
            out.append("nop")
        elif isinstance(o, WindowScaleOption):
            out.append(f"wscale {o.shift}")
        elif isinstance(o, SackOption):
            out.append("sack " + " ".join(f"{a}:{b}" for a, b in o.blocks))
        elif isinstance(o, EolOption):
            out.append("eol")
    return ",".join(out)
