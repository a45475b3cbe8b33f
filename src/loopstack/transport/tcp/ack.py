"""When to acknowledge (RFC 1122 4.2.3.2, RFC 5681 4.2), as Linux (6.18)
decides: quick-ACK mode at the start and after idle periods (a number of
ACKs sent at once: tcp_incr_quickack, tcp_enter_quickack_mode), then an
ACK for more than one full segment received, else the delayed-ACK timer,
whose timeout ("ato", 40 ms to 200 ms) follows the gaps between arriving
segments (tcp_event_data_recv) and doubles when it fires (tcp_delack_timer
handler); interactive ("pingpong") connections, whose replies carry the
ACKs, leave quick-ACK mode (tcp_event_data_sent). TCP_QUICKACK switches
pingpong off (1) or on (0).

Linux counts these times in jiffies; so does this module (HZ = 250, as the
reference kernel), so delays fall on 4 ms ticks as they do there.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from ...wire.tcp import FIN, PSH, SYN, URG
from . import output
from .constants import MAX_QUICKACKS, State
from .window import compute_window

if TYPE_CHECKING:
    from .tcb import TCB

HZ = 250
JIFFY_NS = 1_000_000_000 // HZ
ATO_MIN = HZ // 25  # TCP_ATO_MIN = TCP_DELACK_MIN: 40 ms
DELACK_MAX = HZ // 5  # TCP_DELACK_MAX: 200 ms
PUSHED = 1  # ICSK_ACK_PUSHED: a small segment arrived
PUSHED2 = 2  # ICSK_ACK_PUSHED2: two of them
PINGPONG_THRESH = 1  # tcp_pingpong_thresh
MSS_DEFAULT = 536  # TCP_MSS_DEFAULT
MIN_MSS = 88  # TCP_MIN_MSS


def jiffies(tcb: TCB) -> int:
    return tcb.tcp.clock.now_ns() // JIFFY_NS


def _rto_jiffies(tcb: TCB) -> int:
    return -(-tcb.rto // JIFFY_NS)


def in_pingpong(tcb: TCB) -> bool:
    return tcb.pingpong >= PINGPONG_THRESH


def in_quickack_mode(tcb: TCB) -> bool:
    """tcp_in_quickack_mode: ACKs owed go out at once."""
    return tcb.quickacks > 0 and not in_pingpong(tcb)


def incr_quickack(tcb: TCB, most: int) -> None:
    """tcp_incr_quickack: enough quick ACKs for half a window of segments
    (at least two), at most ``most``."""
    quick = tcb.rcv_wnd // (2 * max(tcb.rcv_mss, 1)) or 2
    quick = min(quick, most)
    if quick > tcb.quickacks:
        tcb.quickacks = quick


def enter_quickack_mode(tcb: TCB, most: int = MAX_QUICKACKS) -> None:
    """tcp_enter_quickack_mode: after a sign that the peer needs ACKs soon
    (data it sent again, a hole)."""
    incr_quickack(tcb, most)
    tcb.pingpong = 0
    tcb.ato = ATO_MIN


def small_segment(tcb: TCB, n: int, flags: int, hdr_len: int) -> None:
    """tcp_measure_rcv_mss for a segment below rcv_mss: two of the same
    size without PSH (or big enough) mean the peer's segments are that
    small; otherwise it was pushed, and once the application has read it
    all an ACK goes out (tcp_cleanup_rbuf)."""
    last = tcb.last_seg_size
    tcb.last_seg_size = 0
    size = n + hdr_len
    if size >= MSS_DEFAULT + 20 or (size >= MIN_MSS + 20
                                    and not flags & (FIN | URG | SYN | PSH)):
        size -= 32 if tcb.ts_ok else 20  # tp->tcp_header_len
        tcb.last_seg_size = size
        if size == last:
            tcb.rcv_mss = size
            return
    if tcb.ack_pushed & PUSHED:
        tcb.ack_pushed |= PUSHED2
    tcb.ack_pushed |= PUSHED


def data_received(tcb: TCB) -> None:
    """tcp_event_data_recv's delayed-ACK estimator: the first data start
    quick-ACK mode with ato 40 ms; after that ato tracks half of itself plus
    the gap between segments (20 ms + half for back-to-back ones), bounded
    by the RTO; a gap longer than the RTO means the sender restarted, so
    quick ACKs again."""
    tcb.ack_pending = True
    now = tcb.tcp.clock.now_ns() // JIFFY_NS  # (jiffies(), inline: per segment)
    if not tcb.ato:
        incr_quickack(tcb, MAX_QUICKACKS)
        tcb.ato = ATO_MIN
    else:
        gap = now - tcb.lrcvtime
        if gap <= ATO_MIN // 2:
            tcb.ato = (tcb.ato >> 1) + ATO_MIN // 2
        elif gap < tcb.ato:
            tcb.ato = min((tcb.ato >> 1) + gap, _rto_jiffies(tcb))
        elif gap > _rto_jiffies(tcb):
            incr_quickack(tcb, MAX_QUICKACKS)
    tcb.lrcvtime = now


def ack_snd_check(tcb: TCB) -> None:
    """__tcp_ack_snd_check: an ACK owed goes now if more than one full
    segment arrived since the last one and the window would not shrink (or
    the application has read everything), in quick-ACK mode, or when the
    state asks for it (a filled hole, a simultaneous open); otherwise it
    waits for the delayed-ACK timer."""
    if tcb.ack_now or in_quickack_mode(tcb) or (
            tcb.rcv_nxt - tcb.rcv_wup > tcb.rcv_mss
            and (not tcb.rcvq.size or compute_window(tcb) >= tcb.rcv_wnd)):
        output.send_ack(tcb)
        return
    send_delayed_ack(tcb)


def send_delayed_ack(tcb: TCB) -> None:
    """tcp_send_delayed_ack: arm the timer for ato, bounded by 200 ms when
    interactive or pushed (500 ms otherwise) and by the RTT; a timer about
    to fire anyway (within a quarter of ato) is pre-empted by an ACK now."""
    ato = tcb.ato
    if ato > ATO_MIN:
        max_ato = HZ // 2
        if in_pingpong(tcb) or tcb.ack_pushed & PUSHED:
            max_ato = DELACK_MAX
        if tcb.srtt:
            rtt = max(-(-tcb.srtt // JIFFY_NS), ATO_MIN)
            max_ato = min(max_ato, rtt)
        ato = min(ato, max_ato)
    ato = min(ato, DELACK_MAX)  # icsk_delack_max
    now = jiffies(tcb)
    timeout = now + ato
    if tcb.delack_timer is not None and tcb.delack_timer.active:
        if tcb.delack_timeout <= now + (ato >> 2):
            output.send_ack(tcb)
            return
        if tcb.delack_timeout <= timeout:
            tcb.ack_pending = True
            return  # the earlier deadline stands
    tcb.ack_pending = True
    if timeout <= now:
        # ato 0 (no data received yet, e.g. a FIN alone): Linux's timer
        # fires on the next tick; loopstack fires it now.
        on_delack(tcb)
        return
    tcb.delack_timeout = timeout
    _arm_delack(tcb, timeout * JIFFY_NS)


def _arm_delack(tcb: TCB, deadline_ns: int) -> None:
    timer = tcb.delack_timer
    if timer is None:
        tcb.delack_timer = tcb.tcp.clock.call_at(deadline_ns, partial(on_delack, tcb))
    else:
        timer.reschedule(deadline_ns)


def on_delack(tcb: TCB) -> None:
    """tcp_delack_timer_handler: the ACK goes; a missed delayed ACK doubles
    ato (up to the RTO), or ends pingpong mode (ato back to 40 ms)."""
    if tcb.state in (State.CLOSED, State.LISTEN, State.SYN_SENT, State.TIME_WAIT):
        return
    if not tcb.ack_pending:
        return
    if in_pingpong(tcb):
        tcb.pingpong = 0
        tcb.ato = ATO_MIN
    else:
        tcb.ato = min(tcb.ato << 1, _rto_jiffies(tcb))
    tcb.tcp.ext["DelayedACKs"] += 1
    output.send_ack(tcb)


def ack_sent(tcb: TCB) -> None:
    """tcp_event_ack_sent: an ACK of RCV.NXT left (alone or on data): one
    quick ACK used if one was owed (leaving quick-ACK mode resets ato), and
    nothing is pending any more."""
    if tcb.quickacks and tcb.ack_pending:
        if tcb.quickacks <= 1:
            tcb.quickacks = 0
            tcb.ato = ATO_MIN
        else:
            tcb.quickacks -= 1
    tcb.ack_pending = False
    tcb.ack_pushed = 0
    timer = tcb.delack_timer
    if timer is not None and timer.active:
        timer.cancel()


def data_sent(tcb: TCB) -> None:
    """tcp_event_data_sent: data sent within ato of the last data received
    is a reply: the connection counts as interactive (pingpong)."""
    if tcb.tcp.clock.now_ns() // JIFFY_NS - tcb.lrcvtime < tcb.ato and tcb.pingpong < 255:
        tcb.pingpong += 1


def set_quickack(tcb: TCB, value: int) -> None:
    """TCP_QUICKACK (Linux __tcp_sock_set_quickack): 0 enters pingpong mode
    (ACKs wait for replies to carry them); non-zero leaves it and sends an
    ACK owed now, an even value entering pingpong again afterwards."""
    from .input import window_update_after_read

    if not value:
        tcb.pingpong = PINGPONG_THRESH
        return
    tcb.pingpong = 0
    if tcb.state in (State.ESTABLISHED, State.CLOSE_WAIT) and tcb.ack_pending:
        tcb.ack_pushed |= PUSHED
        window_update_after_read(tcb, 1)
        if not value & 1:
            tcb.pingpong = PINGPONG_THRESH
