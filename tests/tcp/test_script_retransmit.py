"""Packet scripts: getting data through. The retransmission timer (RFC 6298
with Linux's 200 ms floor and doubling), fast retransmit and NewReno
recovery (RFC 5681, RFC 6582), SACK-based recovery (RFC 6675) and the
persist timer (RFC 9293 3.8.6.1, Linux's zero-window probes)."""

from __future__ import annotations

import errno
import socket

from .conftest import MSS_ONLY, MSS_SACK, Peer, counters

RTO = 0.200001  # 200 ms floor + the 1 us smallest RTT sample (as Linux: rto 200.001 ms)
SEG = 1460


def _times(first: float, n: int, cap: float = 120.0) -> list[float]:
    """Cumulative firing times of a timer starting at ``first``, doubling, capped."""
    out, t, step = [], 0.0, first
    for _ in range(n):
        t += step
        out.append(round(t, 9))
        step = min(step * 2, cap)
    return out


# -- RTO (RFC 6298 5, Linux tcp_retransmit_timer) -----------------------------------------------


def test_rto_backoff_schedule(peer: Peer, listener: socket.socket) -> None:
    """Unacknowledged data is resent at RTO = 200.001 ms after it left, then
    at doubling intervals (0.6, 1.4, 3.0, 6.2 ... s), one segment each time
    (cwnd 1), until an ACK stops the timer."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    conn.send(b"a" * 100)
    peer.expect("PA", seq=L, length=100, at=0)
    for t in _times(RTO, 6):
        peer.expect("PA", seq=L, length=100, at=t)
    assert counters(peer.stack)["TcpExtTCPTimeouts"] == 6
    info = conn.tcp_info()
    assert info["retransmits"] == 6 and info["backoff"] == 6
    peer.send("A", 1001, L + 100)
    peer.expect_nothing(within=200)
    assert conn.tcp_info()["backoff"] == 0


def test_rto_follows_the_measured_rtt(peer: Peer, listener: socket.socket) -> None:
    """RFC 6298 2.2: the handshake's RTT (100 ms here) gives SRTT = R, RTTVAR =
    R/2; RTO = SRTT + max(4 RTTVAR, 200 ms) = 300 ms (Linux: the floor
    applies to the variance term). Then doubling."""
    peer.send("S", 1000, opts=MSS_ONLY)
    sa = peer.expect("SA", ack=1001)
    peer.advance(0.1)
    peer.send("A", 1001, sa.seq + 1)
    conn, _ = listener.accept()
    conn.setblocking(False)
    peer.mark()
    L = sa.seq + 1
    conn.send(b"k" * 10)
    peer.expect("PA", seq=L, at=0)
    peer.expect("PA", seq=L, at=0.3)
    peer.expect("PA", seq=L, at=0.9)
    assert conn.tcp_info()["rtt"] == 100_000


def test_rto_falls_back_to_3s_after_a_lost_synack(peer: Peer,
                                                  listener: socket.socket) -> None:
    """RFC 6298 5.7 (Linux TCP_TIMEOUT_FALLBACK): the SYN-ACK was resent, so
    Karn's rule leaves no RTT sample and the RTO starts at 3 s."""
    peer.send("S", 1000, opts=MSS_ONLY)
    sa = peer.expect("SA", ack=1001, at=0)
    peer.expect("SA", ack=1001, at=1)
    peer.send("A", 1001, sa.seq + 1)
    conn, _ = listener.accept()
    conn.setblocking(False)
    conn.send(b"k")
    peer.expect("PA", seq=sa.seq + 1, at=1)
    peer.expect("PA", seq=sa.seq + 1, at=4)


def test_rto_falls_back_to_3s_after_a_lost_syn(peer: Peer, net: tuple) -> None:
    stack, _ = net
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex(("192.0.2.2", peer.port))
    syn = peer.expect("S", at=0)
    peer.expect("S", at=1)
    from scapy.layers.inet import IP, TCP

    lport = IP(syn.raw)[TCP].sport
    peer.send("SA", 5000, syn.seq + 1, dport=lport, opts=MSS_ONLY)
    peer.lport = lport
    peer.expect("A", seq=syn.seq + 1, ack=5001, at=1)
    c.send(b"k")
    peer.expect("PA", seq=syn.seq + 1, at=1)
    peer.expect("PA", seq=syn.seq + 1, at=4)


def test_initial_window_is_ten_segments(peer: Peer, listener: socket.socket) -> None:
    """RFC 6928 / Linux TCP_INIT_CWND: ten segments go before any ACK; each
    ACK in slow start lets the window grow by what it acknowledges."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    assert conn.send(b"w" * 16000) == 16000
    for i in range(10):
        peer.expect("A", seq=L + SEG * i, length=SEG, at=0)
    peer.expect_nothing(within=0.1)
    peer.send("A", 1001, L + 2 * SEG)  # two acknowledged: cwnd 12, four may go
    peer.expect("PA", seq=L + 10 * SEG, length=1400, at=0.1)
    conn.send(b"v" * 5000)
    # cwnd counts segments (as Linux): 9 are out, 3 more go; no 60-byte sliver.
    for i in range(3):
        peer.expect("A", seq=L + 10 * SEG + 1400 + SEG * i, length=SEG, at=0.1)
    peer.expect_nothing()


def test_acks_after_a_timeout_carry_snd_max(peer: Peer, listener: socket.socket) -> None:
    """After the RTO resends the first segment (snd_nxt rewound), pure ACKs
    and an abortive RST still carry SEQ = the highest sequence sent (Linux
    tcp_acceptable_seq): a peer holding both segments would drop a lower SEQ
    as unacceptable (RFC 9293 3.10.7.4), and with it the ACK."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    conn.send(b"r" * (2 * SEG))
    peer.expect("A", seq=L, at=0)
    peer.expect("PA", seq=L + SEG, at=0)
    peer.expect("A", seq=L, length=SEG, at=RTO)
    peer.send("PA", 1001, L, b"hello")
    peer.expect("A", seq=L + 2 * SEG, ack=1006, length=0, at=RTO)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    assert conn.recv(10) == b"hello"
    conn.close()
    peer.expect("RA", seq=L + 2 * SEG, ack=1006, at=RTO)


def test_rto_resends_one_segment_then_slow_starts(peer: Peer, listener: socket.socket) -> None:
    """RFC 5681 3.1: after a timeout cwnd is one segment; each ACK then
    lets two more out (slow start)."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    conn.send(b"b" * (5 * SEG))
    for i in range(5):
        peer.expect("A" if i < 4 else "PA", seq=L + SEG * i, length=SEG, at=0)
    peer.expect("A", seq=L, length=SEG, at=RTO)
    peer.expect_nothing()  # cwnd 1
    peer.send("A", 1001, L + SEG)
    peer.expect("A", seq=L + SEG, length=SEG, at=RTO)
    peer.expect("A", seq=L + 2 * SEG, length=SEG, at=RTO)
    peer.expect_nothing()


def test_retransmission_gives_up_with_etimedout(peer: Peer, listener: socket.socket) -> None:
    """tcp_retries2 = 15 as a time budget: tcp_model_timeout(15, 200 ms) =
    924.6 s, counted (Linux tcp_retransmit_skb, retrans_stamp) from the first
    retransmission, so it is a lower bound (ip-sysctl says so). Resends at
    0.2, 0.6, 1.4, ... 204.6 s, then every 120 s (TCP_RTO_MAX) to 924.6 s: 16
    in all; the timer at 1044.6 s ends the connection: ETIMEDOUT, no RST."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    conn.send(b"c")
    peer.expect("PA", seq=L, at=0)
    times = _times(RTO, 16)
    for t in times:
        peer.expect("PA", seq=L, at=t)
    assert times[-1] == 924.601023
    peer.expect_nothing(within=119.9)
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    peer.expect_nothing(within=0.1)
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ETIMEDOUT
    assert counters(peer.stack)["TcpExtTCPAbortOnTimeout"] == 1
    peer.expect_nothing(within=300)


# -- fast retransmit and NewReno (RFC 5681 3.2, RFC 6582) ------------------------------------------


def test_fast_retransmit_on_the_third_dupack_and_newreno(peer: Peer,
                                                         listener: socket.socket) -> None:
    """Without SACK: two duplicate ACKs change nothing; the third resends the
    first unacknowledged segment at once. A partial ACK (RFC 6582 3.2 step 4)
    resends the next hole at once; the full ACK ends recovery."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    conn.send(b"d" * (10 * SEG))
    for i in range(10):
        peer.expect("A" if i < 9 else "PA", seq=L + SEG * i, length=SEG, at=0)
    peer.advance(0.01)
    peer.send("A", 1001, L)  # segment 0 lost: 1..9 arrive, each one dupack
    peer.send("A", 1001, L)
    peer.expect_nothing()
    peer.send("A", 1001, L)
    peer.expect("A", seq=L, length=SEG, at=0.01)  # the third
    c = counters(peer.stack)
    assert c["TcpExtTCPFastRetrans"] == 1 and c["TcpExtTCPRenoRecovery"] == 1
    peer.send("A", 1001, L)  # more dupacks: nothing to send, nothing resent
    peer.expect_nothing()
    peer.advance(0.01)
    peer.send("A", 1001, L + 3 * SEG)  # partial: segment 3 was lost too
    peer.expect("A", seq=L + 3 * SEG, length=SEG, at=0.02)
    peer.expect_nothing()
    peer.send("A", 1001, L + 10 * SEG)  # full ACK
    peer.expect_nothing(within=5)
    assert conn.tcp_info()["ca_state"] == 0


def test_limited_transmit(peer: Peer, listener: socket.socket) -> None:
    """RFC 3042 (Linux does the same through its in-flight count): the first
    and second duplicate ACKs each send one new segment beyond cwnd; the
    third starts fast retransmit."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    assert conn.send(b"n" * 16384) == 16384  # 11 segments and 324 bytes
    for i in range(10):
        peer.expect("A", seq=L + SEG * i, length=SEG, at=0)
    peer.expect_nothing()
    peer.send("A", 1001, L)
    peer.expect("A", seq=L + 10 * SEG, length=SEG, at=0)
    peer.send("A", 1001, L)
    peer.expect("PA", seq=L + 11 * SEG, length=324, at=0)
    peer.send("A", 1001, L)
    peer.expect("A", seq=L, length=SEG, at=0)
    peer.expect_nothing()


def test_dupacks_that_move_the_window_are_not_duplicates(peer: Peer,
                                                          listener: socket.socket) -> None:
    """RFC 5681 2 (DUPLICATE ACKNOWLEDGMENT): an ACK that changes the window
    (or carries data) is not counted."""
    conn = peer.open_to(listener, opts=MSS_ONLY)
    L = peer.lss + 1
    conn.send(b"e" * (4 * SEG))
    for _ in range(4):
        peer.expect("A" if _ < 3 else "PA", at=0)
    peer.send("A", 1001, L, win=60000)
    peer.send("A", 1001, L, win=60001)
    peer.send("PA", 1001, L, b"x", win=60001)
    peer.expect("A", ack=1002)  # the ACK of the data, no retransmission
    peer.expect_nothing()
    assert counters(peer.stack)["TcpExtTCPFastRetrans"] == 0


# -- SACK (RFC 2018, RFC 6675) ----------------------------------------------------------------


def test_sack_retransmits_the_holes(peer: Peer, listener: socket.socket) -> None:
    """RACK (RFC 8985, Linux tcp_rack_detect_loss): a segment is lost once
    one sent after it was delivered more than an RTT plus the reordering
    window ago; the window is a quarter of the minimum RTT, none once three
    segments are SACKed. Recovery resends each lost hole once, never what
    the peer holds. (At 4 ms the tail loss probe resent the last segment:
    PTO = 2 SRTT + 2 ms, in 4 ms ticks.)"""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = peer.lss + 1
    conn.send(b"f" * (10 * SEG))
    for i in range(10):
        peer.expect("A" if i < 9 else "PA", seq=L + SEG * i, length=SEG, at=0)
    peer.expect("PA", seq=L + 9 * SEG, length=SEG, at=0.004)
    peer.advance(0.006)
    sack = [("NOP", None), ("NOP", None)]
    peer.send("A", 1001, L, opts=sack + [("SAck", (L + SEG, L + 2 * SEG))])
    peer.expect_nothing()  # one segment above the hole: could be reordering
    # Six SACKed: no reordering window; segments 0 and 4, sent before the
    # last one delivered and a whole RTT ago, are lost and resent.
    peer.send("A", 1001, L, opts=sack + [("SAck", (L + 5 * SEG, L + 8 * SEG,
                                                    L + SEG, L + 4 * SEG))])
    peer.expect("A", seq=L, length=SEG, at=0.01)
    peer.expect("A", seq=L + 4 * SEG, length=SEG, at=0.01)
    peer.expect_nothing()
    assert counters(peer.stack)["TcpExtTCPSackRecovery"] == 1
    peer.send("A", 1001, L + 4 * SEG, opts=sack + [("SAck", (L + 5 * SEG, L + 10 * SEG))])
    peer.expect_nothing()
    peer.send("A", 1001, L + 10 * SEG)
    peer.expect_nothing(within=5)


def test_rto_with_sack_skips_what_the_peer_holds(peer: Peer, listener: socket.socket) -> None:
    """RFC 6675 5.1: after a timeout, SACKed data is not sent again. (The
    tail loss probe resends the last segment at 4 ms, then the RTO runs.)"""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = peer.lss + 1
    conn.send(b"g" * (3 * SEG))
    for _ in range(3):
        peer.expect("A" if _ < 2 else "PA", at=0)
    peer.expect("PA", seq=L + 2 * SEG, length=SEG, at=0.004)
    peer.expect("A", seq=L, length=SEG, at=0.004 + RTO)
    sack = [("NOP", None), ("NOP", None), ("SAck", (L + 2 * SEG, L + 3 * SEG))]
    peer.send("A", 1001, L + SEG, opts=sack)
    peer.expect("A", seq=L + SEG, length=SEG, at=0.004 + RTO)
    peer.expect_nothing()


def test_receiver_sack_blocks(peer: Peer, listener: socket.socket) -> None:
    """RFC 2018 4: out-of-order data is acknowledged at once with SACK
    blocks, the most recent first; filling the hole is acknowledged at once."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = peer.lss + 1
    peer.send("PA", 1101, L, b"B" * 100)
    a = peer.expect("A", ack=1001, at=0)
    assert a.sack == [(1101, 1201)]
    peer.send("PA", 1301, L, b"D" * 100)
    a = peer.expect("A", ack=1001, at=0)
    assert a.sack == [(1301, 1401), (1101, 1201)]
    peer.send("PA", 1001, L, b"A" * 100)
    a = peer.expect("A", ack=1201, at=0)
    assert a.sack == [(1301, 1401)]
    peer.send("PA", 1201, L, b"C" * 100)
    a = peer.expect("A", ack=1401, at=0)
    assert a.sack == []
    assert conn.recv(1000) == b"A" * 100 + b"B" * 100 + b"C" * 100 + b"D" * 100


# -- persist timer (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17) ------------------------------------


def test_zero_window_probes_back_off_and_resume(peer: Peer, listener: socket.socket) -> None:
    """A zero window: data waits; probes (<SEQ=SND.UNA-1><ACK>, no data, as
    Linux's tcp_xmit_probe_skb) go out at RTO, doubling; answered probes keep
    the connection alive however long it lasts; a window opens: data flows."""
    conn = peer.open_to(listener, opts=MSS_ONLY, win=0)
    L = peer.lss + 1
    conn.send(b"h" * 3000)
    peer.expect_nothing(within=0.1)
    times = _times(RTO, 18)
    for t in times:
        peer.expect("A", seq=L - 1, ack=1001, length=0, at=t)
        peer.send("A", 1001, L, win=0)  # still closed
    assert counters(peer.stack)["TcpExtTCPWinProbe"] == 18
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    peer.advance(1)
    peer.send("A", 1001, L, win=2000)
    # The 2000-byte window is now the largest seen: segments of half of it
    # (Linux tcp_bound_to_half_wnd).
    peer.expect("A", seq=L, length=1000, at=times[-1] + 1)
    peer.expect("A", seq=L + 1000, length=1000, at=times[-1] + 1)
    peer.expect_nothing(within=0.1)
    peer.send("A", 1001, L + 2000, win=65535)
    peer.expect("PA", seq=L + 2000, length=1000)


def test_window_update_ends_the_persist_timer(peer: Peer, listener: socket.socket) -> None:
    """The window opens by itself (a window update, no probe needed): the
    data goes at once and no probe follows."""
    conn = peer.open_to(listener, opts=MSS_ONLY, win=0)
    L = peer.lss + 1
    conn.send(b"i" * 10)
    peer.advance(0.1)
    peer.send("A", 1001, L, win=1000)
    peer.expect("PA", seq=L, length=10, at=0.1)
    peer.send("A", 1001, L + 10, win=1000)
    peer.expect_nothing(within=10)


def test_unanswered_zero_window_probes_time_out(peer: Peer, listener: socket.socket) -> None:
    """Linux tcp_probe_timer: after tcp_retries2 (15) unanswered probes the
    connection is dropped with ETIMEDOUT."""
    conn = peer.open_to(listener, opts=MSS_ONLY, win=0)
    L = peer.lss + 1
    conn.send(b"j")
    for t in _times(RTO, 15):
        peer.expect("A", seq=L - 1, at=t)
    peer.expect_nothing(within=300)
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ETIMEDOUT
