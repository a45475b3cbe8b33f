"""Segment arrival (RFC 9293 3.10.7) for SYN-SENT and the synchronized
states, with RFC 5961 (challenge ACKs, ACK validity), RFC 7323 (PAWS,
timestamps, window scaling), RFC 2018/6675 (SACK), RFC 5681/6582 (fast
retransmit and recovery) and Linux's delayed-ACK policy."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ...wire.tcp import ACK, FIN, RST, SYN
from .constants import (
    CAN_RECEIVE_DATA,
    INVALID_RATELIMIT,
    PAWS_24DAYS,
    SYN_SENT_RETRY,
    TIMEOUT_FALLBACK,
    State,
)
from .output import output, retransmit_range, send_ack, send_synack, transmit
from .segment import Segment
from .seq import unwrap
from .sizing import sndbuf_expand, sync_mss
from .timers import (
    arm_delack,
    arm_finwait2,
    arm_keepalive,
    enter_time_wait,
    rearm_syn,
    restart_rto,
    rtt_sample,
    stop_persist,
)

if TYPE_CHECKING:
    from .tcb import TCB


def _ts_before(a: int, b: int) -> bool:
    return ((a - b) & 0xFFFFFFFF) > 0x7FFFFFFF


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
    tcb.sack_ok = seg.sack_ok and tcp.sack
    tcb.ts_ok = seg.tsval is not None and tcp.timestamps
    if tcb.ts_ok and seg.tsval is not None:
        tcb.ts_recent = seg.tsval
        tcb.ts_recent_stamp = tcp.clock.now_ns()
    tcp.set_mss(tcb)


def segment_arrives(tcb: TCB, seg: Segment) -> None:
    tcb.segs_in += 1
    if tcb.state == State.SYN_SENT:
        _syn_sent(tcb, seg)
    else:
        _synchronized(tcb, seg)


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


# -- the synchronized states and SYN-RECEIVED (RFC 9293 3.10.7.4) ------------------------
def _synchronized(tcb: TCB, seg: Segment) -> None:
    tcp = tcb.tcp
    flags = seg.flags
    seq = unwrap(seg.seq, tcb.rcv_nxt)
    data = seg.payload
    seg_len = len(data) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    rcv_nxt = tcb.rcv_nxt
    wnd = max(0, tcb.rcv_wup + tcb.rcv_wnd - rcv_nxt)

    # RFC 7323 5.3: PAWS, before anything else.
    if tcb.ts_ok and seg.tsval is not None and not flags & RST:
        if _ts_before(seg.tsval, tcb.ts_recent):
            age = (tcp.clock.now_ns() - tcb.ts_recent_stamp) // 10**9
            if age < PAWS_24DAYS:
                # R1: drop it with an ACK. Like Linux (tcp_oow_rate_limited),
                # only segments without data are rate-limited: data cannot
                # start an ACK loop.
                tcp.ext["PAWSEstab"] += 1
                if flags & SYN:
                    challenge_ack(tcb)
                elif seg_len or not _rate_limited(tcb, "TCPACKSkippedPAWS"):
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
    if tcb.state == State.TIME_WAIT and flags & SYN and not flags & ACK:
        if tcp.time_wait_syn(tcb, seg, seq):
            return
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
            tcp.ext["DelayedACKLost"] += 1  # an old duplicate: our ACK was lost
        send_ack(tcb)
        if tcb.state == State.TIME_WAIT and flags & FIN:
            # TIME-WAIT: a retransmission of the remote FIN. Acknowledge it
            # and restart the 2 MSL timeout (RFC 9293 3.10.7.4, eighth check).
            enter_time_wait(tcb)
            return
        # Zero window: still take the ACK field (RFC 9293 3.10.7.4 note).
        if not (wnd == 0 and flags & ACK and seq == rcv_nxt):
            return
        data = data[:0]
        flags &= ~FIN

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
    ack = unwrap(seg.ack, tcb.snd_una)
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
    elif not _process_ack(tcb, seg, seq, ack, len(data), flags):
        return

    # RFC 7323 4.3: remember the timestamp of the segment that covers rcv_nxt.
    if tcb.ts_ok and seg.tsval is not None and seq <= tcb.rcv_wup:
        tcb.ts_recent = seg.tsval
        tcb.ts_recent_stamp = tcp.clock.now_ns()

    state = tcb.state
    if state in (State.FIN_WAIT1, State.CLOSING, State.LAST_ACK) and tcb.fin_sent \
            and tcb.snd_una >= tcb.snd_base + len(tcb.sndq) + 1:
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
    if state == State.TIME_WAIT:
        if flags & FIN:
            send_ack(tcb)  # a retransmitted FIN: ACK it, restart 2MSL
            enter_time_wait(tcb)
        return

    # Seventh: the segment text.
    if data or flags & FIN:
        if tcb.state in CAN_RECEIVE_DATA:
            if (tcb.orphan or tcb.shut_rd) and tcb.state in (State.FIN_WAIT1, State.FIN_WAIT2) \
                    and len(data) and seq + len(data) > tcb.rcv_nxt and tcb.orphan:
                # RFC 1122 4.2.2.13: data for a closed socket is answered with RST.
                tcp.ext["TCPAbortOnData"] += 1
                tcp.abort(tcb)
                return
            _receive(tcb, seq, data, bool(flags & FIN))
        elif data:
            pass  # CLOSE_WAIT, CLOSING, LAST_ACK: the peer already sent FIN; ignore
    output(tcb)
    if tcb.ack_pending and tcb.state != State.CLOSED:
        _ack_policy(tcb, now=tcb.ack_now)
    tcb.ack_now = False


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
    # SACK blocks (RFC 2018 / RFC 6675 scoreboard)
    sack_news = False
    if seg.sack and tcb.sack_ok:
        for left, right in seg.sack:
            s = unwrap(left, tcb.snd_una)
            e = unwrap(right, tcb.snd_una)
            if tcb.snd_una < e <= tcb.snd_max and s < e:
                sack_news |= tcb.scoreboard.add(max(s, tcb.snd_una), e)
    if ack > tcb.snd_una:
        _new_ack(tcb, seg, ack)
    elif ack == tcb.snd_una and data_len == 0 and not flags & FIN and window == tcb.snd_wnd \
            and tcb.snd_max > tcb.snd_una:
        _dupack(tcb, sack_news)
    # Window update (RFC 9293 3.10.7.4: SND.WL1 < SEG.SEQ or (= and WL2 =< SEG.ACK)).
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
    return True


def _new_ack(tcb: TCB, seg: Segment, ack: int) -> None:
    tcp = tcb.tcp
    now = tcp.clock.now_ns()
    acked = ack - tcb.snd_una
    data_acked = min(ack, tcb.snd_base + len(tcb.sndq)) - tcb.snd_base
    if data_acked > 0:
        del tcb.sndq[:data_acked]
        tcb.snd_base += data_acked
    tcb.snd_una = ack
    if tcb.snd_nxt < ack:
        tcb.snd_nxt = ack
    tcb.bytes_acked += acked
    # RTT (RFC 7323 4.1 with timestamps; else Karn's timed segment).
    if tcb.ts_ok and seg.tsecr:
        from .output import ts_now

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
            # Full ACK (RFC 6582 3.2 step 3): deflate to ssthresh.
            tcb.in_recovery = False
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
    restart_rto(tcb)
    if tcb.in_recovery and tcb.sack_ok:
        _sack_recovery(tcb)
    # Linux grows the send buffer with the window (tcp_sndbuf_expand).
    sndbuf_expand(tcb)
    tcb.wake()


def _dupack(tcb: TCB, sack_news: bool) -> None:
    """RFC 5681 3.2 / RFC 6675 5: three duplicates (or SACKed data three
    segments above the hole) start fast retransmit and recovery."""
    tcp = tcb.tcp
    tcb.dupacks += 1
    mss = max(tcb.mss, 1)
    if tcb.in_recovery:
        if tcb.sack_ok:
            _sack_recovery(tcb)
        else:
            tcb.cc.cwnd += 1  # RFC 5681 (4): inflate per duplicate
            output(tcb)
        return
    lost_by_sack = tcb.sack_ok and tcb.scoreboard.sacked_above(tcb.snd_una) >= \
        (tcp.reordering - 1) * mss + 1
    if tcb.dupacks < tcp.reordering and not lost_by_sack:
        return
    now = tcp.clock.now_ns()
    tcb.cc.on_loss(now)
    tcb.in_recovery = True
    tcb.recover = tcb.snd_max
    tcb.high_rxt = tcb.snd_una
    tcp.ext["TCPFastRetrans"] += 1
    tcp.ext["TCPSackRecovery" if tcb.sack_ok else "TCPRenoRecovery"] += 1
    tcb.lost = 1
    if tcb.sack_ok:
        tcb.cc.cwnd = tcb.cc.ssthresh
        _sack_recovery(tcb)
    else:
        retransmit_range(tcb, tcb.snd_una)
        tcb.cc.cwnd = tcb.cc.ssthresh + 3  # RFC 5681 (4)


def _sack_recovery(tcb: TCB) -> None:
    """RFC 6675 5 (loss recovery): while pipe < cwnd, resend the first lost
    hole after HighRxt, else send new data."""
    mss = max(tcb.mss, 1)
    reordering = tcb.tcp.reordering
    for _ in range(1024):
        sacked = tcb.scoreboard.sacked_bytes()
        # Bytes above HighRxt that are unSACKed and lost are not in the network.
        hole = tcb.scoreboard.next_hole(max(tcb.high_rxt, tcb.snd_una), tcb.snd_max)
        lost_pending = 0
        if hole is not None:
            start = hole[0]
            if tcb.scoreboard.sacked_above(start) >= (reordering - 1) * mss + 1 \
                    or start == tcb.snd_una:
                lost_pending = hole[1] - hole[0]
        pipe = (tcb.snd_max - tcb.snd_una) - sacked - lost_pending
        if tcb.cc.cwnd * mss - pipe < mss and pipe > 0:
            return
        if hole is not None and lost_pending:
            sent = retransmit_range(tcb, hole[0])
            if sent == 0:
                return
            tcb.high_rxt = hole[0] + sent
            continue
        if output(tcb) == 0:
            return
        return


def _receive(tcb: TCB, seq: int, data: memoryview, fin: bool) -> None:
    """Accept segment text and FIN (RFC 9293 3.10.7.4 seventh and eighth)."""
    tcp = tcb.tcp
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
            tcb.rcvq += data
            tcb.rcv_nxt += n
            tcb.bytes_received += n
        fin_now = fin
        # Pull in whatever the out-of-order queue now continues.
        while tcb.ooo and tcb.ooo[0][0] <= tcb.rcv_nxt:
            oseq, odata = tcb.ooo.pop(0)
            tcb.ooo_bytes -= len(odata)
            if oseq + len(odata) > tcb.rcv_nxt:
                piece = odata[tcb.rcv_nxt - oseq:]
                tcb.rcvq += piece
                tcb.rcv_nxt += len(piece)
                tcb.bytes_received += len(piece)
        if tcb.ooo_fin is not None and tcb.ooo_fin == tcb.rcv_nxt:
            fin_now = True
        if fin_now:
            _fin(tcb)
            return
        tcb.ack_pending = True
        if n > tcb.rcv_mss:
            tcb.rcv_mss = n
        if n >= tcb.rcv_mss:
            tcb.unacked_segments += 1
        if had_ooo:
            tcb.ack_now = True  # a hole was filled: tell the sender at once
        if n:
            tcb.wake()
        return
    # Out of order: keep it (within the buffer), then a duplicate ACK with SACK.
    tcp.ext["TCPOFOQueue"] += 1
    if n:
        if tcb.ooo_bytes + len(tcb.rcvq) + n > tcb.rcvbuf:
            tcp.ext["TCPOFODrop"] += 1
        else:
            _ooo_insert(tcb, seq, bytes(data))
            tcb.last_ooo = (seq, seq + n)
    if fin:
        tcb.ooo_fin = seq + n
    send_ack(tcb)


def _ooo_insert(tcb: TCB, seq: int, data: bytes) -> None:
    ooo = tcb.ooo
    end = seq + len(data)
    for s, d in ooo:
        if s <= seq and s + len(d) >= end:
            return  # already held
    i = 0
    while i < len(ooo) and ooo[i][0] < seq:
        i += 1
    ooo.insert(i, (seq, data))
    tcb.ooo_bytes += len(data)


def _fin(tcb: TCB) -> None:
    """Eighth check: the peer's FIN."""
    tcp = tcb.tcp
    tcb.rcv_nxt += 1
    tcb.fin_received = True
    tcb.ooo_fin = None
    state = tcb.state
    if state in (State.ESTABLISHED, State.SYN_RECV):
        tcb.state = State.CLOSE_WAIT
        tcp.on_state(tcb)
    elif state == State.FIN_WAIT1:
        if tcb.fin_sent and tcb.snd_una >= tcb.snd_base + len(tcb.sndq) + 1:
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


def _ack_policy(tcb: TCB, *, now: bool) -> None:
    """Linux: quick ACKs at the start, then every second full-sized segment,
    else the delayed-ACK timer (40 ms)."""
    if now or tcb.quickacks > 0 or tcb.unacked_segments >= 2:
        if tcb.quickacks > 0:
            tcb.quickacks -= 1
        send_ack(tcb)
    else:
        arm_delack(tcb)


def window_update_after_read(tcb: TCB) -> None:
    """Linux tcp_cleanup_rbuf(): after the application reads, advertise
    the opened window if it at least doubles what the peer may send."""
    if tcb.state not in (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2):
        return
    from .output import select_window

    current = max(0, tcb.rcv_wup + tcb.rcv_wnd - tcb.rcv_nxt)
    new = select_window(tcb)
    if new >= 2 * current and new - current >= min(tcb.advmss, tcb.rcvbuf // 2) or (
            current == 0 and new > 0):
        send_ack(tcb)
