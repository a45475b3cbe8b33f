"""IPv4 input and output (RFC 791, RFC 1122 3.2.1): header checks, martian
filtering, local delivery, fragmentation and reassembly."""

from __future__ import annotations

import errno
import os
import random
import struct
from collections.abc import Callable
from typing import Any

from ..clock import NS_PER_SEC, Clock
from ..link.interface import Interface
from ..wire.checksum import ones_sum
from ..wire.errors import MalformedPacket
from ..wire.icmp import DEST_UNREACH, EXC_FRAGTIME, TIME_EXCEEDED, UNREACH_PROTOCOL
from ..wire.ipv4 import FIXED_LEN, IPv4Header, header_checksum_ok
from .addr import V4_ANY, V4_LIMITED_BROADCAST, V4_LOOPBACK, is_v4_multicast
from .frag import Reassembler
from .packet import Inbound, OutRoute, Record
from .route import BROADCAST, LOCAL, UNICAST, RoutingTable, unreachable_error

_HDR = struct.Struct("!BBHHHBBH4s4s")
IPFRAG_TIME_NS = 30 * NS_PER_SEC  # ipfrag_time
DEFAULT_TTL = 64

Handler = Callable[[Inbound], None]
RecordHandler = Callable[[Record], None]
# icmp_error(invoking packet, arrival interface, type, code, info)
IcmpError = Callable[[bytes, Interface, int, int, int], None]


class IPv4:
    def __init__(
        self,
        routes: RoutingTable,
        loopback: Interface,
        mib: dict[str, int],
        mib_ext: dict[str, int],
        rtcache: dict[str, int],
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.routes = routes
        self.loopback = loopback
        self.mib = mib
        self.mib_ext = mib_ext
        self.rtcache = rtcache
        self.handlers: dict[int, Handler] = {}
        # Transports that take a datagram as its record (Record; the direct
        # path on an unobserved lo). Each counts as its bytes input would.
        self.record_handlers: dict[int, RecordHandler] = {}
        self.icmp_error: IcmpError | None = None
        self.default_ttl = DEFAULT_TTL
        self._ident = rng.randrange(1 << 16)
        self.reassembler = Reassembler(clock, IPFRAG_TIME_NS, mib, self._reasm_timeout,
                                       max_payload=0xFFFF - FIXED_LEN)
        self._reasm_iface: Interface = loopback

    # -- input -----------------------------------------------------------------
    def input(self, iface: Interface, packet: bytes) -> None:
        """A packet received on ``iface``: check it and deliver it locally.
        Anything malformed is counted and dropped here (never raised)."""
        mib = self.mib
        mib["InReceives"] += 1
        if iface.is_loopback and len(packet) >= 20 and packet[0] == 0x45 \
                and self._fast_input(iface, packet):
            return
        try:
            h = IPv4Header.parse(packet)
        except MalformedPacket as e:
            # Linux: fewer bytes than the total length is InTruncatedPkts alone;
            # anything else wrong with the header is InHdrErrors.
            if e.reason.startswith("truncated IPv4 packet"):
                self.mib_ext["InTruncatedPkts"] += 1
            else:
                mib["InHdrErrors"] += 1
            return
        if not header_checksum_ok(packet):
            self.mib_ext["InCsumErrors"] += 1
            mib["InHdrErrors"] += 1
            return
        src, dst = h.src, h.dst
        self.mib_ext["InOctets"] += h.total_length
        if not iface.is_loopback:
            # RFC 1122 3.2.1.3(g), Linux ip_route_input_slow(): 127/8 never
            # comes from outside (unless route_localnet, which we lack).
            if dst[0] == 127:
                self.rtcache["in_martian_dst"] += 1
                return
            if src[0] in (0, 127) or is_v4_multicast(src) or src == V4_LIMITED_BROADCAST:
                self.rtcache["in_martian_src"] += 1
                return
            src_route = self.routes.lookup(src)
            if src_route is not None and src_route.kind in (LOCAL, BROADCAST):
                # fib_validate_source(): our own address coming from outside.
                self.rtcache["in_martian_src"] += 1
                return
        broadcast = False
        if dst == V4_LIMITED_BROADCAST:
            broadcast = True
        else:
            route = self.routes.lookup(dst)
            if route is None or route.kind not in (LOCAL, BROADCAST):
                mib["InAddrErrors"] += 1  # not ours, and we do not forward
                return
            broadcast = route.kind == BROADCAST
        if broadcast:
            self.mib_ext["InBcastPkts"] += 1
        if h.mf or h.frag_offset:
            data = packet[h.header_length : h.total_length]
            key = (src, dst, h.ident, h.proto)
            self._reasm_iface = iface
            done = self.reassembler.add(key, h.frag_offset, data, h.mf, packet)
            if done is None:
                return
            first, payload = done
            fh = IPv4Header.parse(first)
            fh.mf = False
            fh.frag_offset = 0
            if fh.header_length + len(payload) > 0xFFFF:
                mib["ReasmOKs"] -= 1  # options made it too long after all
                mib["ReasmFails"] += 1
                return
            packet = fh.build(payload)
            h = fh
        handler = self.handlers.get(h.proto)
        if handler is None:
            mib["InUnknownProtos"] += 1
            if not broadcast and self.icmp_error is not None:
                self.icmp_error(packet, iface, DEST_UNREACH, UNREACH_PROTOCOL, 0)
            return
        mib["InDelivers"] += 1
        view = memoryview(packet)[h.header_length : h.total_length]
        handler(Inbound(iface, src, dst, h.proto, h.ttl, packet, view, broadcast))

    def _fast_input(self, iface: Interface, packet: bytes) -> bool:
        """Header prediction for the common case on lo: no options, not a
        fragment, a sound header, a local unicast destination. False sends
        the packet down the general path (which re-checks everything)."""
        (_, _, total, _, frag, ttl, proto, _, src, dst) = _HDR.unpack_from(packet)
        if frag & 0x3FFF or total > len(packet) or total < 20:
            return False
        # Linux checks the header checksum on every device, lo included.
        if ones_sum(memoryview(packet)[:20]) != 0xFFFF:
            return False
        route = self.routes.lookup(dst)
        if route is None or route.kind != LOCAL:
            return False
        handler = self.handlers.get(proto)
        if handler is None:
            return False
        self.mib_ext["InOctets"] += total
        self.mib["InDelivers"] += 1
        handler(Inbound(iface, src, dst, proto, ttl, packet, memoryview(packet)[20:total]))
        return True

    def input_record(self, rec: Record) -> None:
        """A datagram that crossed lo as its record: what :meth:`input` and
        :meth:`_fast_input` do with its bytes (the header is sound by
        construction: no options, not a fragment, checksum right), then the
        transport's record input. Anything else goes the byte way."""
        routes = self.routes
        dst = rec.dst
        cache = routes._cache  # (RoutingTable.lookup's cache, read here: every record)
        route = cache[dst] if dst in cache else routes.lookup(dst)
        handler = self.record_handlers.get(rec.proto)
        if route is None or route.kind != LOCAL or handler is None \
                or self.handlers.get(rec.proto) is None:
            self.input(rec.iface, rec.packet())
            return
        mib = self.mib
        mib["InReceives"] += 1
        self.mib_ext["InOctets"] += rec.length
        mib["InDelivers"] += 1
        handler(rec)

    def record_bytes(self, rec: Record) -> bytes:
        """The datagram a record stands for, byte for byte as
        :meth:`output_parts` builds it."""
        head = _HDR.pack(0x45, 0, rec.length, rec.ident, 0x4000, rec.ttl, rec.proto, 0,
                         rec.src, rec.dst)
        csum = ~ones_sum(head) & 0xFFFF
        return b"".join((head[:10], csum.to_bytes(2, "big"), head[12:],
                         rec.build(rec.segment)))

    def _reasm_timeout(self, first: bytes) -> None:
        if self.icmp_error is not None:
            self.icmp_error(first, self._reasm_iface, TIME_EXCEEDED, EXC_FRAGTIME, 0)

    # -- output ----------------------------------------------------------------
    def route_output(self, dst: bytes, src: bytes | None = None) -> OutRoute:
        """Choose the route and source address for ``dst`` (Linux
        ip_route_output_key_hash_rcu). Raises ENETUNREACH without a route."""
        if dst == V4_ANY:  # connect to 0.0.0.0 means the loopback (BSD'ism)
            dst = src if src not in (None, V4_ANY) else V4_LOOPBACK
        if src == V4_ANY:
            src = None
        if dst == V4_LIMITED_BROADCAST:
            route = self.routes.lookup(src) if src is not None else None
            if route is None or route.iface is None:
                self.mib["OutNoRoutes"] += 1
                raise unreachable_error()
            return OutRoute(route, route.iface, src or V4_LOOPBACK, dst, True)
        route = self.routes.lookup(dst)
        if route is None or route.kind not in (LOCAL, UNICAST, BROADCAST) or route.iface is None:
            self.mib["OutNoRoutes"] += 1
            raise unreachable_error()
        if src is None:
            if route.prefsrc is not None:
                src = route.prefsrc
            elif route.kind == LOCAL:
                src = dst
            else:
                src = self._first_address(route.iface) or V4_LOOPBACK
        # Local destinations always leave through lo (Linux RTN_LOCAL).
        iface = self.loopback if route.kind == LOCAL else route.iface
        return OutRoute(route, iface, src, dst, route.kind == BROADCAST)

    def _first_address(self, iface: Interface) -> bytes | None:
        for r in self.routes.routes():
            if r.iface is iface and r.kind == LOCAL and r.prefixlen == 32 and len(r.dst) == 4:
                return r.dst
        return None

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def output(
        self,
        rt: OutRoute,
        proto: int,
        payload: bytes | bytearray | memoryview,
        *,
        ttl: int | None = None,
        tos: int = 0,
        df: bool | None = None,
        options: bytes = b"",
    ) -> None:
        """Send ``payload`` as one IPv4 datagram, fragmenting it where the
        interface MTU requires. ``df=None`` is Linux's IP_PMTUDISC_WANT: DF
        is set when the datagram fits, else it is fragmented here."""
        mib = self.mib
        mib["OutRequests"] += 1
        iface = rt.iface
        mtu = iface.mtu
        total = FIXED_LEN + len(options) + len(payload)
        if total > 0xFFFF:
            mib["OutDiscards"] += 1
            raise OSError(errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
        if df is None:
            df = total <= mtu
        if total <= mtu and not options:
            ident = self.next_ident()
            head = _HDR.pack(0x45, tos, total, ident, 0x4000 if df else 0,
                             self.default_ttl if ttl is None else ttl, proto, 0, rt.src, rt.dst)
            csum = ~ones_sum(head) & 0xFFFF
            mib["OutTransmits"] += 1
            self.mib_ext["OutOctets"] += total
            if rt.broadcast:
                self.mib_ext["OutBcastPkts"] += 1
            iface.transmit(b"".join((head[:10], csum.to_bytes(2, "big"), head[12:], payload)))
            return
        h = IPv4Header(
            rt.src, rt.dst, proto, self.default_ttl if ttl is None else ttl, tos,
            self.next_ident(), df, options=options,
        )
        if rt.broadcast:
            self.mib_ext["OutBcastPkts"] += 1
        if total <= mtu:
            packet = h.build(payload)
            mib["OutTransmits"] += 1
            self.mib_ext["OutOctets"] += total
            iface.transmit(packet)
            return
        if df:
            mib["FragFails"] += 1
            raise OSError(errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
        self._fragment(h, bytes(payload), iface)

    def output_parts(self, rt: OutRoute, proto: int,
                     parts: tuple[bytes | bytearray | memoryview, ...], ttl: int | None) -> bool:
        """The fast path for a datagram given in pieces (header pieces and a
        payload view): one join builds the whole packet. False when it does
        not fit the MTU as it is (the caller then uses :meth:`output`)."""
        total = FIXED_LEN + sum(len(p) for p in parts)
        if total > rt.iface.mtu:
            return False
        mib = self.mib
        mib["OutRequests"] += 1
        head = _HDR.pack(0x45, 0, total, self.next_ident(), 0x4000,
                         self.default_ttl if ttl is None else ttl, proto, 0, rt.src, rt.dst)
        csum = ~ones_sum(head) & 0xFFFF
        mib["OutTransmits"] += 1
        self.mib_ext["OutOctets"] += total
        rt.iface.transmit(b"".join((head[:10], csum.to_bytes(2, "big"), head[12:], *parts)))
        return True

    def output_record(self, rt: OutRoute, proto: int, length: int, ttl: int | None,
                      segment: Any, build: Callable[[Any], bytes]) -> bool:
        """:meth:`output_parts` for a transport segment given as its record
        (``segment``; ``build`` makes its bytes, ``length`` their count), on
        an interface that carries records (an unobserved lo): the same
        counters and IP ID, no bytes. False when it cannot go this way (the
        caller then sends bytes)."""
        iface = rt.iface
        total = FIXED_LEN + length
        if total > iface.mtu or not iface.carries_records():
            return False
        mib = self.mib
        mib["OutRequests"] += 1
        rec = Record(iface, rt.src, rt.dst, proto, self.default_ttl if ttl is None else ttl,
                     self.next_ident(), total, segment, build, self.input_record,
                     self.record_bytes)
        mib["OutTransmits"] += 1
        self.mib_ext["OutOctets"] += total
        iface.transmit_record(rec, total)
        return True

    # -- ICMP's replies as records (no DF) ----------------------------------------
    def output_record_nodf(self, rt: OutRoute, proto: int, length: int, segment: Any,
                           build: Callable[[Any], bytes]) -> bool:
        """:meth:`output_record` for what :meth:`output` sends with
        ``df=False``, TOS 0 and the default TTL (ICMP's echo replies: Linux's
        ICMP socket is IP_PMTUDISC_DONT): the same counters, DF clear in
        its bytes."""
        iface = rt.iface
        total = FIXED_LEN + length
        if total > iface.mtu or not iface.carries_records():
            return False
        mib = self.mib
        mib["OutRequests"] += 1
        rec = Record(iface, rt.src, rt.dst, proto, self.default_ttl, self.next_ident(), total,
                     segment, build, self.input_record, self._record_bytes_nodf)
        mib["OutTransmits"] += 1
        self.mib_ext["OutOctets"] += total
        iface.transmit_record(rec, total)
        return True

    def _record_bytes_nodf(self, rec: Record) -> bytes:
        """:meth:`record_bytes` for :meth:`output_record_nodf`'s records."""
        head = _HDR.pack(0x45, 0, rec.length, rec.ident, 0, rec.ttl, rec.proto, 0,
                         rec.src, rec.dst)
        csum = ~ones_sum(head) & 0xFFFF
        return b"".join((head[:10], csum.to_bytes(2, "big"), head[12:],
                         rec.build(rec.segment)))

    def _fragment(self, h: IPv4Header, payload: bytes, iface: Interface) -> None:
        """RFC 791 3.2 fragmentation: 8-byte aligned pieces, MF on all but the
        last; only options with the copied flag go into later fragments."""
        first_opts = h.options
        later_opts = _copied_options(first_opts)
        offset = 0
        count = 0
        while offset < len(payload):
            opts = first_opts if offset == 0 else later_opts
            room = (iface.mtu - FIXED_LEN - ((len(opts) + 3) & ~3)) & ~7
            piece = payload[offset : offset + room]
            more = offset + len(piece) < len(payload)
            fh = IPv4Header(
                h.src, h.dst, h.proto, h.ttl, h.tos, h.ident, False, more, offset, opts
            )
            packet = fh.build(piece)
            self.mib["OutTransmits"] += 1
            self.mib_ext["OutOctets"] += len(packet)
            iface.transmit(packet)
            offset += len(piece)
            count += 1
        self.mib["FragOKs"] += 1
        self.mib["FragCreates"] += count


def _copied_options(options: bytes) -> bytes:
    """The options whose copied flag (RFC 791 3.1) is set."""
    out = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        length = options[i + 1]
        if kind & 0x80:
            out += options[i : i + length]
        i += length
    return bytes(out)
