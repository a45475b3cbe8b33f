"""Packet scripts: the timers that shape traffic. Keepalive (RFC 1122
4.2.3.6, Linux tcp_keepalive_timer), delayed ACK (RFC 1122 4.2.3.2, RFC
5681 4.2, Linux's quick-ACK start and 40 ms ato) and Nagle (RFC 896, RFC
1122 4.2.3.4, Minshall's variant as Linux)."""

from __future__ import annotations

import errno
import socket

import pytest

from loopstack.stream import TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL

from .conftest import MSS_ONLY, Peer, counters

SEG = 1460


@pytest.fixture
def conn(peer: Peer, listener: socket.socket) -> socket.socket:
    return peer.open_to(listener, opts=MSS_ONLY)


# -- keepalive ----------------------------------------------------------------------------


def _keepalive(conn: socket.socket, idle: int, intvl: int, cnt: int) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn.setsockopt(socket.IPPROTO_TCP, TCP_KEEPIDLE, idle)
    conn.setsockopt(socket.IPPROTO_TCP, TCP_KEEPINTVL, intvl)
    conn.setsockopt(socket.IPPROTO_TCP, TCP_KEEPCNT, cnt)


def test_keepalive_probes_and_timeout(peer: Peer, conn: socket.socket) -> None:
    """Idle 10 s, interval 2 s, 3 probes. The idle time counts from the last
    segment received (5 s here): the first probe at 15 s, <SEQ=SND.UNA-1>
    with no data; an answer restarts the idle time (probe at 25 s); then
    unanswered probes at 25, 27, 29 s, and at 31 s an RST and ETIMEDOUT."""
    L = peer.lss + 1
    _keepalive(conn, 10, 2, 3)
    peer.advance(5)
    peer.send("PA", 1001, L, b"ping")
    peer.expect("A", ack=1005, at=5)
    assert conn.recv(10) == b"ping"
    peer.expect("A", seq=L - 1, ack=1005, length=0, at=15)
    peer.send("A", 1005, L)  # the answer to a probe
    for t in (25, 27, 29):
        peer.expect("A", seq=L - 1, ack=1005, length=0, at=t)
    peer.expect("RA", seq=L, ack=1005, at=31)
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ETIMEDOUT
    assert counters(peer.stack)["TcpExtTCPAbortOnTimeout"] == 1


def test_keepalive_off_by_default(peer: Peer, conn: socket.socket) -> None:
    """RFC 1122 4.2.3.6: keepalives MUST default to off."""
    peer.expect_nothing(within=3 * 7200)
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def test_keepalive_default_times(peer: Peer, conn: socket.socket) -> None:
    """Linux defaults: 7200 s idle, 75 s interval, 9 probes."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    L = peer.lss + 1
    for i in range(9):
        peer.expect("A", seq=L - 1, at=7200 + 75 * i, within=7300)
    peer.expect("RA", seq=L, at=7200 + 75 * 9)


def test_keepalive_waits_while_data_is_outstanding(peer: Peer, conn: socket.socket) -> None:
    """Unacknowledged data: the retransmission timer watches the peer, not
    keepalive (Linux: no probe while packets are out)."""
    L = peer.lss + 1
    _keepalive(conn, 1, 1, 1)
    conn.send(b"x")
    peer.expect("PA", seq=L, at=0)
    peer.expect("PA", seq=L, at=0.200001)  # RTO, not a keepalive probe
    peer.send("A", 1001, L + 1)
    peer.mark()
    peer.expect("A", seq=L, length=0, at=1)  # now idle: the probe, SND.UNA - 1


# -- delayed ACK ----------------------------------------------------------------------------


def test_delayed_ack_quickacks_then_every_second_segment(peer: Peer,
                                                        conn: socket.socket) -> None:
    """Linux: the first data start quick-ACK mode, 16 ACKs sent at once
    (tcp_incr_quickack: half a window of segments, 64240 / (2 * 536), at
    most 16); after that a lone segment waits for the delayed-ACK timer
    (ato 40 ms). Full segments that let the window grow are acknowledged at
    once (tcp_grow_window sets a quick ACK); once the unread data stop the
    growth, even several segments wait for the timer (an ACK now would
    offer less window than the last: __tcp_ack_snd_check), until the
    application reads: then more than a segment is owed and the ACK goes
    at once (tcp_cleanup_rbuf). RFC 5681 4.2's "every second full-sized
    segment" holds while the application keeps up (next test)."""
    L = peer.lss + 1
    seq = 1001
    for _ in range(16):
        peer.send("PA", seq, L, b"q" * 100)
        seq += 100
        peer.expect("A", ack=seq, at=0)
    peer.send("PA", seq, L, b"q" * 100)
    seq += 100
    peer.expect("A", ack=seq, at=0.04)
    assert counters(peer.stack)["TcpExtDelayedACKs"] == 1
    for _ in range(2):  # rcv_ssthresh 64076 -> 66996 -> 69916
        peer.send("A", seq, L, b"f" * SEG)
        seq += SEG
        peer.expect("A", ack=seq, at=0.04)
    for _ in range(2):
        peer.send("A", seq, L, b"f" * SEG)
        seq += SEG
    peer.expect_nothing()
    assert len(conn.recv(100_000)) == seq - 1001
    peer.expect("A", ack=seq, at=0.04)


def test_delayed_ack_every_second_full_segment(peer: Peer, conn: socket.socket) -> None:
    """RFC 5681 4.2 as Linux: with the application reading as data arrive
    and the window at its ceiling, every second full segment is
    acknowledged at once, a lone one after ato (40 ms)."""
    L = peer.lss + 1
    seq = 1001
    while True:  # until the window stops growing: no quick ACK
        peer.send("A", seq, L, b"f" * SEG)
        seq += SEG
        conn.recv(100_000)
        if peer._read(0) is None:
            break
    peer.mark()
    peer.send("A", seq, L, b"f" * SEG)
    peer.expect("A", ack=seq + SEG, at=0)  # the second one
    conn.recv(100_000)
    seq += SEG
    for _ in range(2):
        peer.send("A", seq, L, b"f" * SEG)
        seq += SEG
        peer.expect_nothing()
        conn.recv(100_000)
        peer.send("A", seq, L, b"f" * SEG)
        seq += SEG
        peer.expect("A", ack=seq, at=0)
        conn.recv(100_000)
    peer.send("A", seq, L, b"f" * SEG)
    conn.recv(100_000)
    peer.expect("A", ack=seq + SEG, at=0.04)


def test_delayed_ack_timeout_adapts(net: tuple, listener: socket.socket) -> None:
    """Linux's ato: a delayed ACK that fires doubles it (40 -> 80 -> 160
    ms, at most the RTO), bounded when sent by the RTT (here 100 ms, from
    the handshake), so lone segments 200 ms apart wait 40, 80, then 100 ms."""
    stack, eth = net
    p = Peer(stack, eth)
    p.send("S", 1000, opts=MSS_ONLY)
    sa = p.expect("SA", ack=1001)
    p.advance(0.1)  # SRTT 100 ms, RTO 300 ms
    p.send("A", 1001, sa.seq + 1)
    conn, _ = listener.accept()
    L = sa.seq + 1
    seq = 1001
    for _ in range(16):
        p.send("PA", seq, L, b"q")
        seq += 1
        p.expect("A", ack=seq)
    p.mark()
    for delay in (0.04, 0.08, 0.1):
        p.send("PA", seq, L, b"q")
        seq += 1
        p.expect("A", ack=seq, at=delay)
        p.advance(0.2 - delay)
        p.mark()
    assert conn.recv(100) == b"q" * 19


def test_pushed_data_read_gets_its_ack_at_once(peer: Peer, conn: socket.socket) -> None:
    """A small pushed segment waits for the delayed-ACK timer, unless the
    application reads it all first: then its ACK goes at once (Linux
    ICSK_ACK_PUSHED, tcp_cleanup_rbuf)."""
    L = peer.lss + 1
    for i in range(16):
        peer.send("PA", 1001 + i, L, b"z")
        peer.expect("A", ack=1002 + i)
    peer.advance(0.01)
    peer.send("PA", 1017, L, b"hello")
    peer.expect_nothing()
    assert conn.recv(100) == b"z" * 16 + b"hello"
    peer.expect("A", ack=1022, at=0.01)


def test_replies_make_a_connection_interactive(peer: Peer, conn: socket.socket) -> None:
    """Linux pingpong mode: data sent within ato of data received mark the
    connection interactive (tcp_event_data_sent); then requests are not
    quick-ACKed: the reply carries the ACK, or the timer sends it after
    ato; a timer that had to fire ends pingpong mode (quick ACKs again)."""
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"req1")
    peer.expect("A", ack=1005, at=0)  # quick ACK
    conn.send(b"resp1")
    peer.expect("PA", seq=L, ack=1005, data=b"resp1", at=0)
    peer.advance(0.008)
    peer.send("PA", 1005, L + 5, b"req2")
    peer.expect_nothing()
    peer.advance(0.012)
    conn.send(b"resp2")
    peer.expect("PA", seq=L + 5, ack=1009, data=b"resp2", at=0.02)
    peer.send("PA", 1009, L + 10, b"req3")  # no reply this time
    peer.expect("A", seq=L + 10, ack=1013, at=0.06)
    peer.send("PA", 1013, L + 10, b"req4")
    peer.expect("A", ack=1017, at=0.06)  # quick again
    assert conn.recv(100) == b"req1req2req3req4"


def test_quickack_option(peer: Peer, conn: socket.socket) -> None:
    """TCP_QUICKACK (Linux __tcp_sock_set_quickack): 0 makes the
    connection interactive (ACKs wait, for a reply or ato, even once the
    data is read); 1 leaves that mode and sends the ACK owed for what the
    application has read, at once."""
    from loopstack.transport.tcp.ack import set_quickack

    L = peer.lss + 1
    tcb = conn._tcb  # type: ignore[attr-defined]
    with peer.stack.locked:
        set_quickack(tcb, 0)
    peer.send("PA", 1001, L, b"req")
    peer.expect_nothing()
    peer.advance(0.01)
    assert conn.recv(10) == b"req"
    peer.expect_nothing()
    with peer.stack.locked:
        set_quickack(tcb, 1)
    peer.expect("A", ack=1004, at=0.01)
    peer.send("PA", 1004, L, b"more")
    peer.expect("A", ack=1008, at=0.01)


def test_a_resent_segment_restarts_quick_acks(peer: Peer, conn: socket.socket) -> None:
    """A segment the peer sent again means our ACK was lost: it is answered
    at once (DelayedACKLost) and quick-ACK mode starts over (Linux
    tcp_send_dupack -> tcp_enter_quickack_mode)."""
    L = peer.lss + 1
    for i in range(16):
        peer.send("PA", 1001 + i, L, b"z")
        peer.expect("A", ack=1002 + i)
    peer.send("PA", 1017, L, b"y")
    peer.expect("A", ack=1018, at=0.04)
    peer.send("PA", 1017, L, b"y")  # again
    peer.expect("A", ack=1018, at=0.04)
    peer.send("PA", 1018, L, b"x")
    peer.expect("A", ack=1019, at=0.04)
    assert counters(peer.stack)["TcpExtDelayedACKLost"] == 1
    assert conn.recv(100) == b"z" * 16 + b"yx"


def test_fin_after_data_is_acked_after_ato(peer: Peer, conn: socket.socket) -> None:
    """Linux tcp_fin: the peer's FIN makes the connection interactive, so
    its ACK waits ato (40 ms once data arrived), unless our reply (here our
    own FIN) carries it first."""
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"data")
    peer.expect("A", ack=1005, at=0)
    peer.send("FA", 1005, L)
    peer.expect("A", ack=1006, at=0.04)
    assert conn.recv(100) == b"data"
    assert conn.recv(100) == b""


def test_delayed_ack_piggybacks_on_data(peer: Peer, conn: socket.socket) -> None:
    """A pending ACK rides on the data the application sends within 40 ms."""
    L = peer.lss + 1
    for i in range(16):  # use up the quick ACKs
        peer.send("PA", 1001 + i, L, b"z")
        peer.expect("A", ack=1002 + i)
    peer.send("PA", 1017, L, b"request")
    peer.advance(0.01)
    conn.send(b"reply")
    peer.expect("PA", seq=L, ack=1024, data=b"reply", at=0.01)
    peer.send("A", 1024, L + 5)
    peer.expect_nothing(within=1)  # no separate ACK followed


def test_out_of_order_data_is_acked_at_once(peer: Peer, conn: socket.socket) -> None:
    """RFC 5681 4.2: out-of-order data, and data filling a hole, get an
    immediate ACK even outside quick-ACK mode."""
    L = peer.lss + 1
    for i in range(16):
        peer.send("PA", 1001 + i, L, b"z")
        peer.expect("A", ack=1002 + i)
    peer.send("PA", 1100, L, b"later")
    peer.expect("A", ack=1017, at=0)
    peer.send("PA", 1017, L, b"x" * 83)
    peer.expect("A", ack=1105, at=0)


# -- Nagle ----------------------------------------------------------------------------------


def test_nagle_holds_a_small_segment_while_one_is_unacked(peer: Peer,
                                                         conn: socket.socket) -> None:
    """RFC 896 / RFC 1122 4.2.3.4: a small segment goes at once when nothing
    small is outstanding; later small writes wait and are coalesced until the
    ACK comes; full segments are never held."""
    L = peer.lss + 1
    conn.send(b"a" * 10)
    peer.expect("PA", seq=L, data=b"a" * 10, at=0)
    conn.send(b"b" * 10)
    conn.send(b"c" * 10)
    peer.expect_nothing(within=0.1)
    peer.send("A", 1001, L + 10)
    peer.expect("PA", seq=L + 10, data=b"b" * 10 + b"c" * 10, at=0.1)
    conn.send(b"d" * (2 * SEG + 80))  # full segments go; the 80-byte tail waits
    peer.expect("A", seq=L + 30, length=SEG, at=0.1)
    peer.expect("A", seq=L + 30 + SEG, length=SEG, at=0.1)
    peer.expect_nothing(within=0.1)
    peer.send("A", 1001, L + 30)
    peer.expect("PA", seq=L + 30 + 2 * SEG, length=80, at=0.2)


def test_nodelay_sends_at_once_and_flushes(peer: Peer, conn: socket.socket) -> None:
    """TCP_NODELAY: small segments go even with one unacknowledged; setting it
    sends what Nagle was holding."""
    L = peer.lss + 1
    conn.send(b"a")
    peer.expect("PA", seq=L, data=b"a")
    conn.send(b"b")
    peer.expect_nothing()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer.expect("PA", seq=L + 1, data=b"b", at=0)
    conn.send(b"c")
    peer.expect("PA", seq=L + 2, data=b"c", at=0)


def test_nagle_uses_the_mss_after_options(peer: Peer, listener: socket.socket) -> None:
    """DESIGN.md pitfall: with timestamps a full segment is 1448 bytes, and
    such segments are not held back by Nagle."""
    from .conftest import linux_syn

    conn = peer.open_to(listener, opts=linux_syn())
    L = peer.lss + 1
    conn.send(b"a")
    peer.expect("PA", seq=L, length=1)
    conn.send(b"b" * 1448 * 2)
    peer.expect("A", seq=L + 1, length=1448, at=0)
    peer.expect("PA", seq=L + 1449, length=1448, at=0)
