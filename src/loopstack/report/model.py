"""A capture read into what a report draws: hosts, TCP connections with
every packet classified (retransmission, duplicate, out of order, dropped
by netem, duplicate ACK, zero window), UDP flows, and what could not be read.

One pass over the packets, in time order. A connection keeps the packets of
its ladder (the first ``HEAD`` and the last ``TAIL``; the middle is only
counted) and, for its time-sequence graph, compact arrays of every segment
and ACK, so a capture of a million packets stays small in memory.
"""

from __future__ import annotations

import ipaddress
import struct
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from .decode import ACK, FIN, RST, SYN, ip_fields, ip_start, parse_options, tsval_of
from .reader import ReadNotes, read_records

# What a packet was (bits of Pkt.kind)
RETRANS, DUP, OOO, DROPPED, DUPACK, ZEROWIN, KEEPALIVE = 1, 2, 4, 8, 16, 32, 64
HANDSHAKE, DATA, TEARDOWN = 0, 1, 2
HEAD, TAIL = 100, 40  # packets of a ladder drawn before and after the fold

_FAST = struct.Struct("!xxHHHxB2x4s4sHHIIBBH").unpack_from  # IPv4 (no options) + TCP
_TCPH = struct.Struct("!HHIIBBH").unpack_from
_MASK = 0xFFFFFFFF
_HALF = 1 << 31
_WRAP = 1 << 32

# (ts_ns, cwnd in segments, ssthresh in segments, srtt in ns, mss in bytes)
Sample = tuple[int, int, int, int, int]
Endpoint = tuple[bytes, int]


def addr_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def endpoint_text(ep: Endpoint) -> str:
    a = addr_text(ep[0])
    return f"[{a}]:{ep[1]}" if len(ep[0]) == 16 else f"{a}:{ep[1]}"


@dataclass(slots=True)
class Pkt:
    """One TCP packet as the ladder draws it."""

    n: int  # its number in the capture, from 1 (0: dropped by netem, not in the file)
    t: int  # ns since the capture's first packet
    d: int  # 0: A to B, 1: B to A
    flags: int
    seq: int  # relative to the sender's initial sequence number
    ack: int  # relative to the receiver's
    length: int  # payload bytes
    win: int  # the window field as sent
    opts: bytes
    kind: int
    phase: int
    sack_base: int  # the raw ISN the packet's SACK blocks are relative to


class Direction:
    """One direction of a connection: its sequence space and what crossed."""

    def __init__(self) -> None:
        self.base: int | None = None  # raw sequence number of relative 0
        self.max_end = 0  # highest relative sequence sent (seen or dropped), exclusive
        self.holes: list[list[int]] = []  # [start, end, t, tsval]: sequence not yet seen
        self.wscale = -1  # offered in its SYN
        self.mss = 0
        self.packets = 0
        self.payload = 0  # bytes, retransmissions included
        self.retrans = 0
        self.dropped = 0
        self.last_ack = -1
        self.last_win = -1
        self.recent: deque[tuple[int, ...]] = deque(maxlen=4)  # for netem's duplicates
        self.fin = False
        # For the time-sequence graph: its segments, and its ACKs of the other side
        self.seg_t = array("q")
        self.seg_s = array("q")
        self.seg_e = array("q")
        self.seg_k = array("B")
        self.ack_t = array("q")
        self.ack_a = array("q")
        self.ack_w = array("q")  # right edge of the window it offered
        self.sacks: list[tuple[int, int, int]] = []  # (t, start, end), capped

    @property
    def bytes(self) -> int:
        """Payload bytes sent, each counted once (the sequence space less SYN and FIN)."""
        return max(0, self.max_end - 1 - (1 if self.fin else 0))

    def rel(self, raw: int) -> int:
        """A raw sequence number of this direction, relative and unwrapped."""
        assert self.base is not None
        r = (raw - self.base) & _MASK
        return r + ((self.max_end - r + _HALF) // _WRAP) * _WRAP


class TcpConn:
    def __init__(self, number: int, a: Endpoint, b: Endpoint, t: int) -> None:
        self.number = number
        self.a, self.b = a, b  # a: the client (sent the first SYN) when known
        self.first = self.last = t
        self.dirs = (Direction(), Direction())
        self.packets = 0
        self.kinds: Counter[int] = Counter()  # packets per kind bit
        self.head: list[Pkt] = []
        self.tail: deque[tuple[Any, ...]] = deque(maxlen=TAIL)  # Pkt's fields
        self.phase = DATA
        self.syn = self.synack = self.rst = False
        self.hs_rtt = 0  # ns from SYN to SYN-ACK, a first RTT estimate
        self._syn_t = 0
        self.samples: tuple[list[Sample], list[Sample]] = ([], [])  # loopstack: per direction

    @property
    def folded(self) -> int:
        return self.packets - len(self.head) - len(self.tail)

    def drawn(self) -> list[Pkt]:
        return self.head + [Pkt(*row) for row in self.tail]

    def state(self) -> str:
        if self.rst:
            return "reset" if self.synack or not self.syn else "refused (RST)"
        if self.syn and not self.synack:
            return "SYN unanswered"
        fins = [d.fin for d in self.dirs]
        if all(fins):
            return "closed"
        if any(fins):
            return "half-closed by " + ("client" if fins[0] else "server")
        return "open at the end" if self.synack or not self.syn else "handshake"

    def add(self, n: int, t: int, d: int, seq: int, ack: int, flags: int, win: int,
            length: int, opts: bytes, ipid: int, dropped: bool) -> None:
        me, peer = self.dirs[d], self.dirs[1 - d]
        self.packets += 1
        self.last = t
        me.packets += 1
        me.payload += length
        kind = DROPPED if dropped else 0
        tsval = tsval_of(opts) if opts else -1
        syn = flags & SYN
        phase = self.phase
        if syn or flags & (FIN | RST) or phase == HANDSHAKE or me.base is None:
            phase = self._control(t, d, me, seq, flags, opts)
        base = me.base
        assert base is not None
        r = (seq - base) & _MASK
        rel = r + ((me.max_end - r + _HALF) // _WRAP) * _WRAP
        sig = (ipid, seq, ack, flags, win, length, tsval)
        recent = me.recent
        if sig in recent:
            kind |= DUP
        recent.append(sig)
        span = length + (1 if syn else 0) + (flags & FIN)
        if span:
            if not kind & DUP:
                if rel >= me.max_end and rel == me.max_end:
                    me.max_end = rel + span  # the usual case: the next new data
                else:
                    kind |= self._classify(me, rel, rel + span, t, tsval, length, flags)
                    if kind & RETRANS:
                        me.retrans += 1
            me.seg_t.append(t)
            me.seg_s.append(rel)
            me.seg_e.append(rel + span)
            me.seg_k.append(kind & 0xFF)
        rack = 0
        if flags & ACK:
            pbase = peer.base
            if pbase is None:
                pbase = peer.base = (ack - 1) & _MASK
            r = (ack - pbase) & _MASK
            rack = r + ((peer.max_end - r + _HALF) // _WRAP) * _WRAP
            sacks = parse_options(opts).sacks if len(opts) > 12 else []
            # A duplicate ACK: no data, the same ACK while data is outstanding,
            # and the same window unless it carries SACK blocks (as Linux counts).
            if not span and not flags & RST and not kind & DUP and rack == me.last_ack \
                    and (win == me.last_win or sacks) and peer.max_end > rack:
                kind |= DUPACK
            me.last_ack, me.last_win = rack, win
            me.ack_t.append(t)
            me.ack_a.append(rack)
            shift = me.wscale if me.wscale >= 0 and peer.wscale >= 0 and not syn else 0
            me.ack_w.append(rack + (win << shift))
            if sacks and len(me.sacks) < 20000:
                me.sacks += [(t, peer.rel(left), peer.rel(right)) for left, right in sacks]
        if win == 0 and not flags & RST:
            kind |= ZEROWIN
        if kind:
            if dropped:
                me.dropped += 1
            for bit in (RETRANS, DUP, OOO, DROPPED, DUPACK, ZEROWIN, KEEPALIVE):
                if kind & bit:
                    self.kinds[bit] += 1
        row = (n, t, d, flags, rel, rack, length, win, opts, kind, phase, peer.base or 0)
        if len(self.head) < HEAD:
            self.head.append(Pkt(*row))
        else:
            self.tail.append(row)

    def _control(self, t: int, d: int, me: Direction, seq: int, flags: int, opts: bytes
                 ) -> int:
        """SYN, FIN, RST and the handshake: the ISNs, options, phases. Returns
        the phase the packet belongs to."""
        if flags & SYN:
            if me.base is None or me.max_end <= 1:
                me.base = seq
            o = parse_options(opts)
            me.wscale, me.mss = o.wscale, o.mss
            if flags & ACK:
                self.synack = True
                if self._syn_t and not self.hs_rtt:
                    self.hs_rtt = t - self._syn_t
            else:
                self.syn = True
                self._syn_t = self._syn_t or t
        elif me.base is None:
            me.base = (seq - 1) & _MASK
        phase = self.phase
        if flags & (FIN | RST):
            phase = self.phase = TEARDOWN
            self.rst = self.rst or bool(flags & RST)
            me.fin = me.fin or bool(flags & FIN)
        elif flags & SYN:
            if phase != TEARDOWN:
                phase = self.phase = HANDSHAKE
        elif phase == HANDSHAKE and (d == 1 or self.synack):
            self.phase = DATA  # the client's ACK of the SYN-ACK ends the handshake
            if d == 1:
                phase = DATA
        return phase

    def _classify(self, me: Direction, start: int, end: int, t: int, tsval: int,
                  length: int, flags: int) -> int:
        """RETRANS, OOO, KEEPALIVE or 0 for a segment that takes sequence space."""
        if start >= me.max_end:
            if start > me.max_end and len(me.holes) < 64:
                me.holes.append([me.max_end, start, t, tsval])
            me.max_end = end
            return 0
        if length <= 1 and not flags & (SYN | FIN) and end == me.max_end - 1 + length:
            return KEEPALIVE
        kind = RETRANS
        filled = [h for h in me.holes if start < h[1] and end > h[0]]
        if filled:
            h = filled[0]
            rtt = self.hs_rtt or 1_000_000
            later = tsval > h[3] if tsval >= 0 and h[3] >= 0 else t - h[2] > 3 * rtt
            kind = RETRANS if later else OOO
            keep: list[list[int]] = []
            for h in me.holes:
                if start < h[1] and end > h[0]:
                    if h[0] < start:
                        keep.append([h[0], start, h[2], h[3]])
                    if end < h[1]:
                        keep.append([end, h[1], h[2], h[3]])
                else:
                    keep.append(h)
            me.holes = keep
        me.max_end = max(me.max_end, end)
        return kind


@dataclass
class UdpFlow:
    a: Endpoint
    b: Endpoint
    first: int
    last: int
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])


@dataclass
class Extras:
    """What a loopstack run knows beyond the pcap (report/recorder.py)."""

    # (ts_ns, IP packet, how many captured packets came before it)
    drops: list[tuple[int, bytes, int]] = field(default_factory=list)
    samples: dict[tuple[str, int, str, int], list[Sample]] = field(default_factory=dict)
    sockets: list[dict[str, Any]] | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    netem: list[str] = field(default_factory=list)
    clock: str = ""
    seed: int | None = None


class Capture:
    """Everything a report says about one capture."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.notes = ReadNotes()
        self.t0: int | None = None
        self.t_end = 0
        self.packets = 0  # records in the file
        self.ip_packets = 0
        self.dropped = 0  # netem drops merged in (loopstack)
        self.bytes = 0
        self.hosts: dict[bytes, list[int]] = {}  # addr -> [sent pkts, sent bytes, rcvd, rcvd]
        self.tcp: list[TcpConn] = []
        self._tcp_open: dict[tuple[Endpoint, Endpoint], TcpConn] = {}
        self.udp: dict[tuple[Endpoint, Endpoint], UdpFlow] = {}
        self.other: Counter[str] = Counter()  # ICMP and other protocols, by kind
        self.problems: Counter[str] = Counter()  # packets not drawn, by reason
        self.extras: Extras | None = None
        self._last_out = b""  # SLL: the last outgoing packet, whose looped copy follows

    @property
    def duration(self) -> int:
        return self.t_end - (self.t0 or 0)

    def frame(self, ts: int, linktype: int, frame: bytes) -> None:
        self.packets += 1
        off = 14 if linktype == 1 else 0 if linktype == 101 else -1
        if off >= 0 and len(frame) >= off + 40 and frame[off] == 0x45 and (
                off == 0 or frame[12:14] == b"\x08\x00"):
            # The fast path: IPv4 without options, TCP, not a fragment.
            (total, ipid, frag, proto, src, dst, sport, dport, seq, ack, offb, flags,
             win) = _FAST(frame, off)
            hl = (offb >> 4) * 4
            if proto == 6 and not frag & 0x3FFF and 20 <= hl <= total - 20:
                t0 = self.t0
                if t0 is None:
                    t0 = self.t0 = ts
                if ts > self.t_end:
                    self.t_end = ts
                self.ip_packets += 1
                self.bytes += total
                hosts = self.hosts
                h = hosts.get(src) or hosts.setdefault(src, [0, 0, 0, 0])
                h[0] += 1
                h[1] += total
                h = hosts.get(dst) or hosts.setdefault(dst, [0, 0, 0, 0])
                h[2] += 1
                h[3] += total
                self._segment(self.packets, ts - t0, src, dst, sport, dport, seq, ack, flags,
                              win, total - 20 - hl, frame[off + 40 : off + 20 + hl] if hl > 20
                              else b"", ipid, False)
                return
        off, pkttype, problem = ip_start(linktype, frame)
        if off < 0:
            self.problems[problem] += 1
            return
        if pkttype >= 0:  # Linux cooked: lo's packets show up twice, out and in
            if pkttype == 4:
                self._last_out = frame[off:]
            elif self._last_out and frame[off:] == self._last_out:
                self._last_out = b""
                self.problems["looped-back copy of a packet already counted (Linux cooked)"] += 1
                return
        self.ip(ts, frame, off, self.packets, False)

    def ip(self, ts: int, pkt: bytes, off: int, n: int, dropped: bool) -> None:
        src, dst, proto, toff, tlen, ipid, problem = ip_fields(pkt, off)
        if problem:
            self.problems[problem] += 1
            return
        if self.t0 is None:
            self.t0 = ts
        t = ts - self.t0
        self.t_end = max(self.t_end, ts)
        self.ip_packets += 1
        size = tlen + toff - off
        self.bytes += size
        hosts = self.hosts
        h = hosts.get(src) or hosts.setdefault(src, [0, 0, 0, 0])
        h[0] += 1
        h[1] += size
        if not dropped:
            h = hosts.get(dst) or hosts.setdefault(dst, [0, 0, 0, 0])
            h[2] += 1
            h[3] += size
        if proto == 6:
            if len(pkt) < toff + 20:
                self.problems["TCP header cut short by the snap length"] += 1
                return
            self._tcp(n, t, pkt, toff, tlen, src, dst, ipid, dropped)
        elif proto == 17:
            if len(pkt) < toff + 8:
                self.problems["UDP header cut short by the snap length"] += 1
                return
            self._udp(t, pkt, toff, tlen, src, dst)
        elif proto in (1, 58):
            self.other[_icmp_name(proto, pkt[toff] if len(pkt) > toff else -1)] += 1
        else:
            self.other[f"IP protocol {proto}"] += 1

    def _tcp(self, n: int, t: int, pkt: bytes, off: int, tlen: int, src: bytes, dst: bytes,
             ipid: int, dropped: bool) -> None:
        sport, dport, seq, ack, offb, flags, win = _TCPH(pkt, off)
        hl = (offb >> 4) * 4
        if hl < 20 or hl > tlen:
            self.problems["TCP header length impossible"] += 1
            return
        opts = pkt[off + 20 : off + hl] if hl > 20 else b""
        self._segment(n, t, src, dst, sport, dport, seq, ack, flags, win, tlen - hl, opts, ipid,
                      dropped)

    def _segment(self, n: int, t: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int,
                 ack: int, flags: int, win: int, length: int, opts: bytes, ipid: int,
                 dropped: bool) -> None:
        s, d_ = (src, sport), (dst, dport)
        key = (s, d_) if s <= d_ else (d_, s)
        conn = self._tcp_open.get(key)
        if conn is not None and flags & SYN and not flags & ACK and (
                conn.phase == TEARDOWN or conn.dirs[0].base not in (None, seq)
                and conn.a == s and conn.synack):
            conn = None  # the port pair is used again: a new connection
        if conn is None:
            a, b = (d_, s) if flags & SYN and flags & ACK else (s, d_)
            conn = TcpConn(len(self.tcp) + 1, a, b, t)
            self.tcp.append(conn)
            self._tcp_open[key] = conn
        conn.add(n, t, 0 if s == conn.a else 1, seq, ack, flags, win, length, opts, ipid,
                 dropped)

    def _udp(self, t: int, pkt: bytes, off: int, tlen: int, src: bytes, dst: bytes) -> None:
        s = (src, (pkt[off] << 8) | pkt[off + 1])
        d = (dst, (pkt[off + 2] << 8) | pkt[off + 3])
        key = (s, d) if s <= d else (d, s)
        flow = self.udp.get(key)
        if flow is None:
            flow = self.udp[key] = UdpFlow(s, d, t, t)
        i = 0 if s == flow.a else 1
        flow.packets[i] += 1
        flow.bytes[i] += max(0, tlen - 8)
        flow.last = t


def _icmp_name(proto: int, icmp_type: int) -> str:
    names = ({0: "echo reply", 3: "destination unreachable", 8: "echo request",
              11: "time exceeded"} if proto == 1 else
             {1: "destination unreachable", 2: "packet too big", 3: "time exceeded",
              128: "echo request", 129: "echo reply", 133: "router solicitation",
              135: "neighbour solicitation", 136: "neighbour advertisement"})
    kind = "ICMP" if proto == 1 else "ICMPv6"
    return f"{kind} {names.get(icmp_type, f'type {icmp_type}')}"


def analyse(path: str, name: str, extras: Extras | None = None) -> Capture:
    """Read ``path`` (NotACapture when it is not one) and merge in what a
    loopstack run recorded: packets netem dropped, in time order."""
    cap = Capture(name)
    cap.extras = extras
    drops = sorted(extras.drops, key=lambda d: d[2]) if extras else []
    di, nd = 0, len(drops)
    frame = cap.frame
    last_ts = 0
    for ts, linktype, data in read_records(path, cap.notes):
        while di < nd and drops[di][2] <= cap.packets:
            cap.dropped += 1
            cap.ip(max(last_ts, min(drops[di][0], ts)), drops[di][1], 0, 0, True)
            di += 1
        frame(ts, linktype, data)
        last_ts = ts
    for drop_ts, packet, _ in drops[di:]:
        cap.dropped += 1
        cap.ip(max(last_ts, drop_ts), packet, 0, 0, True)
    if extras:
        _attach_samples(cap, extras)
    return cap


def _attach_samples(cap: Capture, extras: Extras) -> None:
    t0 = cap.t0 or 0
    for conn in cap.tcp:
        for d, (s, r) in enumerate(((conn.a, conn.b), (conn.b, conn.a))):
            key = (addr_text(s[0]), s[1], addr_text(r[0]), r[1])
            got = extras.samples.get(key, [])
            lo, hi = conn.first + t0, conn.last + t0
            conn.samples[d].extend((ts - t0, cw, sst, rtt, mss)
                                   for ts, cw, sst, rtt, mss in got if lo <= ts <= hi)
