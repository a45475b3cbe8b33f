"""Packet scripts: RACK-TLP (RFC 8985) as Linux runs it on SACK connections
(tcp_recovery = 1, tcp_early_retrans = 3; net/ipv4/tcp_recovery.c,
tcp_output.c tcp_schedule_loss_probe / tcp_send_loss_probe). Here the
handshake's RTT is ~1 us, so SRTT and the minimum RTT are too: the probe
timeout is 2 SRTT + 2 ms, 4 ms in 4 ms ticks, and the reordering window a
quarter of the minimum RTT; RACK's timer waits that plus 2 ms, in ticks."""

from __future__ import annotations

import socket

from .conftest import MSS_SACK, Peer, counters

SEG = 1460
RTO = 0.200001
SACK = [("NOP", None), ("NOP", None)]


def _sack(*blocks: int) -> list:
    return SACK + [("SAck", tuple(blocks))]


def _flight(peer: Peer, conn: socket.socket, n: int, at: float = 0) -> int:
    L = peer.lss + 1
    conn.send(b"r" * (n * SEG))
    for i in range(n):
        peer.expect("A" if i < n - 1 else "PA", seq=L + SEG * i, length=SEG, at=at)
    return L


def test_probe_with_one_segment_out_comes_at_the_rto(peer: Peer,
                                                     listener: socket.socket) -> None:
    """One segment out: the PTO adds the minimum RTO for the peer's delayed
    ACK (2 SRTT + 200 ms), and is never later than the RTO would be: the
    probe goes at 200.001 ms, resending the segment, and the RTO starts
    over from there (then a real timeout, cwnd 1)."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = peer.lss + 1
    conn.send(b"x" * 100)
    peer.expect("PA", seq=L, length=100, at=0)
    peer.expect("PA", seq=L, length=100, at=RTO)
    c = counters(peer.stack)
    assert c["TcpExtTCPLossProbes"] == 1 and c["TcpExtTCPTimeouts"] == 0
    peer.expect("PA", seq=L, length=100, at=2 * RTO)
    assert counters(peer.stack)["TcpExtTCPTimeouts"] == 1


def test_probe_resends_the_last_segment(peer: Peer, listener: socket.socket) -> None:
    """Several segments out, nothing new to send: at the PTO (4 ms) the
    last segment goes again, once (at most one probe outstanding); the RTO
    then runs from the probe."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = _flight(peer, conn, 3)
    peer.expect("PA", seq=L + 2 * SEG, length=SEG, at=0.004)
    peer.expect("A", seq=L, length=SEG, at=0.004 + RTO)
    assert counters(peer.stack)["TcpExtTCPLossProbes"] == 1


def test_probe_sends_new_data_when_the_window_allows(peer: Peer,
                                                    listener: socket.socket) -> None:
    """cwnd (10) holds back the eleventh segment; the probe sends it
    (Linux tcp_send_loss_probe: new data first, whatever cwnd says); its
    ACK ends the episode without a cwnd reduction."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = peer.lss + 1
    conn.send(b"n" * (11 * SEG))
    for i in range(10):
        peer.expect("A" if i < 9 else "A", seq=L + SEG * i, length=SEG, at=0)
    peer.expect("PA", seq=L + 10 * SEG, length=SEG, at=0.004)
    peer.send("A", 1001, L + 11 * SEG)
    assert conn._tcb.tlp_high_seq == 0  # type: ignore[attr-defined]
    assert counters(peer.stack).get("TcpExtTCPLossProbeRecovery", 0) == 0


def test_probe_that_repaired_a_loss_reduces_cwnd(peer: Peer, listener: socket.socket) -> None:
    """The last of three segments is lost; the probe resends it and the
    peer acknowledges all three. That ACK cannot tell whether the probe or
    the original arrived; one beyond the probe can (Linux
    tcp_process_tlp_ack: without a DSACK, it was a loss): cwnd is reduced
    once (CUBIC: 13 -> 9), TCPLossProbeRecovery."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = _flight(peer, conn, 3)
    peer.expect("PA", seq=L + 2 * SEG, length=SEG, at=0.004)
    peer.send("A", 1001, L + 3 * SEG)
    t = conn._tcb  # type: ignore[attr-defined]
    assert t.tlp_high_seq != 0 and t.cc.cwnd == 13
    conn.send(b"m" * 100)
    peer.expect("PA", seq=L + 3 * SEG, length=100)
    peer.send("A", 1001, L + 3 * SEG + 100)
    assert counters(peer.stack)["TcpExtTCPLossProbeRecovery"] == 1
    assert (t.cc.ssthresh, t.cc.cwnd, t.tlp_high_seq) == (9, 9, 0)


def test_rack_waits_a_reordering_window(peer: Peer, listener: socket.socket) -> None:
    """One segment SACKed above a hole: it may be reordering. RACK waits a
    quarter of the minimum RTT after the hole's segment was due (one RTT
    after it left), plus 2 ms: its timer fires in the next tick (4 ms
    later), marks the hole lost, starts recovery and resends it."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = _flight(peer, conn, 10)
    peer.advance(0.002)
    peer.send("A", 1001, L, opts=_sack(L + SEG, L + 2 * SEG))
    peer.expect_nothing()
    peer.expect("A", seq=L, length=SEG, at=0.006)
    assert counters(peer.stack)["TcpExtTCPSackRecovery"] == 1
    peer.expect_nothing()


def test_rack_window_absorbs_reordering(peer: Peer, listener: socket.socket) -> None:
    """The same hole, filled before RACK's timer fires: it was reordering;
    nothing is resent and no recovery starts."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = _flight(peer, conn, 10)
    peer.advance(0.002)
    peer.send("A", 1001, L, opts=_sack(L + SEG, L + 2 * SEG))
    peer.advance(0.001)
    peer.send("A", 1001, L + 2 * SEG)
    peer.advance(0.0029)
    peer.expect_nothing()
    assert counters(peer.stack)["TcpExtTCPSackRecovery"] == 0


def test_rack_without_window_once_three_are_sacked(peer: Peer,
                                                   listener: socket.socket) -> None:
    """Three segments SACKed and no reordering seen (tcp_rack_reo_wnd: the
    classic duplicate threshold): no reordering window; the hole, sent an
    RTT before the last segment delivered, is lost at once."""
    conn = peer.open_to(listener, opts=MSS_SACK)
    L = _flight(peer, conn, 10)
    peer.advance(0.002)
    peer.send("A", 1001, L, opts=_sack(L + SEG, L + 4 * SEG))
    peer.expect("A", seq=L, length=SEG, at=0.002)
    peer.expect_nothing()
    peer.send("A", 1001, L + 10 * SEG)
    peer.expect_nothing(within=1)


def test_no_probe_without_sack(peer: Peer, listener: socket.socket) -> None:
    """TLP needs SACK (tcp_schedule_loss_probe): without it, the RTO."""
    conn = peer.open_to(listener)
    L = _flight(peer, conn, 3)
    peer.expect("A", seq=L, length=SEG, at=RTO)
