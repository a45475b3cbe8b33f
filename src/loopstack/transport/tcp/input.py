"""Segment arrival (RFC 9293 3.10.7) for SYN-SENT, the synchronized states
and TIME-WAIT, with RFC 5961 (challenge ACKs, ACK validity), RFC 7323
(PAWS, timestamps, window scaling), RFC 2018 (SACK), RFC 5681/6582 (fast
retransmit and NewReno recovery without SACK), RACK-TLP and PRR with it
(RFC 8985, RFC 6937; rack.py), urgent data (RFC 6093), and Linux's
receive-window (window.py) and ACK (ack.py) policies."""

from __future__ import annotations

import errno
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

from ...wire.tcp import ACK, FIN, PSH, RST, SYN, URG
from . import fastpath, rack
from .ack import (
    ATO_MIN,
    DELACK_MAX,
    HZ,
    JIFFY_NS,
    MSS_DEFAULT,
    PINGPONG_THRESH,
    PUSHED,
    PUSHED2,
    ack_snd_check,
    data_received,
    enter_quickack_mode,
    incr_quickack,
    on_delack,
    small_segment,
)
from .ack import MIN_MSS as ACK_MIN_MSS
from .constants import (
    CAN_RECEIVE_DATA,
    INVALID_RATELIMIT,
    MAX_QUICKACKS,
    PAWS_MSL,
    PAWS_WINDOW,
    PAWS_WRAP,
    RTO_MAX,
    SYN_SENT_RETRY,
    TIMEOUT_FALLBACK,
    TIMEOUT_INIT,
    URG_NOTYET,
    URG_VALID,
    State,
)
from .output import output, retransmit_range, send_ack, send_synack, transmit, ts_now
from .rack import EVER, SACKED, TIMEOUT_MIN_NS, TLP
from .rack import JIFFY_NS as RACK_JIFFY_NS
from .rack import RTO as XMIT_RTO
from .segment import Segment
from .seq import HALF, unwrap
from .sizing import sndbuf_expand, sync_mss
from .timers import (
    arm_finwait2,
    arm_keepalive,
    enter_time_wait,
    on_rto,
    rearm_syn,
    restart_time_wait,
    rtt_sample,
    set_xmit_timer,
    stop_persist,
)
from .window import (
    NO_SKBS,
    SKB_OVERHEAD,
    charge,
    compute_window,
    grow_window,
    measure_rcv_mss,
    no_scaling,
    rcv_rtt_measure,
    rcv_rtt_measure_ts,
    rcv_rtt_update,
    release_read,
    skbs,
    truesize,
)

if TYPE_CHECKING:
    from .tcb import TCB

# The states in which our FIN may be what an ACK acknowledges.
_FIN_SENT_STATES = frozenset({State.FIN_WAIT1, State.CLOSING, State.LAST_ACK})


def _ts_before(a: int, b: int) -> bool:
    return ((a - b) & 0xFFFFFFFF) > 0x7FFFFFFF


def _count(tcb: TCB, counter: str) -> None:
    ext = tcb.tcp.ext
    ext[counter] = ext.get(counter, 0) + 1


def _paws_check(tcb: TCB, tsval: int, window: int) -> bool:
    """Linux tcp_paws_check (RFC 7323 5.3): TSval is acceptable if it is at
    most ``window`` ticks behind TS.Recent, or TS.Recent is too old to
    compare with (TCP_PAWS_WRAP seconds, RFC 7323 5.5), or is zero (some
    stacks put 0 in their SYN)."""
    behind = (tcb.ts_recent - tsval) & 0xFFFFFFFF
    if behind >= 1 << 31:
        behind -= 1 << 32
    if behind <= window:
        return True
    now_s = tcb.tcp.clock.now_ns() // 1_000_000_000
    if now_s - tcb.ts_recent_stamp // 1_000_000_000 >= PAWS_WRAP:
        return True
    return not tcb.ts_recent


def _paws_reject(tcb: TCB, tsval: int, rst: bool) -> bool:
    """Linux tcp_paws_reject (SYN-RECEIVED and TIME-WAIT): no tolerance, and
    an RST passes once TS.Recent is TCP_PAWS_MSL seconds old."""
    if _paws_check(tcb, tsval, 0):
        return False
    now_s = tcb.tcp.clock.now_ns() // 1_000_000_000
    return not (rst and now_s - tcb.ts_recent_stamp // 1_000_000_000 >= PAWS_MSL)


def _disordered_ack(tcb: TCB, seg: Segment, seq: int) -> str | None:
    """Linux tcp_disordered_ack_check ("PAWS is broken wrt. pure ACKs"): a
    reordered duplicate ACK changes nothing, so one whose TSval is behind by
    less than a replay window (RTO x 1200 Hz, the fastest TSval clock Linux
    expects) passes PAWS. None if it passes; "old" for a pure ACK below
    RCV.NXT (dropped without an answer); else "paws"."""
    if not seg.flags & ACK or seg.payload or seg.flags & (SYN | FIN):
        return "paws"
    if seq != tcb.rcv_nxt:
        return "old" if seq < tcb.rcv_nxt else "paws"
    if unwrap(seg.ack, tcb.snd_una) != tcb.snd_una:
        return "paws"
    window = seg.window << tcb.snd_wscale
    if seq > tcb.snd_wl1 or (seq == tcb.snd_wl1 and (window > tcb.snd_wnd or not window)):
        return "paws"  # it would update the window (tcp_may_update_window)
    behind = (tcb.ts_recent - (seg.tsval or 0)) & 0xFFFFFFFF
    if behind >= 1 << 31 or behind > tcb.rto * 1200 // 1_000_000_000:
        return "paws"
    return None


def _rate_limited(tcb: TCB, counter: str) -> bool:
    """tcp_invalid_ratelimit: at most one such ACK per 500 ms per connection."""
    now = tcb.tcp.clock.now_ns()
    if now - tcb.last_invalid_ack_ns < INVALID_RATELIMIT:
        ext = tcb.tcp.ext
        ext[counter] = ext.get(counter, 0) + 1
        return True
    tcb.last_invalid_ack_ns = now
    return False


def challenge_ack(tcb: TCB) -> None:
    """RFC 5961 3.2 / 4.2: answer a suspicious RST or SYN with an ACK."""
    if _rate_limited(tcb, "TCPACKSkippedChallenge"):
        return
    tcb.tcp.ext["TCPChallengeACK"] += 1
    send_ack(tcb)


def negotiate(tcb: TCB, seg: Segment) -> None:
    """Take the peer's SYN options (RFC 9293 3.7.1, RFC 7323, RFC 2018)."""
    tcp = tcb.tcp
    tcb.peer_mss = seg.mss if seg.mss else 536
    tcb.wscale_ok = seg.wscale is not None and tcp.window_scaling
    if tcb.wscale_ok:
        tcb.snd_wscale = min(seg.wscale or 0, 14)
    else:
        tcb.snd_wscale = 0
        tcb.rcv_wscale = 0
        no_scaling(tcb)
    tcb.sack_ok = seg.sack_ok and tcp.sack
    tcb.ts_ok = seg.tsval is not None and tcp.timestamps
    if tcb.ts_ok and seg.tsval is not None:
        tcb.ts_recent = seg.tsval
        tcb.ts_recent_stamp = tcp.clock.now_ns()
    tcp.set_mss(tcb)


def segment_arrives(tcb: TCB, seg: Segment) -> None:
    tcb.segs_in += 1
    state = tcb.state
    # (_predicted declines before it changes anything: the state read stays true)
    if state == State.ESTABLISHED and fastpath.enabled and _predicted(tcb, seg):
        return
    if state == State.SYN_SENT:
        _syn_sent(tcb, seg)
    elif state == State.TIME_WAIT:
        _time_wait(tcb, seg)
    else:
        _synchronized(tcb, seg)


# -- header prediction ------------------------------------------------------------------
def _predicted(tcb: TCB, seg: Segment) -> bool:
    """Header prediction (Van Jacobson; Linux tcp_rcv_established's fast
    path) for ESTABLISHED: a segment with ACK (PSH allowed) and no other
    control bit, at RCV.NXT, with a timestamp not older than TS.Recent, no
    SACK blocks, that acknowledges something new or carries data inside the
    window, while nothing is pending that the general path would look at
    (out-of-order data, recovery, urgent data). Every check of RFC 9293
    3.10.7.4 then passes: this does what _synchronized does for such a
    segment, in the same order, without asking again. False (nothing done):
    the general path decides."""
    if seg.flags & ~PSH != ACK or seg.sack or tcb.ooo or tcb.ooo_fin is not None \
            or tcb.in_recovery or tcb.urg_data:
        return False
    seq = tcb.rcv_nxt
    if seg.seq != seq & 0xFFFFFFFF:
        return False
    tsval = seg.tsval
    ts_ok = tcb.ts_ok
    if ts_ok and (tsval is None or 0 < (tcb.ts_recent - tsval) & 0xFFFFFFFF < 0x80000000):
        return False  # no timestamp, or one behind TS.Recent: PAWS decides (RFC 7323 5.3)
    snd_una = tcb.snd_una
    ack = snd_una + ((seg.ack - snd_una + HALF) & 0xFFFFFFFF) - HALF  # (seq.unwrap)
    if ack < snd_una or ack > tcb.snd_max:
        return False
    data = seg.payload
    n = len(data)
    if n:
        if seq + n > tcb.rcv_wup + tcb.rcv_wnd:
            return False  # beyond the window (or a zero window): trimmed or dropped
    elif ack == snd_una:
        return False  # a duplicate ACK or a window update
    tcp = tcb.tcp
    now = tcp.clock.now_ns()  # one clock read for the segment
    # Fifth check (_process_ack, without SACK blocks or a duplicate).
    tcb.keep_probes = 0
    tcb.rcv_tstamp = now
    window = seg.window << tcb.snd_wscale
    acked = ack > snd_una
    if acked:
        _predicted_ack(tcb, seg, ack, now)
    # (_ack_tail with no duplicate, no SACK news, no recovery: the window
    # update, a loss probe's outcome, the timers; _update_window inline, as
    # every predicted segment runs it)
    if tcb.snd_wl1 < seq or (tcb.snd_wl1 == seq and tcb.snd_wl2 <= ack):
        if window != tcb.snd_wnd:
            tcb.snd_wnd = window
        tcb.snd_wl1 = seq
        tcb.snd_wl2 = ack
        if window > tcb.max_window:
            tcb.max_window = window
            sync_mss(tcb)
        if window:
            if tcb.persist_timer is not None and tcb.persist_timer.active:
                stop_persist(tcb)
                tcb.backoff = 0
    if tcb.tlp_high_seq:
        rack.process_tlp_ack(tcb, ack, acked)
    if acked:
        _predicted_xmit_timer(tcb, now)
        # (sizing.sndbuf_expand) Linux grows the send buffer with the window.
        # (at wmem_max already, it stays: the test below is skipped)
        if not tcb.sndbuf_locked and tcb.sndbuf != tcp.wmem_max:
            per_mss = 1 << (max(tcb.mss_base, tcb.mss_clamp) + 640 - 1).bit_length()
            want = 2 * max(tcb.cc.cwnd, 10, tcp.reordering + 1) * (per_mss + 256)
            if want > tcb.sndbuf:
                tcb.sndbuf = min(want, tcp.wmem_max)
        if not n:
            tcb.wake()
        # (With data, the one wake-up after them tells of both: nothing in
        # between looks at the socket, and a waiter runs only once the
        # segment is done.)
    # RFC 7323 4.3 (TSval is not behind TS.Recent: tcp_replace_ts_recent's test passes).
    if ts_ok and tsval is not None and seq <= tcb.rcv_wup:
        tcb.ts_recent = tsval
        tcb.ts_recent_stamp = now
    # Seventh: the text.
    if n:
        _predicted_data(tcb, seg, seq, data, n, now, acked)
    # (output's first test: nothing queued beyond what is sent, no FIN)
    if tcb.snd_nxt < tcb.snd_base + tcb.sndq.size or tcb.fin_queued:
        output(tcb)
    if tcb.ack_pending and tcb.state != State.CLOSED:
        # (ack_snd_check, ack.in_quickack_mode inline)
        if tcb.ack_now or (tcb.quickacks > 0 and tcb.pingpong < PINGPONG_THRESH) or (
                tcb.rcv_nxt - tcb.rcv_wup > tcb.rcv_mss
                and (not tcb.rcvq.size or compute_window(tcb) >= tcb.rcv_wnd)):
            send_ack(tcb)
        else:
            _predicted_delayed_ack(tcb, now)
    tcb.ack_now = False
    return True


def _predicted_ack(tcb: TCB, seg: Segment, ack: int, now: int) -> None:
    """_new_ack outside recovery, RACK's on_cumulative_ack and advance
    inline (header prediction: ``now`` is the segment's clock read)."""
    snd_una = tcb.snd_una
    acked = ack - snd_una
    # (rack.on_cumulative_ack, rack.advance)
    sent = tcb.sent
    k = 0
    for e in sent:
        if e[1] > ack:
            break
        flags = e[3]
        if not flags & SACKED:
            xmit = e[2]
            rtt = now - xmit
            if not (flags & EVER and rtt < tcb.min_rtt):
                tcb.rack_advanced = True
                tcb.rack_rtt = rtt
                if xmit > tcb.rack_xmit or (xmit == tcb.rack_xmit and e[1] > tcb.rack_end):
                    tcb.rack_xmit = xmit
                    tcb.rack_end = e[1]
        k += 1
    if k:
        del sent[:k]
    if sent and sent[0][0] < ack:
        sent[0][0] = ack  # tcp_trim_head
    snd_base = tcb.snd_base
    data_acked = min(ack, snd_base + tcb.sndq.size) - snd_base
    if data_acked > 0:
        tcb.sndq.drop(data_acked)
        tcb.snd_base = snd_base + data_acked
    tcb.snd_una = ack
    if tcb.snd_nxt < ack:
        tcb.snd_nxt = ack
    tcb.bytes_acked += acked
    # RTT (RFC 7323 4.1 with timestamps; else Karn's timed segment).
    if tcb.ts_ok and seg.tsecr:
        rtt_ms = (((now // 1_000_000 + tcb.ts_offset) & 0xFFFFFFFF) - seg.tsecr) & 0xFFFFFFFF
        if rtt_ms < 0x7FFFFFFF and tcb.retransmits == 0:
            rtt_sample(tcb, rtt_ms * 1_000_000)
    elif tcb.rtt_seq is not None and ack >= tcb.rtt_seq:
        if tcb.retransmits == 0:
            rtt_sample(tcb, now - tcb.rtt_start)
        tcb.rtt_seq = None
    tcb.backoff = 0
    tcb.retransmits = 0
    tcb.retrans_stamp = 0
    if tcb.scoreboard.ranges:
        tcb.scoreboard.advance(ack)
    mss = tcb.mss
    if mss < 1:
        mss = 1
    cc = tcb.cc
    # (slow start's test first: the cheaper one)
    if cc.cwnd < cc.ssthresh or cc.cwnd * mss <= tcb.snd_max - ack + acked:
        cc.on_ack(max(1, (acked + mss - 1) // mss), now, tcb.srtt)
    tcb.lost = 0
    tcb.dupacks = 0


def _predicted_xmit_timer(tcb: TCB, now: int) -> None:
    """timers.set_xmit_timer after an ACK of new data (a loss probe as
    rack.schedule_loss_probe(tcb, True) decides, else restart_rto), the
    timer armed inline."""
    sent = tcb.sent
    # (sent first: after an ACK of everything, the common case, it is empty)
    if sent and tcb.sack_ok and not tcb.in_recovery and tcb.snd_una >= tcb.loss_high \
            and tcb.tcp.early_retrans:
        srtt = tcb.srtt
        if srtt:
            pto = 2 * srtt + (tcb.rto_min if len(sent) == 1 else TIMEOUT_MIN_NS)
            pto = -(-pto // RACK_JIFFY_NS) * RACK_JIFFY_NS  # (rack._jiffies_ceil)
        else:
            pto = TIMEOUT_INIT
        if 0 < tcb.rto < pto:
            pto = tcb.rto
        tcb.xmit_kind = TLP
    else:
        tcb.xmit_kind = XMIT_RTO
        if tcb.snd_nxt > tcb.snd_una or tcb.snd_max > tcb.snd_una:
            pto = min(RTO_MAX, tcb.rto << tcb.backoff)  # (timers.current_rto)
        else:
            timer = tcb.rto_timer
            if timer is not None and timer.active:
                timer.active = False  # (Timer.cancel)
            return
    timer = tcb.rto_timer
    if timer is None:
        tcb.rto_timer = tcb.tcp.clock.call_at(now + pto, partial(on_rto, tcb))
    else:
        timer.reschedule(now + pto)


# (constants of _predicted_data's tests, folded once)
_MSS_DEFAULT_20 = MSS_DEFAULT + 20
_ACK_MIN_MSS_20 = ACK_MIN_MSS + 20
_FIN_URG_SYN_PSH = FIN | URG | SYN | PSH
_HALF_ATO_MIN = ATO_MIN // 2


def _predicted_data(tcb: TCB, seg: Segment, seq: int, data: memoryview, n: int,
                    now: int, acked: bool) -> None:
    """_receive for in-order data inside the window with nothing out of
    order (header prediction), the receive window's and the ACK policy's
    bookkeeping inline (window.rcv_rtt_measure_ts, charge, rcv_rtt_measure;
    ack.small_segment, data_received). ``acked``: the segment acknowledged
    data, and the wake-up that tells of it is this one's."""
    tsecr = seg.tsecr
    if tcb.ts_ok and seg.tsval is not None and tsecr and tsecr != tcb.rcv_rtt_last_tsecr:
        tcb.rcv_rtt_last_tsecr = tsecr
        if n >= tcb.rcv_mss:
            delta_ms = (((now // 1_000_000 + tcb.ts_offset) & 0xFFFFFFFF) - tsecr) & 0xFFFFFFFF
            if 0 < delta_ms < 0x7FFFFFFF // 1000:
                rcv_rtt_update(tcb, delta_ms * 1000, False)
    if seq + n > tcb.rcv_wup + tcb.rcv_wnd:
        # Linux drops data crossing the right edge whole, with a duplicate ACK.
        if acked:
            tcb.wake()
        tcb.tcp.ext["TCPRcvQDrop"] += 1
        send_ack(tcb)
        return
    tcb.rcvq.append(data)
    rcv_nxt = tcb.rcv_nxt = seq + n
    tcb.bytes_received += n
    # (window.charge)
    size = n + SKB_OVERHEAD
    tcb.rmem_alloc += size
    q = tcb.rcvq_skbs
    if q is NO_SKBS:
        q = tcb.rcvq_skbs = deque()
    q.append((rcv_nxt, size))
    # Linux tcp_event_data_recv: learn the peer's segment size and the
    # receiver's RTT, time the delayed ACK, let the window grow.
    if n >= tcb.rcv_mss:
        measure_rcv_mss(tcb, n)
    else:
        # (ack.small_segment: two of the same size without PSH, or big
        # enough, are the peer's segment size; else it was pushed.)
        last = tcb.last_seg_size
        tcb.last_seg_size = 0
        size = n + seg.hdr_len
        learnt = False
        if size >= _MSS_DEFAULT_20 or (size >= _ACK_MIN_MSS_20
                                       and not seg.flags & _FIN_URG_SYN_PSH):
            size -= 32 if tcb.ts_ok else 20  # tp->tcp_header_len
            tcb.last_seg_size = size
            if size == last:
                tcb.rcv_mss = size
                learnt = True
        if not learnt:
            pushed = tcb.ack_pushed
            if pushed & PUSHED:
                pushed |= PUSHED2
            tcb.ack_pushed = pushed | PUSHED
    # (window.rcv_rtt_measure)
    now_us = now // 1000
    if not tcb.rcv_rtt_time or rcv_nxt >= tcb.rcv_rtt_seq:
        if tcb.rcv_rtt_time:
            rcv_rtt_update(tcb, max(1, now_us - tcb.rcv_rtt_time), True)
        tcb.rcv_rtt_seq = rcv_nxt + tcb.rcv_wnd
        tcb.rcv_rtt_time = now_us or 1
    # (ack.data_received)
    tcb.ack_pending = True
    jiffy = now // JIFFY_NS
    if not tcb.ato:
        incr_quickack(tcb, MAX_QUICKACKS)
        tcb.ato = ATO_MIN
    else:
        gap = jiffy - tcb.lrcvtime
        if gap <= _HALF_ATO_MIN:
            tcb.ato = (tcb.ato >> 1) + _HALF_ATO_MIN
        elif gap < tcb.ato:
            tcb.ato = min((tcb.ato >> 1) + gap, -(-tcb.rto // JIFFY_NS))
        elif gap > -(-tcb.rto // JIFFY_NS):
            incr_quickack(tcb, MAX_QUICKACKS)
    tcb.lrcvtime = jiffy
    if n >= 128:
        grow_window(tcb, n)
    tcb.wake()


def _predicted_delayed_ack(tcb: TCB, now: int) -> None:
    """ack.send_delayed_ack with ``now`` the clock, the timer armed inline."""
    ato = tcb.ato
    if ato > ATO_MIN:
        max_ato = HZ // 2
        if tcb.pingpong >= PINGPONG_THRESH or tcb.ack_pushed & PUSHED:
            max_ato = DELACK_MAX
        if tcb.srtt:
            rtt = max(-(-tcb.srtt // JIFFY_NS), ATO_MIN)
            max_ato = min(max_ato, rtt)
        ato = min(ato, max_ato)
    if ato > DELACK_MAX:
        ato = DELACK_MAX  # icsk_delack_max
    jiffy = now // JIFFY_NS
    timeout = jiffy + ato
    timer = tcb.delack_timer
    if timer is not None and timer.active:
        if tcb.delack_timeout <= jiffy + (ato >> 2):
            send_ack(tcb)
            return
        if tcb.delack_timeout <= timeout:
            tcb.ack_pending = True
            return  # the earlier deadline stands
    tcb.ack_pending = True
    if timeout <= jiffy:
        on_delack(tcb)
        return
    tcb.delack_timeout = timeout
    if timer is None:
        tcb.delack_timer = tcb.tcp.clock.call_at(timeout * JIFFY_NS, partial(on_delack, tcb))
    else:
        timer.reschedule(timeout * JIFFY_NS)


# -- SYN-SENT (RFC 9293 3.10.7.3) ----------------------------------------------------
def _syn_sent(tcb: TCB, seg: Segment) -> None:
    tcp = tcb.tcp
    flags = seg.flags
    ack = unwrap(seg.ack, tcb.snd_una)
    if flags & ACK:
        if ack <= tcb.iss or ack > tcb.snd_max:
            # RFC 9293 3.10.7.3: unacceptable: <SEQ=SEG.ACK><CTL=RST> unless
            # an RST, then drop. Linux (tcp_rcv_synsent_state_process) also
            # resends the SYN soon, as the peer may have held a stale
            # connection that this RST (or its own) just cleared.
            if tcb.retransmits == 0:
                rearm_syn(tcb, SYN_SENT_RETRY)
            if not flags & RST:
                tcp.reset_reply(tcb.route, seg, tcb.local_port, tcb.remote_port)
            return
    if flags & RST:
        if flags & ACK:
            tcp.fail(tcb, errno.ECONNREFUSED, reset=True)
        return
    if not flags & SYN:
        return
    tcb.irs = seg.seq
    tcb.rcv_nxt = unwrap(seg.seq, tcb.iss) + 1
    tcb.irs = tcb.rcv_nxt - 1
    tcb.rcv_wup = tcb.rcv_nxt
    negotiate(tcb, seg)
    if flags & ACK:
        tcb.snd_una = ack
        tcb.snd_base = ack
        tcb.snd_wnd = seg.window  # never scaled in a SYN (RFC 7323 2.2)
        tcb.max_window = tcb.snd_wnd
        sync_mss(tcb)
        tcb.snd_wl1 = tcb.rcv_nxt - 1
        tcb.snd_wl2 = ack
        if tcb.retransmits == 0 and tcb.syn_timed:
            rtt_sample(tcb, tcp.clock.now_ns() - tcb.syn_start)
        elif tcb.retransmits:
            tcb.rto = max(tcb.rto, TIMEOUT_FALLBACK)  # RFC 6298 5.7 after SYN loss
        tcb.retransmits = 0
        tcb.backoff = 0
        if tcb.rto_timer is not None:
            tcb.rto_timer.cancel()
        tcp.establish(tcb)
        transmit(tcb, tcb.snd_nxt, ACK)
        output(tcb)
    else:
        # Simultaneous open (RFC 9293 3.5, figure 8): answer with SYN-ACK.
        tcb.state = State.SYN_RECV
        tcp.on_state(tcb)
        send_synack(tcb, tcb.ts_ok, tcb.sack_ok, tcb.wscale_ok)


# -- TIME-WAIT (RFC 9293 3.10.7.4; Linux tcp_timewait_state_process) --------------------
def _time_wait(tcb: TCB, seg: Segment) -> None:
    """What Linux's TIME-WAIT mini-socket does with a segment. In sequence
    (SEQ = RCV.NXT) and empty: an RST ends it (tcp_rfc1337 = 0: RFC 1337's
    hazard accepted), a bare ACK restarts the 60 s. A SYN above RCV.NXT (or
    with a newer TSval) opens a new connection through the listener. Anything
    else, a retransmitted FIN included, is answered with an ACK (at most one
    per 500 ms unless it carries data) and restarts the 60 s if it carried an
    ACK or failed PAWS; an RST that is not exactly in sequence is dropped."""
    tcp = tcb.tcp
    flags = seg.flags
    rst = bool(flags & RST)
    seq = unwrap(seg.seq, tcb.rcv_nxt)
    seg_len = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    saw_ts = tcb.ts_ok and seg.tsval is not None
    paws_reject = saw_ts and _paws_reject(tcb, seg.tsval or 0, rst)
    if not paws_reject and seq == tcb.rcv_nxt and (seg_len == 0 or rst):
        if rst:
            if not tcp.rfc1337:
                tcp.destroy(tcb)
                return
        else:
            restart_time_wait(tcb)
        if saw_ts:
            tcb.ts_recent = seg.tsval or 0
            tcb.ts_recent_stamp = tcp.clock.now_ns()
        return
    if flags & SYN and not flags & (RST | ACK) and not paws_reject and (
            seq > tcb.rcv_nxt or saw_ts and _ts_before(tcb.ts_recent, seg.tsval or 0)):
        # RFC 9293 3.10.7.4 note / RFC 6191: a new incarnation. Without a
        # listener Linux answers it with an ACK (tcp_v4_rcv: TCP_TW_SYN falls
        # through to TCP_TW_ACK), neither rate-limited nor restarting the timer.
        if not tcp.reopen_time_wait(tcb, seg):
            send_ack(tcb)
        return
    if paws_reject:
        _count(tcb, "PAWSTimewait")
    if rst:
        return
    if paws_reject or flags & ACK:
        # An ACK-less SYN may be an old duplicate or a new SYN with a low
        # sequence number: it leaves the timer alone.
        restart_time_wait(tcb)
    if (seg.payload or flags & FIN) and not flags & SYN \
            or not _rate_limited(tcb, "TCPACKSkippedTimeWait"):
        send_ack(tcb)


# -- the synchronized states and SYN-RECEIVED (RFC 9293 3.10.7.4) ------------------------
def _synchronized(tcb: TCB, seg: Segment) -> None:
    tcp = tcb.tcp
    flags = seg.flags
    rcv_nxt = tcb.rcv_nxt
    data = seg.payload
    tsval = seg.tsval
    acceptable = True
    if flags & (SYN | RST | ACK) == ACK and seg.seq == rcv_nxt & 0xFFFFFFFF \
            and fastpath.enabled and (
                not tcb.ts_ok or tsval is None
                or not 0 < (tcb.ts_recent - tsval) & 0xFFFFFFFF < 0x80000000) and (
                not (data or flags & FIN) or tcb.rcv_wup + tcb.rcv_wnd > rcv_nxt):
        # An ACK (with a FIN or data or neither) exactly at RCV.NXT, no SYN
        # or RST, its TSval not behind TS.Recent, text only into an open
        # window: the checks before the fifth would let it through untouched
        # (PAWS passes at its first test, the sequence is acceptable, no RST
        # or SYN to handle). The handshake's last ACK and the close's FINs
        # and ACKs go straight on.
        seq = rcv_nxt
    else:
        seq = rcv_nxt + ((seg.seq - rcv_nxt + HALF) & 0xFFFFFFFF) - HALF  # (seq.unwrap)
        seg_len = len(data) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = max(0, tcb.rcv_wup + tcb.rcv_wnd - rcv_nxt)

        # RFC 7323 5.3: PAWS, before anything else (Linux tcp_validate_incoming;
        # SYN-RECEIVED as tcp_check_req, without tolerance). An RST passes.
        if tcb.ts_ok and tsval is not None and not flags & RST \
                and not 0 < (tcb.ts_recent - tsval) & 0xFFFFFFFF < 0x80000000:
            # (_paws_check's and _paws_reject's first test, inline: a TSval not
            # behind TS.Recent passes)
            pass
        elif tcb.ts_ok and tsval is not None and not flags & RST:
            if tcb.state == State.SYN_RECV:
                rejected = "paws" if _paws_reject(tcb, tsval, False) else None
            elif _paws_check(tcb, tsval, PAWS_WINDOW):
                rejected = None
            else:
                rejected = _disordered_ack(tcb, seg, seq)
            if rejected is not None:
                if flags & SYN:
                    challenge_ack(tcb)
                elif rejected == "old":
                    _count(tcb, "PAWSOldAck")  # old ACKs are common: no answer
                else:
                    # R1: drop it with an ACK. Like Linux (tcp_oow_rate_limited),
                    # only segments without data are rate-limited: data cannot
                    # start an ACK loop.
                    tcp.ext["PAWSEstab"] += 1
                    if seg_len or not _rate_limited(tcb, "TCPACKSkippedPAWS"):
                        send_ack(tcb)
                return

        if tcb.state == State.SYN_RECV and flags & SYN and not flags & RST and seq == tcb.irs \
                and not data:
            if not flags & ACK:
                # Their SYN again: our SYN-ACK was lost. Resend it (Linux
                # tcp_check_req), at most once per tcp_invalid_ratelimit.
                if not _rate_limited(tcb, "TCPACKSkippedSynRecv"):
                    send_synack(tcb, tcb.ts_ok, tcb.sack_ok, tcb.wscale_ok)
                return
            # Simultaneous open (RFC 9293 3.5 figure 8, line 6): the peer's
            # SYN-ACK. Its SYN is a duplicate; its ACK completes the handshake
            # and is answered with an ACK (Linux tcp_validate_incoming).
            flags &= ~SYN
            seq += 1
            seg_len = 0
            tcb.ack_pending = tcb.ack_now = True

        # First check: sequence acceptability.
        if seg_len == 0:
            # RFC 9293 3.10.7.4 from RCV.NXT; like Linux (tcp_sequence) from
            # RCV.WUP, the RCV.NXT our last ACK announced: a peer's ACK sent
            # before data we have not acknowledged yet is old, yet still valid.
            low = min(tcb.rcv_wup, rcv_nxt)
            ok = (low <= seq <= rcv_nxt) if wnd == 0 else (low <= seq < rcv_nxt + wnd
                                                            or seq == rcv_nxt)
        elif wnd == 0:
            ok = False
        else:
            end = seq + seg_len - 1
            ok = rcv_nxt <= seq < rcv_nxt + wnd or rcv_nxt <= end < rcv_nxt + wnd or (
                seq < rcv_nxt <= end)
        if not ok:
            if flags & RST:
                return
            if flags & SYN:
                challenge_ack(tcb)
                return
            if seg_len == 0 and _rate_limited(tcb, "TCPACKSkippedSeq"):
                return
            if seg_len and seq + seg_len <= rcv_nxt:
                # An old duplicate: our ACK was lost (Linux tcp_send_dupack).
                tcp.ext["DelayedACKLost"] += 1
                enter_quickack_mode(tcb)
            send_ack(tcb)
            # Zero window: still take the ACK field (RFC 9293 3.10.7.4 note).
            if not (wnd == 0 and flags & ACK and seq == rcv_nxt):
                return
            data = data[:0]
            flags &= ~FIN
            acceptable = False

        # Second: RST (RFC 5961 3.2: exact match resets, else a challenge ACK).
        if flags & RST:
            if seq == rcv_nxt:
                tcp.reset_received(tcb)
            else:
                challenge_ack(tcb)
            return

        # Fourth: SYN in a synchronized state (RFC 5961 4.2).
        if flags & SYN:
            if tcb.state == State.SYN_RECV and seq == tcb.irs:
                send_synack(tcb, tcb.ts_ok, tcb.sack_ok, tcb.wscale_ok)  # its SYN-ACK was lost
                return
            challenge_ack(tcb)
            return

    # Fifth: ACK.
    if not flags & ACK:
        return
    snd_una = tcb.snd_una
    ack = snd_una + ((seg.ack - snd_una + HALF) & 0xFFFFFFFF) - HALF  # (seq.unwrap)
    if tcb.state == State.SYN_RECV:
        if tcb.snd_una < ack <= tcb.snd_max:
            tcb.snd_wnd = seg.window << tcb.snd_wscale
            tcb.max_window = max(tcb.max_window, tcb.snd_wnd)
            sync_mss(tcb)
            tcb.snd_wl1 = seq
            tcb.snd_wl2 = ack
            tcb.snd_una = ack
            tcb.snd_base = ack
            if tcb.retransmits == 0 and tcb.syn_timed:
                rtt_sample(tcb, tcp.clock.now_ns() - tcb.syn_start)
            elif tcb.retransmits:
                tcb.rto = max(tcb.rto, TIMEOUT_FALLBACK)  # RFC 6298 5.7 (Karn: no sample)
            tcb.retransmits = 0
            tcb.backoff = 0
            if tcb.rto_timer is not None:
                tcb.rto_timer.cancel()
            if not tcp.establish(tcb):
                return  # the listener could not take it
        else:
            tcp.reset_reply(tcb.route, seg, tcb.local_port, tcb.remote_port)
            return
    elif snd_una <= ack <= tcb.snd_max and not seg.sack and not tcb.in_recovery \
            and fastpath.enabled and (ack > snd_una or data or flags & FIN
                                      or tcb.snd_max == snd_una
                                      or seg.window << tcb.snd_wscale != tcb.snd_wnd):
        # (not a duplicate ACK: _process_ack's test)
        _ack_predicted(tcb, seg, seq, ack)
    elif not _process_ack(tcb, seg, seq, ack, len(data), flags):
        return

    # RFC 7323 4.3: remember the timestamp of the segment that covers rcv_nxt
    # (Linux tcp_replace_ts_recent: only one not behind TS.Recent).
    if tcb.ts_ok and tsval is not None and seq <= tcb.rcv_wup and (
            not 0 < (tcb.ts_recent - tsval) & 0xFFFFFFFF < 0x80000000  # (_paws_check's first)
            or _paws_check(tcb, tsval, 0)):
        tcb.ts_recent = tsval
        tcb.ts_recent_stamp = tcp.clock.now_ns()

    state = tcb.state
    if state in _FIN_SENT_STATES and tcb.fin_sent \
            and tcb.snd_una >= tcb.snd_base + tcb.sndq.size + 1:
        # Our FIN is acknowledged.
        if state == State.FIN_WAIT1:
            tcb.state = State.FIN_WAIT2
            tcp.on_state(tcb)
            if tcb.orphan:
                arm_finwait2(tcb)
        elif state == State.CLOSING:
            enter_time_wait(tcb)
            return
        else:
            tcp.destroy(tcb)
            return

    # Sixth: the URG bit (Linux tcp_urg, which also watches for the byte a
    # pointer seen earlier announced).
    if acceptable and (flags & URG or tcb.urg_data == URG_NOTYET):
        _urgent(tcb, seg)

    # Seventh: the segment text.
    if data or flags & FIN:
        if tcb.state in CAN_RECEIVE_DATA:
            if (tcb.orphan or tcb.shut_rd) and tcb.state in (State.FIN_WAIT1, State.FIN_WAIT2) \
                    and len(data) and seq + len(data) > tcb.rcv_nxt and tcb.orphan:
                # RFC 1122 4.2.2.13: data for a closed socket is answered with RST.
                tcp.ext["TCPAbortOnData"] += 1
                tcp.abort(tcb)
                return
            _receive(tcb, seg, seq, data, bool(flags & FIN))
        elif data:
            pass  # CLOSE_WAIT, CLOSING, LAST_ACK: the peer already sent FIN; ignore
    # (output's first test: nothing queued beyond what is sent, no FIN)
    if tcb.snd_nxt < tcb.snd_base + tcb.sndq.size or tcb.fin_queued:
        output(tcb)
    if tcb.ack_pending and tcb.state != State.CLOSED:
        ack_snd_check(tcb)
    tcb.ack_now = False


def _urgent(tcb: TCB, seg: Segment) -> None:
    """RFC 9293 3.10.7.4 sixth check, RFC 6093, as Linux tcp_urg and
    tcp_check_urg (tcp_stdurg = 0): the pointer points after the last urgent
    byte; that byte is kept apart (unless SO_OOBINLINE) for recv(MSG_OOB),
    and reads stop in front of it (the mark). A newer pointer replaces the
    older one: a byte not read yet stays in the stream as ordinary data,
    except that a reader standing right on it steps over it."""
    seg_seq = unwrap(seg.seq, tcb.rcv_nxt)
    if seg.flags & URG:
        ptr = seg_seq + seg.urg_ptr - (1 if seg.urg_ptr else 0)
        copied = tcb.copied_seq
        # Neither urgent data already read past nor a pointer behind RCV.NXT
        # (it names data already queued: Linux does not replay it), nor one
        # at or below the pointer we hold.
        if copied <= ptr and ptr >= tcb.rcv_nxt and not (tcb.urg_data and ptr <= tcb.urg_seq):
            if tcb.urg_data and tcb.urg_seq == copied and not tcb.urg_inline \
                    and copied != tcb.rcv_nxt:
                tcb.rcvq.drop(1)  # the old urgent byte under the reader: skip it
                release_read(tcb)
            tcb.urg_data = URG_NOTYET
            tcb.urg_seq = ptr
    if tcb.urg_data == URG_NOTYET:
        # Is the byte the pointer names in this segment?
        offset = tcb.urg_seq - seg_seq - (1 if seg.flags & SYN else 0)
        if 0 <= offset < len(seg.payload):
            tcb.urg_data = URG_VALID | seg.payload[offset]
            tcb.wake()


def _ack_predicted(tcb: TCB, seg: Segment, seq: int, ack: int) -> None:
    """_process_ack for an acceptable ACK (SND.UNA =< SEG.ACK =< SND.MAX)
    that is not a duplicate, without SACK blocks, outside recovery, as
    header prediction does it (fastpath.py): _new_ack if it acknowledges
    something, then _ack_tail, whose SACK recovery part such an ACK never
    reaches, with one clock read (the ACK part of _predicted, for the states
    and segments it does not take: a FIN, the handshake's and the close's
    ACKs)."""
    tcp = tcb.tcp
    now = tcp.clock.now_ns()
    tcb.keep_probes = 0
    tcb.rcv_tstamp = now
    window = seg.window << tcb.snd_wscale
    acked = ack > tcb.snd_una
    if acked:
        _predicted_ack(tcb, seg, ack, now)
    # (_ack_tail with acked, no duplicate, no SACK news, no recovery)
    _update_window(tcb, seq, ack, window)
    if tcb.tlp_high_seq:
        rack.process_tlp_ack(tcb, ack, acked)
    if not acked:
        return
    _predicted_xmit_timer(tcb, now)
    # (sizing.sndbuf_expand)
    if not tcb.sndbuf_locked:
        per_mss = 1 << (max(tcb.mss_base, tcb.mss_clamp) + 640 - 1).bit_length()
        want = 2 * max(tcb.cc.cwnd, 10, tcp.reordering + 1) * (per_mss + 256)
        if want > tcb.sndbuf:
            tcb.sndbuf = min(want, tcp.wmem_max)
    tcb.wake()


def _process_ack(tcb: TCB, seg: Segment, seq: int, ack: int, data_len: int, flags: int) -> bool:
    """RFC 9293 3.10.7.4 fifth check for established-like states. False
    means drop the rest of the segment."""
    tcp = tcb.tcp
    if ack > tcb.snd_max:
        # An ACK for something not yet sent (RFC 5961 5.2: ACK and drop).
        if not _rate_limited(tcb, "TCPACKSkippedSeq"):
            send_ack(tcb)
        return False
    if ack < tcb.snd_una - tcb.max_window:
        challenge_ack(tcb)
        return False
    # An acceptable ACK shows the peer is alive: unanswered zero-window (and
    # keepalive) probes start counting again (Linux tcp_ack: icsk_probes_out = 0).
    tcb.keep_probes = 0
    tcb.rcv_tstamp = tcp.clock.now_ns()
    window = seg.window << tcb.snd_wscale
    now = tcp.clock.now_ns()
    # SACK blocks (RFC 2018; the RFC 6675 scoreboard and RACK's record)
    sack_news = False
    delivered = 0  # segments newly ACKed or SACKed (Linux acked_sacked)
    if seg.sack and tcb.sack_ok:
        for left, right in seg.sack:
            s = unwrap(left, tcb.snd_una)
            e = unwrap(right, tcb.snd_una)
            if tcb.snd_una < e <= tcb.snd_max and s < e:
                if tcb.scoreboard.add(max(s, tcb.snd_una), e):
                    sack_news = True
                    delivered += rack.on_sack(tcb, max(s, tcb.snd_una), e, now)
    acked = ack > tcb.snd_una
    dup = False
    if acked:
        delivered += _new_ack(tcb, seg, ack, now)
    elif ack == tcb.snd_una and data_len == 0 and not flags & FIN and window == tcb.snd_wnd \
            and tcb.snd_max > tcb.snd_una:
        dup = True
        _dupack(tcb, sack_news)
    _ack_tail(tcb, seq, ack, window, acked, dup, sack_news, delivered)
    return True


def _update_window(tcb: TCB, seq: int, ack: int, window: int) -> None:
    """The send window update (RFC 9293 3.10.7.4: SND.WL1 < SEG.SEQ, or =
    and SND.WL2 =< SEG.ACK); a window reopened ends the persist timer.
    (_predicted has it inline.)"""
    if tcb.snd_wl1 < seq or (tcb.snd_wl1 == seq and tcb.snd_wl2 <= ack):
        if window != tcb.snd_wnd:
            tcb.snd_wnd = window
        tcb.snd_wl1 = seq
        tcb.snd_wl2 = ack
        if window > tcb.max_window:
            tcb.max_window = window
            sync_mss(tcb)
        if window:
            if tcb.persist_timer is not None and tcb.persist_timer.active:
                stop_persist(tcb)
                tcb.backoff = 0


def _ack_tail(tcb: TCB, seq: int, ack: int, window: int, acked: bool, dup: bool,
              sack_news: bool, delivered: int) -> None:
    """The fifth check's end (after SND.UNA moved, or did not): the send
    window, a loss probe's outcome, SACK recovery, the timers."""
    _update_window(tcb, seq, ack, window)
    if tcb.tlp_high_seq:
        rack.process_tlp_ack(tcb, ack, acked or sack_news)
    waiting = False
    if tcb.sack_ok and (dup or sack_news or tcb.in_recovery):
        # Linux tcp_fastretrans_alert for a "dubious" ACK: RACK marks what is
        # lost (tcp_rack_mark_lost), which starts recovery; lost segments go
        # again as cwnd allows.
        waiting = rack.mark_lost_step(tcb)
        # (After an RTO, until what was out then is acknowledged, Linux is in
        # its Loss state: no recovery, the timeout's go-back-N goes on.)
        if not tcb.in_recovery and tcb.snd_una >= tcb.loss_high and rack.lost_count(tcb):
            enter_recovery(tcb)
        if tcb.in_recovery:
            cwnd_reduction(tcb, delivered, acked)
            xmit_retransmit_queue(tcb)
    if acked:
        if not waiting:
            set_xmit_timer(tcb)
        # Linux grows the send buffer with the window (tcp_sndbuf_expand).
        sndbuf_expand(tcb)
        tcb.wake()


def _new_ack(tcb: TCB, seg: Segment, ack: int, now: int) -> int:
    """Returns the segments this ACK delivered (not SACKed before)."""
    acked = ack - tcb.snd_una
    delivered = rack.on_cumulative_ack(tcb, ack, now)
    data_acked = min(ack, tcb.snd_base + tcb.sndq.size) - tcb.snd_base
    if data_acked > 0:
        tcb.sndq.drop(data_acked)
        tcb.snd_base += data_acked
    tcb.snd_una = ack
    if tcb.snd_nxt < ack:
        tcb.snd_nxt = ack
    tcb.bytes_acked += acked
    # RTT (RFC 7323 4.1 with timestamps; else Karn's timed segment).
    if tcb.ts_ok and seg.tsecr:
        rtt_ms = (ts_now(tcb) - seg.tsecr) & 0xFFFFFFFF
        if rtt_ms < 0x7FFFFFFF and tcb.retransmits == 0:
            rtt_sample(tcb, rtt_ms * 1_000_000)
    elif tcb.rtt_seq is not None and ack >= tcb.rtt_seq:
        if tcb.retransmits == 0:
            rtt_sample(tcb, now - tcb.rtt_start)
        tcb.rtt_seq = None
    tcb.backoff = 0
    tcb.retransmits = 0
    tcb.retrans_stamp = 0
    tcb.scoreboard.advance(ack)
    mss = max(tcb.mss, 1)
    segs = max(1, (acked + mss - 1) // mss)
    if tcb.in_recovery:
        if ack >= tcb.recover:
            # Full ACK (RFC 6582 3.2 step 3): deflate to ssthresh (with SACK,
            # Linux tcp_end_cwnd_reduction: ssthresh).
            tcb.in_recovery = False
            if tcb.sack_ok:
                tcb.cc.cwnd = max(tcb.cc.ssthresh, 1)
            else:
                tcb.cc.cwnd = max(min(tcb.cc.ssthresh, (tcb.snd_max - ack) // mss + 1), 1)
            tcb.lost = 0
        elif not tcb.sack_ok:
            # Partial ACK (RFC 6582 3.2 step 4): resend the next hole, deflate.
            retransmit_range(tcb, ack)
            tcb.cc.cwnd = max(tcb.cc.cwnd - segs + 1, 1)
    else:
        if tcb.cc.cwnd * mss <= tcb.snd_max - ack + acked or tcb.cc.cwnd < tcb.cc.ssthresh:
            tcb.cc.on_ack(segs, now, tcb.srtt)
        tcb.lost = 0
    tcb.dupacks = 0
    return delivered


def _dupack(tcb: TCB, sack_news: bool) -> None:
    """RFC 5681 3.2 without SACK: three duplicates start fast retransmit and
    NewReno recovery. With SACK, RACK decides what is lost (rack.py); the
    duplicates only count for limited transmit."""
    tcp = tcb.tcp
    tcb.dupacks += 1
    if tcb.sack_ok:
        return
    if tcb.in_recovery:
        tcb.cc.cwnd += 1  # RFC 5681 (4): inflate per duplicate
        output(tcb)
        return
    if tcb.dupacks < tcp.reordering:
        return
    now = tcp.clock.now_ns()
    tcb.cc.on_loss(now)
    tcb.in_recovery = True
    tcb.recover = tcb.snd_max
    tcp.ext["TCPFastRetrans"] += 1
    tcp.ext["TCPRenoRecovery"] += 1
    tcb.lost = 1
    retransmit_range(tcb, tcb.snd_una)
    tcb.cc.cwnd = tcb.cc.ssthresh + 3  # RFC 5681 (4)


def enter_recovery(tcb: TCB) -> None:
    """Linux tcp_enter_recovery for a SACK connection, once RACK has marked
    a segment lost: ssthresh from the congestion control, PRR from here on,
    recovery until everything now outstanding is acknowledged."""
    tcp = tcb.tcp
    tcb.cc.on_loss(tcp.clock.now_ns())
    tcb.in_recovery = True
    tcb.recover = tcb.snd_max
    tcp.ext["TCPFastRetrans"] += 1
    tcp.ext["TCPSackRecovery"] += 1
    tcb.lost = rack.lost_count(tcb)
    # tcp_init_cwnd_reduction: PRR (RFC 6937) takes cwnd down to ssthresh
    # as the ACKs come, cwnd_reduction below.
    tcb.prior_cwnd = tcb.cc.cwnd
    tcb.prr_delivered = tcb.prr_out = 0
    tcb.tlp_high_seq = 0


def cwnd_reduction(tcb: TCB, delivered: int, una_advanced: bool) -> None:
    """Linux tcp_cwnd_reduction (RFC 6937 PRR): per ACK in recovery, cwnd
    lets out as many segments as keep the sending rate at ssthresh/prior
    cwnd of what is delivered (while more than ssthresh are in flight), or
    up to ssthresh (below it); at least one at the start: the fast
    retransmit."""
    if delivered <= 0 or not tcb.prior_cwnd:
        return
    ssthresh = tcb.cc.ssthresh
    pipe = rack.in_flight(tcb)
    delta = ssthresh - pipe
    tcb.prr_delivered += delivered
    if delta < 0:
        sndcnt = -(-ssthresh * tcb.prr_delivered // tcb.prior_cwnd) - tcb.prr_out
    else:
        sndcnt = max(tcb.prr_delivered - tcb.prr_out, delivered)
        if una_advanced:
            sndcnt += 1
        sndcnt = min(delta, sndcnt)
    sndcnt = max(sndcnt, 0 if tcb.prr_out else 1)
    tcb.cc.cwnd = pipe + sndcnt


def xmit_retransmit_queue(tcb: TCB) -> None:
    """Linux tcp_xmit_retransmit_queue: resend the lost segments in order
    while fewer than cwnd are in flight, then new data as cwnd allows."""
    pipe = rack.in_flight(tcb)
    cwnd = tcb.cc.cwnd
    for e in list(tcb.sent):
        if pipe >= cwnd:
            return
        if e[3] & rack.LOST and not e[3] & (rack.RXMIT | rack.SACKED):
            if retransmit_range(tcb, e[0]):
                pipe += 1
                tcb.prr_out += 1
    tcb.prr_out += output(tcb)


def _receive(tcb: TCB, seg: Segment, seq: int, data: memoryview, fin: bool) -> None:
    """Accept segment text and FIN (RFC 9293 3.10.7.4 seventh and eighth)."""
    tcp = tcb.tcp
    if tcb.ts_ok and seg.tsval is not None and seg.tsecr:
        rcv_rtt_measure_ts(tcb, seg.tsecr, len(data))
    if seq < tcb.rcv_nxt:
        cut = tcb.rcv_nxt - seq
        data = data[cut:]
        seq = tcb.rcv_nxt
    right = tcb.rcv_wup + tcb.rcv_wnd
    n = len(data)
    if n and seq + n > right:
        # Linux drops data crossing the right edge whole, with a duplicate ACK.
        tcp.ext["TCPRcvQDrop"] += 1
        send_ack(tcb)
        return
    if seq == tcb.rcv_nxt:
        had_ooo = bool(tcb.ooo)
        if n:
            tcb.rcvq.append(data)
            tcb.rcv_nxt += n
            tcb.bytes_received += n
            charge(tcb, tcb.rcv_nxt, n)
            # Linux tcp_event_data_recv: learn the peer's segment size and the
            # receiver's RTT, time the delayed ACK, let the window grow.
            if n >= tcb.rcv_mss:
                measure_rcv_mss(tcb, n)
            else:
                small_segment(tcb, n, seg.flags, seg.hdr_len)
            rcv_rtt_measure(tcb)
            data_received(tcb)
            if n >= 128:
                grow_window(tcb, n)
        fin_now = fin
        # Pull in whatever the out-of-order queue now continues (its
        # segments stay charged as they were; the ones now wholly old go).
        while tcb.ooo and tcb.ooo[0][0] <= tcb.rcv_nxt:
            oseq, odata = tcb.ooo.pop(0)
            tcb.ooo_bytes -= len(odata)
            if oseq + len(odata) > tcb.rcv_nxt:
                piece = odata[tcb.rcv_nxt - oseq:]
                tcb.rcvq.append(piece)
                tcb.rcv_nxt += len(piece)
                tcb.bytes_received += len(piece)
                skbs(tcb).append((tcb.rcv_nxt, truesize(len(odata))))  # charged when it came
            else:
                tcb.rmem_alloc -= truesize(len(odata))
        if tcb.ooo_fin is not None and tcb.ooo_fin == tcb.rcv_nxt:
            fin_now = True
        if fin_now:
            _fin(tcb)
            return
        if had_ooo:
            # RFC 5681 4.2: a hole was filled: tell the sender at once.
            tcb.ack_pending = tcb.ack_now = True
        if n:
            tcb.wake()
        return
    # Out of order: keep it (within the buffer), then a duplicate ACK with SACK.
    tcp.ext["TCPOFOQueue"] += 1
    if n:
        if tcb.rmem_alloc + truesize(n) > tcb.rcvbuf:
            tcp.ext["TCPOFODrop"] += 1  # Linux tcp_try_rmem_schedule
        elif _ooo_insert(tcb, seq, bytes(data)):
            tcb.last_ooo = (seq, seq + n)
            if tcb.sack_ok and n >= 128:
                # tcp_data_queue_ofo: with SACK the window grows here too
                # (without, a steady window makes the duplicate ACKs).
                grow_window(tcb, n)
        else:
            tcb.last_ooo = (seq, seq + n)
    if fin:
        tcb.ooo_fin = seq + n
    send_ack(tcb)


def _ooo_insert(tcb: TCB, seq: int, data: bytes) -> bool:
    """Keep an out-of-order segment (charged at its truesize); False if an
    earlier one already holds all of it."""
    ooo = tcb.ooo
    end = seq + len(data)
    for s, d in ooo:
        if s <= seq and s + len(d) >= end:
            return False
    i = 0
    while i < len(ooo) and ooo[i][0] < seq:
        i += 1
    ooo.insert(i, (seq, data))
    tcb.ooo_bytes += len(data)
    tcb.rmem_alloc += truesize(len(data))
    return True


def _fin(tcb: TCB) -> None:
    """Eighth check: the peer's FIN. Out-of-order data beyond it cannot be
    part of the stream: after the state change (and the ACK it sends),
    Linux tcp_fin drops it and forgets its SACK blocks."""
    _fin_state(tcb)
    if tcb.ooo:
        for _, odata in tcb.ooo:
            tcb.rmem_alloc -= truesize(len(odata))
        tcb.ooo.clear()
        tcb.ooo_bytes = 0
        tcb.last_ooo = None


def _fin_state(tcb: TCB) -> None:
    tcp = tcb.tcp
    tcb.rcv_nxt += 1
    tcb.fin_received = True
    tcb.ooo_fin = None
    state = tcb.state
    if state in (State.ESTABLISHED, State.SYN_RECV):
        # Linux tcp_fin: CLOSE-WAIT, and the connection counts as interactive
        # (pingpong): the FIN's ACK waits for the delayed-ACK timer, or for
        # the reply the application may send first.
        tcb.state = State.CLOSE_WAIT
        tcp.on_state(tcb)
        tcb.pingpong = max(tcb.pingpong, PINGPONG_THRESH)
        tcb.ack_pending = True
        if tcb.keepalive:
            arm_keepalive(tcb)
        else:  # (arm_keepalive without SO_KEEPALIVE: the timer stops)
            timer = tcb.keepalive_timer
            if timer is not None and timer.active:
                timer.cancel()
        tcb.wake()
        return
    if state == State.FIN_WAIT1:
        if tcb.fin_sent and tcb.snd_una >= tcb.snd_base + tcb.sndq.size + 1:
            send_ack(tcb)
            enter_time_wait(tcb)
            tcb.wake()
            return
        tcb.state = State.CLOSING
        tcp.on_state(tcb)
    elif state == State.FIN_WAIT2:
        send_ack(tcb)
        enter_time_wait(tcb)
        tcb.wake()
        return
    send_ack(tcb)
    arm_keepalive(tcb)
    tcb.wake()


_READ_ACK_STATES = (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2)


def window_update_after_read(tcb: TCB, copied: int) -> None:
    """Linux tcp_cleanup_rbuf(), after the application read ``copied``
    bytes: an ACK now if one is owed for more than a segment, or if the
    window it would offer is at least twice the one the peer has (and that
    one is at most half the clamp)."""
    if tcb.state not in _READ_ACK_STATES:
        return
    # The ACK the input path left to the timer, once the application has read
    # everything a peer pushed (not for pingpong connections: the reply
    # carries it), or if more than a segment is unacknowledged.
    rcv_nxt = tcb.rcv_nxt
    rcv_wup = tcb.rcv_wup
    time_to_ack = tcb.ack_pending and (
        rcv_nxt - rcv_wup > tcb.rcv_mss
        or copied > 0 and not tcb.rmem_alloc
        and bool(tcb.ack_pushed & PUSHED2
                 or tcb.ack_pushed & PUSHED and tcb.pingpong < PINGPONG_THRESH))  # (in_pingpong)
    if copied > 0 and not time_to_ack and not (tcb.fin_received or tcb.shut_rd):
        current = rcv_wup + tcb.rcv_wnd - rcv_nxt
        if 2 * current <= tcb.window_clamp:
            new = compute_window(tcb)
            time_to_ack = new > 0 and new >= 2 * current
    if time_to_ack:
        send_ack(tcb)
