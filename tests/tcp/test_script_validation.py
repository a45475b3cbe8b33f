"""Packet scripts: what an established connection accepts. Sequence
acceptability (RFC 9293 3.10.7.4), RFC 5961 (RST and SYN challenge ACKs,
their 500 ms rate limit, ACK validity), PAWS (RFC 7323 5) and window
scaling (RFC 7323 2)."""

from __future__ import annotations

import errno
import socket

import pytest

from .conftest import MSS_ONLY, Peer, counters, linux_syn


@pytest.fixture
def conn(peer: Peer, listener: socket.socket) -> socket.socket:
    """An established connection, no options but MSS (ACKs carry no options)."""
    return peer.open_to(listener, opts=MSS_ONLY)


# -- sequence acceptability ---------------------------------------------------------------


def test_segment_beyond_the_window_gets_a_dup_ack(peer: Peer, conn: socket.socket) -> None:
    """RFC 9293 3.10.7.4 first check: not acceptable -> <SEQ=SND.NXT><ACK=RCV.NXT>
    and drop. Data segments are answered every time (no rate limit). (The
    window is the SYN-ACK's 64240: Linux never shrinks it.)"""
    L = peer.lss + 1
    peer.send("PA", 1001 + 200_000, L, b"far")
    peer.expect("A", seq=L, ack=1001, win=64240, at=0)
    peer.send("PA", 1001 + 300_000, L, b"far")
    peer.expect("A", seq=L, ack=1001, at=0)
    with pytest.raises(BlockingIOError):
        conn.recv(10)


def test_old_duplicate_data_gets_a_dup_ack(peer: Peer, conn: socket.socket) -> None:
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"hello")
    peer.expect("A", ack=1006)
    peer.send("PA", 1001, L, b"hello")  # our ACK was lost: say it again
    peer.expect("A", seq=L, ack=1006, at=0)
    assert conn.recv(100) == b"hello"
    assert counters(peer.stack)["TcpExtDelayedACKLost"] == 1


def test_old_ack_from_rcv_wup_is_accepted(peer: Peer, conn: socket.socket) -> None:
    """A pure ACK whose SEQ is below RCV.NXT but not below RCV.WUP (the
    RCV.NXT our last ACK announced) is still processed, as Linux's
    tcp_sequence(): the peer sent it before data we have not acknowledged."""
    L = peer.lss + 1
    for i in range(16):  # use up the quick ACKs
        peer.send("PA", 1001 + i, L, b"z")
        peer.expect("A", ack=1002 + i)
    conn.send(b"x" * 100)  # carries ACK 1017: RCV.WUP = 1017
    peer.expect("PA", seq=L, ack=1017)
    peer.send("PA", 1017, L, b"y")  # its ACK is delayed: RCV.NXT = 1018
    peer.send("A", 1017, L + 100)  # sent before the byte, arrives after it
    peer.expect("A", seq=L + 100, ack=1018, at=0.04)  # the delayed ACK, no retransmission
    assert conn.tcp_info()["unacked"] == 0


def test_pure_ack_out_of_window_is_rate_limited(peer: Peer, conn: socket.socket) -> None:
    """Out-of-window segments without data are answered at most once per
    500 ms (Linux tcp_oow_rate_limited, TCPACKSkippedSeq)."""
    L = peer.lss + 1
    peer.send("A", 1001 + 200_000, L)
    peer.expect("A", seq=L, ack=1001, at=0)
    peer.advance(0.499)
    peer.send("A", 1001 + 200_000, L)
    peer.expect_nothing()
    assert counters(peer.stack)["TcpExtTCPACKSkippedSeq"] == 1
    peer.advance(0.001)
    peer.send("A", 1001 + 200_000, L)
    peer.expect("A", seq=L, ack=1001, at=0.5)


def test_data_crossing_the_right_edge_is_dropped_whole(net: tuple, listener: socket.socket
                                                      ) -> None:
    """Linux (observed): out-of-order data straddling the right edge of the
    window is dropped whole with a duplicate ACK; in-window data is kept."""
    stack, eth = net
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1152)  # 2304 bytes
    p = Peer(stack, eth)
    conn = p.open_to(listener, opts=MSS_ONLY)
    L = p.lss + 1
    p.send("PA", 1001, L, b"a" * 100)
    ack = p.expect("A", ack=1101)
    edge = 1101 + ack.win
    p.send("PA", edge - 50, L, b"z" * 100)  # out of order, crosses the edge
    p.expect("A", seq=L, ack=1101)
    p.send("PA", 1101, L, b"b" * (edge - 50 - 1101))  # fill up to the straddler
    p.expect("A", ack=edge - 50)  # the straddler was not kept
    assert conn.recv(5000) == b"a" * 100 + b"b" * (edge - 50 - 1101)


# -- RST (RFC 5961 3) --------------------------------------------------------------------------


def test_in_window_rst_not_at_rcv_nxt_gets_a_challenge_ack(peer: Peer,
                                                           conn: socket.socket) -> None:
    """RFC 5961 3.2: an RST inside the window but not exactly at RCV.NXT is
    answered with <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>; the connection lives.
    A second within 500 ms gets nothing (TCPACKSkippedChallenge)."""
    L = peer.lss + 1
    peer.send("R", 1001 + 100)
    peer.expect("A", seq=L, ack=1001, at=0)
    peer.advance(0.2)
    peer.send("R", 1001 + 200)
    peer.expect_nothing()
    peer.advance(0.3)
    peer.send("R", 1001 + 300)
    peer.expect("A", seq=L, ack=1001, at=0.5)
    c = counters(peer.stack)
    assert c["TcpExtTCPChallengeACK"] == 2 and c["TcpExtTCPACKSkippedChallenge"] == 1
    conn.send(b"alive")
    peer.expect("PA", seq=L, data=b"alive")


def test_rst_out_of_window_is_ignored(peer: Peer, conn: socket.socket) -> None:
    peer.send("R", 1001 + 100_000)
    peer.send("R", 1000)
    peer.expect_nothing(within=1)
    conn.send(b"x")
    peer.expect("PA", data=b"x")


def test_rst_at_rcv_nxt_resets(peer: Peer, conn: socket.socket) -> None:
    """RFC 5961 3.2: exactly RCV.NXT resets: ECONNRESET, nothing sent."""
    peer.send("R", 1001)
    peer.expect_nothing(within=1)
    with pytest.raises(ConnectionResetError):
        conn.recv(10)
    assert counters(peer.stack)["TcpEstabResets"] == 1


# -- SYN (RFC 5961 4) --------------------------------------------------------------------------


def test_syn_in_established_gets_a_challenge_ack(peer: Peer, conn: socket.socket) -> None:
    """RFC 5961 4.2: any SYN in a synchronized state, in window or not, gets
    a challenge ACK (rate-limited like the others) and changes nothing."""
    L = peer.lss + 1
    peer.send("S", 1001 + 10, opts=MSS_ONLY)
    peer.expect("A", seq=L, ack=1001, at=0)
    peer.send("S", 5_000_000, opts=MSS_ONLY)  # out of window: same answer, rate-limited
    peer.expect_nothing()
    peer.advance(0.5)
    peer.send("S", 5_000_000, opts=MSS_ONLY)
    peer.expect("A", seq=L, ack=1001, at=0.5)
    assert counters(peer.stack)["TcpExtTCPChallengeACK"] == 2
    peer.send("PA", 1001, L, b"still here")
    peer.expect("A", ack=1011)
    assert conn.recv(100) == b"still here"


# -- ACK validity (RFC 5961 5, RFC 9293 3.10.7.4 fifth check) ---------------------------------


def test_ack_of_unsent_data_is_answered_and_dropped(peer: Peer, conn: socket.socket) -> None:
    """SEG.ACK > SND.NXT: send an ACK, drop the segment (data included)."""
    L = peer.lss + 1
    peer.send("PA", 1001, L + 1000, b"bogus")
    peer.expect("A", seq=L, ack=1001, at=0)
    with pytest.raises(BlockingIOError):
        conn.recv(10)
    peer.send("PA", 1001, L, b"good")
    peer.expect("A", seq=L, ack=1005)
    assert conn.recv(10) == b"good"


def test_ack_far_below_snd_una_gets_a_challenge_ack(peer: Peer, conn: socket.socket) -> None:
    """RFC 5961 5.2: SEG.ACK < SND.UNA - MAX.SND.WND: challenge ACK, drop."""
    L = peer.lss + 1
    peer.send("PA", 1001, L - 100_000, b"bogus")
    peer.expect("A", seq=L, ack=1001)
    assert counters(peer.stack)["TcpExtTCPChallengeACK"] == 1
    with pytest.raises(BlockingIOError):
        conn.recv(10)


def test_old_ack_within_the_window_is_accepted(peer: Peer, conn: socket.socket) -> None:
    """An ACK below SND.UNA but within MAX.SND.WND is just old: its data counts."""
    L = peer.lss + 1
    conn.send(b"12345")
    peer.expect("PA", seq=L, data=b"12345")
    peer.send("A", 1001, L + 5)
    peer.send("PA", 1001, L, b"late")  # ACK field older than SND.UNA
    peer.expect("A", seq=L + 5, ack=1005)
    assert conn.recv(10) == b"late"


# -- PAWS (RFC 7323 5) -------------------------------------------------------------------------


def test_paws_drops_an_old_timestamp_with_an_ack(peer: Peer, listener: socket.socket) -> None:
    """RFC 7323 5.3 R1 as Linux (tcp_validate_incoming): a TSval more than
    one tick (TCP_PAWS_WINDOW) older than TS.Recent: drop, send an ACK
    (PAWSEstab). One tick old passes, but does not become TS.Recent
    (tcp_replace_ts_recent). Data are answered every time; pure ACKs once
    per 500 ms (tcp_oow_rate_limited)."""
    peer.ts_off = 100  # the handshake's TSvals are 100
    conn = peer.open_to(listener, opts=linux_syn(tsval=100))
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"new", tsval=1000)
    a = peer.expect("A", ack=1004)
    assert a.opt("Timestamp")[1] == 1000  # TS.Recent = 1000 echoed
    peer.send("PA", 1004, L, b"one", tsval=999)  # one tick behind: accepted
    a = peer.expect("A", seq=L, ack=1007, at=0)
    assert a.opt("Timestamp")[1] == 1000  # TS.Recent stays
    peer.send("PA", 1007, L, b"old", tsval=998)
    a = peer.expect("A", seq=L, ack=1007, at=0)
    assert a.opt("Timestamp")[1] == 1000
    peer.send("PA", 1007, L, b"old", tsval=500)
    peer.expect("A", seq=L, ack=1007, at=0)
    peer.send("A", 1007, L, tsval=500)  # pure ACKs: one answer per 500 ms
    peer.expect("A", seq=L, ack=1007, at=0)
    peer.send("A", 1007, L, tsval=500)
    peer.expect_nothing()
    c = counters(peer.stack)
    assert c["TcpExtPAWSEstab"] == 4 and c["TcpExtTCPACKSkippedPAWS"] == 1
    assert conn.recv(10) == b"newone"
    peer.send("PA", 1007, L, b"fresh", tsval=1001)
    peer.expect("A", ack=1012)
    assert conn.recv(10) == b"fresh"


def test_paws_lets_a_reordered_duplicate_ack_through(peer: Peer, listener: socket.socket
                                                     ) -> None:
    """Linux tcp_disordered_ack_check: a duplicate ACK (SEQ = RCV.NXT = SND.WL1,
    ACK = SND.UNA, same window) behind by less than RTO x 1200 ticks (240 at the
    200 ms RTO) changes nothing and passes PAWS silently; a pure ACK below
    RCV.NXT is dropped without an answer (PAWSOldAck); further behind, R1."""
    peer.ts_off = 100
    conn = peer.open_to(listener, opts=linux_syn(tsval=100))
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"new", tsval=1000)
    peer.expect("A", ack=1004)
    peer.send("A", 1004, L, tsval=1000)  # the peer's window stands at SEQ 1004 (SND.WL1)
    peer.send("A", 1004, L, tsval=761)  # 239 behind: a reordered duplicate
    peer.send("A", 1001, L, tsval=500)  # an old ACK, SEQ below RCV.NXT
    peer.expect_nothing()
    c = counters(peer.stack)
    assert c["TcpExtPAWSEstab"] == 0 and c.get("TcpExtPAWSOldAck") == 1
    peer.send("A", 1004, L, tsval=759)  # 241 behind
    peer.expect("A", seq=L, ack=1004, at=0)
    assert counters(peer.stack)["TcpExtPAWSEstab"] == 1
    assert conn.recv(10) == b"new"


def test_paws_gives_up_on_an_old_ts_recent(peer: Peer, listener: socket.socket) -> None:
    """RFC 7323 5.5 as Linux 6.7+ (TCP_PAWS_WRAP): once TS.Recent is 2147 s
    old (INT_MAX microseconds, where a microsecond TSval clock wraps), any
    TSval is taken; a second earlier, PAWS still rejects."""
    peer.ts_off = 100
    conn = peer.open_to(listener, opts=linux_syn(tsval=100))
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"a", tsval=1000)
    peer.expect("A", ack=1002)
    peer.advance(2146)
    peer.send("PA", 1002, L, b"b", tsval=50)
    peer.expect("A", ack=1002)  # rejected
    peer.advance(1)
    peer.send("PA", 1002, L, b"b", tsval=50)
    a = peer.expect("A", ack=1003)
    assert a.opt("Timestamp")[1] == 50  # and it is TS.Recent now
    assert conn.recv(10) == b"ab"


def test_paws_ignores_a_zero_ts_recent(peer: Peer, listener: socket.socket) -> None:
    """Linux tcp_paws_check: TS.Recent 0 (a SYN with TSval 0, as some
    stacks send) rejects nothing, not even a TSval "before" 0."""
    peer.ts_off = 0
    conn = peer.open_to(listener, opts=linux_syn(tsval=0))
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"x", tsval=0xFFFFFF00)
    peer.expect("A", ack=1002)
    assert conn.recv(10) == b"x"


def test_paws_does_not_apply_to_rst(peer: Peer, listener: socket.socket) -> None:
    """RFC 7323 5.3: an RST is not subject to PAWS (Linux checks its sequence only)."""
    peer.ts_off = 100
    conn = peer.open_to(listener, opts=linux_syn(tsval=100))
    peer.send("PA", 1001, peer.lss + 1, b"x", tsval=1000)
    peer.expect("A")
    peer.send("R", 1002, tsval=10)
    assert conn.recv(10) == b"x"  # what came before the reset is still read first
    with pytest.raises(ConnectionResetError):
        conn.recv(10)


def test_timestamps_echo_and_ts_recent_update(peer: Peer, listener: socket.socket) -> None:
    """RFC 7323 4.3: TS.Recent takes the TSval of the segment covering
    RCV.NXT; an out-of-order one's is not taken."""
    peer.ts_off = 100
    conn = peer.open_to(listener, opts=linux_syn(tsval=100))
    L = peer.lss + 1
    peer.send("PA", 1001 + 10, L, b"later", tsval=300)  # out of order
    a = peer.expect("A", ack=1001)
    assert a.opt("Timestamp")[1] == 100  # still the SYN's
    peer.send("PA", 1001, L, b"0123456789", tsval=200)
    a = peer.expect("A", ack=1016)
    assert a.opt("Timestamp")[1] == 200
    assert conn.recv(100) == b"0123456789later"


# -- window scaling (RFC 7323 2) ---------------------------------------------------------------


def test_window_scaling_both_ways(peer: Peer, listener: socket.socket) -> None:
    """The peer's window fields are shifted by its scale (7): a field of 100 lets
    12800 bytes out (eight 1448-byte segments and 1216 more, at once: Linux has
    no sender-side SWS avoidance). Ours are scaled by 7 too: the SYN-ACK's
    65160 rounded up to the scale (510 << 7), then the window grown by the
    data received (test_script_window.py computes it: 533 << 7)."""
    conn = peer.open_to(listener, opts=linux_syn(tsval=100, wscale=7), win=100)
    L = peer.lss + 1
    assert conn.send(b"d" * 16_000) == 16_000
    for i in range(8):
        peer.expect("A", seq=L + 1448 * i, length=1448, at=0)
    peer.expect("A", seq=L + 11584, length=1216, at=0)
    # The tail loss probe (RFC 8985: PTO 2 SRTT + 2 ms, in 4 ms ticks): the
    # window allows nothing new, so the last segment again.
    peer.expect("A", seq=L + 11584, length=1216, at=0.004)
    peer.expect_nothing(within=0.1)
    peer.mark()
    # The window opens to 200 << 7: the other 3200 bytes follow at once.
    peer.send("A", 1001, L + 12800, win=200)
    for i in range(2):
        seg = peer.expect("A", seq=L + 12800 + 1448 * i, length=1448, at=0)
        assert seg.win == 510
    peer.expect("PA", seq=L + 12800 + 2896, length=304, at=0)
    peer.send("PA", 1001, L + 16_000, b"q" * 1000)
    ack = peer.expect("A", ack=2001)
    assert ack.win == 533


def test_window_scale_above_14_means_14(peer: Peer, listener: socket.socket) -> None:
    """RFC 7323 2.3: a shift above 14 is taken as 14: a window field of 1
    then lets 16384 bytes out (15 would allow 32768; cwnd, 20 segments here,
    would allow 28960)."""
    conn = peer.open_to(listener, opts=linux_syn(wscale=15), win=1)
    L = peer.lss + 1
    assert conn.send(b"s" * 14480) == 14480
    for i in range(10):  # cwnd 10
        peer.expect("A" if i < 9 else "PA", seq=L + 1448 * i, length=1448, at=0)
    peer.send("A", 1001, L + 14480, win=1)  # cwnd 20 now
    assert conn.send(b"t" * 40000) == 40000
    for i in range(11):
        peer.expect("A", seq=L + 14480 + 1448 * i, length=1448, at=0)
    peer.expect("A", seq=L + 14480 + 15928, length=456, at=0)
    peer.expect_nothing()


def test_our_zero_window_and_its_reopening(net: tuple, listener: socket.socket) -> None:
    """A full buffer closes our window (RFC 1122 4.2.3.3, Linux
    __tcp_select_window: less free space than a segment offers nothing); data
    beyond it is dropped with an ACK; when the application reads, a window
    update goes out at once (tcp_cleanup_rbuf). SO_RCVBUF 1152 makes a 2304-
    byte buffer: the SYN-ACK offers half (1152); once 1152 bytes arrived,
    their truesize (1984) leaves 185 bytes of window; reading them frees 1332
    (the buffer at the measured 148/256 ratio), of which one segment of 1152."""
    stack, eth = net
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1152)  # 2304 bytes
    p = Peer(stack, eth)
    p.send("S", 1000, opts=MSS_ONLY)
    sa = p.expect("SA", ack=1001, win=1152)
    p.send("A", 1001, sa.seq + 1)
    conn, _ = listener.accept()
    conn.setblocking(False)
    L = sa.seq + 1
    p.send("PA", 1001, L, b"a" * 1152)
    p.expect("A", seq=L, ack=2153, win=0, at=0)
    p.send("PA", 2153, L, b"b")  # beyond a zero window: not acceptable
    p.expect("A", seq=L, ack=2153, win=0, at=0)
    p.advance(1)
    assert conn.recv(5000) == b"a" * 1152
    p.expect("A", seq=L, ack=2153, win=1152, at=1)
    p.send("PA", 2153, L, b"b")
    p.expect("A", ack=2154)


def test_no_scaling_unless_both_offer_it(peer: Peer, listener: socket.socket) -> None:
    """RFC 7323 2.2: without the peer's option neither side scales: a
    window field of 3000 means 3000 bytes; ours is capped at 65535."""
    conn = peer.open_to(listener, opts=MSS_ONLY, win=3000)
    L = peer.lss + 1
    conn.send(b"d" * 5000)
    peer.expect("A", seq=L, length=1460)
    peer.expect("A", seq=L + 1460, length=1460)
    peer.expect("A", seq=L + 2920, length=80)
    peer.expect_nothing(within=0.1)
    peer.send("A", 1001, L + 3000)
    seg = peer.expect("A", seq=L + 3000)
    assert seg.win == 64240  # the SYN-ACK's (unscaled: at most 65535)


__all__ = ["errno"]
