"""Packet scripts: closing. A FIN in every state (RFC 9293 3.6 and 3.10.7.4
eighth check), simultaneous close, TIME-WAIT (Linux: 60 s, a retransmitted
FIN re-ACKed and the timer restarted, an RST ends it, a new SYN reopens)."""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, TCP

from loopstack.transport.tcp import State

from .conftest import MSS_ONLY, Peer, counters, linux_syn


@pytest.fixture
def conn(peer: Peer, listener: socket.socket) -> socket.socket:
    return peer.open_to(listener, opts=MSS_ONLY)


def state(sock: socket.socket) -> State:
    """The connection's TCP state, as `ss` shows it. (Linux moves TIME-WAIT to a
    mini-socket, so TCP_INFO on the descriptor would say CLOSE there.)"""
    return sock._tcb.state  # type: ignore[attr-defined, no-any-return]


def test_fin_in_established_then_last_ack(peer: Peer, conn: socket.socket) -> None:
    """ESTABLISHED + FIN -> CLOSE-WAIT, the FIN acknowledged; close() sends
    our FIN (LAST-ACK); its ACK ends the connection: a later segment is
    answered by the listener with an RST."""
    L = peer.lss + 1
    peer.send("FA", 1001, L)
    peer.expect("A", seq=L, ack=1002, at=0)
    assert conn.recv(10) == b""
    assert state(conn) == State.CLOSE_WAIT
    conn.send(b"bye")  # CLOSE-WAIT may still send
    peer.expect("PA", seq=L, ack=1002, data=b"bye")
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L + 3, ack=1002, at=0)
    assert state(conn) == State.LAST_ACK
    peer.send("A", 1002, L + 4)
    assert state(conn) == State.CLOSED
    peer.send("A", 1002, L + 4)
    peer.expect("R", seq=L + 4)


def test_fin_wait1_fin_ack_goes_to_time_wait(peer: Peer, conn: socket.socket) -> None:
    """FIN-WAIT-1 + a FIN that acknowledges ours -> TIME-WAIT, at once."""
    L = peer.lss + 1
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L, ack=1001, at=0)
    assert state(conn) == State.FIN_WAIT1
    peer.send("FA", 1001, L + 1)
    peer.expect("A", seq=L + 1, ack=1002, at=0)
    assert state(conn) == State.TIME_WAIT


def test_fin_wait2_then_fin(peer: Peer, conn: socket.socket) -> None:
    """FIN-WAIT-1 -(ACK of our FIN)-> FIN-WAIT-2, where data still arrives;
    then FIN -> TIME-WAIT, the FIN acknowledged."""
    L = peer.lss + 1
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L, ack=1001)
    peer.send("A", 1001, L + 1)
    peer.expect_nothing()
    assert state(conn) == State.FIN_WAIT2
    peer.send("PA", 1001, L + 1, b"more")
    peer.expect("A", seq=L + 1, ack=1005)
    assert conn.recv(10) == b"more"
    peer.send("FA", 1005, L + 1)
    peer.expect("A", seq=L + 1, ack=1006, at=0)
    assert state(conn) == State.TIME_WAIT


def test_simultaneous_close(peer: Peer, conn: socket.socket) -> None:
    """RFC 9293 3.6 figure 13: FINs cross. FIN-WAIT-1 + FIN (ours not yet
    acknowledged) -> CLOSING, ACK sent; the ACK of our FIN -> TIME-WAIT."""
    L = peer.lss + 1
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L, ack=1001)
    peer.send("FA", 1001, L)  # their FIN, sent before ours arrived
    peer.expect("A", seq=L + 1, ack=1002, at=0)
    assert state(conn) == State.CLOSING
    peer.send("A", 1002, L + 1)
    assert state(conn) == State.TIME_WAIT
    peer.expect_nothing()


def test_closing_retransmits_its_fin(peer: Peer, conn: socket.socket) -> None:
    """In CLOSING our FIN is still unacknowledged: the RTO resends it."""
    L = peer.lss + 1
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L, ack=1001, at=0)
    peer.send("FA", 1001, L)
    peer.expect("A", seq=L + 1, ack=1002, at=0)
    peer.expect("FA", seq=L, ack=1002, at=0.200001)


def test_fin_with_data_out_of_order(peer: Peer, conn: socket.socket) -> None:
    """A FIN that arrives before the data under it waits for the hole to fill
    (RFC 9293 3.10.7.4: FIN is processed in sequence)."""
    L = peer.lss + 1
    peer.send("FPA", 1006, L, b"world")
    peer.expect("A", ack=1001)
    assert state(conn) == State.ESTABLISHED
    peer.send("PA", 1001, L, b"hello")
    peer.expect("A", ack=1012)
    assert state(conn) == State.CLOSE_WAIT
    assert conn.recv(100) == b"helloworld"
    assert conn.recv(100) == b""


def test_fin_waits_for_queued_data(peer: Peer, listener: socket.socket) -> None:
    """DESIGN.md: a FIN never overtakes data accepted by send(); it rides on
    the last segment once the window lets that out. (A 1000-byte window also
    halves the MSS to 500: Linux tcp_bound_to_half_wnd.)"""
    conn = peer.open_to(listener, opts=MSS_ONLY, win=1000)
    L = peer.lss + 1
    conn.send(b"m" * 1500)
    conn.shutdown(socket.SHUT_WR)
    peer.expect("A", seq=L, length=500, at=0)
    peer.expect("A", seq=L + 500, length=500, at=0)
    peer.expect_nothing()
    peer.send("A", 1001, L + 1000, win=1000)
    peer.expect("FPA", seq=L + 1000, length=500, at=0)
    peer.send("A", 1001, L + 1501)
    assert state(conn) == State.FIN_WAIT2


def test_fin_on_the_handshake_ack(peer: Peer, listener: socket.socket) -> None:
    """SYN-RECEIVED: the ACK completing the handshake carries data and FIN:
    ESTABLISHED, then CLOSE-WAIT; accept() returns it with the data, then EOF.
    Linux tcp_fin makes the connection interactive (pingpong): no quick ACK,
    the delayed-ACK timer (40 ms) acknowledges data and FIN together."""
    peer.send("S", 1000, opts=MSS_ONLY)
    sa = peer.expect("SA", ack=1001)
    peer.send("FPA", 1001, sa.seq + 1, b"all at once")
    peer.expect("A", seq=sa.seq + 1, ack=1013, at=0.04)
    conn, _ = listener.accept()
    assert state(conn) == State.CLOSE_WAIT
    assert conn.recv(100) == b"all at once"
    assert conn.recv(100) == b""


def test_fin_again_in_close_wait_and_last_ack(peer: Peer, conn: socket.socket) -> None:
    """A retransmitted FIN (our ACK was lost) is below RCV.NXT: acknowledged
    again in CLOSE-WAIT and in LAST-ACK, the state unchanged."""
    L = peer.lss + 1
    peer.send("FA", 1001, L)
    peer.expect("A", seq=L, ack=1002)
    peer.send("FA", 1001, L)
    peer.expect("A", seq=L, ack=1002, at=0)
    assert state(conn) == State.CLOSE_WAIT
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L, ack=1002)
    peer.send("FA", 1001, L)
    peer.expect("A", seq=L + 1, ack=1002, at=0)
    assert state(conn) == State.LAST_ACK
    peer.expect("FA", seq=L, ack=1002, at=0.200001)  # our FIN, by the RTO
    peer.send("A", 1002, L + 1)
    assert state(conn) == State.CLOSED


def test_fin_in_syn_sent_is_dropped(peer: Peer, net: tuple) -> None:
    """RFC 9293 3.10.7.3: neither SYN nor RST in SYN-SENT: drop."""
    stack, _ = net
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex(("192.0.2.2", peer.port))
    syn = peer.expect("S")
    lport = IP(syn.raw)[TCP].sport
    peer.send("F", 5000, dport=lport)
    peer.expect("S", seq=syn.seq, at=1)


def test_rst_in_syn_received_drops_the_embryo(peer: Peer, listener: socket.socket) -> None:
    """RFC 9293 3.10.7.4: an acceptable RST in SYN-RECEIVED (passive open)
    returns to LISTEN: no more SYN-ACKs, nothing to accept."""
    peer.send("S", 1000, opts=MSS_ONLY)
    peer.expect("SA", ack=1001)
    peer.send("R", 1001)
    peer.expect_nothing(within=10)
    with pytest.raises(BlockingIOError):
        listener.accept()


# -- TIME-WAIT ----------------------------------------------------------------------------


def _to_time_wait(peer: Peer, conn: socket.socket) -> int:
    """Active close by the stack; returns the peer's RCV.NXT (1002)."""
    L = peer.lss + 1
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L, ack=1001)
    peer.send("FA", 1001, L + 1)
    peer.expect("A", seq=L + 1, ack=1002)
    assert state(conn) == State.TIME_WAIT
    peer.mark()
    return 1002


def test_time_wait_lasts_60_seconds(peer: Peer, conn: socket.socket) -> None:
    _to_time_wait(peer, conn)
    peer.advance(59.999)
    assert state(conn) == State.TIME_WAIT
    peer.advance(0.001)
    assert state(conn) == State.CLOSED


def test_time_wait_length_is_configurable(peer: Peer, conn: socket.socket) -> None:
    peer.stack.tcp.timewait_ns = 5_000_000_000
    _to_time_wait(peer, conn)
    peer.advance(4.999)
    assert state(conn) == State.TIME_WAIT
    peer.advance(0.001)
    assert state(conn) == State.CLOSED


def test_time_wait_reacks_a_retransmitted_fin(peer: Peer, conn: socket.socket) -> None:
    """RFC 9293 3.10.7.4: a retransmission of the remote FIN: acknowledge it
    and restart the 2 MSL timeout."""
    L = peer.lss + 1
    _to_time_wait(peer, conn)
    peer.advance(30)
    peer.send("FA", 1001, L + 1)
    peer.expect("A", seq=L + 1, ack=1002, at=30)
    peer.advance(59.999)
    assert state(conn) == State.TIME_WAIT
    peer.advance(0.001)
    assert state(conn) == State.CLOSED


def test_rst_ends_time_wait(peer: Peer, conn: socket.socket) -> None:
    """Linux (tcp_rfc1337 = 0): an in-window RST ends TIME-WAIT at once,
    silently."""
    _to_time_wait(peer, conn)
    peer.send("R", 1002)
    peer.expect_nothing()
    assert state(conn) == State.CLOSED


def test_old_syn_in_time_wait_gets_an_ack(peer: Peer, conn: socket.socket) -> None:
    """An old duplicate SYN (below RCV.NXT) is answered with an ACK; TIME-WAIT stays."""
    L = peer.lss + 1
    _to_time_wait(peer, conn)
    peer.send("S", 1000, opts=MSS_ONLY)
    peer.expect("A", seq=L + 1, ack=1002, at=0)
    assert state(conn) == State.TIME_WAIT


def test_new_syn_reopens_time_wait(peer: Peer, conn: socket.socket,
                                   listener: socket.socket) -> None:
    """RFC 9293 3.10.7.4 / RFC 6191, Linux tcp_timewait_state_process: a SYN
    above the old sequence space reopens the connection through the
    listener, with ISN = the old SND.NXT + 65537. One SYN-ACK, no more."""
    L = peer.lss + 1
    _to_time_wait(peer, conn)
    peer.advance(10)
    peer.send("S", 50_000, opts=MSS_ONLY)
    sa = peer.expect("SA", seq=L + 1 + 65537, ack=50_001, at=10)
    peer.expect_nothing()
    peer.send("A", 50_001, sa.seq + 1)
    new, _ = listener.accept()
    new.send(b"again")
    peer.expect("PA", seq=sa.seq + 1, ack=50_001, data=b"again")
    assert state(conn) == State.CLOSED


def test_time_wait_bare_ack_restarts_the_timer(peer: Peer, conn: socket.socket) -> None:
    """Linux tcp_timewait_state_process: an empty segment exactly in sequence
    (SEQ = RCV.NXT) is taken silently and TIME-WAIT starts over (60 s)."""
    L = peer.lss + 1
    _to_time_wait(peer, conn)
    peer.advance(30)
    peer.send("A", 1002, L + 1)
    peer.expect_nothing()
    peer.advance(59.999)
    assert state(conn) == State.TIME_WAIT
    peer.advance(0.001)
    assert state(conn) == State.CLOSED


def test_time_wait_acks_new_data_and_restarts(peer: Peer, conn: socket.socket) -> None:
    """Data in TIME-WAIT cannot be taken: an ACK of RCV.NXT answers it (never
    rate-limited: data start no ACK loop) and the 60 s start over."""
    L = peer.lss + 1
    _to_time_wait(peer, conn)
    peer.advance(30)
    for _ in range(2):
        peer.send("PA", 1002, L + 1, b"late")
        peer.expect("A", seq=L + 1, ack=1002, at=30)
    peer.advance(59.999)
    assert state(conn) == State.TIME_WAIT
    peer.advance(0.001)
    assert state(conn) == State.CLOSED


def test_time_wait_out_of_window_ack_is_answered_once(peer: Peer, conn: socket.socket) -> None:
    """An empty segment out of sequence gets a duplicate ACK, at most one per
    500 ms (tcp_timewait_check_oow_rate_limit: TCPACKSkippedTimeWait); its
    ACK flag restarts the timer."""
    L = peer.lss + 1
    _to_time_wait(peer, conn)
    peer.advance(30)
    peer.send("A", 5000, L + 1)
    peer.expect("A", seq=L + 1, ack=1002, at=30)
    peer.send("A", 5000, L + 1)
    peer.expect_nothing()
    assert counters(peer.stack)["TcpExtTCPACKSkippedTimeWait"] == 1
    peer.advance(0.5)
    peer.send("A", 5000, L + 1)
    peer.expect("A", seq=L + 1, ack=1002, at=30.5)
    peer.advance(59.999)
    assert state(conn) == State.TIME_WAIT
    peer.advance(0.001)
    assert state(conn) == State.CLOSED


def test_rst_out_of_sequence_is_ignored_in_time_wait(peer: Peer, conn: socket.socket) -> None:
    """Only an RST exactly at RCV.NXT ends TIME-WAIT; another is dropped,
    with no challenge ACK (TIME-WAIT is not RFC 5961's synchronized state)."""
    _to_time_wait(peer, conn)
    peer.send("R", 1003)
    peer.send("R", 1001)
    peer.expect_nothing()
    assert state(conn) == State.TIME_WAIT


def test_rfc1337_keeps_time_wait_from_an_rst(peer: Peer, conn: socket.socket) -> None:
    """tcp_rfc1337 = 1 (RFC 1337 "TIME-WAIT assassination"): the RST is
    ignored, TIME-WAIT runs its course."""
    peer.stack.tcp.rfc1337 = True
    _to_time_wait(peer, conn)
    peer.send("R", 1002)
    peer.expect_nothing()
    assert state(conn) == State.TIME_WAIT
    peer.advance(60)
    assert state(conn) == State.CLOSED


def test_syn_at_rcv_nxt_does_not_reopen(peer: Peer, conn: socket.socket,
                                        listener: socket.socket) -> None:
    """A SYN must be above RCV.NXT (after(), not at it) to open a new
    connection; this one gets an ACK and leaves the timer alone."""
    L = peer.lss + 1
    _to_time_wait(peer, conn)
    peer.advance(30)
    peer.send("S", 1002, opts=MSS_ONLY)
    peer.expect("A", seq=L + 1, ack=1002, at=30)
    assert state(conn) == State.TIME_WAIT
    peer.advance(30)
    assert state(conn) == State.CLOSED


def test_new_syn_without_listener_gets_an_ack(peer: Peer, conn: socket.socket,
                                              listener: socket.socket) -> None:
    """Linux tcp_v4_rcv: TCP_TW_SYN with no listener falls through to the
    TIME-WAIT ACK, which is not rate-limited."""
    L = peer.lss + 1
    listener.close()
    _to_time_wait(peer, conn)
    for _ in range(2):
        peer.send("S", 50_000, opts=MSS_ONLY)
        peer.expect("A", seq=L + 1, ack=1002, at=0)
    assert state(conn) == State.TIME_WAIT


def _to_time_wait_ts(peer: Peer, listener: socket.socket) -> tuple[socket.socket, int]:
    """TIME-WAIT with timestamps on (the peer's TSvals 1000 on); returns the
    connection and the stack's SND.NXT."""
    peer.ts_off = 1000
    conn = peer.open_to(listener, opts=linux_syn(tsval=1000))
    L = peer.lss + 1
    conn.shutdown(socket.SHUT_WR)
    peer.expect("FA", seq=L, ack=1001)
    peer.send("FA", 1001, L + 1)
    peer.expect("A", seq=L + 1, ack=1002)
    assert state(conn) == State.TIME_WAIT
    peer.mark()
    return conn, L + 1


def test_syn_with_a_newer_timestamp_reopens(peer: Peer, listener: socket.socket) -> None:
    """With timestamps a SYN below RCV.NXT opens a new connection too if its
    TSval is newer than TS.Recent (RFC 6191)."""
    conn, nxt = _to_time_wait_ts(peer, listener)
    peer.advance(1)
    peer.send("S", 500, opts=linux_syn(tsval=peer.tsval()))
    peer.expect("SA", seq=nxt + 65537, ack=501, at=1)
    assert state(conn) == State.CLOSED


def test_paws_in_time_wait(peer: Peer, listener: socket.socket) -> None:
    """PAWS without tolerance in TIME-WAIT (tcp_paws_reject): a SYN above
    RCV.NXT with an old TSval reopens nothing; it is ACKed, counted
    (PAWSTimewait) and restarts the timer. An RST with an old TSval ends
    TIME-WAIT only once TS.Recent is 60 s old (TCP_PAWS_MSL)."""
    conn, nxt = _to_time_wait_ts(peer, listener)
    peer.advance(10)
    peer.send("S", 50_000, opts=linux_syn(tsval=999))
    peer.expect("A", seq=nxt, ack=1002, at=10)
    assert counters(peer.stack)["TcpExtPAWSTimewait"] == 1
    peer.send("R", 1002, opts=[("NOP", None), ("NOP", None), ("Timestamp", (999, 0))])
    assert state(conn) == State.TIME_WAIT
    peer.advance(50)  # TS.Recent is 60 s old; the timer restarted at 10 s
    peer.send("R", 1002, opts=[("NOP", None), ("NOP", None), ("Timestamp", (999, 0))])
    assert state(conn) == State.CLOSED


def test_data_after_close_gets_rst(peer: Peer, conn: socket.socket) -> None:
    """RFC 9293 3.10.7.4 / Linux TCPAbortOnData: data for a connection the
    application has closed (FIN-WAIT-2, orphaned) is answered with RST."""
    L = peer.lss + 1
    conn.close()
    peer.expect("FA", seq=L, ack=1001)
    peer.send("A", 1001, L + 1)
    peer.send("PA", 1001, L + 1, b"anyone?")
    peer.expect("RA", seq=L + 1)
    assert counters(peer.stack)["TcpExtTCPAbortOnData"] == 1


def test_orphaned_fin_wait2_times_out(peer: Peer, conn: socket.socket) -> None:
    """Linux tcp_fin_timeout (60 s): a closed socket does not wait in
    FIN-WAIT-2 for ever; afterwards the listener answers with an RST."""
    L = peer.lss + 1
    conn.close()
    peer.expect("FA", seq=L, ack=1001)
    peer.send("A", 1001, L + 1)
    peer.expect_nothing(within=59.9)
    peer.advance(0.1)
    peer.send("A", 1001, L + 1)
    peer.expect("R", seq=L + 1)


def test_close_with_unread_data_sends_rst(peer: Peer, conn: socket.socket) -> None:
    """RFC 9293 3.10.4 / RFC 2525 2.17: close() with unread data resets the
    connection (Linux TCPAbortOnClose) instead of a FIN."""
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"unread")
    peer.expect("A", ack=1007)
    conn.close()
    peer.expect("RA", seq=L, ack=1007, at=0)
    assert counters(peer.stack)["TcpExtTCPAbortOnClose"] == 1
