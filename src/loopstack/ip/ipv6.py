"""IPv6 input and output (RFC 8200): extension headers, ::1 filtering
(RFC 4291 2.5.3), local delivery, fragmentation at the source and
reassembly (RFC 8200 4.5, RFC 5722)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from ..clock import NS_PER_SEC, Clock
from ..link.interface import Interface
from ..wire.errors import MalformedPacket
from ..wire.icmp import (
    V6_EXC_FRAGTIME,
    V6_PARAM_HEADER,
    V6_PARAM_NEXT_HEADER,
    V6_PARAM_OPTION,
    V6_PARAM_PROBLEM,
    V6_TIME_EXCEEDED,
)
from ..wire.ipv6 import (
    DEST_OPTIONS,
    EXTENSION_HEADERS,
    FIXED_LEN,
    FRAGMENT,
    HOP_BY_HOP,
    NO_NEXT_HEADER,
    ROUTING,
    IPv6ExtHeader,
    IPv6Header,
)
from .addr import V6_ANY, V6_LOOPBACK, is_v6_multicast
from .frag import Reassembler
from .packet import Inbound, OutRoute
from .route import LOCAL, UNICAST, RoutingTable, unreachable_error

_FIXED = struct.Struct("!IHBB16s16s")
IP6FRAG_TIME_NS = 60 * NS_PER_SEC  # ip6frag_time
DEFAULT_HOP_LIMIT = 64
MIN_MTU = 1280
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")

Handler = Callable[[Inbound], None]
IcmpError = Callable[[bytes, Interface, int, int, int], None]


class IPv6:
    def __init__(
        self,
        routes: RoutingTable,
        loopback: Interface,
        mib: dict[str, int],
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.routes = routes
        self.loopback = loopback
        self.mib = mib
        self.handlers: dict[int, Handler] = {}
        self.icmp_error: IcmpError | None = None
        self.default_hop_limit = DEFAULT_HOP_LIMIT
        self._rng = rng
        self.reassembler = Reassembler(clock, IP6FRAG_TIME_NS, mib, self._reasm_timeout)
        self._reasm_iface: Interface = loopback

    # -- input -----------------------------------------------------------------
    def input(self, iface: Interface, packet: bytes) -> None:
        mib = self.mib
        mib["InReceives"] += 1
        if iface.is_loopback and len(packet) >= FIXED_LEN and self._fast_input(iface, packet):
            return
        try:
            h = IPv6Header.parse(packet)
        except MalformedPacket as e:
            # Linux ip6_rcv_core(): a short packet counts InTruncatedPkts and
            # then InHdrErrors too; a runt or bad header only InHdrErrors.
            if e.reason.startswith("truncated IPv6 packet"):
                mib["InTruncatedPkts"] += 1
            mib["InHdrErrors"] += 1
            return
        src, dst = h.src, h.dst
        mib["InOctets"] += h.total_length
        if not iface.is_loopback and (src == V6_LOOPBACK or dst == V6_LOOPBACK):
            mib["InHdrErrors"] += 1  # RFC 4291 2.5.3: ::1 never comes from outside
            return
        if is_v6_multicast(src):
            mib["InHdrErrors"] += 1
            return
        multicast = is_v6_multicast(dst)
        if multicast:
            if dst != ALL_NODES:
                mib["InAddrErrors"] += 1
                return
            mib["InMcastPkts"] += 1
        else:
            route = self.routes.lookup(dst)
            if route is None or route.kind != LOCAL:
                mib["InAddrErrors"] += 1
                return
        if len(packet) > h.total_length:
            packet = packet[: h.total_length]
        # Walk the extension headers the parser recorded (RFC 8200 4.1 order).
        offset = FIXED_LEN
        for ext in h.ext:
            if ext.kind in (HOP_BY_HOP, DEST_OPTIONS):
                if not self._options_ok(ext, packet, offset, iface, multicast):
                    return
            elif ext.kind == ROUTING and ext.segments_left:
                # We forward nothing: RFC 8200 4.4 / RFC 5095, point at the type.
                mib["InHdrErrors"] += 1
                self._param_problem(packet, iface, V6_PARAM_HEADER, offset + 2, multicast)
                return
            elif ext.kind == FRAGMENT:
                self._reassemble(h, ext, packet, offset, iface)
                return
            offset += ext.wire_length
        self._deliver(h, packet, iface, multicast)

    def _fast_input(self, iface: Interface, packet: bytes) -> bool:
        """Header prediction on lo: no extension headers, a local unicast
        destination, a known upper layer. False: take the general path."""
        vtf, plen, nh, hlim, src, dst = _FIXED.unpack_from(packet)
        if vtf >> 28 != 6 or nh in EXTENSION_HEADERS or FIXED_LEN + plen > len(packet):
            return False
        handler = self.handlers.get(nh)
        if handler is None or is_v6_multicast(dst):
            return False
        route = self.routes.lookup(dst)
        if route is None or route.kind != LOCAL:
            return False
        self.mib["InOctets"] += FIXED_LEN + plen
        self.mib["InDelivers"] += 1
        handler(Inbound(iface, src, dst, nh, hlim, packet,
                        memoryview(packet)[FIXED_LEN : FIXED_LEN + plen]))
        return True

    def _deliver(self, h: IPv6Header, packet: bytes, iface: Interface, multicast: bool) -> None:
        proto = h.upper_proto
        if proto == NO_NEXT_HEADER:
            return
        handler = self.handlers.get(proto)
        if handler is None:
            self.mib["InUnknownProtos"] += 1
            # Point at the Next Header field that named the unknown protocol.
            pointer = 6
            off = FIXED_LEN
            for ext in h.ext:
                pointer = off
                off += ext.wire_length
            self._param_problem(packet, iface, V6_PARAM_NEXT_HEADER, pointer, multicast)
            return
        self.mib["InDelivers"] += 1
        view = memoryview(packet)[h.upper_offset : h.total_length]
        handler(Inbound(iface, h.src, h.dst, proto, h.hop_limit, packet, view, multicast))

    def _options_ok(
        self, ext: IPv6ExtHeader, packet: bytes, offset: int, iface: Interface, multicast: bool
    ) -> bool:
        """RFC 8200 4.2: an unknown option's top two bits say what to do."""
        try:
            options = ext.options()
        except MalformedPacket:
            self.mib["InHdrErrors"] += 1
            return False
        pos = offset + 2
        for kind, data in options:
            if kind not in (0, 1):  # Pad1 and PadN are the only ones we know
                action = kind >> 6
                if action == 0:
                    pass
                else:
                    self.mib["InHdrErrors"] += 1
                    if action == 2 or (action == 3 and not multicast):
                        self._param_problem(packet, iface, V6_PARAM_OPTION, pos, multicast=False)
                    return False
            pos += 1 if kind == 0 else 2 + len(data)
        return True

    def _reassemble(
        self, h: IPv6Header, frag: IPv6ExtHeader, packet: bytes, frag_off: int, iface: Interface
    ) -> None:
        data = packet[frag_off + 8 : h.total_length]
        # RFC 8200 4.5: a non-last fragment whose length is not a multiple of 8,
        # or one reaching past 65535, gets a Parameter Problem (code 0).
        if frag.frag_more and len(data) % 8:
            self.mib["InHdrErrors"] += 1
            self._param_problem(packet, iface, V6_PARAM_HEADER, 4, is_v6_multicast(h.dst))
            return
        if frag.frag_offset + len(data) > 0xFFFF:
            self.mib["InHdrErrors"] += 1
            self._param_problem(packet, iface, V6_PARAM_HEADER, frag_off + 2,
                                is_v6_multicast(h.dst))
            return
        if frag.frag_offset == 0 and not frag.frag_more:
            # An atomic fragment (RFC 6946): process it at once.
            done: tuple[bytes, bytes] | None = (packet, data)
        else:
            key = (h.src, h.dst, frag.frag_ident)
            self._reasm_iface = iface
            done = self.reassembler.add(key, frag.frag_offset, data, frag.frag_more, packet)
        if done is None:
            return
        first, payload = done
        fh = IPv6Header.parse(first)
        fragment_at = fh.fragment_header_offset()
        nh = first[fragment_at]
        unfrag = bytearray(first[:fragment_at])
        # The header before the fragment header now names what followed it.
        if fragment_at == FIXED_LEN:
            unfrag[6] = nh
        else:
            prev = FIXED_LEN
            for ext in fh.ext:
                if prev + ext.wire_length == fragment_at:
                    break
                prev += ext.wire_length
            unfrag[prev] = nh
        plen = len(unfrag) - FIXED_LEN + len(payload)
        if plen > 0xFFFF:
            self.mib["ReasmFails"] += 1
            return
        unfrag[4:6] = plen.to_bytes(2, "big")
        whole = bytes(unfrag) + payload
        try:
            wh = IPv6Header.parse(whole)
        except MalformedPacket:
            self.mib["InHdrErrors"] += 1
            return
        self._deliver(wh, whole, iface, is_v6_multicast(wh.dst))

    def _reasm_timeout(self, first: bytes) -> None:
        if self.icmp_error is not None:
            self.icmp_error(first, self._reasm_iface, V6_TIME_EXCEEDED, V6_EXC_FRAGTIME, 0)

    def _param_problem(
        self, packet: bytes, iface: Interface, code: int, pointer: int, multicast: bool
    ) -> None:
        if self.icmp_error is not None and not multicast:
            self.icmp_error(packet, iface, V6_PARAM_PROBLEM, code, pointer)

    # -- output ----------------------------------------------------------------
    def route_output(self, dst: bytes, src: bytes | None = None) -> OutRoute:
        if dst == V6_ANY:  # connect to :: means ::1
            dst = V6_LOOPBACK
        if src == V6_ANY:
            src = None
        route = self.routes.lookup(dst)
        if route is None or route.kind not in (LOCAL, UNICAST) or route.iface is None:
            self.mib["OutNoRoutes"] += 1
            raise unreachable_error()
        if src is None:
            src = dst if route.kind == LOCAL else self._source_for(route.iface)
            if src is None:
                self.mib["OutNoRoutes"] += 1
                raise unreachable_error()
        iface = self.loopback if route.kind == LOCAL else route.iface
        return OutRoute(route, iface, src, dst)

    def _source_for(self, iface: Interface) -> bytes | None:
        """RFC 6724 reduced to what we have: an address of the outgoing interface."""
        for r in self.routes.routes():
            if r.iface is iface and r.kind == LOCAL and len(r.dst) == 16 and r.prefixlen == 128:
                return r.dst
        return None

    def output(
        self,
        rt: OutRoute,
        proto: int,
        payload: bytes | bytearray | memoryview,
        *,
        hop_limit: int | None = None,
        traffic_class: int = 0,
        ext: list[IPv6ExtHeader] | None = None,
    ) -> None:
        """Send one datagram; a source host fragments what exceeds the MTU
        (RFC 8200 4.5), with a fragment header and a random identification."""
        mib = self.mib
        mib["OutRequests"] += 1
        hl = self.default_hop_limit if hop_limit is None else hop_limit
        total = FIXED_LEN + len(payload)
        if not ext and total <= rt.iface.mtu:
            head = _FIXED.pack((6 << 28) | (traffic_class << 20), len(payload), proto, hl,
                               rt.src, rt.dst)
            mib["OutTransmits"] += 1
            mib["OutOctets"] += total
            rt.iface.transmit(head + payload if isinstance(payload, bytes)
                              else b"".join((head, payload)))
            return
        h = IPv6Header(rt.src, rt.dst, proto, hl, traffic_class, ext=list(ext or []))
        packet = h.build(payload)
        mtu = rt.iface.mtu
        if len(packet) <= mtu:
            mib["OutTransmits"] += 1
            mib["OutOctets"] += len(packet)
            rt.iface.transmit(packet)
            return
        self._fragment(h, packet, rt.iface)

    def _fragment(self, h: IPv6Header, packet: bytes, iface: Interface) -> None:
        # Unfragmentable part: hop-by-hop and routing headers (RFC 8200 4.5).
        unfrag_exts: list[IPv6ExtHeader] = []
        rest = list(h.ext)
        while rest and rest[0].kind in (HOP_BY_HOP, ROUTING):
            unfrag_exts.append(rest.pop(0))
        unfrag_len = FIXED_LEN + sum(e.wire_length for e in unfrag_exts)
        fragmentable = packet[unfrag_len:]
        ident = self._rng.getrandbits(32)
        room = (max(iface.mtu, MIN_MTU) - unfrag_len - 8) & ~7
        offset = 0
        count = 0
        upper = rest[0].kind if rest else h.upper_proto
        while offset < len(fragmentable):
            piece = fragmentable[offset : offset + room]
            more = offset + len(piece) < len(fragmentable)
            fh = IPv6Header(
                h.src, h.dst, upper, h.hop_limit, h.traffic_class, h.flow_label,
                unfrag_exts + [IPv6ExtHeader.fragment(offset, more, ident)],
            )
            frag_packet = fh.build(piece)
            self.mib["OutTransmits"] += 1
            self.mib["OutOctets"] += len(frag_packet)
            iface.transmit(frag_packet)
            offset += len(piece)
            count += 1
        self.mib["FragOKs"] += 1
        self.mib["FragCreates"] += count
