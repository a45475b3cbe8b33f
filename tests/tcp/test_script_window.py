"""Packet scripts: the receive window Linux (6.18) offers in the first
segments of a connection and how it grows (window.py). The numbers come
from Linux's formulas with the stock sysctls (tcp_rmem 4096 131072 6291456,
the window half the buffer until the segments' payload-to-truesize ratio is
measured, tcp_app_win 31) and a segment's truesize being its payload plus
832 bytes, as a Linux sender's skb arrives over lo or a veth. Over lo the
reference kernel gave the same values (tcp_info: rcv_ssthresh 70173 after
a 1000-byte segment; its shift is 10 there, as its tcp_rmem[2] is 32 MiB).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

import loopstack

from .conftest import LOCAL, LPORT, Peer, linux_syn


def test_syn_and_handshake_ack_on_a_1500_mtu_nic(peer: Peer, net: tuple) -> None:
    """Active open: the SYN offers 64240 (65536, half the 128 KiB buffer,
    rounded down to 44 segments of 1460) with shift 7 (ilog2(tcp_rmem[2]) -
    15). Established, the window may use all but one segment of the buffer
    (tcp_init_buffer_space: 65536 - 1448 = 64088), less than offered: the
    handshake's ACK keeps the right edge, 64240 rounded up to the scale
    (502 << 7 = 64256)."""
    stack, _ = net
    c = stack.socket()
    syn = peer.open_from(c, opts=linux_syn(tsval=1))
    assert syn.win == 64240 and syn.opt("WScale") == 7
    t = c._tcb  # type: ignore[attr-defined]
    assert (t.rcv_ssthresh, t.window_clamp, t.rcv_wnd) == (64088, 64088, 64256)
    assert t.rcv_wnd >> t.rcv_wscale == 502
    c.close()


def test_window_grows_with_the_first_segments(peer: Peer, listener: socket.socket) -> None:
    """Passive open: the SYN-ACK offers 65160 (45 segments of 1460 - 12
    timestamp bytes). The first 1448-byte segment measures the ratio
    (1448 << 8 / 2280 = 162): the clamp becomes 82944 (the 128 KiB buffer at
    that ratio) and rcv_ssthresh may reach the 65160 offered; then each
    segment raises it by two segments (tcp_grow_window) while the free
    space allows: 68056, 70952, 73848, 76744; at the fifth the unread data
    (five truesizes) leave 75729. Windows offered, rounded up to the scale:
    532, 555, 577, 600, 592 (<< 7). All acknowledged at once (quick ACKs)."""
    conn = peer.open_to(listener, opts=linux_syn(tsval=1))
    L = peer.lss + 1
    seq = 1001
    for win in (532, 555, 577, 600, 592):
        peer.send("A", seq, L, b"w" * 1448)
        seq += 1448
        peer.expect("A", ack=seq, win=win, at=0)
    t = conn._tcb  # type: ignore[attr-defined]
    assert (t.scaling_ratio, t.window_clamp, t.rcv_ssthresh) == (162, 82944, 76744)


@pytest.fixture
def lo_like() -> Iterator[tuple[loopstack.Stack, Any]]:
    """A NIC with lo's MTU (65536): the same MSS (65495) as lo."""
    stack = loopstack.Stack(clock="virtual", seed=7)
    eth = stack.add_interface("eth0", f"{LOCAL}/24", mtu=65536)
    try:
        yield stack, eth
    finally:
        stack.close()


def test_windows_with_lo_sized_segments(lo_like: tuple[loopstack.Stack, Any]) -> None:
    """With lo's MSS: the SYN offers 65495, the SYN-ACK 65483 (less the
    timestamp option), the handshake's ACK 512 << 7 = 65536 (rcv_ssthresh
    65495 rounded up to the scale: what Linux sends on lo, where the peer's
    send MSS is then bound to half of it, 32768). A 1000-byte segment makes
    the ratio 139 (1000 << 8 / 1832) and rcv_ssthresh 70173: the reference
    kernel's value on lo."""
    stack, eth = lo_like
    lst = stack.socket()
    lst.bind((LOCAL, LPORT))
    lst.listen(8)
    lst.setblocking(False)
    p = Peer(stack, eth)
    p.send("S", 1000, opts=linux_syn(tsval=1, mss=65495))
    sa = p.expect("SA", ack=1001, win=65483)
    p.lss = sa.seq
    p.ts = True
    p.send("A", 1001, sa.seq + 1)
    conn, _ = lst.accept()
    p.send("PA", 1001, sa.seq + 1, b"x" * 1000)
    ack = p.expect("A", ack=2001)
    assert ack.win == 549  # 70173 rounded up to 70272
    assert conn._tcb.rcv_ssthresh == 70173  # type: ignore[attr-defined]
    c = stack.socket()
    q = Peer(stack, eth, port=40001)
    syn = q.open_from(c, opts=linux_syn(tsval=1, mss=65495))
    assert syn.win == 65495
    t = c._tcb  # type: ignore[attr-defined]
    assert t.rcv_wnd >> t.rcv_wscale == 512
    conn.close()
    c.close()
    lst.close()


def test_receive_buffer_follows_what_the_application_reads(peer: Peer,
                                                          listener: socket.socket) -> None:
    """DRS (Linux tcp_rcv_space_adjust, tcp_rcvbuf_grow as of 6.18): once a
    receiver RTT has passed (10 ms, from the echo of our timestamp), the
    application read 65160 bytes where the first measure assumed ten
    segments (14480): the buffer must hold twice that, plus twice the
    growth for a sender in slow start: 130320 + 2 * (130320 * 50680 //
    14480) = 1042560 bytes of window, 1647502 of buffer at ratio 162; the
    clamp follows."""
    conn = peer.open_to(listener, opts=linux_syn(tsval=1))
    L = peer.lss + 1
    peer.advance(0.01)
    seq = 1001
    for _ in range(45):
        peer.send("A", seq, L, b"d" * 1448)
        seq += 1448
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 131072
    assert len(conn.recv(100_000)) == 65160
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 1647502
    t = conn._tcb  # type: ignore[attr-defined]
    assert t.window_clamp == 1647502 * 162 >> 8
    assert t.rcvq_space == 65160


def test_a_buffer_the_user_sized_does_not_grow(peer: Peer, listener: socket.socket) -> None:
    """SO_RCVBUF locks the buffer (SOCK_RCVBUF_LOCK): DRS measures, grows nothing."""
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn = peer.open_to(listener, opts=linux_syn(tsval=1))
    L = peer.lss + 1
    peer.advance(0.01)
    for i in range(40):
        peer.send("A", 1001 + 1448 * i, L, b"d" * 1448)
    assert len(conn.recv(100_000)) == 40 * 1448
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 131072
