"""The TCP control block (RFC 9293 3.3.1): one connection's state.

Sequence numbers are unbounded integers (see seq.py). The send queue holds
every byte from snd_una on (sent-but-unacknowledged, then unsent); the
receive queue holds in-order bytes the application has not read yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...clock import Timer
from ...ip.packet import OutRoute
from .bufq import ByteQueue
from .congestion import ALGORITHMS, Reno
from .constants import (
    INIT_CWND,
    RMEM_DEFAULT,
    RTO_MIN,
    TIMEOUT_INIT,
    WMEM_DEFAULT,
    State,
)
from .sack import Scoreboard
from .window import DEFAULT_SCALING_RATIO, NO_SKBS

if TYPE_CHECKING:
    from . import TCP
    from .listen import Listener


def _nothing() -> None:
    pass


class TCB:
    # Every field, declared: no per-connection __dict__ (memory, and each
    # attribute read on the hot path is a slot).
    __slots__ = ("tcp", "v6", "state", "local_addr", "local_port", "remote_addr", "remote_port",
                 "bind_addr", "v6only", "reuseaddr", "reuseport", "bound", "listening", "iss",
                 "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2", "max_window",
                 "sndq", "snd_base", "fin_queued", "fin_sent", "snd_sml", "irs", "rcv_nxt",
                 "rcv_wup", "rcv_wnd", "rcvq", "window_clamp", "rcv_ssthresh", "scaling_ratio",
                 "rmem_alloc", "rcvq_skbs", "rcvq_space", "rcvq_space_seq", "rcvq_space_time",
                 "rcv_rtt_us", "rcv_rtt_seq", "rcv_rtt_time", "rcv_rtt_last_tsecr", "ooo",
                 "ooo_bytes", "last_ooo", "ooo_fin", "rcv_mss", "snd_up", "urg_seq", "urg_data",
                 "urg_inline", "ack_now", "fin_received", "mss_clamp", "peer_mss", "advmss",
                 "mss", "mss_base", "snd_wscale", "rcv_wscale", "wscale_ok", "ts_ok", "ts_recent",
                 "ts_recent_stamp", "ts_offset", "sack_ok", "scoreboard", "srtt", "rttvar", "rto",
                 "rtt_seq", "rtt_start", "backoff", "retrans_stamp", "retransmits",
                 "total_retrans", "syn_start", "syn_timed", "cc", "dupacks", "in_recovery",
                 "recover", "sent", "rack_xmit", "rack_end", "rack_rtt", "rack_advanced",
                 "min_rtt", "tlp_high_seq", "tlp_retrans", "xmit_kind", "loss_high", "prior_cwnd",
                 "prr_delivered", "prr_out", "last_send_ns", "lost", "quickacks", "ack_pending",
                 "ack_pushed", "ato", "lrcvtime", "pingpong", "last_seg_size", "delack_timeout",
                 "last_invalid_ack_ns", "rcvbuf", "sndbuf", "rcvbuf_locked", "sndbuf_locked",
                 "nodelay", "keepalive", "keepidle", "keepintvl", "keepcnt", "keep_probes",
                 "rcv_tstamp", "linger", "shut_rd", "shut_wr", "orphan", "so_error", "reset_seen",
                 "error_reported", "bytes_acked", "bytes_received", "segs_in", "segs_out",
                 "listener", "accept_pending", "wake", "owner", "rto_timer", "delack_timer",
                 "persist_timer", "keepalive_timer", "timewait_timer", "finwait2_timer",
                 "rto_min", "route", "ttl", "tos", "tclass", "autobound", "counted_estab",
                 "counted_tw",
                 "counted_orphan", "soft_error", "_listen_state")

    def __init__(self, tcp: TCP, v6: bool, congestion: str = "cubic") -> None:
        self.tcp = tcp
        self.v6 = v6  # the socket's family (AF_INET6 may carry IPv4)
        self.state = State.CLOSED
        # the four-tuple: wire addresses (4 or 16 bytes, never v4-mapped)
        self.local_addr = b""
        self.local_port = 0
        self.remote_addr = b""
        self.remote_port = 0
        # binding (what the port table sees: as the socket bound it)
        self.bind_addr = b""
        self.v6only = False
        self.reuseaddr = False
        self.reuseport = False
        self.bound = False
        self.listening = False
        # send sequence space (RFC 9293 3.3.1)
        self.iss = 0
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_max = 0  # highest sequence sent (snd_nxt rewinds on RTO)
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_window = 0  # largest window the peer offered (RFC 5961 5.2)
        self.sndq = ByteQueue()  # unacknowledged and unsent data, starting at snd_base
        self.snd_base = 0  # sequence number of sndq[0]
        self.fin_queued = False  # the application closed its sending side
        self.fin_sent = False
        self.snd_sml = 0  # end of the last small segment sent (Minshall's Nagle)
        # receive sequence space
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_wup = 0  # rcv_nxt when the window was last advertised
        self.rcv_wnd = 0  # last window advertised (bytes)
        self.rcvq = ByteQueue()
        # receive buffer and window (Linux tcp_sock; window.py)
        self.window_clamp = 0  # the largest window we will offer
        self.rcv_ssthresh = 0  # the window's ceiling while it ramps up
        self.scaling_ratio = DEFAULT_SCALING_RATIO  # payload per truesize, << 8
        self.rmem_alloc = 0  # truesize of the queued segments (in order and not)
        # (end_seq, truesize) in order; NO_SKBS until the first segment (window.charge)
        self.rcvq_skbs: deque[tuple[int, int]] = NO_SKBS
        self.rcvq_space = 0  # DRS: bytes read in the last receiver RTT
        self.rcvq_space_seq = 0
        self.rcvq_space_time = 0  # microseconds
        self.rcv_rtt_us = 0  # receiver's RTT estimate, times 8 (tcp_rcv_rtt_est)
        self.rcv_rtt_seq = 0
        self.rcv_rtt_time = 0  # microseconds, 0 = no measure started
        self.rcv_rtt_last_tsecr = 0
        self.ooo: list[tuple[int, bytes]] = []  # out-of-order segments, sorted
        self.ooo_bytes = 0
        self.last_ooo: tuple[int, int] | None = None  # for the first SACK block
        self.ooo_fin: int | None = None  # sequence of a FIN that arrived out of order
        self.rcv_mss = 536  # largest segment seen (Linux icsk_ack.rcv_mss)
        # urgent data (RFC 9293 3.8.5, RFC 6093), as Linux's tcp_sock keeps it
        self.snd_up = 0  # sequence after our last urgent byte (tcp_mark_urg)
        self.urg_seq = 0  # sequence of the peer's urgent byte (tcp_check_urg)
        self.urg_data = 0  # 0 or a URG_* state, the byte in the low eight bits
        self.urg_inline = False  # SO_OOBINLINE: the urgent byte stays in the stream
        self.ack_now = False
        self.fin_received = False
        # options
        self.mss_clamp = 0  # TCP_MAXSEG set by the user
        self.peer_mss = 536
        self.advmss = 536  # what we announce
        self.mss = 536  # send MSS: header options excluded (Linux mss_cache)
        self.mss_base = 536  # before the half-window bound (see sync_mss)
        self.snd_wscale = 0  # shift the peer applies to its windows
        self.rcv_wscale = 0  # shift we apply to ours
        self.wscale_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_stamp = 0  # ns when ts_recent was taken
        self.ts_offset = 0  # random per connection (tcp_timestamps = 1)
        self.sack_ok = False
        self.scoreboard = Scoreboard()
        # RTT and RTO (RFC 6298)
        self.srtt = 0  # ns; 0 = no sample yet
        self.rttvar = 0
        self.rto = TIMEOUT_INIT
        self.rtt_seq: int | None = None  # Karn: the sequence being timed
        self.rtt_start = 0
        self.backoff = 0
        self.retrans_stamp = 0  # ns of the first retransmission of snd_una
        self.retransmits = 0  # consecutive timeouts (tcp_info retransmits)
        self.total_retrans = 0
        self.syn_start = 0  # ns the first SYN left
        self.syn_timed = False  # syn_start holds a time (Karn: SYN not retransmitted)
        # congestion control and recovery (RFC 5681, 6582; RACK-TLP and PRR below)
        self.cc: Reno = ALGORITHMS[congestion](INIT_CWND)
        self.dupacks = 0
        self.in_recovery = False
        self.recover = 0
        # RACK-TLP (RFC 8985; rack.py)
        self.sent: list[list[int]] = []  # [start, end, xmit ns, flags] from SND.UNA on
        self.rack_xmit = 0  # send time of the most recently sent delivered segment
        self.rack_end = 0  # and its end
        self.rack_rtt = 0  # its RTT, ns
        self.rack_advanced = False
        self.min_rtt = 1 << 62  # ns (Linux tcp_min_rtt)
        self.tlp_high_seq = 0  # SND.NXT when the outstanding probe left; 0 = none
        self.tlp_retrans = False  # that probe was a retransmission
        self.xmit_kind = 0  # what the retransmission timer is for: rack.RTO, TLP, REO
        self.loss_high = 0  # SND.MAX at the last RTO: below it, Linux's CA_Loss state
        # Proportional Rate Reduction in SACK recovery (RFC 6937, tcp_cwnd_reduction)
        self.prior_cwnd = 0
        self.prr_delivered = 0
        self.prr_out = 0
        self.last_send_ns = 0  # for restart after idle
        self.lost = 0  # tcp_info lost (segments)
        # delayed ACK (Linux inet_connection_sock icsk_ack; ack.py)
        self.quickacks = 0  # quick ACKs left (icsk_ack.quick)
        self.ack_pending = False  # an ACK is owed (ICSK_ACK_SCHED)
        self.ack_pushed = 0  # ack.PUSHED | ack.PUSHED2
        self.ato = 0  # delayed-ACK timeout, jiffies; 0 until data arrive
        self.lrcvtime = 0  # jiffies of the last data received
        self.pingpong = 0  # interactive: replies carry the ACKs
        self.last_seg_size = 0
        self.delack_timeout = 0  # jiffies the delayed-ACK timer is due
        self.last_invalid_ack_ns = -(1 << 62)
        # application-facing
        self.rcvbuf = RMEM_DEFAULT
        self.sndbuf = WMEM_DEFAULT
        self.rcvbuf_locked = False
        self.sndbuf_locked = False
        self.nodelay = False
        self.keepalive = False
        self.keepidle = 0
        self.keepintvl = 0
        self.keepcnt = 0
        self.keep_probes = 0  # unanswered keepalive or zero-window probes
        self.rcv_tstamp = 0  # ns of the last acceptable ACK (Linux tp->rcv_tstamp)
        self.linger: tuple[int, int] = (0, 0)
        self.shut_rd = False
        self.shut_wr = False
        self.orphan = False  # closed by the application
        self.so_error = 0
        self.reset_seen = False  # an RST ended it: the next send says ECONNRESET, then EPIPE
        self.error_reported = False
        self.bytes_acked = 0
        self.bytes_received = 0
        self.segs_in = 0
        self.segs_out = 0
        self.listener: Listener | None = None  # the listener an embryo belongs to
        self.accept_pending = False
        self.wake: Callable[[], None] = _nothing
        self.owner: Any = None  # the socket object
        # timers (created on first use)
        self.rto_timer: Timer | None = None
        self.delack_timer: Timer | None = None
        self.persist_timer: Timer | None = None
        self.keepalive_timer: Timer | None = None
        self.timewait_timer: Timer | None = None
        self.finwait2_timer: Timer | None = None
        self.rto_min = RTO_MIN
        self.route: OutRoute | None = None
        self.ttl: int | None = None
        # What the IP header carries: IP_TOS (IPv4, a v6 socket's mapped
        # traffic too) and IPV6_TCLASS (IPv6), ECN bits clear (inet->tos,
        # np->tclass).
        self.tos = 0
        self.tclass = 0
        self.autobound = False
        self.counted_estab = False  # counted in Tcp CurrEstab
        self.counted_tw = False  # counted in TCP.tw_count
        self.counted_orphan = False  # counted in TCP.orphans
        self.soft_error = 0  # last ICMP soft error (RFC 1122 4.2.3.9)
        self._listen_state: Listener | None = None

    # -- derived -------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Bytes sent and not acknowledged."""
        return self.snd_nxt - self.snd_una

    @property
    def data_end(self) -> int:
        """Sequence number after the last byte the application queued."""
        return self.snd_base + self.sndq.size

    @property
    def copied_seq(self) -> int:
        """Sequence of the next byte the application will read (Linux copied_seq)."""
        return self.rcv_nxt - self.rcvq.size - (1 if self.fin_received else 0)

    @property
    def rcv_space(self) -> int:
        """Free receive-buffer space: what the window may offer."""
        return max(0, self.rcvbuf - self.rcvq.size - self.ooo_bytes)

    @property
    def key(self) -> tuple[bytes, int, bytes, int]:
        return (self.local_addr, self.local_port, self.remote_addr, self.remote_port)

    @property
    def listen_state(self) -> Listener:
        assert self._listen_state is not None, "not a listening socket"
        return self._listen_state

    @listen_state.setter
    def listen_state(self, value: Listener) -> None:
        self._listen_state = value

    def set_congestion(self, name: str) -> None:
        cls = ALGORITHMS[name]
        old = self.cc
        cc = cls(old.cwnd)
        cc.ssthresh = old.ssthresh
        self.cc = cc

    def cancel_timers(self) -> None:
        """Stop every timer and let go of them: each one's callback holds
        this block, a cycle the garbage collector would otherwise have to
        find for every connection that ends (a timer armed again later is
        made anew)."""
        for t in (self.rto_timer, self.delack_timer, self.persist_timer, self.keepalive_timer,
                  self.timewait_timer, self.finwait2_timer):
            if t is not None:
                t.cancel()
        self.rto_timer = self.delack_timer = self.persist_timer = None
        self.keepalive_timer = self.timewait_timer = self.finwait2_timer = None
