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
    and drop. Data segments are answered every time (no rate limit)."""
    L = peer.lss + 1
    peer.send("PA", 1001 + 200_000, L, b"far")
    peer.expect("A", seq=L, ack=1001, win=65535, at=0)
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
    """RFC 7323 5.3 R1: TSval older than TS.Recent: drop, send an ACK
    (PAWSEstab). Data are answered every time; pure ACKs once per 500 ms."""
    peer.ts_off = 100  # the handshake's TSvals are 100
    conn = peer.open_to(listener, opts=linux_syn(tsval=100))
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"new", tsval=1000)
    a = peer.expect("A", ack=1004)
    assert a.opt("Timestamp")[1] == 1000  # TS.Recent = 1000 echoed
    peer.send("PA", 1004, L, b"old", tsval=999)
    a = peer.expect("A", seq=L, ack=1004, at=0)
    assert a.opt("Timestamp")[1] == 1000
    peer.send("PA", 1004, L, b"old", tsval=500)
    peer.expect("A", seq=L, ack=1004, at=0)
    peer.send("A", 1004, L, tsval=500)  # pure ACKs: one answer per 500 ms
    peer.expect("A", seq=L, ack=1004, at=0)
    peer.send("A", 1004, L, tsval=500)
    peer.expect_nothing()
    c = counters(peer.stack)
    assert c["TcpExtPAWSEstab"] == 4 and c["TcpExtTCPACKSkippedPAWS"] == 1
    assert conn.recv(10) == b"new"
    peer.send("PA", 1004, L, b"fresh", tsval=1001)
    peer.expect("A", ack=1009)
    assert conn.recv(10) == b"fresh"


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
    peer.open_to(listener, opts=linux_syn(tsval=100))
    L = peer.lss + 1
    peer.send("PA", 1001 + 10, L, b"later", tsval=300)  # out of order
    a = peer.expect("A", ack=1001)
    assert a.opt("Timestamp")[1] == 100  # still the SYN's
    peer.send("PA", 1001, L, b"0123456789", tsval=200)
    a = peer.expect("A", ack=1016)
    assert a.opt("Timestamp")[1] == 200


# -- window scaling (RFC 7323 2) ---------------------------------------------------------------


def test_window_scaling_both_ways(peer: Peer, listener: socket.socket) -> None:
    """The peer's window fields are shifted by its scale (7): a field of 100 lets
    12800 bytes out (eight 1448-byte segments and 1216 more, at once: Linux has
    no sender-side SWS avoidance). Ours are our buffer's free space >> 7."""
    conn = peer.open_to(listener, opts=linux_syn(tsval=100, wscale=7), win=100)
    L = peer.lss + 1
    assert conn.send(b"d" * 16_000) == 16_000
    for i in range(8):
        peer.expect("A", seq=L + 1448 * i, length=1448, at=0)
    peer.expect("A", seq=L + 11584, length=1216, at=0)
    peer.expect_nothing(within=0.1)
    peer.mark()
    # The window opens to 200 << 7: the other 3200 bytes follow at once.
    peer.send("A", 1001, L + 12800, win=200)
    for i in range(2):
        seg = peer.expect("A", seq=L + 12800 + 1448 * i, length=1448, at=0)
        assert seg.win == 131072 >> 7  # ours: the free buffer, scaled by 7
    peer.expect("PA", seq=L + 12800 + 2896, length=304, at=0)
    peer.send("PA", 1001, L + 16_000, b"q" * 1000)
    ack = peer.expect("A", ack=2001)
    # The right edge stays where it was (RFC 9293 3.8.6.2.2: never shrink):
    # 131072 - 1000 bytes, rounded up to the scale (RFC 7323 2.4, as Linux).
    assert ack.win == -(-(131072 - 1000) // 128)


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
    """A full buffer closes our window (RFC 1122 4.2.3.3: it is not reopened
    by less than min(MSS, buffer / 2)); data beyond it is dropped with an
    ACK; when the application reads, a window update goes out at once."""
    stack, eth = net
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1152)  # 2304 bytes
    p = Peer(stack, eth)
    p.send("S", 1000, opts=MSS_ONLY)
    sa = p.expect("SA", ack=1001, win=1460)
    p.send("A", 1001, sa.seq + 1)
    conn, _ = listener.accept()
    conn.setblocking(False)
    L = sa.seq + 1
    p.send("PA", 1001, L, b"a" * 1460)
    p.expect("A", seq=L, ack=2461, win=0, at=0)
    p.send("PA", 2461, L, b"b")  # beyond a zero window: not acceptable
    p.expect("A", seq=L, ack=2461, win=0, at=0)
    p.advance(1)
    assert conn.recv(5000) == b"a" * 1460
    p.expect("A", seq=L, ack=2461, win=2304, at=1)
    p.send("PA", 2461, L, b"b")
    p.expect("A", ack=2462)


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
    assert seg.win == 65535


__all__ = ["errno"]
