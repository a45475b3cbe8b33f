"""ICMPv4 (RFC 792, RFC 1122 3.2.2) and ICMPv6 (RFC 4443): echo, errors
and their delivery to transports, and the echo endpoints ping uses.

Echo requests to any local address are answered from that address (Linux
icmp_reply); requests to a broadcast address are ignored
(icmp_echo_ignore_broadcasts = 1). Errors are never sent about an ICMP
error, a non-first fragment, or a packet to or from a broadcast or
multicast address, and they are rate-limited except on the loopback.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..clock import Clock, Condition
from ..ip.addr import V4_ANY, V4_LIMITED_BROADCAST, V6_ANY, is_multicast
from ..ip.ipv4 import IPv4
from ..ip.ipv6 import IPv6
from ..ip.packet import Inbound, OutRoute, Record
from ..ip.route import BROADCAST
from ..link.interface import Interface
from ..wire import icmp as I
from ..wire.errors import MalformedPacket
from ..wire.icmp import ICMPMessage, icmp_checksum_ok
from .ratelimit import IcmpRateLimiter

_V4_HDR = struct.Struct("!BBHHHBBH4s4s")
_ICMP_HDR = struct.Struct("!BBHI")
IPTOS_PREC_INTERNETCONTROL = 0xC0
_IN_TYPE = tuple(f"InType{k}" for k in range(256))
_OUT_TYPE = tuple(f"OutType{k}" for k in range(256))


def _record_bytes(segment: tuple[int, int, int, bytes]) -> bytes:
    """An echo record's ICMP bytes, as the byte path builds them on lo:
    checksum 0 (offloaded; a capture fills it in)."""
    kind, code, rest, body = segment
    return _ICMP_HDR.pack(kind, code, 0, rest) + body


@dataclass(slots=True)
class IcmpError:
    """An ICMP error as a transport sees it: what happened, and the quoted
    datagram's addresses, protocol and first transport bytes."""

    type: int
    code: int
    info: int  # MTU, pointer
    src: bytes  # the quoted datagram's source (ours)
    dst: bytes
    proto: int
    transport: bytes  # the quoted transport header and whatever followed
    v6: bool
    reporter: bytes  # who sent the error


@dataclass(slots=True)
class EchoReply:
    ident: int
    seq: int
    src: bytes
    ttl: int
    size: int  # ICMP bytes (header and data), as ping prints them
    data: bytes
    received_ns: int


class EchoEndpoint:
    """Receives the echo replies carrying one identifier (a ping socket)."""

    def __init__(self, icmp: IcmpBase, ident: int, lock: Any) -> None:
        self.icmp = icmp
        self.ident = ident
        self.replies: deque[EchoReply] = deque()
        self.cond = Condition(lock)
        self.max_queued = 4096
        self.route_cache: tuple[bytes, int, OutRoute] | None = None  # (dst, generation, route)

    def send_echo(self, dst: bytes, seq: int, data: bytes, ttl: int | None = None) -> None:
        self.icmp.send_echo(self, dst, seq, data, ttl)

    def deliver(self, reply: EchoReply) -> None:
        if len(self.replies) < self.max_queued:
            self.replies.append(reply)
            if self.cond._waiters:  # nobody waits: no calls
                self.cond.notify_all()

    def close(self) -> None:
        self.icmp.endpoints.pop(self.ident, None)


class IcmpBase:
    v6 = False
    proto = I.PROTO_ICMP

    def __init__(
        self, mib: dict[str, int], msg_mib: dict[str, int], clock: Clock, rng: random.Random,
        lock: Any,
    ) -> None:
        self.mib = mib
        self.msg_mib = msg_mib
        self.clock = clock
        self.rng = rng
        self.lock = lock
        self.endpoints: dict[int, EchoEndpoint] = {}
        self.err_handlers: dict[int, Callable[[IcmpError], None]] = {}
        self.ratelimit = IcmpRateLimiter(clock)

    def open_endpoint(self, ident: int | None = None) -> EchoEndpoint:
        if ident is None:
            for _ in range(1 << 16):
                ident = self.rng.randrange(1, 1 << 16)
                if ident not in self.endpoints:
                    break
            else:
                raise OSError("no free ICMP identifier")
        if ident in self.endpoints:
            raise OSError(f"ICMP identifier {ident} in use")
        ep = EchoEndpoint(self, ident, self.lock)
        self.endpoints[ident] = ep
        return ep

    def _count_in(self, kind: int) -> None:
        key = _IN_TYPE[kind]
        self.msg_mib[key] = self.msg_mib.get(key, 0) + 1

    def _count_out(self, kind: int) -> None:
        key = _OUT_TYPE[kind]
        self.msg_mib[key] = self.msg_mib.get(key, 0) + 1
        self.mib["OutMsgs"] += 1

    def send_echo(
        self, ep: EchoEndpoint, dst: bytes, seq: int, data: bytes, ttl: int | None
    ) -> None:
        raise NotImplementedError


class ICMPv4(IcmpBase):
    _IN = {
        I.DEST_UNREACH: "InDestUnreachs", I.TIME_EXCEEDED: "InTimeExcds",
        I.PARAM_PROBLEM: "InParmProbs", 4: "InSrcQuenchs", 5: "InRedirects",
        I.ECHO_REQUEST: "InEchos", I.ECHO_REPLY: "InEchoReps",
        13: "InTimestamps", 14: "InTimestampReps",
    }
    _OUT = {
        I.DEST_UNREACH: "OutDestUnreachs", I.TIME_EXCEEDED: "OutTimeExcds",
        I.PARAM_PROBLEM: "OutParmProbs", I.ECHO_REQUEST: "OutEchos",
        I.ECHO_REPLY: "OutEchoReps",
    }

    def __init__(self, ip: IPv4, mib: dict[str, int], msg_mib: dict[str, int], clock: Clock,
                 rng: random.Random, lock: Any) -> None:
        super().__init__(mib, msg_mib, clock, rng, lock)
        self.ip = ip
        self.echo_ignore_broadcasts = True
        ip.record_handlers[I.PROTO_ICMP] = self.input_record

    def input_record(self, rec: Record) -> None:
        """An echo request or reply that crossed lo as its record
        (``send_echo``'s, ``_reply_echo``'s): what :meth:`input` does with
        its bytes on lo (no checksum to verify there), with no bytes."""
        kind, code, rest, body = rec.segment
        mib = self.mib
        mib["InMsgs"] += 1
        msg_mib = self.msg_mib
        key = _IN_TYPE[kind]
        msg_mib[key] = msg_mib.get(key, 0) + 1
        if kind == I.ECHO_REQUEST:
            mib["InEchos"] += 1
            try:
                rt = self.ip.route_output(rec.src, rec.dst)
            except OSError:
                mib["OutErrors"] += 1
                return
            key = _OUT_TYPE[I.ECHO_REPLY]
            msg_mib[key] = msg_mib.get(key, 0) + 1
            mib["OutMsgs"] += 1
            mib["OutEchoReps"] += 1
            segment = (I.ECHO_REPLY, 0, rest, body)
            if not self.ip.output_record_nodf(rt, I.PROTO_ICMP, 8 + len(body), segment,
                                              _record_bytes):
                # As _reply_echo sends it: DF clear, the request's TOS (0).
                self.ip.output(rt, I.PROTO_ICMP, _record_bytes(segment), df=False)
        else:  # I.ECHO_REPLY
            mib["InEchoReps"] += 1
            ep = self.endpoints.get(rest >> 16)
            if ep is not None:
                ep.deliver(EchoReply(rest >> 16, rest & 0xFFFF, rec.src, rec.ttl, 8 + len(body),
                                     body, self.clock.now_ns()))

    def input(self, pkt: Inbound) -> None:
        mib = self.mib
        mib["InMsgs"] += 1
        data = pkt.payload
        if pkt.verify_checksums and not icmp_checksum_ok(data):
            mib["InCsumErrors"] += 1
            mib["InErrors"] += 1
            return
        try:
            msg = ICMPMessage.parse(data)
        except MalformedPacket:
            mib["InErrors"] += 1
            return
        kind = msg.type
        self._count_in(kind)
        if kind > 18:  # NR_ICMP_TYPES: Linux counts these as errors and drops them
            mib["InErrors"] += 1
            return
        name = self._IN.get(kind)
        if name is not None:
            mib[name] += 1
        if kind == I.ECHO_REQUEST:
            if pkt.broadcast and self.echo_ignore_broadcasts:
                mib["InErrors"] += 1  # icmp_rcv(): goto error
                return
            self._reply_echo(pkt, msg)
        elif kind == I.ECHO_REPLY:
            ep = self.endpoints.get(msg.ident)
            if ep is not None:
                ep.deliver(EchoReply(msg.ident, msg.seq, pkt.src, pkt.ttl, len(data),
                                     bytes(msg.body), self.clock.now_ns()))
        elif kind in (I.DEST_UNREACH, I.TIME_EXCEEDED, I.PARAM_PROBLEM):
            self._error_up(msg, pkt.src)

    def _reply_echo(self, pkt: Inbound, msg: ICMPMessage) -> None:
        try:
            rt = self.ip.route_output(pkt.src, pkt.dst)
        except OSError:
            self.mib["OutErrors"] += 1
            return
        reply = ICMPMessage(I.ECHO_REPLY, 0, msg.rest, msg.body)
        tos = pkt.packet[1]
        self._count_out(I.ECHO_REPLY)
        self.mib["OutEchoReps"] += 1
        # Linux's ICMP socket uses IP_PMTUDISC_DONT: replies never carry DF.
        self.ip.output(rt, I.PROTO_ICMP, reply.build(with_checksum=rt.needs_checksums), tos=tos,
                       df=False)

    def _error_up(self, msg: ICMPMessage, reporter: bytes) -> None:
        quote = bytes(msg.body)
        if len(quote) < 20 or quote[0] >> 4 != 4:
            self.mib["InErrors"] += 1
            return
        ihl = (quote[0] & 0x0F) * 4
        if ihl < 20 or len(quote) < ihl + 8:
            self.mib["InErrors"] += 1
            return
        _, _, _, _, _, _, proto, _, src, dst = _V4_HDR.unpack_from(quote)
        handler = self.err_handlers.get(proto)
        if handler is not None:
            handler(IcmpError(msg.type, msg.code, msg.rest, src, dst, proto, quote[ihl:],
                              False, reporter))

    def send_echo(
        self, ep: EchoEndpoint, dst: bytes, seq: int, data: bytes, ttl: int | None
    ) -> None:
        gen = self.ip.routes.generation
        cached = ep.route_cache
        if cached is not None and cached[0] == dst and cached[1] == gen:
            rt = cached[2]
        else:
            rt = self.ip.route_output(dst)
            ep.route_cache = (dst, gen, rt)
        self._count_out(I.ECHO_REQUEST)
        self.mib["OutEchos"] += 1
        if not rt.broadcast:
            # An unobserved lo carries the request as its record (no bytes,
            # no checksum); the reply comes back the same way.
            if type(data) is not bytes:
                data = bytes(data)
            if self.ip.output_record(rt, I.PROTO_ICMP, 8 + len(data), ttl,
                                     (I.ECHO_REQUEST, 0, (ep.ident << 16) | seq, data),
                                     _record_bytes):
                return
        msg = ICMPMessage.echo(ep.ident, seq, data)
        self.ip.output(rt, I.PROTO_ICMP, msg.build(with_checksum=rt.needs_checksums), ttl=ttl)

    def send_error(self, invoking: bytes, iface: Interface, kind: int, code: int,
                   info: int) -> None:
        """Report a problem with ``invoking`` (a whole IPv4 packet) to its sender."""
        if len(invoking) < 20:
            return
        ihl = (invoking[0] & 0x0F) * 4
        _, _, _, _, frag, _, proto, _, src, dst = _V4_HDR.unpack_from(invoking)
        if frag & 0x1FFF:
            return  # RFC 1122 3.2.2: only about the first fragment
        if proto == I.PROTO_ICMP:
            inner_type = invoking[ihl] if len(invoking) > ihl else 0
            if inner_type in I.ICMPV4_ERRORS or len(invoking) <= ihl:
                return  # never an error about an error
        if src == V4_ANY or is_multicast(src) or src == V4_LIMITED_BROADCAST:
            return
        if is_multicast(dst) or dst == V4_LIMITED_BROADCAST:
            return
        route = self.ip.routes.lookup(dst)
        if route is not None and route.kind == BROADCAST:
            return
        try:
            rt = self.ip.route_output(src, dst if route is not None else None)
        except OSError:
            return
        if not rt.iface.is_loopback and not self.ratelimit.allow(src, self.mib):
            return
        msg = ICMPMessage.error(kind, code, invoking, info=info)
        self._count_out(kind)
        name = self._OUT.get(kind)
        if name is not None:
            self.mib[name] += 1
        self.ip.output(rt, I.PROTO_ICMP, msg.build(with_checksum=rt.needs_checksums),
                       tos=IPTOS_PREC_INTERNETCONTROL, df=False)


class ICMPv6(IcmpBase):
    v6 = True
    proto = I.PROTO_ICMPV6
    _IN = {
        I.V6_DEST_UNREACH: "InDestUnreachs", I.V6_PACKET_TOO_BIG: "InPktTooBigs",
        I.V6_TIME_EXCEEDED: "InTimeExcds", I.V6_PARAM_PROBLEM: "InParmProblems",
        I.V6_ECHO_REQUEST: "InEchos", I.V6_ECHO_REPLY: "InEchoReplies",
    }
    _OUT = {
        I.V6_DEST_UNREACH: "OutDestUnreachs", I.V6_PACKET_TOO_BIG: "OutPktTooBigs",
        I.V6_TIME_EXCEEDED: "OutTimeExcds", I.V6_PARAM_PROBLEM: "OutParmProblems",
        I.V6_ECHO_REQUEST: "OutEchos", I.V6_ECHO_REPLY: "OutEchoReplies",
    }

    def __init__(self, ip: IPv6, mib: dict[str, int], msg_mib: dict[str, int], clock: Clock,
                 rng: random.Random, lock: Any) -> None:
        super().__init__(mib, msg_mib, clock, rng, lock)
        self.ip = ip

    def _count_in(self, kind: int) -> None:
        key = f"InType{kind}"
        self.mib[key] = self.mib.get(key, 0) + 1

    def _count_out(self, kind: int) -> None:
        key = f"OutType{kind}"
        self.mib[key] = self.mib.get(key, 0) + 1
        self.mib["OutMsgs"] += 1

    def input(self, pkt: Inbound) -> None:
        mib = self.mib
        mib["InMsgs"] += 1
        data = pkt.payload
        if pkt.verify_checksums and not icmp_checksum_ok(data, pkt.src, pkt.dst, v6=True):
            mib["InCsumErrors"] += 1
            mib["InErrors"] += 1
            return
        try:
            msg = ICMPMessage.parse(data, v6=True)
        except MalformedPacket:
            mib["InErrors"] += 1
            return
        kind = msg.type
        self._count_in(kind)
        name = self._IN.get(kind)
        if name is not None:
            mib[name] += 1
        if kind == I.V6_ECHO_REQUEST:
            self._reply_echo(pkt, msg)
        elif kind == I.V6_ECHO_REPLY:
            ep = self.endpoints.get(msg.ident)
            if ep is not None:
                ep.deliver(EchoReply(msg.ident, msg.seq, pkt.src, pkt.ttl, len(data),
                                     bytes(msg.body), self.clock.now_ns()))
        elif kind < 128:
            self._error_up(msg, pkt.src)
        # Other informational types (RFC 4443 2.4(b)) are silently discarded.

    def _reply_echo(self, pkt: Inbound, msg: ICMPMessage) -> None:
        # RFC 4443 4.2: a reply to a multicast request comes from a unicast address.
        src = None if pkt.broadcast else pkt.dst
        try:
            rt = self.ip.route_output(pkt.src, src)
        except OSError:
            self.mib["OutErrors"] += 1
            return
        reply = ICMPMessage(I.V6_ECHO_REPLY, 0, msg.rest, msg.body, v6=True)
        self._count_out(I.V6_ECHO_REPLY)
        self.mib["OutEchoReplies"] += 1
        body = reply.build(rt.src, rt.dst, with_checksum=rt.needs_checksums)
        self.ip.output(rt, I.PROTO_ICMPV6, body)

    def _error_up(self, msg: ICMPMessage, reporter: bytes) -> None:
        quote = bytearray(msg.body)
        if len(quote) < 48 or quote[0] >> 4 != 6:
            self.mib["InErrors"] += 1
            return
        # The quote may be truncated: make its payload length agree before parsing.
        quote[4:6] = (len(quote) - 40).to_bytes(2, "big")
        try:
            from ..wire.ipv6 import IPv6Header

            h = IPv6Header.parse(bytes(quote))
        except MalformedPacket:
            self.mib["InErrors"] += 1
            return
        handler = self.err_handlers.get(h.upper_proto)
        if handler is not None:
            handler(IcmpError(msg.type, msg.code, msg.rest, h.src, h.dst, h.upper_proto,
                              bytes(quote[h.upper_offset:]), True, reporter))

    def send_echo(
        self, ep: EchoEndpoint, dst: bytes, seq: int, data: bytes, ttl: int | None
    ) -> None:
        rt = self.ip.route_output(dst)
        msg = ICMPMessage.echo(ep.ident, seq, data, v6=True)
        self._count_out(I.V6_ECHO_REQUEST)
        self.mib["OutEchos"] += 1
        body = msg.build(rt.src, rt.dst, with_checksum=rt.needs_checksums)
        self.ip.output(rt, I.PROTO_ICMPV6, body, hop_limit=ttl)

    def send_error(self, invoking: bytes, iface: Interface, kind: int, code: int,
                   info: int) -> None:
        """RFC 4443 2.4: report a problem with ``invoking`` to its sender."""
        if len(invoking) < 40:
            return
        src, dst = bytes(invoking[8:24]), bytes(invoking[24:40])
        if src == V6_ANY or is_multicast(src):
            return
        if is_multicast(dst) and not (kind == I.V6_PACKET_TOO_BIG or (
                kind == I.V6_PARAM_PROBLEM and code == I.V6_PARAM_OPTION)):
            return
        try:
            from ..wire.ipv6 import IPv6Header

            quote = bytearray(invoking)
            h = IPv6Header.parse(bytes(quote))
            frag = h.fragment_header()
            first = frag is None or frag.frag_offset == 0
            if first and h.upper_proto == I.PROTO_ICMPV6 and h.upper_offset < len(invoking):
                if invoking[h.upper_offset] < 128:
                    return  # never an error about an error (2.4(e.1))
        except MalformedPacket:
            pass
        route = self.ip.routes.lookup(dst)
        try:
            rt = self.ip.route_output(src, dst if route is not None and not is_multicast(dst)
                                      else None)
        except OSError:
            return
        if not rt.iface.is_loopback and not self.ratelimit.allow(src, self.mib):
            return
        msg = ICMPMessage.error(kind, code, invoking, info=info, v6=True)
        self._count_out(kind)
        name = self._OUT.get(kind)
        if name is not None:
            self.mib[name] += 1
        body = msg.build(rt.src, rt.dst, with_checksum=rt.needs_checksums)
        self.ip.output(rt, I.PROTO_ICMPV6, body)
