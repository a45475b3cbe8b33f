"""UDP (RFC 768, RFC 1122 4.1) over IPv4 and IPv6, with Linux's socket
lookup, dual-stack delivery, ICMP error reporting and counters; and
UDP-Lite (RFC 3828), the same code with its own protocol number, port
table and partial checksum coverage (UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV).

A socket's receive queue is charged what Linux charges (an estimate of the
skb's truesize), so a full buffer drops about where the kernel's would.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..ip.addr import V4_ANY, V4_LIMITED_BROADCAST, V4_LOOPBACK, V6_ANY, is_multicast
from ..ip.ipv4 import IPv4
from ..ip.ipv6 import IPv6
from ..ip.packet import Inbound, OutRoute, Record
from ..wire import icmp as I
from ..wire.checksum import checksum, pseudo_sum_v4, pseudo_sum_v6
from ..wire.udp import PROTO_UDP
from .icmp import IcmpError, ICMPv4, ICMPv6
from .ports import PortTable, mapped, v4_of

_UDP = struct.Struct("!HHHH")
PROTO_UDPLITE = 136
MAX_V4_PAYLOAD = 65535 - 20 - 8  # 65507
MAX_V6_PAYLOAD = 65535 - 8  # 65527
RMEM_DEFAULT = 212992  # net.core.rmem_default
WMEM_DEFAULT = 212992
RMEM_MAX = 212992
WMEM_MAX = 212992
SOCK_MIN_RCVBUF = 2304  # Linux: 2 * (2048 + sizeof(skb)) ~ what getsockopt shows / 2
SOCK_MIN_SNDBUF = 4608
# The longest a sender lets a starved reader run (see UDP.hand_over): the
# interpreter's switch interval, after which the reader would have had to
# ask for the GIL anyway.
HAND_OVER_S = 0.005


def truesize(payload_len: int) -> int:
    """What Linux charges a socket for one received datagram on lo
    (skb data rounded up to a power of two, plus the skb itself). Fitted
    to this machine's kernel: 256 one-byte, 92 1400-byte and 3
    60000-byte datagrams fill the default 212992-byte buffer."""
    need = max(256, payload_len + 92)
    alloc = 1 << (need - 1).bit_length()
    return alloc + (576 if alloc <= 256 else 256)


_TRUESIZE: dict[int, int] = {}  # truesize by payload length, as computed


def _truesize(payload_len: int) -> int:
    size = _TRUESIZE.get(payload_len)
    if size is None:
        size = _TRUESIZE[payload_len] = truesize(payload_len)
    return size


def _record_bytes(segment: tuple[int, int, bytes]) -> bytes:
    """A UDP record's header and payload, as the byte path builds them on
    lo: checksum 0 (offloaded; a capture fills it in)."""
    sport, dport, data = segment
    return _UDP.pack(sport, dport, 8 + len(data), 0) + data


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass(slots=True)
class Datagram:
    data: bytes
    src: bytes  # as the socket reports it (v4-mapped on AF_INET6 sockets)
    sport: int
    dst: bytes
    ttl: int
    size: int  # what it is charged against the receive buffer
    v4: bool  # arrived over IPv4 (counted under Udp, else Udp6)
    ifindex: int = 0  # the interface it arrived on (for IP_PKTINFO)
    tclass: int = 0  # IPv6 traffic class or IPv4 TOS (IPV6_RECVTCLASS, IP_RECVTOS)


class UdpSock:
    """A UDP endpoint's protocol state (the socket object wraps it)."""

    listening = False

    def __init__(self, udp: UDP, v6: bool) -> None:
        self.udp = udp
        self.v6 = v6
        self.local_addr: bytes = V6_ANY if v6 else V4_ANY
        self.local_port = 0
        self.remote_addr: bytes | None = None
        self.remote_port = 0
        self.v6only = False
        self.reuseaddr = False
        self.reuseport = False
        self.broadcast = False
        self.ttl: int | None = None
        self.hop_limit: int | None = None
        self.tclass = 0  # IPV6_TCLASS
        self.tos = 0  # IP_TOS (inet->tos)
        self.recv_tos = False  # IP_RECVTOS
        # UDP-Lite coverage (udp_sock's pcslen, pcrlen and pcflag bits)
        self.pcslen = 0
        self.pcrlen = 0
        self.send_cc = False
        self.recv_cc = False
        # ancillary data asked for (IP_RECVTTL, IP_PKTINFO, IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO)
        self.recv_ttl = False
        self.recv_pktinfo = False
        self.recv_hoplimit = False
        self.recv_pktinfo6 = False
        self.recv_tclass = False
        self.last_dequeued: Datagram | None = None
        self.rcvbuf = RMEM_DEFAULT
        self.sndbuf = WMEM_DEFAULT
        self.rcvq: deque[Datagram] = deque()
        self.rcv_used = 0
        self.so_error = 0
        self.shut_rd = False
        self.shut_wr = False
        self.bound = False
        self.closed = False
        self.wake: Callable[[], None] = _nothing
        self.route_cache: tuple[bytes, int, bytes, OutRoute] | None = None
        self.readers: list[None] = []  # one item per thread in a receive (Socket._recv_raw)
        self.room: threading.Event | None = None  # set when a starved reader dequeues
        # Corking (UDP_CORK, MSG_MORE: udp_sendmsg's up->pending): the
        # datagram being gathered, sent when the socket is uncorked or a
        # send comes without MSG_MORE on an uncorked socket.
        self.corked = False
        self.pending: _Pending | None = None

    # -- binding -----------------------------------------------------------------
    def bind(self, addr: bytes, port: int) -> None:
        if self.bound:
            raise _err(errno.EINVAL)
        self.local_addr = addr
        self.udp.ports.bind(self, port)
        self.bound = True

    def autobind(self) -> None:
        if not self.bound:
            self.bind(self.local_addr, 0)

    def connect(self, addr: bytes, port: int) -> None:
        """Fix the peer (ip4_datagram_connect): choose the route and source now.

        Port 0 is accepted as Linux accepts it: the socket is connected to
        addr:0 (getpeername says ENOTCONN, send() goes to port 0, only
        datagrams from addr are received). A pending error (so_error) is
        not cleared: Linux's connect leaves sk_err for the next call."""
        target = self.udp.target(self, addr)
        rt = self.udp.route(self, target)
        if rt.broadcast and not self.broadcast:
            raise _err(errno.EACCES)
        self.autobind()
        if self.local_addr in (V4_ANY, V6_ANY):
            # Linux fixes the receive address to the route's source.
            self.local_addr = mapped(rt.src) if self.v6 and len(rt.src) == 4 else rt.src
        self.remote_addr = mapped(rt.dst) if self.v6 and len(rt.dst) == 4 else rt.dst
        self.remote_port = port

    def disconnect(self) -> None:
        """connect(AF_UNSPEC): forget the peer; an autobound address is released."""
        self.remote_addr = None
        self.remote_port = 0

    # -- data --------------------------------------------------------------------
    def sendto(self, data: bytes, addr: bytes | None, port: int, ttl: int | None = None,
               tclass: int | None = None, more: bool = False, tos: int | None = None) -> int:
        """Send one datagram, or (corked, or ``more``: MSG_MORE) add ``data``
        to the one being gathered (udp_sendmsg)."""
        if self.so_error:
            code, self.so_error = self.so_error, 0
            raise _err(code)
        if self.shut_wr:
            raise _err(errno.EPIPE)
        pending = self.pending
        if pending is not None:
            # udp_sendmsg's do_append_data: the address given (if any) is
            # not looked at; the datagram goes where its first part said.
            return self._append(pending, data, more)
        if addr is None:
            if self.remote_addr is None:
                raise _err(errno.EDESTADDRREQ)
            # Connected to port 0, the datagram goes to port 0 (udp_sendmsg
            # checks dport only for an explicit address).
            addr, port = self.remote_addr, self.remote_port
        elif port == 0:
            raise _err(errno.EINVAL)
        if self.corked or more:
            # The first part: the route and the source are settled now
            # (ip_setup_cork), the datagram leaves later (push).
            self.udp.check_output(self, len(data), addr)
            pending = self.pending = _Pending(addr, port, ttl, tclass, tos)
            return self._append(pending, data, more)
        return self.udp.output(self, data, addr, port, ttl, tclass, tos)

    def _append(self, pending: _Pending, data: bytes, more: bool) -> int:
        """ip_append_data for a gathered datagram: too long in all is
        EMSGSIZE, and the whole datagram is dropped (udp_flush_pending_frames);
        else it is sent now unless the socket is corked or MSG_MORE said more."""
        limit = MAX_V4_PAYLOAD if len(pending.addr) == 4 or v4_of(pending.addr) else MAX_V6_PAYLOAD
        if pending.size + len(data) > limit:
            self.pending = None
            raise _err(errno.EMSGSIZE)
        pending.parts.append(data)
        pending.size += len(data)
        if not (self.corked or more):
            self.push()
        return len(data)

    def push(self) -> None:
        """udp_push_pending_frames: send the gathered datagram, if any."""
        pending, self.pending = self.pending, None
        if pending is not None:
            self.udp.output(self, b"".join(pending.parts), pending.addr, pending.port,
                            pending.ttl, pending.tclass, pending.tos)

    def set_cork(self, on: bool) -> None:
        """UDP_CORK: on, sends gather; off, what was gathered is sent."""
        self.corked = on
        if not on:
            try:
                self.push()
            except OSError:
                pass  # (setsockopt reports nothing of the push, as Linux's)

    def enqueue(self, dgram: Datagram) -> bool:
        if self.rcv_used + dgram.size > self.rcvbuf:
            # Dropped, as Linux drops it. A thread in a receive on this
            # socket is not running (this one is): the sender will let it
            # (UDP.hand_over).
            if self.readers:
                self.udp.starve(self)
            return False
        self.rcvq.append(dgram)
        self.rcv_used += dgram.size
        self.wake()
        return True

    def dequeue(self, peek: bool) -> Datagram | None:
        if not self.rcvq:
            return None
        if peek:
            return self.rcvq[0]
        d = self.rcvq.popleft()
        self.rcv_used -= d.size
        room = self.room
        if room is not None:  # a sender waits for this reader to run
            self.room = None
            room.set()
        # Linux counts a datagram when it is read, not when it arrives.
        (self.udp.mib if d.v4 else self.udp.mib6)["InDatagrams"] += 1
        return d

    @property
    def readable(self) -> bool:
        return bool(self.rcvq) or bool(self.so_error) or self.shut_rd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pending = None  # a gathered datagram never sent goes with the socket
            self.udp.ports.unbind(self)
            self.rcvq.clear()
            self.rcv_used = 0


def _nothing() -> None:
    pass


class _Pending:
    """A datagram being gathered (corking): where it goes, as its first part
    said, and its parts."""

    __slots__ = ("addr", "port", "ttl", "tclass", "tos", "parts", "size")

    def __init__(self, addr: bytes, port: int, ttl: int | None, tclass: int | None,
                 tos: int | None) -> None:
        self.addr = addr
        self.port = port
        self.ttl = ttl
        self.tclass = tclass
        self.tos = tos
        self.parts: list[bytes] = []
        self.size = 0


class UDP:
    def __init__(
        self, ipv4: IPv4, ipv6: IPv6, icmp4: ICMPv4, icmp6: ICMPv6,
        mib: dict[str, int], mib6: dict[str, int], ports: PortTable,
        proto: int = PROTO_UDP,
    ) -> None:
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.icmp4 = icmp4
        self.icmp6 = icmp6
        self.mib = mib
        self.mib6 = mib6
        self.ports = ports
        self.proto = proto
        self.lite = proto == PROTO_UDPLITE
        self.starved: UdpSock | None = None  # see hand_over
        ipv4.handlers[proto] = self.input
        if not self.lite:
            ipv4.record_handlers[proto] = self.input_record
        ipv6.handlers[proto] = self.input
        icmp4.err_handlers[proto] = self.icmp_error
        icmp6.err_handlers[proto] = self.icmp_error

    def socket(self, v6: bool) -> UdpSock:
        return UdpSock(self, v6)

    # -- the hand-over -------------------------------------------------------------
    # With threads, one interpreter runs at a time: a sender that fills a
    # socket's buffer while the reader waits for the GIL would, for the rest
    # of its switch interval (5 ms), send only into a full buffer, where two
    # CPUs would have run the reader beside it. So a datagram dropped at a
    # full buffer (counted, as Linux counts it) while a thread is in a
    # receive on that socket (waiting for data, the stack lock or the GIL)
    # marks the socket starved, and the sender, once its send is over and
    # the stack lock free, waits (releasing the GIL) until that reader has
    # taken a datagram, at most HAND_OVER_S. No rule changes: what arrives
    # at a full buffer is dropped; only who runs next does.
    def starve(self, s: UdpSock) -> None:
        """(Lock held.) ``s`` dropped a datagram while a thread was in a receive on it."""
        if self.starved is None and s.room is None:
            self.starved = s
            s.room = threading.Event()

    def hand_over(self) -> None:
        """(Lock not held.) Let the starved socket's reader run: see above."""
        s, self.starved = self.starved, None
        room = s.room if s is not None else None
        if room is not None:
            room.wait(HAND_OVER_S)

    # -- output --------------------------------------------------------------------
    def target(self, s: UdpSock, addr: bytes) -> bytes:
        """The IPv4 or IPv6 address a socket really sends to: a v4-mapped
        destination on a dual-stack socket means IPv4 (RFC 3493 3.7)."""
        four = v4_of(addr) if len(addr) == 16 else addr
        if s.v6 and len(addr) == 16:
            local_is_v4 = v4_of(s.local_addr) is not None
            if local_is_v4 and addr == V6_ANY:
                # Linux __ip6_datagram_connect "connect to self if not
                # specified": on a socket bound to a v4-mapped address, ::
                # means ::ffff:127.0.0.1.
                return V4_LOOPBACK
            if four is not None:
                if s.v6only or (s.local_addr != V6_ANY and not local_is_v4):
                    raise _err(errno.ENETUNREACH)
                return four
            if local_is_v4:
                # Bound (or connected) to a v4-mapped address, the socket
                # speaks IPv4 only: Linux says EAFNOSUPPORT for an IPv6 peer.
                raise _err(errno.EAFNOSUPPORT)
        return addr

    def route(self, s: UdpSock, addr: bytes) -> OutRoute:
        """The route and source for ``addr``, cached on the socket until the
        routing table or the socket's address changes."""
        gen = self.ipv4.routes.generation
        cached = s.route_cache
        if cached is not None and cached[0] == addr and cached[1] == gen \
                and cached[2] == s.local_addr:
            return cached[3]
        rt = self._route(s, addr)
        s.route_cache = (addr, gen, s.local_addr, rt)
        return rt

    def _route(self, s: UdpSock, addr: bytes) -> OutRoute:
        local = s.local_addr
        if len(addr) == 4:
            src = v4_of(local) if len(local) == 16 else local
            return self.ipv4.route_output(addr, None if src in (None, V4_ANY) else src)
        return self.ipv6.route_output(addr, None if local == V6_ANY else local)

    def check_output(self, s: UdpSock, n: int, addr: bytes) -> None:
        """What :meth:`output` checks before it sends (a corked datagram's
        first part): its length, the route, broadcast permission, the
        socket's port."""
        if s.v6:
            addr = self.target(s, addr)
        if n > (MAX_V4_PAYLOAD if len(addr) == 4 else MAX_V6_PAYLOAD):
            raise _err(errno.EMSGSIZE)
        if not s.bound:
            s.autobind()
        rt = self.route(s, addr)
        if (rt.broadcast or rt.dst == V4_LIMITED_BROADCAST) and not s.broadcast:
            raise _err(errno.EACCES)

    def output(self, s: UdpSock, data: bytes, addr: bytes, port: int,
               ttl: int | None = None, tclass: int | None = None, tos: int | None = None) -> int:
        if s.v6:
            addr = self.target(s, addr)
        v4 = len(addr) == 4
        mib = self.mib if v4 else self.mib6
        n = len(data)
        if n > (MAX_V4_PAYLOAD if v4 else MAX_V6_PAYLOAD):
            raise _err(errno.EMSGSIZE)
        if not s.bound:
            s.autobind()
        # UDP.route, inlined: the socket's cached route while it holds
        cached = s.route_cache
        if cached is not None and cached[0] == addr and cached[1] == self.ipv4.routes.generation \
                and cached[2] == s.local_addr:
            rt = cached[3]
        else:
            rt = self.route(s, addr)
        if rt.broadcast or rt.dst == V4_LIMITED_BROADCAST:
            if not s.broadcast:
                raise _err(errno.EACCES)
        elif v4 and not self.lite and not (s.tos if tos is None else tos):
            # An unobserved lo carries a datagram with TOS 0 as its record (the
            # ports and the payload itself: no bytes, no checksum), counted
            # as the bytes would be; False: it goes as bytes below.
            if type(data) is not bytes:
                data = bytes(data)
            if self.ipv4.output_record(rt, PROTO_UDP, 8 + n, s.ttl if ttl is None else ttl,
                                       (s.local_port, port, data), _record_bytes):
                mib["OutDatagrams"] += 1
                return n
        length = 8 + n
        proto = self.proto
        if self.lite:
            # udplite_sender_cscov: a coverage set below the length is what
            # the length field says (0: all of it); the checksum, never
            # offloaded, covers that much, with the whole length in the
            # pseudo-header.
            field, cscov = length, length
            if s.send_cc and s.pcslen < length:
                field, cscov = s.pcslen, s.pcslen or length
            head = (s.local_port << 48) | (port << 32) | (field << 16)
            initial = (pseudo_sum_v4 if v4 else pseudo_sum_v6)(rt.src, rt.dst, proto, length)
            raw = head.to_bytes(8, "big") + data
            head |= checksum(raw[:cscov], initial) or 0xFFFF
        else:
            head = (s.local_port << 48) | (port << 32) | (length << 16)
            if rt.needs_checksums:
                initial = (pseudo_sum_v4 if v4 else pseudo_sum_v6)(rt.src, rt.dst, proto, length)
                csum = checksum(head.to_bytes(8, "big") + data, initial) or 0xFFFF
                head |= csum
        segment = head.to_bytes(8, "big") + data
        if v4:
            self.ipv4.output(rt, proto, segment, ttl=s.ttl if ttl is None else ttl,
                             tos=s.tos if tos is None else tos)
        else:
            self.ipv6.output(rt, proto, segment,
                             hop_limit=s.hop_limit if ttl is None else ttl,
                             traffic_class=s.tclass if tclass is None else tclass)
        mib["OutDatagrams"] += 1
        return n

    # -- input ---------------------------------------------------------------------
    def input_record(self, rec: Record) -> None:
        """A datagram that crossed lo as its record (``output``'s): what
        :meth:`input` does with its bytes on lo (the header is sound by
        construction, lo verifies no checksum), for one unicast receiver.
        Anything else (no socket: ICMP port unreachable, quoting the bytes)
        goes the byte way."""
        sport, dport, data = rec.segment
        src = rec.src
        dst = rec.dst
        socks = self.ports.by_port.get(dport)
        s: UdpSock | None = None
        if dst[0] & 0xF0 == 0xE0:  # multicast: the byte way
            pass
        elif socks is not None and len(socks) == 1:  # _lookup of one socket, inlined
            one, = socks
            assert isinstance(one, UdpSock)
            if self._score(one, src, sport, dst) >= 0:
                s = one
        else:
            s = self._lookup(src, sport, dst, dport)
        if s is None:
            packet = rec.packet()
            self.input(Inbound(rec.iface, src, dst, rec.proto, rec.ttl, packet,
                               memoryview(packet)[20:]))
            return
        if s.v6:
            src = mapped(src)
            dst = mapped(dst)
        n = len(data)
        if not s.enqueue(Datagram(data, src, sport, dst, rec.ttl,
                                  _TRUESIZE.get(n) or _truesize(n), True, rec.iface.index)):
            mib = self.mib
            mib["RcvbufErrors"] += 1
            mib["InErrors"] += 1

    def input(self, pkt: Inbound) -> None:
        v4 = len(pkt.src) == 4
        mib = self.mib if v4 else self.mib6
        data = pkt.payload
        size = len(data)
        if size < 8:
            mib["InErrors"] += 1
            return
        sport, dport, length, csum = _UDP.unpack_from(data)
        cscov = 0  # UDP-Lite: the coverage when partial
        if self.lite:
            # udplite_checksum_init: the length is IP's; the field is the
            # coverage, 0 for all; a zero checksum is illegal.
            cscov, length = length, size
            if csum == 0 or (cscov and (cscov < 8 or cscov > size)):
                mib["InErrors"] += 1
                return
            if cscov == size:
                cscov = 0
        elif length < 8 or length > size:
            mib["InErrors"] += 1
            return
        if pkt.verify_checksums:
            if csum or not v4:  # IPv4 may omit it (0); IPv6 may not (RFC 8200 8.1)
                initial = (pseudo_sum_v4 if v4 else pseudo_sum_v6)(
                    pkt.src, pkt.dst, self.proto, length)
                if checksum(data[: cscov or length], initial) != 0:
                    mib["InCsumErrors"] += 1
                    mib["InErrors"] += 1
                    return
        payload = bytes(data[8:length])
        if pkt.broadcast or is_multicast(pkt.dst):
            targets = self._lookup_all(pkt.src, sport, pkt.dst, dport)
        else:
            one = self._lookup(pkt.src, sport, pkt.dst, dport)
            targets = [one] if one is not None else []
        if not targets:
            mib["NoPorts"] += 1
            if not pkt.broadcast:
                if v4:
                    self.icmp4.send_error(pkt.packet, pkt.iface, I.DEST_UNREACH,
                                          I.UNREACH_PORT, 0)
                else:
                    self.icmp6.send_error(pkt.packet, pkt.iface, I.V6_DEST_UNREACH,
                                          I.V6_UNREACH_PORT, 0)
            return
        size = _truesize(len(payload))
        packet = pkt.packet
        tclass = packet[1] if v4 else ((packet[0] & 0x0F) << 4) | (packet[1] >> 4)
        for s in targets:
            if cscov and s.recv_cc and (s.pcrlen == 0 or cscov < s.pcrlen):
                mib["InErrors"] += 1  # less coverage than the receiver insists on
                continue
            src = mapped(pkt.src) if (s.v6 and v4) else pkt.src
            dst = mapped(pkt.dst) if (s.v6 and v4) else pkt.dst
            if not s.enqueue(Datagram(payload, src, sport, dst, pkt.ttl, size, v4,
                                      pkt.iface.index, tclass)):
                mib["RcvbufErrors"] += 1
                mib["InErrors"] += 1

    def _score(self, s: UdpSock, src: bytes, sport: int, dst: bytes) -> int:
        """Linux compute_score(): -1 when ``s`` cannot take the datagram."""
        if s.closed:
            return -1
        v4 = len(dst) == 4
        local = s.local_addr
        score = 0
        if v4:
            if s.v6:
                if s.v6only:
                    return -1
                la = v4_of(local) if local != V6_ANY else V4_ANY
                if la is None:
                    return -1
                score = 1
            else:
                la = local
                score = 2
            if la != V4_ANY:
                if la != dst:
                    return -1
                score += 4
            if s.remote_addr is not None:
                ra = v4_of(s.remote_addr) if s.v6 else s.remote_addr
                if ra != src:
                    return -1
                score += 4
            if s.remote_port:  # Linux compute_score: a port of 0 matches any
                if s.remote_port != sport:
                    return -1
                score += 4
            return score
        if not s.v6:
            return -1
        if local != V6_ANY:
            if local != dst:
                return -1
            score += 4
        if s.remote_addr is not None:
            if s.remote_addr != src:
                return -1
            score += 4
        if s.remote_port:
            if s.remote_port != sport:
                return -1
            score += 4
        return score + 2

    def _lookup(self, src: bytes, sport: int, dst: bytes, dport: int) -> UdpSock | None:
        best: list[UdpSock] = []
        best_score = -1
        for s in self.ports.at(dport):
            assert isinstance(s, UdpSock)
            sc = self._score(s, src, sport, dst)
            if sc > best_score:
                best, best_score = [s], sc
            elif sc == best_score and sc >= 0:
                best.append(s)
        if not best or best_score < 0:
            return None
        if len(best) > 1:
            group = [s for s in best if s.reuseport]
            if len(group) == len(best):
                # SO_REUSEPORT spreads flows by a hash of the 4-tuple.
                key = src + sport.to_bytes(2, "big") + dst + dport.to_bytes(2, "big")
                return group[zlib.crc32(key) % len(group)]
            return best[-1]  # Linux: the most recently bound wins
        return best[0]

    def _lookup_all(self, src: bytes, sport: int, dst: bytes, dport: int) -> list[UdpSock]:
        """Broadcast and multicast go to every socket that matches (Linux
        __udp4_lib_mcast_deliver): wildcard binds and the broadcast address."""
        out = []
        for s in self.ports.at(dport):
            assert isinstance(s, UdpSock)
            if s.closed:
                continue
            la = s.local_addr
            if s.v6:
                if len(dst) == 16:
                    if la not in (V6_ANY, dst):
                        continue
                elif s.v6only or (la != V6_ANY and v4_of(la) != dst):
                    continue
            elif la not in (V4_ANY, dst):
                continue
            if s.remote_addr is not None:
                ra = v4_of(s.remote_addr) if s.v6 and len(src) == 4 else s.remote_addr
                if ra != src or (s.remote_port and s.remote_port != sport):
                    continue
            out.append(s)
        return out

    # -- ICMP errors ---------------------------------------------------------------
    def icmp_error(self, err: IcmpError) -> None:
        """Linux __udp4_lib_err: a hard error reaches a connected socket as
        so_error; an unconnected one hears nothing (no IP_RECVERR)."""
        t = err.transport
        if len(t) < 4:
            return
        sport = (t[0] << 8) | t[1]
        dport = (t[2] << 8) | t[3]
        # The quoted datagram was ours: its source is our socket, its destination the peer.
        s = self._lookup(err.dst, dport, err.src, sport)
        if s is None or s.remote_addr is None:
            return
        code = _icmp_errno(err)
        if code:
            s.so_error = code
            s.wake()


# Linux icmp_err_convert[] / icmpv6_err_convert(): the hard errors, which a
# connected UDP socket reports; soft ones (net or host unreachable, time
# exceeded, fragmentation needed) are not reported without IP_RECVERR.
_V4_HARD_UNREACH = {
    I.UNREACH_PROTOCOL: errno.ENOPROTOOPT, I.UNREACH_PORT: errno.ECONNREFUSED,
    5: errno.EOPNOTSUPP, 6: errno.ENETUNREACH, 7: errno.EHOSTDOWN, 8: errno.ENONET,
    9: errno.ENETUNREACH, 10: errno.EHOSTUNREACH, 13: errno.EHOSTUNREACH,
}
_V6_HARD_UNREACH = {1: errno.EACCES, I.V6_UNREACH_PORT: errno.ECONNREFUSED, 5: errno.EACCES,
                    6: errno.EACCES}


def _icmp_errno(err: IcmpError) -> int:
    if err.v6:
        if err.type == I.V6_DEST_UNREACH:
            return _V6_HARD_UNREACH.get(err.code, 0)
        return errno.EPROTO if err.type == I.V6_PARAM_PROBLEM else 0
    if err.type == I.DEST_UNREACH:
        return _V4_HARD_UNREACH.get(err.code, 0)
    return errno.EPROTO if err.type == I.PARAM_PROBLEM else 0
