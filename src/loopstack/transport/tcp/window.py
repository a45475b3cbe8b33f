"""The receive window, as Linux (6.18) sizes it: the window a SYN and a
SYN-ACK offer (tcp_select_initial_window, tcp_openreq_init_rwin), the
split of the buffer made when the connection is established
(tcp_init_buffer_space), the window each segment advertises
(__tcp_select_window, tcp_select_window), how it grows with the data that
arrives (tcp_grow_window, tcp_measure_rcv_mss) and how the buffer grows
with what the application reads (tcp_rcv_space_adjust, tcp_rcvbuf_grow:
Dynamic Right-Sizing). RFC 9293 3.8.6.2.2 and RFC 1122 4.2.3.3 say what
such a receiver must do; Linux is the reference for how much.

Memory is counted as Linux counts it, in the skb "truesize" a segment
costs, and the window is the buffer scaled by the payload-to-truesize
ratio the connection measures (scaling_ratio: len << 8 / truesize, 50%
until the first full segment). A segment is charged as the skb a Linux
sender builds arrives over lo or a veth: its payload in page fragments
plus SKB_TRUESIZE of the 256-byte header area (MAX_TCP_HEADER), 832 bytes
with x86-64's struct sizes (observed on the reference kernel: a 1000-byte
segment costs 1832).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .constants import CORE_RMEM_MAX, MAX_WSCALE, MIN_RCVBUF

if TYPE_CHECKING:
    from .tcb import TCB

RMEM_TO_WIN_SCALE = 8  # TCP_RMEM_TO_WIN_SCALE
DEFAULT_SCALING_RATIO = 1 << (RMEM_TO_WIN_SCALE - 1)  # TCP_DEFAULT_SCALING_RATIO: 50%
SKB_OVERHEAD = 832  # truesize beyond the payload (see above)
INIT_CWND = 10  # TCP_INIT_CWND, bounding the first DRS measure
APP_WIN = 31  # tcp_app_win
MIN_MSS = 88  # TCP_MIN_MSS
MIN_RCVMSS = 536  # TCP_MIN_RCVMSS


def truesize(n: int) -> int:
    return n + SKB_OVERHEAD


def win_from_space(tcb: TCB, space: int) -> int:
    """tcp_win_from_space: buffer bytes to window bytes."""
    return (space * tcb.scaling_ratio) >> RMEM_TO_WIN_SCALE


def space_from_win(tcb: TCB, win: int) -> int:
    """tcp_space_from_win: window bytes to buffer bytes."""
    return (win << RMEM_TO_WIN_SCALE) // tcb.scaling_ratio


def full_space(tcb: TCB) -> int:
    """tcp_full_space: the window an empty buffer would allow."""
    return win_from_space(tcb, tcb.rcvbuf)


def free_space(tcb: TCB) -> int:
    """tcp_space: the window the free part of the buffer allows."""
    return win_from_space(tcb, tcb.rcvbuf - tcb.rmem_alloc)


def select_initial_window(tcb: TCB, space: int, mss: int, wscale_ok: bool) -> None:
    """tcp_select_initial_window: the SYN's (or SYN-ACK's) window is the
    space, at most 65535 (never scaled, RFC 7323 2.2), rounded down to whole
    segments; the shift is the one that lets the largest buffer the
    connection could ever have (tcp_rmem[2], rmem_max) be offered. Sets
    rcv_wnd, rcv_ssthresh, window_clamp and rcv_wscale."""
    clamp = tcb.window_clamp or (0xFFFF << MAX_WSCALE)
    space = max(0, min(clamp, space))
    if space > mss:
        space -= space % mss
    tcb.rcv_wnd = min(space, 0xFFFF)  # tcp_workaround_signed_windows = 0
    wscale = 0
    if wscale_ok:
        largest = min(max(space, tcb.tcp.rmem_max, CORE_RMEM_MAX), clamp)
        wscale = max(0, min(largest.bit_length() - 1 - 15, MAX_WSCALE))
    tcb.rcv_wscale = wscale
    tcb.window_clamp = min(0xFFFF << wscale, clamp)
    tcb.rcv_ssthresh = tcb.rcv_wnd


def clamp_for_locked_buffer(tcb: TCB) -> None:
    """tcp_connect_init / tcp_openreq_init_rwin: a buffer the user sized
    (SO_RCVBUF) caps the window clamp at what it can hold."""
    if tcb.rcvbuf_locked:
        full = full_space(tcb)
        if tcb.window_clamp > full or tcb.window_clamp == 0:
            tcb.window_clamp = full


def no_scaling(tcb: TCB) -> None:
    """The peer does not scale (RFC 7323 2.2): neither does the clamp."""
    tcb.window_clamp = min(tcb.window_clamp, 0xFFFF)


def init_buffer_space(tcb: TCB) -> None:
    """tcp_init_buffer_space, when the connection is established: the
    window may use the whole buffer but one segment (tcp_app_win = 31
    reserves nothing else), rcv_ssthresh starts at what the SYN offered,
    and DRS first measures against ten segments."""
    maxwin = (tcb.rcvbuf * tcb.scaling_ratio) >> RMEM_TO_WIN_SCALE  # (full_space)
    advmss = tcb.advmss
    if tcb.window_clamp >= maxwin:
        tcb.window_clamp = maxwin
        if maxwin > 4 * advmss:
            tcb.window_clamp = max(maxwin - (maxwin >> APP_WIN), 4 * advmss)
    if tcb.window_clamp > 2 * advmss and tcb.window_clamp + advmss > maxwin:
        tcb.window_clamp = max(2 * advmss, maxwin - advmss)  # reserve one segment
    tcb.rcv_ssthresh = min(tcb.rcv_ssthresh, tcb.window_clamp)
    tcb.rcvq_space = min(tcb.rcv_ssthresh, tcb.rcv_wnd, INIT_CWND * advmss)
    now_us = tcb.tcp.clock.now_ns() // 1000
    tcb.rcvq_space_time = now_us
    # (TCB.copied_seq)
    tcb.rcvq_space_seq = tcb.rcv_nxt - tcb.rcvq.size - (1 if tcb.fin_received else 0)
    # tcp_initialize_rcv_mss: a guess of the peer's segment size, low.
    hint = min(advmss, tcb.mss, tcb.rcv_wnd // 2, MIN_RCVMSS)
    tcb.rcv_mss = max(hint, MIN_MSS)


def select_window(tcb: TCB) -> int:
    """tcp_select_window: the window to offer now (bytes), never less than
    the right edge already offered (RFC 9293 3.8.6.2.2, tcp_shrink_window = 0)."""
    window = compute_window(tcb)
    current = tcb.rcv_wup + tcb.rcv_wnd - tcb.rcv_nxt
    if window < current:
        shift = tcb.rcv_wscale
        window = -(-current >> shift) << shift
    return window


def compute_window(tcb: TCB) -> int:
    """__tcp_select_window: the free space, held to rcv_ssthresh while the
    connection ramps up; zero rather than a sliver when the buffer is nearly
    full (RFC 1122 4.2.3.3's SWS avoidance: less than a segment or 1/16 of
    it); scaled windows rounded up to the scale, unscaled ones to whole
    segments."""
    shift = tcb.rcv_wscale
    mss = tcb.rcv_mss
    # tcp_space and tcp_full_space (free_space, full_space), inline: every
    # segment sent comes here.
    ratio = tcb.scaling_ratio
    free = ((tcb.rcvbuf - tcb.rmem_alloc) * ratio) >> RMEM_TO_WIN_SCALE
    allowed = (tcb.rcvbuf * ratio) >> RMEM_TO_WIN_SCALE
    full = min(tcb.window_clamp, allowed)
    if mss > full:
        mss = full
    if mss <= 0:
        return 0
    if free < full >> 1:
        tcb.quickacks = 0  # icsk_ack.quick: the buffer is filling up
        free = (free >> shift) << shift
        if free < allowed >> 4 or free < mss:
            return 0
    if free > tcb.rcv_ssthresh:
        free = tcb.rcv_ssthresh
    if shift:
        return -(-free >> shift) << shift
    window = tcb.rcv_wnd
    if window <= free - mss or window > free:
        window = free - free % mss
    elif mss == full and free > window + (full >> 1):
        window = free
    return window


def measure_rcv_mss(tcb: TCB, n: int) -> None:
    """tcp_measure_rcv_mss for a segment of ``n`` bytes: the peer's segment
    size, and with each new size the payload-to-truesize ratio, which
    re-sizes the window clamp (tcp_set_window_clamp)."""
    if n < tcb.rcv_mss:
        return
    if n != tcb.rcv_mss:
        ratio = (n << RMEM_TO_WIN_SCALE) // truesize(n) or 1
        if ratio != tcb.scaling_ratio:
            tcb.scaling_ratio = ratio
            set_window_clamp(tcb, win_from_space(tcb, tcb.rcvbuf))
            if tcb.window_clamp < tcb.rcvq_space:
                tcb.rcvq_space = tcb.window_clamp
    tcb.rcv_mss = min(n, tcb.advmss)


def set_window_clamp(tcb: TCB, value: int) -> None:
    """tcp_set_window_clamp: a larger clamp lets rcv_ssthresh reach the
    window already offered; a smaller one pulls rcv_ssthresh down."""
    old = tcb.window_clamp
    new = max(MIN_RCVBUF // 2, value)
    if new == old:
        return
    tcb.window_clamp = new
    if new < old:
        tcb.rcv_ssthresh = min(tcb.rcv_ssthresh, new)
    else:
        tcb.rcv_ssthresh = max(min(tcb.rcv_wnd, new), tcb.rcv_ssthresh)


def grow_window(tcb: TCB, n: int) -> None:
    """tcp_grow_window, for a segment of ``n`` bytes (128 or more): while the
    segments cost little enough memory for their payload, rcv_ssthresh
    rises by at least two segments toward what the buffer allows."""
    room = min(tcb.window_clamp, free_space(tcb)) - tcb.rcv_ssthresh
    if room <= 0:
        return
    size = truesize(n)
    if win_from_space(tcb, size) <= n:
        incr = 2 * tcb.advmss
    else:
        # __tcp_grow_window: a costly skb still grows a small window.
        half_size = win_from_space(tcb, size) >> 1
        window = win_from_space(tcb, tcb.tcp.rmem_max) >> 1
        incr = 0
        while tcb.rcv_ssthresh <= window:
            if half_size <= n:
                incr = 2 * tcb.rcv_mss
                break
            half_size >>= 1
            window >>= 1
    if incr:
        tcb.rcv_ssthresh += min(room, max(incr, 2 * n))
        tcb.quickacks |= 1


def rcv_rtt_update(tcb: TCB, sample_us: int, win_dep: bool) -> None:
    """tcp_rcv_rtt_update: the receiver's RTT estimate (times 8), the
    minimum of per-window samples, smoothed with timestamps."""
    old = tcb.rcv_rtt_us
    m = sample_us << 3
    if old == 0 or m < old:
        tcb.rcv_rtt_us = m
    elif not win_dep and tcb.rcv_nxt == tcb.copied_seq:
        tcb.rcv_rtt_us = old - (old >> 3) + sample_us


def rcv_rtt_measure(tcb: TCB) -> None:
    """tcp_rcv_rtt_measure: without timestamps, the time one window of
    data takes to arrive."""
    now_us = tcb.tcp.clock.now_ns() // 1000
    if tcb.rcv_rtt_time:
        if tcb.rcv_nxt < tcb.rcv_rtt_seq:
            return
        rcv_rtt_update(tcb, max(1, now_us - tcb.rcv_rtt_time), True)
    tcb.rcv_rtt_seq = tcb.rcv_nxt + tcb.rcv_wnd
    tcb.rcv_rtt_time = now_us or 1


def rcv_rtt_measure_ts(tcb: TCB, tsecr: int, n: int) -> None:
    """tcp_rcv_rtt_measure_ts: the echo of one of our timestamps on a full
    segment, once per distinct echo."""
    if tsecr == tcb.rcv_rtt_last_tsecr:
        return
    tcb.rcv_rtt_last_tsecr = tsecr
    if n >= tcb.rcv_mss:
        from .output import ts_now

        delta_ms = (ts_now(tcb) - tsecr) & 0xFFFFFFFF
        if 0 < delta_ms < 0x7FFFFFFF // 1000:
            rcv_rtt_update(tcb, delta_ms * 1000, False)


def rcv_space_adjust(tcb: TCB) -> None:
    """tcp_rcv_space_adjust (DRS), after the application reads: once per
    receiver RTT, if it read more than last time, the buffer grows to twice
    that plus the growth (the sender may double its rate: tcp_rcvbuf_grow,
    Linux 6.18), and the window clamp follows."""
    if not tcb.rcv_rtt_us:
        return
    now_us = tcb.tcp.clock.now_ns() // 1000
    if now_us - tcb.rcvq_space_time < tcb.rcv_rtt_us >> 3:
        return
    copied = tcb.copied_seq
    read = copied - tcb.rcvq_space_seq - (tcb.rcv_nxt - copied)
    if read > tcb.rcvq_space:
        old = tcb.rcvq_space
        tcb.rcvq_space = read
        if not tcb.rcvbuf_locked and old > 0:
            rcvwin = read << 1
            rcvwin += (rcvwin * (read - old) // old) << 1
            if tcb.ooo:
                last_seq, last_data = tcb.ooo[-1]
                rcvwin += last_seq + len(last_data) - tcb.rcv_nxt
            rcvbuf = min(space_from_win(tcb, rcvwin), tcb.tcp.rmem_max)
            if rcvbuf > tcb.rcvbuf:
                tcb.rcvbuf = rcvbuf
                tcb.window_clamp = win_from_space(tcb, rcvbuf)
    tcb.rcvq_space_seq = copied
    tcb.rcvq_space_time = now_us


# TCB.rcvq_skbs of every connection that has not queued a segment yet (a
# deque costs about 600 bytes; an idle connection needs none). maxlen 0: an
# append that forgot to replace it keeps nothing.
NO_SKBS: deque[tuple[int, int]] = deque(maxlen=0)


def skbs(tcb: TCB) -> deque[tuple[int, int]]:
    """``tcb.rcvq_skbs``, made now if this is the first segment."""
    q = tcb.rcvq_skbs
    if q is NO_SKBS:
        q = tcb.rcvq_skbs = deque()
    return q


def charge(tcb: TCB, end_seq: int, n: int) -> None:
    """A segment of ``n`` bytes ending at ``end_seq`` joins the receive
    queue: its truesize is charged until the application has read it all."""
    size = truesize(n)
    tcb.rmem_alloc += size
    q = tcb.rcvq_skbs
    if q is NO_SKBS:  # (skbs, inline: every data segment comes here)
        q = tcb.rcvq_skbs = deque()
    q.append((end_seq, size))


def release_read(tcb: TCB) -> None:
    """Free the segments the application has read past (skb by skb)."""
    skbs = tcb.rcvq_skbs
    copied = tcb.copied_seq
    while skbs and skbs[0][0] <= copied:
        tcb.rmem_alloc -= skbs.popleft()[1]
