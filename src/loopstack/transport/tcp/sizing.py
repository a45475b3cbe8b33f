"""Sizes Linux derives from the connection: the send MSS bound to half the
peer's largest window, and the send buffer's growth."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tcb import TCB


def sync_mss(tcb: TCB) -> None:
    """Linux tcp_sync_mss / tcp_bound_to_half_wnd: a segment is at most half
    the largest window the peer has offered (so a window holds two), and
    grows back as that window does."""
    mw = tcb.max_window
    cutoff = mw >> 1 if mw > 536 else mw
    mss = tcb.mss_base
    if cutoff and mss > cutoff:
        mss = max(cutoff, 68 - (32 if tcb.ts_ok else 20))  # 68 - tcp_header_len
    tcb.mss = mss


def sndbuf_expand(tcb: TCB) -> None:
    """Linux tcp_sndbuf_expand(): an unlocked send buffer holds two windows
    of at least ten segments, each charged as a power-of-two skb (about
    2.5 MB on lo)."""
    if tcb.sndbuf_locked:
        return
    per_mss = 1 << (max(tcb.mss_base, tcb.mss_clamp) + 640 - 1).bit_length()
    want = 2 * max(tcb.cc.cwnd, 10, tcb.tcp.reordering + 1) * (per_mss + 256)
    if want > tcb.sndbuf:
        tcb.sndbuf = min(want, tcb.tcp.wmem_max)
