"""From a captured frame to the fields a report needs: link layers
(Ethernet with VLAN tags, raw IP, Linux cooked v1 and v2), IPv4 and IPv6
(with the common extension headers), and TCP options. Written for speed:
a report reads every packet of a capture, maybe a million."""

from __future__ import annotations

import struct

LINK_ETHERNET = 1
LINK_RAW = 101
LINK_RAW_BSD = (12, 14)  # DLT_RAW as some systems number it
LINK_IPV4 = 228
LINK_IPV6 = 229
LINK_SLL = 113
LINK_SLL2 = 276
LINK_NAMES = {0: "BSD loopback", 1: "Ethernet", 6: "Token Ring", 9: "PPP", 101: "raw IP",
              105: "IEEE 802.11", 108: "OpenBSD loopback", 113: "Linux cooked",
              127: "802.11 radiotap", 147: "user 0", 195: "IEEE 802.15.4",
              220: "USB Linux", 276: "Linux cooked v2"}
SUPPORTED = "Ethernet, raw IP and Linux cooked (SLL, SLL2)"

PACKET_OUTGOING = 4  # sll_pkttype of a packet the host sent

# TCP flags
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128

_ETH_IP = {0x0800: 4, 0x86DD: 6}
_V6_EXT = (0, 43, 60, 135, 139, 140)  # hop-by-hop, routing, destination, mobility, HIP, shim6
_TS = b"\x01\x01\x08\x0a"
_u16 = struct.Struct("!H").unpack_from
_u32x2 = struct.Struct("!II").unpack_from


def ip_start(linktype: int, frame: bytes) -> tuple[int, int, str]:
    """(offset of the IP header, the SLL packet type or -1, problem). The
    offset is -1 when the frame carries no IP packet; problem then says why."""
    if linktype == LINK_ETHERNET:
        if len(frame) < 14:
            return -1, -1, "Ethernet frame shorter than its header"
        ethertype = _u16(frame, 12)[0]
        off = 14
        while ethertype in (0x8100, 0x88A8, 0x9100) and len(frame) >= off + 4:
            ethertype = _u16(frame, off + 2)[0]
            off += 4
        if ethertype in _ETH_IP:
            return off, -1, ""
        return -1, -1, f"not IP (EtherType 0x{ethertype:04x})"
    if linktype == LINK_RAW or linktype in LINK_RAW_BSD or linktype in (LINK_IPV4, LINK_IPV6):
        return 0, -1, ""
    if linktype == LINK_SLL:
        if len(frame) < 16:
            return -1, -1, "Linux cooked header cut short"
        proto = _u16(frame, 14)[0]
        if proto in _ETH_IP:
            return 16, _u16(frame, 0)[0], ""
        return -1, -1, f"not IP (protocol 0x{proto:04x})"
    if linktype == LINK_SLL2:
        if len(frame) < 20:
            return -1, -1, "Linux cooked v2 header cut short"
        proto = _u16(frame, 0)[0]
        if proto in _ETH_IP:
            return 20, frame[10], ""
        return -1, -1, f"not IP (protocol 0x{proto:04x})"
    name = LINK_NAMES.get(linktype, "unknown")
    return -1, -1, f"link type {linktype} ({name}) is not read; this report reads {SUPPORTED}"


def ip_fields(pkt: bytes, off: int) -> tuple[bytes, bytes, int, int, int, int, str]:
    """(src, dst, protocol, offset of the transport header, its length by
    the IP header, IP ID, problem). Problem is "" when the packet is usable;
    a non-first fragment is reported as one."""
    n = len(pkt) - off
    if n < 1:
        return b"", b"", 0, 0, 0, 0, "empty packet"
    version = pkt[off] >> 4
    if version == 4:
        ihl = (pkt[off] & 15) * 4
        if n < 20 or ihl < 20 or n < ihl:
            return b"", b"", 0, 0, 0, 0, "IPv4 header cut short or malformed"
        total = _u16(pkt, off + 2)[0]
        if total < ihl:
            return b"", b"", 0, 0, 0, 0, "IPv4 total length shorter than its header"
        frag = _u16(pkt, off + 6)[0]
        src, dst = pkt[off + 12 : off + 16], pkt[off + 16 : off + 20]
        if frag & 0x1FFF:
            return src, dst, pkt[off + 9], 0, 0, 0, "IP fragment (not reassembled)"
        return (src, dst, pkt[off + 9], off + ihl, total - ihl, _u16(pkt, off + 4)[0],
                "IP fragment (not reassembled)" if frag & 0x2000 else "")
    if version == 6:
        if n < 40:
            return b"", b"", 0, 0, 0, 0, "IPv6 header cut short"
        plen = _u16(pkt, off + 4)[0]
        nxt = pkt[off + 6]
        src, dst = pkt[off + 8 : off + 24], pkt[off + 24 : off + 40]
        p = off + 40
        while nxt in _V6_EXT or nxt == 44:
            if p + 8 > len(pkt):
                return src, dst, nxt, 0, 0, 0, "IPv6 extension headers cut short"
            if nxt == 44:
                if _u16(pkt, p + 2)[0] & 0xFFF9:  # an offset, or more fragments
                    return src, dst, pkt[p], 0, 0, 0, "IP fragment (not reassembled)"
                nxt, p = pkt[p], p + 8
            else:
                nxt, p = pkt[p], p + (pkt[p + 1] + 1) * 8
        return src, dst, nxt, p, plen - (p - off - 40), 0, ""
    return b"", b"", 0, 0, 0, 0, f"not IPv4 or IPv6 (version {version})"


class TcpOptions:
    """The options of one TCP header, as far as a report cares."""

    __slots__ = ("mss", "wscale", "sack_ok", "tsval", "tsecr", "sacks")

    def __init__(self) -> None:
        self.mss = 0
        self.wscale = -1
        self.sack_ok = False
        self.tsval = -1
        self.tsecr = -1
        self.sacks: list[tuple[int, int]] = []


def tsval_of(opts: bytes) -> int:
    """The timestamp value, -1 without one (fast for the usual layout)."""
    if opts[:4] == _TS and len(opts) >= 12:
        return int(_u32x2(opts, 4)[0])
    return parse_options(opts).tsval


def parse_options(opts: bytes) -> TcpOptions:
    out = TcpOptions()
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n:
            break
        length = opts[i + 1]
        if length < 2 or i + length > n:
            break
        if kind == 2 and length == 4:
            out.mss = _u16(opts, i + 2)[0]
        elif kind == 3 and length == 3:
            out.wscale = min(opts[i + 2], 14)
        elif kind == 4:
            out.sack_ok = True
        elif kind == 8 and length == 10:
            out.tsval, out.tsecr = _u32x2(opts, i + 2)
        elif kind == 5:
            out.sacks = [_u32x2(opts, j) for j in range(i + 2, i + length - 7, 8)]
        i += length
    return out


def options_text(opts: bytes, sack_base: int) -> str:
    """tcpdump's words for the options: "mss 65495,sackOK,TS val 1 ecr 0,nop,
    wscale 7"; SACK blocks relative to ``sack_base``."""
    out: list[str] = []
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind in (0, 1):
            out.append("eol" if kind == 0 else "nop")
            if kind == 0:
                break
            i += 1
            continue
        length = opts[i + 1] if i + 1 < n else 0
        if length < 2 or i + length > n:
            out.append("bad opts")
            break
        if kind == 2 and length == 4:
            out.append(f"mss {_u16(opts, i + 2)[0]}")
        elif kind == 3 and length == 3:
            out.append(f"wscale {opts[i + 2]}")
        elif kind == 4:
            out.append("sackOK")
        elif kind == 8 and length == 10:
            val, ecr = _u32x2(opts, i + 2)
            out.append(f"TS val {val} ecr {ecr}")
        elif kind == 5:
            blocks = [_u32x2(opts, j) for j in range(i + 2, i + length - 7, 8)]
            out.append("sack " + " ".join(f"{(a - sack_base) & 0xFFFFFFFF}:"
                                          f"{(b - sack_base) & 0xFFFFFFFF}" for a, b in blocks))
        else:
            out.append(f"opt-{kind}")
        i += length
    return ",".join(out)


def flags_text(flags: int) -> str:
    """tcpdump's flag letters: "S.", "P.", "F.", "R"."""
    s = "".join(c for bit, c in ((SYN, "S"), (FIN, "F"), (PSH, "P"), (RST, "R"), (URG, "U"),
                                 (ECE, "E"), (CWR, "W")) if flags & bit)
    return s + ("." if flags & ACK else "")
