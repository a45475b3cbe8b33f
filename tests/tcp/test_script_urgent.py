"""Packet scripts: urgent data (RFC 9293 3.8.5, RFC 6093) as Linux does it.
The sender's pointer points after the last urgent byte (tcp_mark_urg,
tcp_stdurg = 0) and rides on every segment that starts before it
(__tcp_transmit_skb); urgent mode lifts Nagle (tcp_nagle_test). The
receiver keeps the byte the pointer names apart for recv(MSG_OOB)
(tcp_check_urg, tcp_urg) and stops reads in front of it (tcp_recvmsg)."""

from __future__ import annotations

import socket

import pytest

from .conftest import MSS_ONLY, Peer


@pytest.fixture
def conn(peer: Peer, listener: socket.socket) -> socket.socket:
    return peer.open_to(listener, opts=MSS_ONLY)


def test_send_oob_marks_the_last_byte(peer: Peer, conn: socket.socket) -> None:
    """send(MSG_OOB): URG set, the pointer 3 = after the third byte, the
    urgent one (RFC 6093 3: as every stack does, against RFC 1122's "last
    byte"). Once acknowledged, urgent mode ends: no more URG."""
    L = peer.lss + 1
    assert conn.send(b"abc", socket.MSG_OOB) == 3
    peer.expect("PAU", seq=L, ack=1001, data=b"abc", urg=3, at=0)
    peer.send("A", 1001, L + 3)
    conn.send(b"plain")
    peer.expect("PA", seq=L + 3, data=b"plain", urg=0)


def test_every_segment_before_the_pointer_carries_it(peer: Peer, listener: socket.socket
                                                     ) -> None:
    """RFC 9293 3.8.5: the pointer is an offset from each segment's SEQ, so
    three segments of one urgent send say 1500, 1000 and 500."""
    conn = peer.open_to(listener, opts=[("MSS", 500)])
    L = peer.lss + 1
    conn.send(b"u" * 1500, socket.MSG_OOB)
    peer.expect("AU", seq=L, length=500, urg=1500, at=0)
    peer.expect("AU", seq=L + 500, length=500, urg=1000, at=0)
    peer.expect("PAU", seq=L + 1000, length=500, urg=500, at=0)


def test_urgent_mode_lifts_nagle(peer: Peer, conn: socket.socket) -> None:
    """Linux tcp_nagle_test: no Nagle in urgent mode. A small segment is
    unacknowledged, so "b" waits; the urgent "!" takes it along at once."""
    L = peer.lss + 1
    conn.send(b"a")
    peer.expect("PA", seq=L, data=b"a")
    conn.send(b"b")
    peer.expect_nothing()
    conn.send(b"!", socket.MSG_OOB)
    peer.expect("PAU", seq=L + 1, data=b"b!", urg=2, at=0)


def test_retransmission_keeps_the_pointer(peer: Peer, conn: socket.socket) -> None:
    L = peer.lss + 1
    conn.send(b"abc", socket.MSG_OOB)
    peer.expect("PAU", seq=L, urg=3, at=0)
    peer.expect("PAU", seq=L, data=b"abc", urg=3, at=0.200001)  # RTO: 200 ms + srtt


def test_pointer_rides_on_acks_and_probes_behind_a_closed_window(
        peer: Peer, listener: socket.socket) -> None:
    """Urgent data the window keeps back: pure ACKs still tell the peer
    (their SEQ is before the pointer); far away it says 0xFFFF; the
    zero-window probe comes twice, first at SND.UNA carrying the pointer
    (Linux tcp_write_wakeup), then at SND.UNA - 1."""
    conn = peer.open_to(listener, opts=MSS_ONLY, win=0)
    L = peer.lss + 1
    conn.send(b"x" * 10, socket.MSG_OOB)
    peer.send("PA", 1001, L, b"hi", win=0)
    peer.expect("AU", seq=L, ack=1003, urg=10)
    probe = peer.expect("AU", seq=L, urg=10)
    peer.expect("AU", seq=L - 1, urg=11, at=(probe.at_ns - peer.t0) / 1e9)
    conn.send(b"y" * 70000, socket.MSG_OOB)
    peer.send("PA", 1003, L, b"ho", win=0)
    peer.expect("AU", seq=L, ack=1005, urg=0xFFFF)


def test_receive_urgent_byte(peer: Peer, conn: socket.socket) -> None:
    """The byte before the pointer is out of band: reads stop in front of
    it, recv(MSG_OOB) takes it once, and the next read steps over it."""
    L = peer.lss + 1
    peer.send("PAU", 1001, L, b"abcde", urg=3)
    peer.expect("A", ack=1006)
    assert not conn.sockatmark()  # type: ignore[attr-defined]
    assert conn.recv(100) == b"ab"
    assert conn.sockatmark()  # type: ignore[attr-defined]
    assert conn.recv(1, socket.MSG_OOB) == b"c"
    with pytest.raises(OSError) as e:
        conn.recv(1, socket.MSG_OOB)
    assert e.value.errno == 22  # EINVAL: read already
    assert conn.recv(100) == b"de"
    assert not conn.sockatmark()  # type: ignore[attr-defined]


def test_urgent_zero_pointer_marks_the_first_byte(peer: Peer, conn: socket.socket) -> None:
    """URG with pointer 0 (Linux: no decrement): the segment's first byte."""
    L = peer.lss + 1
    peer.send("PAU", 1001, L, b"xyz", urg=0)
    peer.expect("A", ack=1004)
    assert conn.sockatmark()  # type: ignore[attr-defined]
    assert conn.recv(1, socket.MSG_OOB) == b"x"
    assert conn.recv(100) == b"yz"


def test_pointer_ahead_of_its_byte(peer: Peer, conn: socket.socket) -> None:
    """A pointer beyond the segment (Linux TCP_URG_NOTYET): recv(MSG_OOB)
    says EAGAIN (it never waits) until the segment holding the byte comes;
    the reads stop at it even though that segment has no URG."""
    L = peer.lss + 1
    peer.send("AU", 1001, L, b"abc", urg=5)  # the urgent byte is 1005, "e"
    peer.expect("A", ack=1004)
    with pytest.raises(BlockingIOError):
        conn.recv(1, socket.MSG_OOB)
    assert conn.recv(100) == b"abc"
    assert not conn.sockatmark()  # type: ignore[attr-defined]
    peer.send("PA", 1004, L, b"def")
    peer.expect("A", ack=1007)
    assert conn.recv(100) == b"d"
    assert conn.sockatmark()  # type: ignore[attr-defined]
    assert conn.recv(1, socket.MSG_OOB) == b"e"
    assert conn.recv(100) == b"f"


def test_pointer_into_data_already_received_is_ignored(peer: Peer, conn: socket.socket
                                                       ) -> None:
    """Linux tcp_check_urg: a pointer before RCV.NXT is not replayed (the
    byte is in the stream already)."""
    L = peer.lss + 1
    peer.send("PA", 1001, L, b"abc")
    peer.expect("A", ack=1004)
    peer.send("PAU", 1001, L, b"abcde", urg=2)  # overlaps; points at "b"
    peer.expect("A", ack=1006)
    with pytest.raises(OSError) as e:
        conn.recv(1, socket.MSG_OOB)
    assert e.value.errno == 22
    assert conn.recv(100) == b"abcde"


def test_oobinline_keeps_the_byte_in_the_stream(peer: Peer, conn: socket.socket) -> None:
    L = peer.lss + 1
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    peer.send("PAU", 1001, L, b"abcde", urg=3)
    peer.expect("A", ack=1006)
    assert conn.recv(100) == b"ab"  # still stops at the mark
    assert conn.sockatmark()  # type: ignore[attr-defined]
    with pytest.raises(OSError) as e:
        conn.recv(1, socket.MSG_OOB)
    assert e.value.errno == 22
    assert conn.recv(100) == b"cde"
    assert not conn.sockatmark()  # type: ignore[attr-defined]
