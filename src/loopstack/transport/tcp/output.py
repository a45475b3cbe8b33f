"""Sending: segments, options, the send loop (RFC 9293 3.8.6, Nagle with
Minshall's refinement as Linux does, no sender-side SWS avoidance: Linux has
none) and ACKs. The window each segment offers is window.py's.
"""

from __future__ import annotations

import struct
from functools import partial
from typing import TYPE_CHECKING

from ...ip.packet import Record
from ...wire.checksum import checksum, pseudo_sum
from ...wire.tcp import ACK, FIN, PROTO_TCP, PSH, RST, SYN, URG
from . import ack as ack_policy
from . import fastpath, rack, timers
from .constants import MAX_WINDOW, TIMEOUT_INIT, State
from .rack import JIFFY_NS as RACK_JIFFY_NS
from .rack import TIMEOUT_MIN_NS, TLP
from .segment import Segment
from .seq import wire
from .window import compute_window, select_window

if TYPE_CHECKING:
    from .tcb import TCB

_HDR = struct.Struct("!HHIIHHHH")
_TS = struct.Struct("!BBBBII")  # NOP NOP kind len tsval tsecr
_SACK_BLOCK = struct.Struct("!II")
TS_LEN = 12


def ts_now(tcb: TCB) -> int:
    """TSval: a millisecond clock plus the connection's random offset."""
    return (tcb.tcp.clock.now_ns() // 1_000_000 + tcb.ts_offset) & 0xFFFFFFFF


def syn_options(tcb: TCB, *, synack: bool, peer_ts: bool, peer_sack: bool,
                peer_ws: bool, tsval: int | None = None) -> bytes:
    """Linux's SYN option layout (tcp_options_write): MSS, SACK-permitted +
    timestamps (or NOP NOP TS, or NOP NOP SACKOK), NOP + window scale."""
    use_ts = tcb.tcp.timestamps and (peer_ts or not synack)
    use_sack = tcb.tcp.sack and (peer_sack or not synack)
    use_ws = tcb.tcp.window_scaling and (peer_ws or not synack)
    tv: int | None = None
    ecr = 0
    if use_ts:
        tv = ts_now(tcb) if tsval is None else tsval
        ecr = tcb.ts_recent if synack else 0
    return pack_syn_options(tcb.advmss, tv, ecr, use_sack, tcb.rcv_wscale if use_ws else None)


def pack_syn_options(mss: int, tsval: int | None, tsecr: int, sack_ok: bool,
                     wscale: int | None) -> bytes:
    """The option bytes of a SYN or SYN-ACK (syn_options' layout), from the
    fields a parsed SYN holds: a SYN record's bytes (build_segment) are
    these too."""
    opts = bytearray(struct.pack("!BBH", 2, 4, mss))
    if tsval is not None:
        if sack_ok:
            opts += struct.pack("!BBBBII", 4, 2, 8, 10, tsval, tsecr)
        else:
            opts += struct.pack("!BBBBII", 1, 1, 8, 10, tsval, tsecr)
    elif sack_ok:
        opts += bytes((1, 1, 4, 2))
    if wscale is not None:
        opts += bytes((1, 3, 3, wscale))
    return bytes(opts)


def _send_syn_record(tcb: TCB, flags: int, synack: bool, peer_ts: bool, peer_sack: bool,
                     peer_ws: bool, tsval: int | None) -> bool:
    """A SYN or SYN-ACK across an unobserved lo as its record (fastpath.py):
    what syn_options and transmit (with the options and the initial window
    given) do, the options as the parsed fields (mss, wscale, sack_ok,
    tsval/tsecr) a receiver's parse_segment would find in syn_options'
    bytes. False (nothing done): the caller builds the bytes."""
    rt = tcb.route
    if rt is None or len(rt.dst) != 4 or tcb.snd_up > tcb.snd_una or tcb.tos \
            or not rt.iface.carries_records():
        return False  # (a TOS: the bytes carry it)
    tcp = tcb.tcp
    use_ts = tcp.timestamps and (peer_ts or not synack)
    use_sack = tcp.sack and (peer_sack or not synack)
    use_ws = tcp.window_scaling and (peer_ws or not synack)
    # (pack_syn_options' length) MSS; TS (with SACKOK) or SACKOK; WS
    hdr_len = 24 + (12 if use_ts else 4 if use_sack else 0) + (4 if use_ws else 0)
    if 20 + hdr_len > rt.iface.mtu:
        return False
    seg = Segment(tcb.local_port, tcb.remote_port, tcb.iss & 0xFFFFFFFF,
                  tcb.rcv_nxt & 0xFFFFFFFF if flags & ACK else 0, flags,
                  min(tcb.rcv_wnd, MAX_WINDOW), memoryview(b""), tcb.advmss)
    seg.hdr_len = hdr_len
    if use_ts:
        seg.tsval = ((tcp.clock.now_ns() // 1_000_000 + tcb.ts_offset) & 0xFFFFFFFF
                     if tsval is None else tsval)  # (ts_now)
        seg.tsecr = tcb.ts_recent if synack else 0
    seg.sack_ok = use_sack
    if use_ws:
        seg.wscale = tcb.rcv_wscale
    _count_sent(tcb, flags, b"")
    # (It fits and lo carries records, both checked above: IP takes it.)
    tcp.ipv4.output_record(rt, PROTO_TCP, hdr_len, tcb.ttl, seg, build_segment)
    return True


def data_options(tcb: TCB, with_sack: bool) -> bytes:
    """Options on a synchronized segment: timestamps, then SACK blocks."""
    opts = b""
    if tcb.ts_ok:
        opts = _TS.pack(1, 1, 8, 10, ts_now(tcb), tcb.ts_recent)
    if with_sack and tcb.sack_ok and tcb.ooo:
        from .sack import receiver_blocks

        room = (40 - len(opts) - 4) // 8
        ranges = _ooo_ranges(tcb)
        blocks = receiver_blocks(ranges, tcb.last_ooo, min(room, 4))
        if blocks:
            opts += bytes((1, 1, 5, 2 + 8 * len(blocks))) + b"".join(
                _SACK_BLOCK.pack(wire(s), wire(e)) for s, e in blocks)
    return opts


def _ooo_ranges(tcb: TCB) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seq, data in tcb.ooo:
        end = seq + len(data)
        if out and seq <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((seq, end))
    return out


def transmit(tcb: TCB, seq: int, flags: int, payload: bytes | bytearray | memoryview = b"",
             options: bytes | None = None, window: int | None = None) -> None:
    """Build one segment and hand it to IP."""
    tcp = tcb.tcp
    rt = tcb.route
    if rt is None:
        return
    if options is None and window is None and not flags & RST and tcb.snd_up <= tcb.snd_una \
            and fastpath.enabled and _send_record(tcb, seq, flags, payload, tcp.clock.now_ns()):
        # (fastpath.py) an ACK, a FIN or data on an unobserved lo, as its
        # record, in one frame: no urgent pointer, no RST to count.
        return
    # On an unobserved lo the segment crosses as its record (ip/packet.py
    # Record): no bytes built here, none parsed at the other end. Only the
    # options every synchronized segment carries (timestamps, RFC 7323 3.2)
    # go that way; SYNs and SACK blocks take the byte path.
    direct = False
    tsval: int | None = None
    if options is None:
        if not (flags & ACK and not payload and tcb.sack_ok and tcb.ooo) \
                and len(rt.dst) == 4 and not tcb.tos and rt.iface.carries_records():
            direct = True
            if tcb.ts_ok:  # (ts_now)
                tsval = (tcp.clock.now_ns() // 1_000_000 + tcb.ts_offset) & 0xFFFFFFFF
        else:
            options = data_options(tcb, with_sack=bool(flags & ACK) and not payload)
    if window is None:
        window = select_window(tcb)
        win_field = min(window >> tcb.rcv_wscale, MAX_WINDOW)
        tcb.rcv_wnd = window
        tcb.rcv_wup = tcb.rcv_nxt
    else:
        win_field = window
    ack = tcb.rcv_nxt & 0xFFFFFFFF if flags & ACK else 0  # (seq.wire)
    urg_ptr = 0
    snd_up = tcb.snd_up
    if snd_up > seq and snd_up > tcb.snd_una:
        # Urgent mode (RFC 9293 3.8.5, RFC 6093; Linux __tcp_transmit_skb):
        # every segment that starts before the urgent pointer carries it,
        # as the offset of the byte after the last urgent one; further than
        # 64 KiB ahead it says 0xFFFF, "keep reading", while SND.NXT is near.
        if snd_up - seq < 0x10000:
            urg_ptr = snd_up - seq
            flags |= URG
        elif seq + 0xFFFF > tcb.snd_nxt:
            urg_ptr = 0xFFFF
            flags |= URG
    if direct:
        seg = Segment(tcb.local_port, tcb.remote_port, seq & 0xFFFFFFFF, ack, flags, win_field,
                      payload if type(payload) is memoryview else memoryview(payload))
        if urg_ptr:
            seg.urg_ptr = urg_ptr
        if tsval is not None:
            seg.tsval = tsval
            seg.tsecr = tcb.ts_recent
            seg.hdr_len = 20 + TS_LEN
        _count_sent(tcb, flags, payload)
        if not tcp.ipv4.output_record(rt, PROTO_TCP, seg.hdr_len + len(payload), tcb.ttl, seg,
                                      build_segment):
            tcp.ip_output(rt, build_segment(seg), tcb.ttl)
        return
    assert options is not None
    doff = (20 + len(options)) // 4
    head = _HDR.pack(tcb.local_port, tcb.remote_port, wire(seq), ack, (doff << 12) | flags,
                     win_field, 0, urg_ptr)
    if rt.needs_checksums:
        segment = b"".join((head, options, payload))
        csum = checksum(segment, pseudo_sum(rt.src, rt.dst, PROTO_TCP, len(segment)))
        parts: tuple[bytes | bytearray | memoryview, ...] = (
            segment[:16], csum.to_bytes(2, "big"), segment[18:])
    else:
        parts = (head, options, payload)  # joined once, with the IP header
    _count_sent(tcb, flags, payload)
    tcp.ip_output(rt, parts, tcb.ttl, tcb.tos, tcb.tclass)


def _count_sent(tcb: TCB, flags: int, payload: bytes | bytearray | memoryview) -> None:
    """A segment leaves: the ACK policy hears of it, the counters move."""
    if flags & ACK:
        ack_policy.ack_sent(tcb)
    if payload:
        ack_policy.data_sent(tcb)
    tcb.segs_out += 1
    mib = tcb.tcp.mib
    mib["OutSegs"] += 1
    if flags & RST:
        mib["OutRsts"] += 1


def build_segment(seg: Segment) -> bytes:
    """The bytes of a segment the direct path made (checksum zero: it is
    offloaded on lo), exactly as :func:`transmit` builds them."""
    head = _HDR.pack(seg.sport, seg.dport, seg.seq, seg.ack,
                     ((seg.hdr_len // 4) << 12) | seg.flags, seg.window, 0, seg.urg_ptr)
    if seg.mss is not None:  # a SYN or SYN-ACK (_send_syn_record)
        return b"".join((head, pack_syn_options(seg.mss, seg.tsval, seg.tsecr, seg.sack_ok,
                                                seg.wscale), seg.payload))
    if seg.tsval is not None:
        return b"".join((head, _TS.pack(1, 1, 8, 10, seg.tsval, seg.tsecr), seg.payload))
    return b"".join((head, seg.payload))


def acceptable_seq(tcb: TCB) -> int:
    """SEQ for a segment without data (Linux tcp_acceptable_seq): the highest
    sequence sent, snd_max, even while a timeout has rewound snd_nxt, since
    the peer may already hold everything up to it and would find a lower SEQ
    unacceptable (RFC 9293 3.10.7.4), dropping the ACK with it. If the peer
    has since shrunk its window below snd_max, its right edge."""
    seq = tcb.snd_max
    if tcb.state in (State.SYN_SENT, State.SYN_RECV):
        return seq
    end = tcb.snd_una + tcb.snd_wnd
    if end >= seq or (tcb.wscale_ok and seq - end < 1 << tcb.rcv_wscale):
        return seq
    return end


def send_ack(tcb: TCB) -> None:
    transmit(tcb, acceptable_seq(tcb), ACK)


def send_rst(tcb: TCB) -> None:
    """An abortive close's RST (RFC 9293 3.10.4 ABORT), from the SEQ the peer
    will accept (see acceptable_seq)."""
    transmit(tcb, acceptable_seq(tcb), RST | ACK)


def send_syn(tcb: TCB) -> None:
    """The SYN offers the window connect() chose (window.select_initial_window)."""
    if fastpath.enabled and _send_syn_record(tcb, SYN, False, False, False, False, None):
        return
    opts = syn_options(tcb, synack=False, peer_ts=False, peer_sack=False, peer_ws=False)
    transmit(tcb, tcb.iss, SYN, options=opts, window=min(tcb.rcv_wnd, MAX_WINDOW))


def send_synack(tcb: TCB, peer_ts: bool, peer_sack: bool, peer_ws: bool,
                tsval: int | None = None) -> None:
    """The SYN-ACK offers the window the request chose (Linux
    tcp_openreq_init_rwin; for a simultaneous open, connect()'s)."""
    if fastpath.enabled:
        tcb.rcv_wup = tcb.rcv_nxt
        if _send_syn_record(tcb, SYN | ACK, True, peer_ts, peer_sack, peer_ws, tsval):
            return
    opts = syn_options(tcb, synack=True, peer_ts=peer_ts, peer_sack=peer_sack,
                       peer_ws=peer_ws, tsval=tsval)
    tcb.rcv_wup = tcb.rcv_nxt
    transmit(tcb, tcb.iss, SYN | ACK, options=opts, window=min(tcb.rcv_wnd, MAX_WINDOW))


def effective_mss(tcb: TCB) -> int:
    """Payload bytes per full segment: the send MSS less timestamp option bytes."""
    return tcb.mss


# The states in which output() sends (data, or a FIN queued by a close).
_SENDING_STATES = (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.CLOSING,
                   State.LAST_ACK)
_ACK_PSH = ACK | PSH


def output(tcb: TCB, probe: bool = False) -> int:
    """Send what the windows allow (RFC 9293 3.8.6, RFC 5681). Returns the
    number of segments sent. ``probe``: one new segment whatever cwnd and
    Nagle say (a tail loss probe, rack.py)."""
    if tcb.snd_nxt >= tcb.snd_base + tcb.sndq.size and not tcb.fin_queued:
        return 0  # nothing queued beyond what is sent: the common case after an ACK
    if tcb.state not in _SENDING_STATES:
        return 0
    mss = tcb.mss
    cwnd = tcb.cc.cwnd
    if tcb.dupacks and not tcb.in_recovery:
        # Limited transmit (RFC 3042, RFC 6675 5 step 2): each of the first two
        # duplicate ACKs lets one new segment out beyond cwnd, cwnd unchanged.
        cwnd += min(tcb.dupacks, 2)
    sent = 0
    new_data = False
    tcp = tcb.tcp
    # The send-side prediction (fastpath.py): new data on an unobserved lo
    # leave as records built here, with one clock read for the call.
    fast = fastpath.enabled
    if fast and not probe and not tcb.in_recovery and not tcb.fin_queued \
            and tcb.snd_up <= tcb.snd_una:
        # The common case first: outside recovery (no pipe), no FIN, no
        # urgent data, no probe. New data end with a loss probe scheduled
        # (below) when tlp holds (it does not change in the loop;
        # rack.schedule_loss_probe asks the same): the retransmission timer
        # it arms replaces the RTO that arm_rto would arm first, so that
        # first arming is skipped (Linux arms both too; only the last is seen).
        pipe = -1
        tlp = tcb.sack_ok and tcb.snd_una >= tcb.loss_high and tcp.early_retrans
        now = tcp.clock.now_ns()
        # The loop below, its tests answered for this case: new data only
        # (seq >= snd_max: no retransmission, no SACKed range to skip),
        # each segment what mss, the peer's window and cwnd allow. Anything
        # else (nothing fits, a retransmission, a FIN) goes on in that loop,
        # which decides from the state left here.
        sndq = tcb.sndq
        while True:
            seq = tcb.snd_nxt
            snd_base = tcb.snd_base
            data_end = snd_base + sndq.size
            avail = data_end - seq
            if avail <= 0 or seq < tcb.snd_max or tcb.fin_queued:
                if avail <= 0 and not tcb.fin_queued:
                    # (the loop's test: nothing more to send; then its end)
                    if new_data and tcb.sack_ok:
                        _schedule_loss_probe(tcb, now)
                    return sent
                break
            snd_una = tcb.snd_una
            wnd_room = snd_una + tcb.snd_wnd - seq
            cwnd_room = (cwnd - -(-(seq - snd_una) // mss)) * mss
            n = min(avail, mss, wnd_room, cwnd_room)
            if n <= 0:
                break  # a zero window or cwnd full: the loop decides (a persist timer)
            if n < mss and n == avail and not tcb.nodelay and tcb.snd_sml > snd_una:
                # Nagle (Minshall's variant), as the loop: hold it.
                if new_data and tcb.sack_ok:
                    _schedule_loss_probe(tcb, now)
                return sent
            end = seq + n
            flags = _ACK_PSH if end == data_end else ACK
            payload = sndq.view(seq - snd_base, n)
            new_data = True
            _send_new(tcb, seq, end, end, flags, payload, now)
            sent += 1
            if n < mss:
                tcb.snd_sml = end
            tcb.snd_nxt = end
            if end > tcb.snd_max:
                tcb.snd_max = end
            if not tlp:
                timers.arm_rto(tcb)
            tcb.last_send_ns = now
    else:
        # In SACK recovery cwnd is held against the segments in flight (Linux
        # tcp_packets_in_flight: not SACKed, not lost, or retransmitted).
        pipe = rack.in_flight(tcb) if tcb.in_recovery and tcb.sack_ok else -1
        # (tlp: as above)
        tlp = not probe and tcb.sack_ok and not tcb.in_recovery \
            and tcb.snd_una >= tcb.loss_high and tcp.early_retrans
        now = tcp.clock.now_ns() if fast else 0
    while True:
        seq = tcb.snd_nxt
        data_end = tcb.snd_base + tcb.sndq.size
        avail = data_end - seq
        fin_pending = tcb.fin_queued and seq <= data_end
        if avail <= 0 and not fin_pending:
            break
        if seq < tcb.snd_max and tcb.sack_ok and tcb.scoreboard.is_sacked(seq):
            # Retransmitting after a timeout: skip what the peer holds (RFC 6675 5.1).
            for s, e in tcb.scoreboard.ranges:
                if s <= seq < e:
                    tcb.snd_nxt = min(e, data_end + (1 if tcb.fin_sent else 0))
                    break
            continue
        wnd_room = tcb.snd_una + tcb.snd_wnd - seq
        # cwnd counts segments, as Linux's snd_cwnd (tcp_cwnd_test): a
        # partial segment in flight uses a whole one, so cwnd never cuts a
        # sliver off the next segment (RFC 1122 4.2.3.4: no silly segments).
        if probe:
            cwnd_room = mss
        elif pipe >= 0:
            cwnd_room = (cwnd - pipe) * mss
        else:
            cwnd_room = (cwnd - -(-(seq - tcb.snd_una) // mss)) * mss
        n = min(max(avail, 0), mss, wnd_room, cwnd_room)
        if n < 0:
            n = 0
        fin = fin_pending and n == max(avail, 0) and wnd_room >= n + 1 and cwnd_room > n
        if n <= 0 and not fin:
            # Zero window with data or a FIN waiting and nothing in flight:
            # probe it (Linux tcp_check_probe_timer), or nothing ever moves.
            if tcb.snd_wnd == 0 and seq == tcb.snd_una and (avail > 0 or fin_pending):
                timers.arm_persist(tcb)
            break
        if 0 < n < mss and n == avail and not fin and seq >= tcb.snd_max:
            # Nagle (RFC 896), Minshall's variant as Linux: hold a partial
            # segment while an earlier small segment is unacknowledged; not
            # in urgent mode (Linux tcp_nagle_test: tcp_urg_mode).
            if not tcb.nodelay and tcb.snd_sml > tcb.snd_una and tcb.snd_up <= tcb.snd_una \
                    and not probe:
                break
        # A view of the queued chunk, not a copy, when the segment lies in
        # one (see bufq.py).
        payload = tcb.sndq.view(seq - tcb.snd_base, n)
        flags = ACK
        if fin:
            flags |= FIN
        if n and seq + n == data_end:
            flags |= PSH
        retransmit = seq < tcb.snd_max
        end = seq + n + (1 if fin else 0)
        if fast and not retransmit and (n or fin) and tcb.snd_up <= tcb.snd_una:
            new_data = True
            _send_new(tcb, seq, seq + n, end, flags, payload, now)
        else:
            if retransmit:
                tcp.mib["RetransSegs"] += 1
                tcb.total_retrans += 1
            else:
                new_data = True
                if tcb.rtt_seq is None and not tcb.ts_ok:
                    tcb.rtt_seq = seq + n
                    tcb.rtt_start = tcp.clock.now_ns()
            transmit(tcb, seq, flags, payload)
            now = tcp.clock.now_ns()
            rack.on_sent(tcb, seq, end, now)
        sent += 1
        if pipe >= 0:
            pipe += 1
        if n < mss and n:
            tcb.snd_sml = seq + n
        tcb.snd_nxt = end
        if fin:
            tcb.fin_sent = True
        if tcb.snd_nxt > tcb.snd_max:
            tcb.snd_max = tcb.snd_nxt
        if retransmit or not tlp:
            timers.arm_rto(tcb)
        tcb.last_send_ns = now
        if fin or probe:
            break
    if new_data and not probe and tcb.sack_ok:
        # Linux tcp_write_xmit's end
        if fast:
            _schedule_loss_probe(tcb, now)
        else:
            rack.schedule_loss_probe(tcb, False)
    return sent


def _send_new(tcb: TCB, seq: int, data_end: int, end: int, flags: int,
              payload: bytes | bytearray | memoryview, now: int) -> None:
    """New data (``seq`` to ``data_end``; ``end`` past a FIN) sent on the
    fast path, by both of output()'s loops: timed for the RTT without
    timestamps (Karn), sent as a record where lo carries them, and noted for
    RACK (rack.on_sent: new data join the end of the record)."""
    if tcb.rtt_seq is None and not tcb.ts_ok:
        tcb.rtt_seq = data_end
        tcb.rtt_start = now
    if not _send_record(tcb, seq, flags, payload, now):
        transmit(tcb, seq, flags, payload)
    rsent = tcb.sent
    if not rsent or seq >= rsent[-1][1]:
        rsent.append([seq, end, now, 0])
    else:
        rack.on_sent(tcb, seq, end, now)


def _send_record(tcb: TCB, seq: int, flags: int, payload: bytes | bytearray | memoryview,
                 now: int) -> bool:
    """What :func:`transmit` does for a data segment (or a FIN) without
    urgent data when it crosses an unobserved lo as its record (through
    ``_count_sent``, ``IPv4.output_record``, ``Loopback.transmit_record``),
    inline: the same
    fields, counters and IP ID, ``now`` the clock. False (nothing done): the
    general transmit decides."""
    rt = tcb.route
    if rt is None or len(rt.dst) != 4 or tcb.tos:
        return False
    iface = rt.iface
    n = len(payload)
    if not n and tcb.ooo and tcb.sack_ok:
        return False  # a FIN alone carries the SACK blocks: transmit builds them
    ts_ok = tcb.ts_ok
    total = (52 if ts_ok else 40) + n  # IP header, TCP header (+ timestamps), data
    if total > iface.mtu or not iface.carries_records():
        return False
    # (select_window)
    window = compute_window(tcb)
    rcv_nxt = tcb.rcv_nxt
    current = tcb.rcv_wup + tcb.rcv_wnd - rcv_nxt
    shift = tcb.rcv_wscale
    if window < current:
        window = -(-current >> shift) << shift
    win_field = window >> shift
    if win_field > MAX_WINDOW:
        win_field = MAX_WINDOW
    tcb.rcv_wnd = window
    tcb.rcv_wup = rcv_nxt
    seg = Segment(tcb.local_port, tcb.remote_port, seq & 0xFFFFFFFF, rcv_nxt & 0xFFFFFFFF,
                  flags, win_field, payload if type(payload) is memoryview else memoryview(payload))
    if ts_ok:  # (ts_now)
        seg.tsval = (now // 1_000_000 + tcb.ts_offset) & 0xFFFFFFFF
        seg.tsecr = tcb.ts_recent
        seg.hdr_len = 20 + TS_LEN
    # (_count_sent: ack.ack_sent, then ack.data_sent)
    quick = tcb.quickacks
    if quick and tcb.ack_pending:
        if quick <= 1:
            tcb.quickacks = 0
            tcb.ato = ack_policy.ATO_MIN
        else:
            tcb.quickacks = quick - 1
    tcb.ack_pending = False
    tcb.ack_pushed = 0
    timer = tcb.delack_timer
    if timer is not None and timer.active:
        timer.active = False  # (Timer.cancel)
    if n and now // ack_policy.JIFFY_NS - tcb.lrcvtime < tcb.ato and tcb.pingpong < 255:
        tcb.pingpong += 1
    tcb.segs_out += 1
    tcp = tcb.tcp
    tcp.mib["OutSegs"] += 1
    # (IPv4.output_record, Loopback.transmit_record)
    ip = tcp.ipv4
    mib = ip.mib
    mib["OutRequests"] += 1
    ident = ip._ident = (ip._ident + 1) & 0xFFFF  # (IPv4.next_ident)
    ttl = tcb.ttl
    rec = Record(iface, rt.src, rt.dst, PROTO_TCP, ip.default_ttl if ttl is None else ttl, ident,
                 total, seg, build_segment, ip.input_record, ip.record_bytes)
    mib["OutTransmits"] += 1
    ip.mib_ext["OutOctets"] += total
    stats = iface.stats
    stats.tx_packets += 1
    stats.tx_bytes += total
    stats.rx_packets += 1
    stats.rx_bytes += total
    iface._rx_handler(None, rec)  # type: ignore[arg-type]  # (the stack's _netif_rx)
    return True


def _schedule_loss_probe(tcb: TCB, now: int) -> None:
    """rack.schedule_loss_probe(tcb, False) with ``now`` the clock, its
    timer armed inline (timers.arm_xmit_timer)."""
    sent = tcb.sent
    if tcb.in_recovery or tcb.snd_una < tcb.loss_high or not sent or not tcb.tcp.early_retrans:
        return
    srtt = tcb.srtt
    if srtt:
        pto = 2 * srtt + (tcb.rto_min if len(sent) == 1 else TIMEOUT_MIN_NS)
        pto = -(-pto // RACK_JIFFY_NS) * RACK_JIFFY_NS  # (rack._jiffies_ceil)
    else:
        pto = TIMEOUT_INIT
    rto_delta = sent[0][2] + tcb.rto - now
    if 0 < rto_delta < pto:
        pto = rto_delta
    tcb.xmit_kind = TLP
    timer = tcb.rto_timer
    if timer is None:
        tcb.rto_timer = tcb.tcp.clock.call_at(now + pto, partial(timers.on_rto, tcb))
    else:
        timer.reschedule(now + pto)


def retransmit_range(tcb: TCB, seq: int) -> int:
    """Resend one segment at ``seq`` without moving snd_nxt (fast
    retransmit and SACK recovery). Returns the bytes resent."""
    data_end = tcb.snd_base + tcb.sndq.size
    n = max(0, min(tcb.mss, data_end - seq, tcb.snd_max - seq))  # only what was sent
    if tcb.sack_ok:
        for s, _ in tcb.scoreboard.ranges:
            if s > seq:
                n = min(n, s - seq)
                break
    fin = tcb.fin_sent and seq + n == data_end
    if n == 0 and not fin:
        return 0
    off = seq - tcb.snd_base
    flags = ACK | (FIN if fin else 0) | (PSH if n and seq + n == data_end else 0)
    tcb.tcp.mib["RetransSegs"] += 1
    tcb.total_retrans += 1
    transmit(tcb, seq, flags, tcb.sndq.view(off, n))
    rack.on_sent(tcb, seq, seq + n + (1 if fin else 0), tcb.tcp.clock.now_ns())
    return n + (1 if fin else 0)
