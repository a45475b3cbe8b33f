"""TCP timers: retransmission (RFC 6298, Linux's 200 ms floor and SYN
schedule), persist (RFC 9293 3.8.6.1), keepalive (RFC 1122 4.2.3.6),
TIME_WAIT and FIN_WAIT_2 (the delayed-ACK timer is ack.py's). One Timer per kind per connection,
re-armed in place (DESIGN.md: never a heap entry per packet)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from ...clock import NS_PER_SEC, Timer
from . import rack
from .constants import (
    FIN_TIMEOUT,
    KEEPALIVE_INTVL,
    KEEPALIVE_PROBES,
    KEEPALIVE_TIME,
    RTO_MAX,
    TIMEOUT_INIT,
    State,
)

if TYPE_CHECKING:
    from .tcb import TCB


def _arm(tcb: TCB, attr: str, delay_ns: int, fire: Callable[[TCB], None]) -> None:
    timer: Timer | None = getattr(tcb, attr)
    deadline = tcb.tcp.clock.now_ns() + delay_ns
    if timer is None:
        timer = tcb.tcp.clock.call_at(deadline, partial(fire, tcb))  # (smaller than a closure)
        setattr(tcb, attr, timer)
    else:
        timer.reschedule(deadline)


def _stop(timer: Timer | None) -> None:
    if timer is not None and timer.active:
        timer.cancel()


# -- RTT and RTO (RFC 6298 2, Linux tcp_rtt_estimator / tcp_set_rto) ------------
def rtt_sample(tcb: TCB, rtt_ns: int) -> None:
    rtt_ns = max(rtt_ns, 1000)
    if rtt_ns < tcb.min_rtt:
        tcb.min_rtt = rtt_ns  # Linux tcp_update_rtt_min (over the whole connection here)
    if tcb.srtt == 0:
        tcb.srtt = rtt_ns
        tcb.rttvar = rtt_ns // 2
    else:
        delta = rtt_ns - tcb.srtt
        tcb.rttvar += (abs(delta) - tcb.rttvar) // 4  # beta = 1/4
        tcb.srtt += delta // 8  # alpha = 1/8
    # Linux: RTO = srtt + max(4 rttvar, rto_min); so on lo it is about 200 ms.
    tcb.rto = min(RTO_MAX, tcb.srtt + max(4 * tcb.rttvar, tcb.rto_min))


def current_rto(tcb: TCB) -> int:
    return min(RTO_MAX, tcb.rto << tcb.backoff)


def arm_rto(tcb: TCB) -> None:
    """Start the retransmission timer unless it is already running (RFC
    6298 5.1), for the RTO or a loss probe or RACK's reordering timeout."""
    t = tcb.rto_timer
    if t is not None and t.active:
        return
    tcb.xmit_kind = 0  # rack.RTO
    _arm(tcb, "rto_timer", current_rto(tcb), on_rto)


def restart_rto(tcb: TCB) -> None:
    """RFC 6298 5.3: an ACK of new data restarts it (or stops it, 5.2)."""
    tcb.xmit_kind = 0  # rack.RTO
    if tcb.snd_nxt > tcb.snd_una or (tcb.snd_max > tcb.snd_una):
        _arm(tcb, "rto_timer", current_rto(tcb), on_rto)
    else:
        _stop(tcb.rto_timer)


def arm_xmit_timer(tcb: TCB, kind: int, delay_ns: int) -> None:
    """The retransmission timer does another job for a while (Linux
    inet_csk_reset_xmit_timer with ICSK_TIME_LOSS_PROBE or REO_TIMEOUT)."""
    tcb.xmit_kind = kind
    _arm(tcb, "rto_timer", delay_ns, on_rto)


def set_xmit_timer(tcb: TCB) -> None:
    """Linux tcp_set_xmit_timer, after an ACK that acknowledged data: a loss
    probe if one may be sent, else the RTO."""
    if not rack.schedule_loss_probe(tcb, True):
        restart_rto(tcb)


def syn_interval(tcb: TCB) -> int:
    """Linux's SYN schedule: tcp_syn_linear_timeouts (4) retries at the
    initial RTO, then doubling: SYNs at 0, 1, 2, 3, 4, 5, 7, 11, 19 s ..."""
    linear = tcb.tcp.syn_linear_timeouts
    if tcb.retransmits <= linear:
        return TIMEOUT_INIT
    return min(RTO_MAX, TIMEOUT_INIT << (tcb.retransmits - linear))


def rearm_syn(tcb: TCB, delay_ns: int) -> None:
    """Move the SYN retransmission to ``delay_ns`` from now."""
    _arm(tcb, "rto_timer", delay_ns, on_rto)


def model_timeout(boundary: int, rto_base: int) -> int:
    """Linux tcp_model_timeout(): the time `boundary` doubling
    retransmissions take from rto_base, capped per retry at TCP_RTO_MAX."""
    thresh = (RTO_MAX // rto_base).bit_length() - 1
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base
    return ((2 << thresh) - 1) * rto_base + (boundary - thresh) * RTO_MAX


def on_rto(tcb: TCB) -> None:
    from .output import output, send_syn, send_synack

    kind, tcb.xmit_kind = tcb.xmit_kind, rack.RTO
    if kind == rack.TLP:
        if tcb.state not in (State.CLOSED, State.LISTEN, State.TIME_WAIT):
            rack.send_loss_probe(tcb)
        return
    if kind == rack.REO:
        if tcb.state not in (State.CLOSED, State.LISTEN, State.TIME_WAIT):
            rack.reo_timeout(tcb)
        return
    tcp = tcb.tcp
    now = tcp.clock.now_ns()
    state = tcb.state
    if state in (State.CLOSED, State.LISTEN, State.TIME_WAIT):
        return
    if state == State.SYN_SENT:
        # tcp_syn_retries is a time budget (retransmits_timed_out()).
        budget = model_timeout(tcp.syn_retries, TIMEOUT_INIT)
        if now - tcb.syn_start >= budget:
            tcp.fail(tcb, errno.ETIMEDOUT)
            return
        tcb.retransmits += 1
        tcp.mib["RetransSegs"] += 1
        tcp.ext["TCPTimeouts"] += 1
        tcb.total_retrans += 1
        send_syn(tcb)
        _arm(tcb, "rto_timer", syn_interval(tcb), on_rto)
        return
    if state == State.SYN_RECV:
        if tcb.retransmits >= tcp.synack_retries:
            tcp.drop_embryo(tcb)
            return
        tcb.retransmits += 1
        tcp.mib["RetransSegs"] += 1
        tcp.ext["TCPTimeouts"] += 1
        send_synack(tcb, tcb.ts_ok, tcb.sack_ok, tcb.wscale_ok)
        _arm(tcb, "rto_timer", TIMEOUT_INIT << tcb.retransmits, on_rto)
        return
    if tcb.snd_max <= tcb.snd_una:
        return  # nothing outstanding
    if tcb.retrans_stamp == 0:
        tcb.retrans_stamp = now
    limit = tcp.orphan_retries if tcb.orphan else tcp.retries2
    if now - tcb.retrans_stamp >= model_timeout(limit, tcb.rto_min) and tcb.retransmits:
        tcp.fail(tcb, errno.ETIMEDOUT)
        return
    # RFC 6298 5.4-5.6 and RFC 5681 (4): back off, collapse cwnd, resend.
    tcp.ext["TCPTimeouts"] += 1
    if tcb.retransmits == 0:
        tcb.cc.on_timeout(now)
    else:
        tcb.cc.cwnd = 1
    tcb.retransmits += 1
    tcb.backoff = min(tcb.backoff + 1, 15)
    tcb.in_recovery = False
    tcb.dupacks = 0
    tcb.rtt_seq = None  # Karn: no samples from retransmitted data
    tcb.lost = max(1, (tcb.snd_max - tcb.snd_una) // max(tcb.mss, 1))
    rack.timeout_mark_lost(tcb)
    tcb.loss_high = tcb.snd_max  # Linux tcp_enter_loss: high_seq
    tcb.snd_nxt = tcb.snd_una
    _stop(tcb.rto_timer)
    if output(tcb) == 0:
        arm_rto(tcb)


# -- persist (zero-window probes) --------------------------------------------------------
def arm_persist(tcb: TCB) -> None:
    t = tcb.persist_timer
    if t is not None and t.active:
        return
    _arm(tcb, "persist_timer", current_rto(tcb), on_persist)


def on_persist(tcb: TCB) -> None:
    """Linux tcp_probe_timer(): a segment with an old sequence number
    (snd_una - 1) makes the peer repeat its window."""
    from ...wire.tcp import ACK
    from .output import output, transmit

    tcp = tcb.tcp
    if tcb.state not in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.CLOSING,
                         State.LAST_ACK):
        return
    if tcb.snd_wnd > 0 or tcb.snd_base + tcb.sndq.size <= tcb.snd_nxt and not tcb.fin_queued:
        output(tcb)
        return
    tcb.keep_probes += 1
    limit = tcp.orphan_retries if tcb.orphan else tcp.retries2
    if tcb.keep_probes > limit:
        tcp.fail(tcb, errno.ETIMEDOUT)
        return
    tcp.ext["TCPWinProbe"] += 1
    if tcb.snd_una < tcb.snd_up <= tcb.snd_una + 0xFFFF:
        # Linux tcp_write_wakeup: in urgent mode a first probe at SND.UNA
        # carries the urgent pointer to the peer.
        transmit(tcb, tcb.snd_una, ACK)
    transmit(tcb, tcb.snd_una - 1, ACK)
    tcb.backoff = min(tcb.backoff + 1, 15)
    _arm(tcb, "persist_timer", current_rto(tcb), on_persist)


def stop_persist(tcb: TCB) -> None:
    _stop(tcb.persist_timer)


# -- keepalive -----------------------------------------------------------------------------
def keepalive_idle(tcb: TCB) -> int:
    return tcb.keepidle * NS_PER_SEC if tcb.keepidle else KEEPALIVE_TIME


def arm_keepalive(tcb: TCB) -> None:
    """(Re)start the keepalive timer: due keepidle after the last segment
    received (Linux keepalive_time_elapsed), so setting TCP_KEEPIDLE later
    counts from then too."""
    if tcb.keepalive and tcb.state in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT2):
        idle = tcb.tcp.clock.now_ns() - tcb.rcv_tstamp
        _arm(tcb, "keepalive_timer", max(0, keepalive_idle(tcb) - idle), on_keepalive)
    else:
        _stop(tcb.keepalive_timer)


def on_keepalive(tcb: TCB) -> None:
    """RFC 1122 4.2.3.6 as Linux tcp_keepalive_timer(): once nothing has been
    received for the idle time, probe every interval (<SEQ=SND.UNA-1><ACK>,
    no data); after the probe count, reset the connection (Linux sends an
    RST) with ETIMEDOUT. Any acceptable ACK clears the count and the idle time."""
    from ...wire.tcp import ACK
    from .output import send_rst, transmit

    tcp = tcb.tcp
    if not tcb.keepalive or tcb.state not in (State.ESTABLISHED, State.CLOSE_WAIT,
                                             State.FIN_WAIT2):
        return
    idle_ns = keepalive_idle(tcb)
    if tcb.snd_max > tcb.snd_una or tcb.snd_nxt < tcb.data_end:
        # Data in flight or queued: the retransmission or persist timer watches
        # the peer; look again an idle time from now.
        _arm(tcb, "keepalive_timer", idle_ns, on_keepalive)
        return
    elapsed = tcp.clock.now_ns() - tcb.rcv_tstamp
    if elapsed < idle_ns:
        _arm(tcb, "keepalive_timer", idle_ns - elapsed, on_keepalive)
        return
    count = tcb.keepcnt or KEEPALIVE_PROBES
    if tcb.keep_probes >= count:
        send_rst(tcb)
        tcp.fail(tcb, errno.ETIMEDOUT)
        return
    tcb.keep_probes += 1
    transmit(tcb, tcb.snd_una - 1, ACK)
    interval = tcb.keepintvl * NS_PER_SEC if tcb.keepintvl else KEEPALIVE_INTVL
    _arm(tcb, "keepalive_timer", interval, on_keepalive)


# -- TIME_WAIT and orphaned FIN_WAIT_2 --------------------------------------------------------
def enter_time_wait(tcb: TCB) -> None:
    tcp = tcb.tcp
    if tcp.tw_count >= tcp.max_tw_buckets:
        # Linux tcp_time_wait(): no bucket left, the connection just closes.
        tcp.ext["TCPTimeWaitOverflow"] += 1
        tcp.destroy(tcb)
        return
    tcb.state = State.TIME_WAIT
    tcp.on_state(tcb)
    for t in (tcb.rto_timer, tcb.delack_timer, tcb.persist_timer, tcb.keepalive_timer,
              tcb.finwait2_timer):
        if t is not None and t.active:  # (_stop)
            t.cancel()
    # A TIME-WAIT connection lives on for a minute (Linux keeps only a
    # mini-socket): the timers it no longer needs are let go (one armed
    # again is made anew), so what it keeps is less for the garbage
    # collector to walk. An orphan's FIN-WAIT-2 timer becomes its TIME-WAIT
    # timer (its callback swapped under the clock's lock, where the clock
    # reads it: one already taken to fire is on_finwait2, which leaves
    # TIME-WAIT alone, and the timer is pushed again); moved later than its
    # heap entry, only its deadline moves.
    tcb.rto_timer = tcb.delack_timer = tcb.persist_timer = tcb.keepalive_timer = None
    tcb.last_invalid_ack_ns = -(1 << 62)  # tcp_time_wait: tw_last_oow_ack_time = 0
    timer = tcb.finwait2_timer
    if timer is not None and tcb.timewait_timer is None:
        tcb.finwait2_timer = None
        tcb.timewait_timer = timer
        clock = tcp.clock
        with clock._lock:
            timer._callback = partial(on_timewait, tcb)
        timer.reschedule(clock.now_ns() + tcp.timewait_ns)
        return
    _arm(tcb, "timewait_timer", tcp.timewait_ns, on_timewait)


def restart_time_wait(tcb: TCB) -> None:
    """Linux inet_twsk_reschedule(tw, TCP_TIMEWAIT_LEN): TIME-WAIT starts over."""
    _arm(tcb, "timewait_timer", tcb.tcp.timewait_ns, on_timewait)


def on_timewait(tcb: TCB) -> None:
    if tcb.state == State.TIME_WAIT:
        tcb.tcp.destroy(tcb)


def arm_finwait2(tcb: TCB) -> None:
    _arm(tcb, "finwait2_timer", FIN_TIMEOUT, on_finwait2)


def on_finwait2(tcb: TCB) -> None:
    if tcb.state == State.FIN_WAIT2 and tcb.orphan:
        tcb.tcp.destroy(tcb)
