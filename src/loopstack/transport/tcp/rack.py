"""RACK-TLP (RFC 8985) as Linux 6.18 runs it for SACK connections
(tcp_recovery = 1, tcp_early_retrans = 3): net/ipv4/tcp_recovery.c and
tcp_output.c's loss probe.

RACK: a segment is lost once a segment sent after it has been delivered
(cumulatively ACKed or SACKed) and more than that delivery's RTT plus a
reordering window has passed since it was sent (tcp_rack_detect_loss); the
window is a quarter of the minimum RTT, none at all in recovery or once
three segments are SACKed while no reordering has been seen
(tcp_rack_reo_wnd). A segment not yet due is looked at again by the
reordering timer (tcp_rack_reo_timeout). Recovery starts when RACK marks a
segment lost (tcp_time_to_recover); lost segments are resent in order while
fewer segments than cwnd are in flight (tcp_xmit_retransmit_queue).

TLP: with data in flight and no recovery going on, a probe timer (PTO) of
two smoothed RTTs, plus 2 ms (plus the minimum RTO when one segment is out,
for the peer's delayed ACK), at most the time left to the RTO
(tcp_schedule_loss_probe), sends one new segment if the windows allow, else
the last segment again (tcp_send_loss_probe); an ACK beyond the probe after
a retransmitted one shows a loss the probe repaired: cwnd is reduced once
(tcp_process_tlp_ack).

The sent segments are kept as ``tcb.sent``: [start, end, xmit time (ns),
flags] in sequence order, from SND.UNA to SND.MAX (a FIN counts one).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from . import timers
from .constants import MS, TIMEOUT_INIT

if TYPE_CHECKING:
    from .tcb import TCB

# Segment flags (Linux TCP_SKB_CB(skb)->sacked)
SACKED = 1  # TCPCB_SACKED_ACKED
LOST = 2  # TCPCB_LOST
RXMIT = 4  # TCPCB_SACKED_RETRANS: a retransmission is in flight
EVER = 8  # TCPCB_EVER_RETRANS

JIFFY_NS = 4 * MS  # HZ = 250
TIMEOUT_MIN_NS = 2 * MS  # TCP_TIMEOUT_MIN_US
# Which job the retransmission timer does (Linux icsk_pending).
RTO, TLP, REO = 0, 1, 2


def _jiffies_ceil(ns: int) -> int:
    """usecs_to_jiffies: a delay rounded up to whole ticks."""
    return -(-ns // JIFFY_NS) * JIFFY_NS


# -- the record of what was sent -----------------------------------------------------
def _split(tcb: TCB, at: int) -> None:
    """Cut the entry holding ``at`` (strictly inside) in two (tcp_fragment)."""
    sent = tcb.sent
    i = bisect_right(sent, [at, 1 << 62]) - 1
    if i >= 0:
        e = sent[i]
        if e[0] < at < e[1]:
            sent.insert(i + 1, [at, e[1], e[2], e[3]])
            e[1] = at


def on_sent(tcb: TCB, seq: int, end: int, now: int) -> None:
    """A segment [seq, end) left: new data is appended; a retransmission
    marks what it covers as retransmitted (and in flight again), sent now."""
    sent = tcb.sent
    if not sent or seq >= sent[-1][1]:
        sent.append([seq, end, now, 0])
        return
    _split(tcb, seq)
    _split(tcb, end)
    i = bisect_right(sent, [seq, 1 << 62]) - 1
    i = max(i, 0)
    while i < len(sent) and sent[i][0] < end:
        e = sent[i]
        if e[1] > seq:
            e[2] = now
            e[3] |= RXMIT | EVER
        i += 1


def on_cumulative_ack(tcb: TCB, ack: int, now: int) -> int:
    """tcp_clean_rtx_queue: forget what is acknowledged; every segment
    delivered this way (not SACKed earlier) advances RACK. Returns how many
    were delivered now."""
    sent = tcb.sent
    n = delivered = 0
    for e in sent:
        if e[1] > ack:
            break
        if not e[3] & SACKED:
            advance(tcb, e[3], e[1], e[2], now)
            delivered += 1
        n += 1
    if n:
        del sent[:n]
    if sent and sent[0][0] < ack:
        sent[0][0] = ack  # tcp_trim_head
    return delivered


def on_sack(tcb: TCB, start: int, end: int, now: int) -> int:
    """tcp_sacktag_one: segments a SACK block covers are delivered: no
    longer lost or in flight, and RACK advances. Returns how many."""
    _split(tcb, start)
    _split(tcb, end)
    sent = tcb.sent
    i = max(bisect_right(sent, [start, 1 << 62]) - 1, 0)
    delivered = 0
    while i < len(sent) and sent[i][0] < end:
        e = sent[i]
        if e[0] >= start and e[1] <= end and not e[3] & SACKED:
            advance(tcb, e[3], e[1], e[2], now)
            e[3] = (e[3] & EVER) | SACKED
            delivered += 1
        i += 1
    return delivered


def advance(tcb: TCB, flags: int, end: int, xmit: int, now: int) -> None:
    """tcp_rack_advance: the most recently sent delivered segment, and its
    RTT. A retransmitted one delivered sooner than the minimum RTT was
    probably the original: no evidence."""
    rtt = now - xmit
    if flags & EVER and rtt < tcb.min_rtt:
        return
    tcb.rack_advanced = True
    tcb.rack_rtt = rtt
    if xmit > tcb.rack_xmit or (xmit == tcb.rack_xmit and end > tcb.rack_end):
        tcb.rack_xmit = xmit
        tcb.rack_end = end


def in_flight(tcb: TCB) -> int:
    """tcp_packets_in_flight: segments out, less those SACKed or lost, plus
    retransmissions out."""
    n = 0
    for e in tcb.sent:
        f = e[3]
        if not f & SACKED and (not f & LOST or f & RXMIT):
            n += 1
    return n


def lost_count(tcb: TCB) -> int:
    return sum(1 for e in tcb.sent if e[3] & LOST and not e[3] & SACKED)


def sacked_count(tcb: TCB) -> int:
    return sum(1 for e in tcb.sent if e[3] & SACKED)


# -- RACK loss detection ---------------------------------------------------------------
def _reo_wnd(tcb: TCB) -> int:
    """tcp_rack_reo_wnd (no reordering ever seen here)."""
    if tcb.in_recovery or sacked_count(tcb) >= tcb.tcp.reordering:
        return 0
    return min(tcb.min_rtt >> 2, tcb.srtt)


def detect_loss(tcb: TCB, now: int) -> int:
    """tcp_rack_detect_loss: mark lost what a later delivery shows lost;
    returns how long until the next segment would be (0: none pending)."""
    reo_wnd = _reo_wnd(tcb)
    wait = 0
    for e in tcb.sent:
        f = e[3]
        if f & SACKED or (f & LOST and not f & RXMIT):
            continue
        if not (tcb.rack_xmit > e[2] or (tcb.rack_xmit == e[2] and tcb.rack_end > e[1])):
            continue  # sent after the delivered one: no evidence yet
        remaining = tcb.rack_rtt + reo_wnd - (now - e[2])
        if remaining <= 0:
            mark_lost(tcb, e)
        else:
            wait = max(wait, remaining)
    return wait


def mark_lost(tcb: TCB, e: list[int]) -> None:
    """tcp_mark_skb_lost: lost; a retransmission of it that was out is lost too."""
    if e[3] & LOST:
        if e[3] & RXMIT:
            e[3] &= ~RXMIT
            ext = tcb.tcp.ext
            ext["TCPLostRetransmit"] = ext.get("TCPLostRetransmit", 0) + 1
    else:
        e[3] |= LOST


def mark_lost_step(tcb: TCB) -> bool:
    """tcp_rack_mark_lost after an ACK: detect, and for segments not yet due
    arm the reordering timer (True: the timer now waits for them)."""
    if not tcb.rack_advanced:
        return False
    tcb.rack_advanced = False
    now = tcb.tcp.clock.now_ns()
    wait = detect_loss(tcb, now)
    if not wait:
        return False
    timers.arm_xmit_timer(tcb, REO, min(_jiffies_ceil(wait + TIMEOUT_MIN_NS), tcb.rto))
    return True


def reo_timeout(tcb: TCB) -> None:
    """tcp_rack_reo_timeout: look again; what is lost now starts recovery
    and is resent."""
    from .input import cwnd_reduction, enter_recovery, xmit_retransmit_queue

    before = in_flight(tcb)
    detect_loss(tcb, tcb.tcp.clock.now_ns())
    if in_flight(tcb) != before:
        if not tcb.in_recovery and tcb.snd_una >= tcb.loss_high:
            enter_recovery(tcb)
            cwnd_reduction(tcb, 1, False)
        xmit_retransmit_queue(tcb)
    timers.restart_rto(tcb)


def timeout_mark_lost(tcb: TCB) -> None:
    """tcp_timeout_mark_lost, on an RTO: everything not SACKed is lost, and
    the retransmissions out with it; no probe is outstanding any more."""
    for e in tcb.sent:
        if not e[3] & SACKED:
            e[3] = (e[3] & ~RXMIT) | LOST
    tcb.tlp_high_seq = 0


# -- Tail Loss Probe ---------------------------------------------------------------------
def schedule_loss_probe(tcb: TCB, advancing_rto: bool) -> bool:
    """tcp_schedule_loss_probe: arm the PTO instead of the RTO."""
    if not tcb.sack_ok or tcb.in_recovery or tcb.snd_una < tcb.loss_high or not tcb.sent \
            or not tcb.tcp.early_retrans:
        return False
    if tcb.srtt:
        pto = 2 * tcb.srtt + (tcb.rto_min if len(tcb.sent) == 1 else TIMEOUT_MIN_NS)
        pto = _jiffies_ceil(pto)
    else:
        pto = TIMEOUT_INIT
    now = tcb.tcp.clock.now_ns()
    rto_delta = tcb.rto if advancing_rto else tcb.sent[0][2] + tcb.rto - now
    if rto_delta > 0:
        pto = min(pto, rto_delta)
    timers.arm_xmit_timer(tcb, TLP, pto)
    return True


def send_loss_probe(tcb: TCB) -> None:
    """tcp_send_loss_probe: one new segment if the windows let one go (cwnd
    aside), else the last segment again; then the RTO from now."""
    from .output import output, retransmit_range

    if tcb.tlp_high_seq or not tcb.sent:
        timers.restart_rto(tcb)
        return
    tcb.tlp_retrans = False
    sent = 0
    if tcb.snd_nxt < tcb.data_end and tcb.snd_una + tcb.snd_wnd > tcb.snd_nxt:
        sent = output(tcb, probe=True)
    if not sent:
        last = tcb.sent[-1]
        start = max(last[0], min(last[1], tcb.data_end) - tcb.mss)
        if retransmit_range(tcb, start):
            sent = 1
            tcb.tlp_retrans = True
    if sent:
        tcb.tlp_high_seq = tcb.snd_nxt
        ext = tcb.tcp.ext
        ext["TCPLossProbes"] = ext.get("TCPLossProbes", 0) + 1
    timers.restart_rto(tcb)


def process_tlp_ack(tcb: TCB, ack: int, progress: bool) -> None:
    """tcp_process_tlp_ack: an ACK at or beyond the probe ends the episode;
    beyond a retransmitted probe it shows a loss the probe repaired, and
    cwnd is reduced once (CWR, TCPLossProbeRecovery); a plain duplicate ACK
    means both copies arrived."""
    if ack < tcb.tlp_high_seq:
        return
    if not tcb.tlp_retrans:
        tcb.tlp_high_seq = 0
    elif ack > tcb.tlp_high_seq:
        tcb.tlp_high_seq = 0
        tcb.cc.on_loss(tcb.tcp.clock.now_ns())
        tcb.cc.cwnd = max(min(tcb.cc.cwnd, tcb.cc.ssthresh), 1)
        ext = tcb.tcp.ext
        ext["TCPLossProbeRecovery"] = ext.get("TCPLossProbeRecovery", 0) + 1
    elif not progress:
        tcb.tlp_high_seq = 0
