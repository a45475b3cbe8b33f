"""TCP (RFC 9293): the protocol module of one stack — demultiplexing,
listeners, resets for closed ports, and the operations the socket layer
calls (connect, listen, accept, send, receive, shutdown, close).

Files: tcb.py (control block), input.py (segment arrival), output.py
(sending), timers.py, window.py (receive window and buffer), ack.py (when
to acknowledge), rack.py (RACK-TLP loss detection), congestion.py, sack.py,
listen.py, isn.py.
"""

from __future__ import annotations

import errno
import os
import random
import struct
from typing import Any

from ...clock import NS_PER_SEC, Clock
from ...ip.addr import V4_ANY, V6_ANY, is_multicast
from ...ip.ipv4 import IPv4
from ...ip.ipv6 import IPv6
from ...ip.packet import Inbound, OutRoute, Record
from ...ip.route import BROADCAST
from ...wire.checksum import checksum, pseudo_sum
from ...wire.errors import MalformedPacket
from ...wire.tcp import ACK, FIN, PROTO_TCP, RST, SYN
from ..icmp import IcmpError, ICMPv4, ICMPv6
from ..ports import PortTable, addresses_overlap, in_use, v4_of
from . import fastpath, timers
from . import input as _input
from .constants import (
    CAN_SEND_DATA,
    RETRIES2,
    RMEM_MAX,
    RTO_MAX,
    RTO_MIN,
    SOMAXCONN,
    SYN_LINEAR_TIMEOUTS,
    SYN_RETRIES,
    SYNACK_RETRIES,
    TIMEOUT_INIT,
    TIMEWAIT_LEN,
    URG_READ,
    URG_VALID,
    WMEM_MAX,
    State,
)
from .input import negotiate, segment_arrives
from .isn import (
    check_cookie,
    decode_ts_options,
    encode_ts_options,
    initial_sequence,
    make_cookie,
    port_offset,
    timestamp_offset,
)
from .listen import Listener
from .output import TS_LEN, send_rst, send_syn, send_synack, transmit
from .output import output as _output  # (not ``output``: the submodule's name)
from .segment import Segment, parse_segment
from .seq import unwrap, wire
from .sizing import sndbuf_expand, sync_mss
from .tcb import TCB
from .window import (
    clamp_for_locked_buffer,
    full_space,
    init_buffer_space,
    rcv_space_adjust,
    select_initial_window,
)

_HDR = struct.Struct("!HHIIHHHH")
# What on_state counts: Tcp CurrEstab's states, and those in which a closed
# socket's connection no longer counts as an orphan.
_CURR_ESTAB = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})
_NOT_ORPHANED = frozenset({State.TIME_WAIT, State.CLOSED, State.LISTEN})
# close(): the states it neither resets for too many orphans nor shuts down
_CLOSE_NO_OOM = frozenset({State.LISTEN, State.CLOSED, State.TIME_WAIT, State.SYN_SENT})
_CLOSE_SHUTS = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_RECV})


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class TCP:
    def __init__(self, ipv4: IPv4, ipv6: IPv6, icmp4: ICMPv4, icmp6: ICMPv6,
                 mib: dict[str, int], ext: dict[str, int], clock: Clock, rng: random.Random,
                 ports: PortTable) -> None:
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.mib = mib
        self.ext = ext
        self.clock = clock
        self.rng = rng
        self.ports = ports
        self.secret = rng.getrandbits(128).to_bytes(16, "big")
        self.conns: dict[tuple[bytes, int, bytes, int], TCB] = {}
        # sysctls, per stack (Linux names)
        self.timewait_ns = TIMEWAIT_LEN
        self.syn_retries = SYN_RETRIES
        self.synack_retries = SYNACK_RETRIES
        self.syn_linear_timeouts = SYN_LINEAR_TIMEOUTS
        self.retries2 = RETRIES2
        self.orphan_retries = 8  # tcp_orphan_retries = 0 means 8
        self.syncookies = True
        self.timestamps = True
        self.sack = True
        self.window_scaling = True
        self.reordering = 3
        self.early_retrans = True  # tcp_early_retrans = 3: tail loss probes
        self.somaxconn = SOMAXCONN
        self.slow_start_after_idle = True
        self.wmem_max = WMEM_MAX
        self.rmem_max = RMEM_MAX  # tcp_rmem[2]: how far DRS may grow a receive buffer
        self.rto_min = RTO_MIN
        self.congestion = "cubic"
        self.rfc1337 = False  # tcp_rfc1337: True ignores RSTs in TIME-WAIT (RFC 1337)
        # Per-stack bounds (Linux tcp_max_tw_buckets, tcp_max_orphans).
        self.max_tw_buckets = 262144
        self.max_orphans = 65536
        self.tw_count = 0  # connections in TIME_WAIT
        # port -> its listening blocks, in the port table's order (Linux keeps
        # listeners in a hash of their own, lhash2): a SYN's lookup then does
        # not walk the port's connections, which a busy server's TIME_WAITs
        # make thousands. Rebuilt by index_listeners whenever one starts or
        # stops listening.
        self.listeners: dict[int, list[TCB]] = {}
        self.orphans = 0  # closed by their application, still finishing
        ipv4.handlers[PROTO_TCP] = self.input
        ipv4.record_handlers[PROTO_TCP] = self.input_record
        ipv6.handlers[PROTO_TCP] = self.input
        icmp4.err_handlers[PROTO_TCP] = self.icmp_error
        icmp6.err_handlers[PROTO_TCP] = self.icmp_error

    # -- lifecycle of a control block ---------------------------------------------
    def new_tcb(self, v6: bool, congestion: str | None = None) -> TCB:
        """A fresh block with the stack's settings (``congestion``: another
        algorithm than the stack's, an accepted connection's listener's)."""
        tcb = TCB(self, v6, congestion or self.congestion)
        tcb.rto_min = self.rto_min
        return tcb

    def on_state(self, tcb: TCB) -> None:
        """Bookkeeping after a state change: Tcp CurrEstab counts
        ESTABLISHED and CLOSE-WAIT connections (RFC 4022 tcpCurrEstab)."""
        state = tcb.state
        counted = state in _CURR_ESTAB
        if counted != tcb.counted_estab:
            self.mib["CurrEstab"] += 1 if counted else -1
            tcb.counted_estab = counted
        tw = state == State.TIME_WAIT
        if tw != tcb.counted_tw:
            self.tw_count += 1 if tw else -1
            tcb.counted_tw = tw
        orphan = tcb.orphan and state not in _NOT_ORPHANED
        if orphan != tcb.counted_orphan:
            self.orphans += 1 if orphan else -1
            tcb.counted_orphan = orphan
        tcb.wake()

    def establish(self, tcb: TCB) -> bool:
        """SYN-SENT or SYN-RECEIVED becomes ESTABLISHED (False: the
        listener could not take it)."""
        tcb.state = State.ESTABLISHED
        self.on_state(tcb)
        sndbuf_expand(tcb)
        if tcb.snd_nxt < tcb.snd_una:
            tcb.snd_nxt = tcb.snd_una
        tcb.rcv_tstamp = self.clock.now_ns()
        if tcb.keepalive:
            timers.arm_keepalive(tcb)
        else:  # (arm_keepalive without SO_KEEPALIVE: the timer stops)
            timer = tcb.keepalive_timer
            if timer is not None and timer.active:
                timer.cancel()
        lst = tcb.listener
        if lst is not None:
            key = (tcb.remote_addr, tcb.remote_port, tcb.local_addr)
            lst.syn_queue.pop(key, None)
            if lst.tcb.state != State.LISTEN:
                self.abort(tcb)
                return False
            if len(lst.accept_queue) > lst.backlog:  # (accept_queue_full)
                # Linux drops the ACK (ListenOverflows) and the SYN-ACK will be resent.
                self.ext["ListenOverflows"] += 1
                self.ext["ListenDrops"] += 1
                tcb.state = State.SYN_RECV
                self.on_state(tcb)
                lst.syn_queue[key] = tcb
                return False
            lst.accept_queue.append(tcb)
            self.mib["PassiveOpens"] += 1
            lst.tcb.wake()
        if tcb.ts_ok:
            # Linux (tcp_rcv_synsent_state_process, tcp_create_openreq_child):
            # the segments we expect carry timestamps, so the advertised MSS
            # we size windows with loses the option's 12 bytes.
            tcb.advmss -= TS_LEN
        init_buffer_space(tcb)
        tcb.wake()
        return True

    def destroy(self, tcb: TCB) -> None:
        """The connection is gone (CLOSED): forget it everywhere."""
        tcb.state = State.CLOSED
        self.on_state(tcb)
        tcb.cancel_timers()
        key = (tcb.local_addr, tcb.local_port, tcb.remote_addr, tcb.remote_port)  # (TCB.key)
        if self.conns.get(key) is tcb:
            del self.conns[key]
        lst = tcb.listener
        if lst is not None:
            lst.syn_queue.pop((tcb.remote_addr, tcb.remote_port, tcb.local_addr), None)
        # Linux tcp_set_state(CLOSE) -> inet_put_port: the port goes back
        # unless the application bound it (SOCK_BINDPORT_LOCK).
        if tcb.bound and (tcb.orphan or tcb.owner is None or tcb.autobound):
            self.ports.unbind(tcb)
            tcb.bound = False
            if tcb.listening:  # (destroyed without closing: it leaves the index too)
                self.index_listeners(tcb.local_port)
        tcb.wake()

    def fail(self, tcb: TCB, code: int, *, reset: bool = False) -> None:
        """The connection dies with an error the application will see."""
        if tcb.state == State.SYN_SENT:
            self.mib["AttemptFails"] += 1
        elif tcb.state in (State.ESTABLISHED, State.CLOSE_WAIT) and reset:
            self.mib["EstabResets"] += 1
        if code == errno.ETIMEDOUT:
            self.ext["TCPAbortOnTimeout"] += 1
        tcb.so_error = code
        tcb.reset_seen = reset
        self.destroy(tcb)

    def reset_received(self, tcb: TCB) -> None:
        """An acceptable RST (Linux tcp_reset()): the error by state."""
        state = tcb.state
        if state == State.SYN_RECV and tcb.listener is not None:
            self.drop_embryo(tcb)
            return
        if state == State.TIME_WAIT:
            self.destroy(tcb)  # tcp_rfc1337 = 0: an RST ends TIME_WAIT
            return
        code = {State.SYN_SENT: errno.ECONNREFUSED, State.CLOSE_WAIT: errno.EPIPE}.get(
            state, errno.ECONNRESET)
        if state in (State.LAST_ACK, State.CLOSING) or tcb.orphan:
            self.destroy(tcb)
            return
        self.fail(tcb, code, reset=True)

    def drop_embryo(self, tcb: TCB) -> None:
        self.destroy(tcb)

    def abort(self, tcb: TCB) -> None:
        """Send RST and drop the connection (RFC 9293 3.10.4 ABORT)."""
        if tcb.state in (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2, State.CLOSE_WAIT,
                         State.SYN_RECV):
            send_rst(tcb)
            if tcb.state in (State.ESTABLISHED, State.CLOSE_WAIT):
                self.mib["EstabResets"] += 1
        self.destroy(tcb)

    # -- MSS ------------------------------------------------------------------------
    def advmss_for(self, rt: OutRoute) -> int:
        """Linux ipv4_default_advmss / ip6_default_advmss: MTU less headers,
        capped so the IP datagram fits in 65535 bytes (65495 on lo, v4)."""
        mtu = rt.iface.mtu
        if len(rt.dst) == 4:
            return min(mtu - 40, 65535 - 40)
        return min(mtu - 60, 65535 - 20)

    def set_mss(self, tcb: TCB) -> None:
        """Send MSS (RFC 9293 3.7.1, RFC 6691): the peer's, our route's and
        TCP_MAXSEG's minimum, less the timestamp option bytes."""
        assert tcb.route is not None
        rt = tcb.route
        mtu = rt.iface.mtu  # (advmss_for)
        mss = min(tcb.peer_mss, min(mtu - 40, 65535 - 40) if len(rt.dst) == 4
                  else min(mtu - 60, 65535 - 20))
        if tcb.mss_clamp:
            mss = min(mss, tcb.mss_clamp)
        if tcb.ts_ok:
            mss -= 12
        tcb.mss_base = max(mss, 48)
        tcb.mss = tcb.mss_base
        tcb.rcv_mss = min(tcb.advmss, 536)
        sync_mss(tcb)

    # -- output helper --------------------------------------------------------------
    def ip_output(self, rt: OutRoute, segment: bytes | tuple[bytes | bytearray | memoryview, ...],
                  ttl: int | None, tos: int = 0, tclass: int = 0) -> None:
        """Hand a segment (bytes, or parts IP joins with its header) to IP,
        with the connection's TOS (IPv4) or traffic class (IPv6)."""
        if isinstance(segment, tuple):
            if len(rt.dst) == 4 and not tos \
                    and self.ipv4.output_parts(rt, PROTO_TCP, segment, ttl):
                return
            segment = b"".join(segment)
        if len(rt.dst) == 4:
            self.ipv4.output(rt, PROTO_TCP, segment, ttl=ttl, tos=tos)
        else:
            self.ipv6.output(rt, PROTO_TCP, segment, hop_limit=ttl, traffic_class=tclass)

    def reset_reply(self, rt: OutRoute | None, seg: Segment, lport: int, rport: int,
                    src: bytes | None = None, dst: bytes | None = None) -> None:
        """RST for a segment that has no place here (RFC 9293 3.10.7.1)."""
        if seg.flags & RST:
            return
        if rt is None:
            assert src is not None and dst is not None
            try:
                rt = (self.ipv4 if len(dst) == 4 else self.ipv6).route_output(dst, src)
            except OSError:
                return
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seg_len = len(seg.payload) + (1 if seg.flags & SYN else 0) + \
                (1 if seg.flags & FIN else 0)
            seq, ack, flags = 0, (seg.seq + seg_len) % (1 << 32), RST | ACK
        head = _HDR.pack(lport, rport, seq, ack, (5 << 12) | flags, 0, 0, 0)
        if rt.needs_checksums:
            csum = checksum(head, pseudo_sum(rt.src, rt.dst, PROTO_TCP, 20))
            head = head[:16] + csum.to_bytes(2, "big") + head[18:]
        self.mib["OutSegs"] += 1
        self.mib["OutRsts"] += 1
        self.ip_output(rt, head, None)

    # -- input ------------------------------------------------------------------------
    def input(self, pkt: Inbound) -> None:
        mib = self.mib
        data = pkt.payload
        # Linux tcp_v4_rcv(): counted even if it's bad; a runt or a header
        # longer than the packet is discarded without an error counter; a
        # data offset below 5 is InErrs; then the checksum.
        mib["InSegs"] += 1
        if len(data) < 20:
            return
        doff = data[12] >> 4
        if doff < 5:
            mib["InErrs"] += 1
            return
        if doff * 4 > len(data):
            return
        if pkt.verify_checksums:
            if checksum(data, pseudo_sum(pkt.src, pkt.dst, PROTO_TCP, len(data))) != 0:
                mib["InCsumErrors"] += 1
                mib["InErrs"] += 1
                return
        try:
            seg = parse_segment(data)
        except MalformedPacket:
            mib["InErrs"] += 1
            return
        if pkt.broadcast or is_multicast(pkt.dst):
            return  # TCP is unicast only (RFC 9293 3.9.1.3 / Linux drops them)
        tcb = self.conns.get((pkt.dst, seg.dport, pkt.src, seg.sport))
        if tcb is not None:
            segment_arrives(tcb, seg)
            return
        self._demux(pkt, seg)

    def input_record(self, rec: Record) -> None:
        """A segment that crossed an unobserved lo as its record (IP has
        counted it): what :meth:`input` does with its bytes, without the
        checks that hold by construction (length, data offset, checksum
        offloaded on lo, options: timestamps at most; a local unicast
        destination). No connection: the byte way from the demultiplexer."""
        self.mib["InSegs"] += 1
        seg: Segment = rec.segment
        tcb = self.conns.get((rec.dst, seg.dport, rec.src, seg.sport))
        if tcb is not None:
            # (segment_arrives' header prediction first, without its frame)
            if tcb.state == State.ESTABLISHED and fastpath.enabled:
                tcb.segs_in += 1
                # (module attributes: tests replace _predicted)
                if not _input._predicted(tcb, seg):
                    _input._synchronized(tcb, seg)
                return
            segment_arrives(tcb, seg)
            return
        if fastpath.enabled:
            # A listener's SYN (or what a closed port answers) from the
            # record: the demultiplexer reads only the addresses, the
            # interface and the segment (no quote of the bytes is made).
            self._demux(Inbound(rec.iface, rec.src, rec.dst, rec.proto, rec.ttl, b"",
                                seg.payload), seg)
            return
        packet = rec.packet()
        self._demux(Inbound(rec.iface, rec.src, rec.dst, rec.proto, rec.ttl, packet,
                            memoryview(packet)[20:]), seg)

    def _demux(self, pkt: Inbound, seg: Segment) -> None:
        """No connection: a listener's, or RFC 9293 3.10.7.1's reset."""
        lst = self._listener(pkt.dst, seg.dport, len(pkt.src) == 16)
        if lst is not None:
            self._listen_input(lst, pkt, seg)
            return
        # RFC 9293 3.10.7.1: CLOSED. Answer anything but an RST with one.
        self.reset_reply(None, seg, seg.dport, seg.sport, src=pkt.dst, dst=pkt.src)

    def _listener(self, addr: bytes, port: int, v6: bool) -> Listener | None:
        best: list[TCB] = []
        best_score = -1
        for b in self.listeners.get(port, ()):
            if not b.listening or b.state != State.LISTEN:
                continue
            la = b.bind_addr
            score = -1
            if v6:
                if b.v6 and v4_of(la) is None:
                    score = 1 if la == V6_ANY else (3 if la == addr else -1)
            else:
                if not b.v6:
                    score = 2 if la == V4_ANY else (4 if la == addr else -1)
                elif not b.v6only:
                    four = v4_of(la)
                    if la == V6_ANY:
                        score = 1
                    elif four == addr:
                        score = 3
            if score > best_score:
                best, best_score = [b], score
            elif score == best_score and score >= 0:
                best.append(b)
        if best_score < 0:
            return None
        chosen = best[0]
        if len(best) > 1:
            chosen = best[self.rng.randrange(len(best))]  # SO_REUSEPORT spreads connections
        lst = chosen._listen_state  # (listen_state: set for every listening block)
        assert lst is not None
        return lst

    def _listen_input(self, lst: Listener, pkt: Inbound, seg: Segment,
                      iss: int | None = None) -> None:
        """RFC 9293 3.10.7.2 and RFC 4987 (cookies). ``iss``: the ISN to use
        (a SYN reopening TIME-WAIT), else RFC 6528's."""
        flags = seg.flags
        key = (pkt.src, seg.sport, pkt.dst)
        child = lst.syn_queue.get(key)
        if child is not None:
            segment_arrives(child, seg)
            return
        if flags & RST:
            return
        if flags & ACK:
            # Linux checks a cookie only after a recent overflow
            # (tcp_synq_no_recent_overflow: two minutes).
            recent = lst.last_overflow_ns is not None and \
                self.clock.now_ns() - lst.last_overflow_ns < 120 * NS_PER_SEC
            if self.syncookies and recent and not flags & SYN and \
                    self._cookie_ack(lst, pkt, seg):
                return
            self.reset_reply(None, seg, seg.dport, seg.sport, src=pkt.dst, dst=pkt.src)
            return
        if not flags & SYN:
            return
        ltcb = lst.tcb
        if len(lst.accept_queue) > lst.backlog:  # (accept_queue_full)
            self.ext["ListenOverflows"] += 1
            self.ext["ListenDrops"] += 1
            return
        try:
            rt = (self.ipv4 if len(pkt.src) == 4 else self.ipv6).route_output(pkt.src, pkt.dst)
        except OSError:
            return
        if len(lst.syn_queue) >= max(lst.backlog, 1):  # (syn_queue_full)
            if not self.syncookies:
                self.ext["ListenDrops"] += 1
                return
            self._send_cookie(lst, pkt, seg, rt)
            return
        child = self._child(ltcb, pkt, seg, rt)
        child.listener = lst
        now = self.clock.now_ns()
        if iss is None:
            iss = initial_sequence(self.secret, now, pkt.dst, seg.dport, pkt.src, seg.sport)
        child.iss = child.snd_una = iss
        child.snd_nxt = child.snd_max = child.snd_base = iss + 1
        child.state = State.SYN_RECV
        child.syn_start = now
        child.syn_timed = True
        lst.syn_queue[key] = child
        self.conns[(pkt.dst, seg.dport, pkt.src, seg.sport)] = child  # (TCB.key)
        send_synack(child, child.ts_ok, child.sack_ok, child.wscale_ok)
        timers._arm(child, "rto_timer", TIMEOUT_INIT, timers.on_rto)

    def _child(self, ltcb: TCB, pkt: Inbound, seg: Segment, rt: OutRoute) -> TCB:
        child = self.new_tcb(ltcb.v6, ltcb.cc.name)  # the listener's algorithm
        child.local_addr, child.local_port = pkt.dst, seg.dport
        child.remote_addr, child.remote_port = pkt.src, seg.sport
        child.bind_addr = ltcb.bind_addr
        child.reuseaddr = ltcb.reuseaddr
        child.route = rt
        # What the listener's options say (inherited, as Linux's sk_clone_lock copies them).
        child.rcvbuf, child.sndbuf = ltcb.rcvbuf, ltcb.sndbuf
        child.rcvbuf_locked, child.sndbuf_locked = ltcb.rcvbuf_locked, ltcb.sndbuf_locked
        child.nodelay = ltcb.nodelay
        child.keepalive, child.keepidle = ltcb.keepalive, ltcb.keepidle
        child.keepintvl, child.keepcnt = ltcb.keepintvl, ltcb.keepcnt
        child.linger, child.mss_clamp = ltcb.linger, ltcb.mss_clamp
        child.ttl, child.urg_inline = ltcb.ttl, ltcb.urg_inline
        child.tos, child.tclass = ltcb.tos, ltcb.tclass
        # (advmss_for)
        mtu = rt.iface.mtu
        advmss = min(mtu - 40, 65535 - 40) if len(rt.dst) == 4 else min(mtu - 60, 65535 - 20)
        if child.mss_clamp:
            advmss = min(advmss, child.mss_clamp)
        child.advmss = advmss
        child.ts_offset = timestamp_offset(self.secret, pkt.dst, pkt.src)
        child.rcv_nxt = child.rcv_wup = unwrap(seg.seq, 0) + 1
        child.irs = child.rcv_nxt - 1
        negotiate(child, seg)
        # Linux tcp_openreq_init_rwin: the listener's buffer and clamp, the
        # MSS less the timestamp option, the shift only if the peer scales.
        space = full_space(ltcb)
        child.window_clamp = ltcb.window_clamp
        if ltcb.rcvbuf_locked and (child.window_clamp > space or child.window_clamp == 0):
            child.window_clamp = space
        select_initial_window(child, space, child.advmss - (TS_LEN if child.ts_ok else 0),
                              child.wscale_ok)
        return child

    # -- SYN cookies (RFC 4987 3.6) ----------------------------------------------------
    def _send_cookie(self, lst: Listener, pkt: Inbound, seg: Segment, rt: OutRoute) -> None:
        ltcb = lst.tcb
        peer_mss = seg.mss or 536
        iss, mss = make_cookie(self.secret, self.clock.now_ns(), pkt.dst, seg.dport, pkt.src,
                               seg.sport, seg.seq, min(peer_mss, self.advmss_for(rt)))
        tmp = self._child(ltcb, pkt, seg, rt)
        tmp.iss = iss
        tmp.advmss = mss
        tsval = None
        if tmp.ts_ok:
            from .output import ts_now

            tsval = encode_ts_options(ts_now(tmp), seg.wscale if seg.wscale is not None else None,
                                      seg.sack_ok)
        self.ext["SyncookiesSent"] += 1
        lst.last_overflow_ns = self.clock.now_ns()
        send_synack(tmp, tmp.ts_ok, tmp.sack_ok, tmp.wscale_ok, tsval=tsval)

    def _cookie_ack(self, lst: Listener, pkt: Inbound, seg: Segment) -> bool:
        cookie = (seg.ack - 1) % (1 << 32)
        peer_isn = (seg.seq - 1) % (1 << 32)
        mss = check_cookie(self.secret, self.clock.now_ns(), pkt.dst, seg.dport, pkt.src,
                           seg.sport, peer_isn, cookie)
        if mss is None:
            self.ext["SyncookiesFailed"] += 1
            return False
        self.ext["SyncookiesRecv"] += 1
        if lst.accept_queue_full:
            self.ext["ListenOverflows"] += 1
            return True
        try:
            rt = (self.ipv4 if len(pkt.src) == 4 else self.ipv6).route_output(pkt.src, pkt.dst)
        except OSError:
            return True
        # Rebuild what the SYN said from the cookie (and TSecr's low bits).
        synth = Segment(seg.sport, seg.dport, peer_isn, 0, SYN, seg.window, seg.payload[:0],
                        mss=mss)
        if seg.tsval is not None and self.timestamps:
            ws, sack = decode_ts_options(seg.tsecr)
            synth.tsval, synth.tsecr = seg.tsval, 0
            synth.wscale, synth.sack_ok = ws, sack
        child = self._child(lst.tcb, pkt, synth, rt)
        child.advmss = mss
        child.iss = cookie
        child.snd_una = cookie + 1
        child.snd_nxt = child.snd_max = child.snd_base = cookie + 1
        child.snd_wnd = seg.window << child.snd_wscale
        # _child chose the window our cookie SYN-ACK offered (Linux
        # cookie_v4_check -> tcp_openreq_init_rwin).
        child.rcv_wup = child.rcv_nxt
        child.snd_wl1 = unwrap(seg.seq, child.rcv_nxt)
        child.snd_wl2 = child.snd_una
        child.listener = lst
        self.conns[child.key] = child
        self.establish(child)
        if child.state == State.ESTABLISHED:
            segment_arrives(child, seg)  # any data it carried
        return True

    # -- TIME_WAIT reopen (RFC 9293 3.10.7.4 note, Linux tcp_timewait_state_process) ---
    def reopen_time_wait(self, tcb: TCB, seg: Segment) -> bool:
        """A new SYN hits a connection in TIME-WAIT (input.py decided it is
        new): the listener, if any, takes it with ISN = the old SND.NXT +
        65537. False if nobody listens."""
        lst = self._listener(tcb.local_addr, tcb.local_port, len(tcb.local_addr) == 16)
        if lst is None:
            return False
        iss = wire(tcb.snd_nxt + 65537) or 1  # Linux: tw_snd_nxt + 65535 + 2, never 0
        self.destroy(tcb)
        fake = Inbound(tcb.route.iface if tcb.route else self.ipv4.loopback, tcb.remote_addr,
                       tcb.local_addr, PROTO_TCP, 64, b"", seg.payload)
        self._listen_input(lst, fake, seg, iss=iss)
        return True

    # -- ICMP ----------------------------------------------------------------------------
    def icmp_error(self, err: IcmpError) -> None:
        """RFC 1122 4.2.3.9 / RFC 5927: hard errors abort a connection that is
        still opening; established ones only remember them (soft errors)."""
        t = err.transport
        if len(t) < 8:
            return
        sport, dport, seqno = struct.unpack_from("!HHI", t)
        tcb = self.conns.get((err.src, sport, err.dst, dport))
        if tcb is None:
            return
        seq = unwrap(seqno, tcb.snd_una)
        if not tcb.snd_una <= seq <= tcb.snd_max:
            self.ext["OutOfWindowIcmps"] += 1
            return
        code = 0
        if err.v6:
            if err.type == 1:
                code = errno.ECONNREFUSED if err.code == 4 else errno.EHOSTUNREACH
        elif err.type == 3:
            code = {2: errno.ENOPROTOOPT, 3: errno.ECONNREFUSED}.get(err.code, errno.EHOSTUNREACH)
        if not code:
            return
        if tcb.state in (State.SYN_SENT, State.SYN_RECV) and code in (errno.ECONNREFUSED,
                                                                    errno.ENOPROTOOPT):
            self.fail(tcb, code)
        else:
            tcb.soft_error = code

    # -- socket-facing operations ---------------------------------------------------------
    def bind(self, tcb: TCB, addr: bytes, port: int) -> None:
        tcb.bind_addr = addr
        tcb.local_addr = addr
        self.ports.bind(tcb, port)
        tcb.bound = True

    def listen(self, tcb: TCB, backlog: int) -> None:
        if tcb.state not in (State.CLOSED, State.LISTEN):
            raise _err(errno.EINVAL)
        if not tcb.bound:
            self.bind(tcb, tcb.bind_addr or (V6_ANY if tcb.v6 else V4_ANY), 0)
        backlog = max(0, min(backlog, self.somaxconn))
        if tcb.state == State.LISTEN:
            tcb.listen_state.backlog = backlog
            return
        # A listener may not share its port with anything bound without both reuse flags.
        for other in self.ports.at(tcb.local_port):
            assert isinstance(other, TCB)
            if other is tcb or not addresses_overlap(tcb, other):
                continue
            if other.listening and not (tcb.reuseport and other.reuseport):
                raise in_use()
        tcb.listening = True
        tcb.listen_state = Listener(tcb, backlog)
        tcb.state = State.LISTEN
        self.index_listeners(tcb.local_port)

    def index_listeners(self, port: int) -> None:
        """Make ``listeners[port]`` the port's listening blocks again, in
        the port table's order (a tie between SO_REUSEPORT listeners is
        drawn by position, as before)."""
        found = [b for b in self.ports.at(port) if isinstance(b, TCB) and b.listening]
        if found:
            self.listeners[port] = found
        else:
            self.listeners.pop(port, None)

    def connect(self, tcb: TCB, dst: bytes, port: int) -> None:
        """Active open (RFC 9293 3.10.1): route, source, port, ISN, SYN."""
        src = None
        if tcb.bound and tcb.bind_addr not in (V4_ANY, V6_ANY):
            src = v4_of(tcb.bind_addr) if len(dst) == 4 else tcb.bind_addr
        ip = self.ipv4 if len(dst) == 4 else self.ipv6
        rt = ip.route_output(dst, src)
        if rt.broadcast or is_multicast(rt.dst) or rt.route.kind == BROADCAST:
            raise _err(errno.ENETUNREACH)
        tcb.route = rt
        tcb.local_addr = rt.src
        tcb.remote_addr = rt.dst
        tcb.remote_port = port
        if not tcb.bound:
            self._autobind(tcb, rt.src, rt.dst, port)
        else:
            key = (rt.src, tcb.local_port, rt.dst, port)
            old = self.conns.get(key)
            if old is not None:
                if old.state == State.TIME_WAIT:
                    self.destroy(old)
                else:
                    raise _err(errno.EADDRNOTAVAIL)
        now = self.clock.now_ns()
        iss = tcb.iss = initial_sequence(self.secret, now, rt.src, tcb.local_port, rt.dst, port)
        tcb.snd_una = iss
        tcb.snd_nxt = tcb.snd_max = tcb.snd_base = iss + 1
        # (advmss_for)
        mtu = rt.iface.mtu
        advmss = min(mtu - 40, 65535 - 40) if len(rt.dst) == 4 else min(mtu - 60, 65535 - 20)
        if tcb.mss_clamp:
            advmss = min(advmss, tcb.mss_clamp)
        tcb.advmss = advmss
        # Linux tcp_connect_init: the SYN's window and our shift.
        tcb.window_clamp = 0
        if tcb.rcvbuf_locked:
            clamp_for_locked_buffer(tcb)
        select_initial_window(tcb, full_space(tcb), advmss, self.window_scaling)
        tcb.ts_offset = timestamp_offset(self.secret, rt.src, rt.dst)
        tcb.state = State.SYN_SENT
        tcb.syn_start = now
        tcb.syn_timed = True
        tcb.retransmits = 0
        self.conns[(tcb.local_addr, tcb.local_port, tcb.remote_addr, port)] = tcb  # (TCB.key)
        self.mib["ActiveOpens"] += 1
        send_syn(tcb)
        timers._arm(tcb, "rto_timer", TIMEOUT_INIT, timers.on_rto)

    def _autobind(self, tcb: TCB, src: bytes, dst: bytes, dport: int) -> None:
        """RFC 6056 3.3.4 (Algorithm 4, double hash) as Linux's
        __inet_hash_connect: a port is fine if no bound socket conflicts and
        the four-tuple is unused; even ports first. TIME_WAIT of our own
        loopback traffic may be reused (tcp_tw_reuse = 2) after a second."""
        ports = self.ports
        span = ports.high - ports.low + 1
        offset = port_offset(self.secret, src, dst, dport)
        offset += self.rng.randrange(span)
        now = self.clock.now_ns()
        tcb.bind_addr = V6_ANY if tcb.v6 else V4_ANY
        for parity in (0, 1):
            for i in range(span):
                port = ports.low + (offset + i) % span
                if port % 2 != parity:
                    continue
                old = self.conns.get((src, port, dst, dport))
                if old is not None:
                    if old.state != State.TIME_WAIT or not tcb.route \
                            or not tcb.route.iface.is_loopback \
                            or now - old.ts_recent_stamp < NS_PER_SEC:
                        continue
                    self.destroy(old)
                clash = False
                for b in ports.at(port):
                    assert isinstance(b, TCB)
                    if b.autobound and b.state != State.LISTEN:
                        continue  # other connections may share the port, tuples differ
                    if addresses_overlap(tcb, b):
                        clash = True
                        break
                if clash:
                    continue
                tcb.local_port = port
                ports.add(tcb, port)
                tcb.bound = True
                tcb.autobound = True
                return
        raise _err(errno.EADDRNOTAVAIL)

    def accept(self, tcb: TCB) -> TCB | None:
        lst = tcb.listen_state
        child = lst.pop()
        if child is not None:
            self.ports.add(child, child.local_port)
            child.bound = True
        return child

    def send(self, tcb: TCB, data: memoryview, urgent: bool = False) -> int:
        """Queue as much of ``data`` as the send buffer takes; send. With
        ``urgent`` (MSG_OOB) the urgent pointer moves to the end of what was
        queued (Linux tcp_mark_urg: after the last urgent byte, RFC 6093)."""
        room = tcb.sndbuf - tcb.sndq.size
        if room <= 0:
            return 0
        chunk = data[:room]
        if not tcb.sndq.size and tcb.snd_nxt == tcb.snd_max and self.slow_start_after_idle \
                and tcb.last_send_ns and \
                self.clock.now_ns() - tcb.last_send_ns > min(RTO_MAX, tcb.rto << tcb.backoff):
            # (timers.current_rto)
            # RFC 5681 4.1 / Linux tcp_slow_start_after_idle: restart window.
            tcb.cc.cwnd = min(tcb.cc.cwnd, 10)
        tcb.sndq.append(chunk)  # immutable bytes by reference (bufq.py)
        if urgent and len(chunk):
            tcb.snd_up = tcb.data_end
        _output(tcb)
        return len(chunk)

    def recv(self, tcb: TCB, n: int, peek: bool) -> bytes:
        if tcb.urg_data:
            return self._recv_urgent_aware(tcb, n, peek)
        data = tcb.rcvq.read(n, peek)
        if data and not peek:
            self._after_read(tcb, len(data))
        return data

    def recv_into(self, tcb: TCB, view: memoryview, peek: bool) -> int:
        """Copy up to len(view) queued bytes into ``view`` (one copy)."""
        if tcb.urg_data:
            data = self._recv_urgent_aware(tcb, len(view), peek)
            view[:len(data)] = data
            return len(data)
        n = tcb.rcvq.read_into(view, peek)
        if not peek and n:
            self._after_read(tcb, n)
        return n

    # -- urgent data, the reading side (Linux tcp_recvmsg_locked, tcp_recv_urg) ----
    def urgent_skip(self, tcb: TCB) -> None:
        """A read that starts on the urgent byte kept out of line steps over
        it (tcp_recvmsg_locked's urg_hole), and passing the mark ends the
        urgent data: a byte recv(MSG_OOB) did not take is lost."""
        if tcb.urg_data and not tcb.urg_inline and tcb.rcvq and \
                tcb.urg_seq == tcb.copied_seq:
            tcb.rcvq.drop(1)
            tcb.urg_data = 0
            self._after_read(tcb, 1)

    def recv_avail(self, tcb: TCB) -> int:
        """Bytes the next read may return (what poll's POLLIN means, Linux
        tcp_poll/tcp_stream_is_readable): a read stops in front of the mark,
        and one starting on an out-of-line urgent byte does not count it."""
        n = tcb.rcvq.size
        if not tcb.urg_data or not n:
            return n
        offset = tcb.urg_seq - tcb.copied_seq
        if offset == 0:
            return n if tcb.urg_inline else n - 1
        return offset if 0 < offset < n else n

    def at_mark(self, tcb: TCB) -> bool:
        """sockatmark(3), Linux tcp_ioctl SIOCATMARK: urgent data is pending
        and the next byte to read is the urgent one."""
        return bool(tcb.urg_data) and tcb.urg_seq == tcb.copied_seq

    def _recv_urgent_aware(self, tcb: TCB, n: int, peek: bool) -> bytes:
        if not peek:
            self.urgent_skip(tcb)
        start = 0
        if peek and tcb.urg_data and not tcb.urg_inline and tcb.urg_seq == tcb.copied_seq:
            start = 1  # MSG_PEEK steps over it without consuming anything
        count = min(n, self.recv_avail(tcb))
        q = tcb.rcvq
        data = q.copy(start, count)
        if not peek and count:
            q.drop(count)
            if tcb.urg_data and tcb.copied_seq > tcb.urg_seq:
                tcb.urg_data = 0  # read past the mark (inline): it is over
            self._after_read(tcb, count)
        return data

    def recv_urgent(self, tcb: TCB, peek: bool) -> int | None:
        """recv(MSG_OOB), Linux tcp_recv_urg: the urgent byte once (then
        EINVAL); EINVAL with none or with SO_OOBINLINE; None (end of stream)
        after the peer's FIN or SHUT_RD; EAGAIN while the byte the pointer
        announced has not arrived: this call never waits."""
        urg = tcb.urg_data
        if tcb.urg_inline or not urg or urg == URG_READ:
            raise _err(errno.EINVAL)
        closed = tcb.state in (State.CLOSED, State.TIME_WAIT)
        if closed and not tcb.fin_received:
            raise _err(errno.ENOTCONN)
        if urg & URG_VALID:
            if not peek:
                tcb.urg_data = URG_READ
            return urg & 0xFF
        if closed or tcb.fin_received or tcb.shut_rd:
            return None
        raise _err(errno.EAGAIN)

    def _after_read(self, tcb: TCB, n: int) -> None:
        """Linux tcp_recvmsg's end: the segments read are freed, DRS measures
        (tcp_rcv_space_adjust), and an ACK may announce the freed space
        (tcp_cleanup_rbuf)."""
        # (window.release_read, TCB.copied_seq inline: every read comes here)
        skbs = tcb.rcvq_skbs
        copied = tcb.rcv_nxt - tcb.rcvq.size - (1 if tcb.fin_received else 0)
        while skbs and skbs[0][0] <= copied:
            tcb.rmem_alloc -= skbs.popleft()[1]
        # (rcv_space_adjust's first tests: at most once per receiver RTT)
        if tcb.rcv_rtt_us and \
                self.clock.now_ns() // 1000 - tcb.rcvq_space_time >= tcb.rcv_rtt_us >> 3:
            rcv_space_adjust(tcb)
        _input.window_update_after_read(tcb, n)  # (Linux tcp_cleanup_rbuf)

    def shutdown_write(self, tcb: TCB) -> None:
        """Queue our FIN after the data (RFC 9293 3.10.4 CLOSE, half)."""
        state = tcb.state
        if tcb.fin_queued:
            return
        if state == State.ESTABLISHED:
            tcb.state = State.FIN_WAIT1
        elif state == State.CLOSE_WAIT:
            tcb.state = State.LAST_ACK
        elif state in (State.SYN_SENT,):
            self.destroy(tcb)
            return
        elif state == State.SYN_RECV:
            tcb.state = State.FIN_WAIT1
        else:
            return
        tcb.fin_queued = True
        self.on_state(tcb)
        _output(tcb)

    def close(self, tcb: TCB) -> None:
        """The application is done with the socket (Linux tcp_close())."""
        state = tcb.state
        too_many = self.orphans >= self.max_orphans
        tcb.orphan = True
        self.on_state(tcb)
        if too_many and state not in _CLOSE_NO_OOM:
            # Linux tcp_check_oom(): too many orphans, reset this one.
            self.ext["TCPAbortOnMemory"] += 1
            self.abort(tcb)
            return
        if state == State.LISTEN:
            lst = tcb.listen_state
            tcb.state = State.CLOSED
            tcb.listening = False
            self.index_listeners(tcb.local_port)
            # Linux inet_csk_listen_stop(): connections nobody accepted are
            # reset; embryos still in the SYN queue just go away.
            for child in list(lst.accept_queue):
                child.listener = None
                child.orphan = True
                self.abort(child)
            for child in list(lst.syn_queue.values()):
                child.listener = None
                child.orphan = True
                self.destroy(child)
            lst.accept_queue.clear()
            lst.syn_queue.clear()
            self.destroy(tcb)
            return
        if state in (State.CLOSED, State.SYN_SENT):
            self.destroy(tcb)
            return
        if tcb.rcvq.size and state not in (State.TIME_WAIT,):  # (ByteQueue.__bool__)
            # RFC 2525 / RFC 9293: unread data means the peer must know: RST.
            self.ext["TCPAbortOnClose"] += 1
            self.abort(tcb)
            return
        if tcb.linger == (1, 0) or (tcb.linger[0] and tcb.linger[1] == 0):
            self.ext["TCPAbortOnLinger"] += 1
            self.abort(tcb)
            return
        if state in _CLOSE_SHUTS:
            self.shutdown_write(tcb)
        elif state == State.FIN_WAIT2:
            timers.arm_finwait2(tcb)
        if tcb.state == State.CLOSED:
            self.destroy(tcb)

    def info(self, tcb: TCB) -> dict[str, Any]:
        """What Linux's struct tcp_info holds that matters (times in microseconds)."""
        return {
            "state": int(tcb.state), "ca_state": 3 if tcb.in_recovery else 0,
            "retransmits": tcb.retransmits, "backoff": tcb.backoff,
            "options": (1 if tcb.ts_ok else 0) | (2 if tcb.sack_ok else 0)
            | (4 if tcb.wscale_ok else 0),
            "snd_wscale": tcb.snd_wscale, "rcv_wscale": tcb.rcv_wscale,
            "rto": timers.current_rto(tcb) // 1000, "snd_mss": tcb.mss,
            "rcv_mss": tcb.rcv_mss, "unacked": self._segments(tcb, tcb.snd_max - tcb.snd_una),
            "sacked": self._segments(tcb, tcb.scoreboard.sacked_bytes()), "lost": tcb.lost,
            "retrans": 0, "rtt": tcb.srtt // 1000, "rttvar": tcb.rttvar // 1000,
            "snd_ssthresh": tcb.cc.ssthresh, "snd_cwnd": tcb.cc.cwnd, "advmss": tcb.advmss,
            "rcv_space": tcb.rcvq_space, "rcv_ssthresh": tcb.rcv_ssthresh,
            "total_retrans": tcb.total_retrans,
            "bytes_acked": tcb.bytes_acked, "bytes_received": tcb.bytes_received,
            "segs_out": tcb.segs_out, "segs_in": tcb.segs_in, "snd_wnd": tcb.snd_wnd,
            "rcv_wnd": tcb.rcv_wnd, "congestion": tcb.cc.name,
        }

    @staticmethod
    def _segments(tcb: TCB, nbytes: int) -> int:
        return (nbytes + max(tcb.mss, 1) - 1) // max(tcb.mss, 1)


def can_send(tcb: TCB) -> bool:
    return tcb.state in CAN_SEND_DATA


__all__ = ["TCP", "TCB", "State", "can_send", "transmit"]
