"""Packet scripts: opening a connection. Options and their layout (Linux:
MSS, SACK-permitted + timestamps, NOP + window scale), MSS and SYN window,
RST for a closed port (RFC 9293 3.10.7.1), SYN and SYN-ACK retransmission
(Linux's schedule), simultaneous open (RFC 9293 3.5), SYN cookies (RFC 4987)."""

from __future__ import annotations

import errno
import socket

from scapy.layers.inet import IP, TCP

import loopstack

from .conftest import LOCAL, LPORT, MSS_ONLY, MSS_SACK, PEER, PPORT, Peer, counters, linux_syn

# -- options ---------------------------------------------------------------------------


def test_synack_options_mirror_a_linux_syn(peer: Peer, listener: object) -> None:
    """RFC 7323 / RFC 2018: every option the SYN offered comes back, in Linux's
    layout (MSS, SACKOK+TS, NOP+WS), TSecr echoing the SYN's TSval. MSS = MTU - 40;
    the SYN-ACK window is 65535 rounded down to whole segments of MSS less the
    timestamp option (Linux tcp_openreq_init_rwin): 45 * 1448 = 65160."""
    peer.send("S", 1000, opts=linux_syn(tsval=777))
    sa = peer.expect("SA", ack=1001, win=65160, at=0)
    assert sa.names == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    assert sa.opt("MSS") == 1460 and sa.opt("WScale") == 7
    assert sa.opt("Timestamp")[1] == 777
    assert sa.raw[40 : 40 + 20].hex() == (
        "020405b4" "0402080a" + sa.raw[48:56].hex() + "01030307")


def test_synack_options_follow_what_the_syn_offered(net: tuple, listener: object) -> None:
    """No options: MSS only (RFC 9293 3.7.1); SACK only: NOP NOP SACKOK;
    timestamps only: NOP NOP TS; window scale only: NOP WS. Without
    timestamps the window is rounded to 1460-byte segments (44 * 1460)."""
    stack, eth = net
    cases = [
        ([], ["MSS"], 64240),
        (MSS_SACK, ["MSS", "NOP", "NOP", "SAckOK"], 64240),
        ([("MSS", 1460), ("NOP", None), ("NOP", None), ("Timestamp", (5, 0))],
         ["MSS", "NOP", "NOP", "Timestamp"], 65160),
        ([("MSS", 1460), ("NOP", None), ("WScale", 2)], ["MSS", "NOP", "WScale"], 64240),
    ]
    for i, (opts, names, win) in enumerate(cases):
        p = Peer(stack, eth, port=PPORT + i)
        p.send("S", 1000, opts=opts)
        sa = p.expect("SA", ack=1001, win=win)
        assert sa.names == names, opts


def test_syn_options_and_window_of_an_active_open(peer: Peer, net: tuple) -> None:
    """Our SYN: MSS 1460 (MTU 1500 - 40), SACKOK, TS (TSecr 0), NOP, WS 7
    (enough for tcp_rmem[2] = 6 MiB); window 64240 = 44 * 1460 (SYN windows are
    never scaled, RFC 7323 2.2)."""
    stack, _ = net
    c = stack.socket()
    c.setblocking(False)
    assert c.connect_ex((PEER, PPORT)) == errno.EINPROGRESS
    syn = peer.expect("S", ack=0, win=64240, at=0)
    assert syn.names == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    assert syn.opt("MSS") == 1460 and syn.opt("WScale") == 7
    assert syn.opt("Timestamp")[1] == 0


def test_mss_follows_the_mtu() -> None:
    """Linux ipv4_default_advmss: MTU - 40 (9000 -> 8960)."""
    stack = loopstack.Stack(clock="virtual", seed=1)
    eth = stack.add_interface("eth0", f"{LOCAL}/24", mtu=9000)
    p = Peer(stack, eth)
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex((PEER, PPORT))
    syn = p.expect("S", win=62720)  # 65535 rounded down to 7 * 8960
    assert syn.opt("MSS") == 8960
    stack.close()


def test_loopback_handshake_options() -> None:
    """On lo: MSS 65495 (65535 - 40), SYN window 65495, SYN-ACK window 65483
    (65495 less the 12 timestamp bytes), as tcpdump shows on Linux."""
    stack = loopstack.Stack(clock="virtual", seed=1)
    seen: list[bytes] = []
    stack.lo.tap(lambda pkt, direction: seen.append(pkt))
    lst = stack.socket()
    lst.bind(("127.0.0.1", 5000))
    lst.listen(8)
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", 5000))
    syn, synack = IP(seen[0])[TCP], IP(seen[1])[TCP]
    assert (str(syn.flags), syn.window, dict(syn.options)["MSS"]) == ("S", 65495, 65495)
    assert (str(synack.flags), synack.window, dict(synack.options)["MSS"]) == (
        "SA", 65483, 65495)
    stack.close()


def test_peer_mss_limits_our_segments(peer: Peer, listener: object) -> None:
    """RFC 9293 3.7.1: we send no more than the peer's MSS; without the
    option, 536."""
    conn = peer.open_to(listener, opts=[("MSS", 1000)])
    conn.send(b"x" * 2500)
    peer.expect("A", seq=peer.lss + 1, length=1000)
    peer.expect("A", seq=peer.lss + 1001, length=1000)
    peer.expect("PA", seq=peer.lss + 2001, length=500)
    p2 = Peer(peer.stack, peer.eth, port=PPORT + 1)
    conn2 = p2.open_to(listener, opts=[])
    conn2.send(b"y" * 600)
    p2.expect("A", seq=p2.lss + 1, length=536)
    p2.expect("PA", seq=p2.lss + 537, length=64)


# -- RST for a closed port (RFC 9293 3.10.7.1) ----------------------------------------------


def test_rst_for_a_syn_to_a_closed_port(peer: Peer) -> None:
    """No ACK bit: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, window 0."""
    peer.send("S", 1000, opts=MSS_ONLY)
    peer.expect("RA", seq=0, ack=1001, win=0, at=0, opts=[])
    peer.send("FP", 5000, data=b"abc")  # no ACK bit: SYN/FIN and data all count
    peer.expect("RA", seq=0, ack=5004)
    peer.send("S", 0xFFFFFFFF)  # SEG.SEQ + 1 wraps
    peer.expect("RA", seq=0, ack=0)
    peer.expect_nothing(within=5)


def test_rst_for_an_ack_to_a_closed_port(peer: Peer) -> None:
    """ACK bit on: <SEQ=SEG.ACK><CTL=RST>, nothing acknowledged."""
    peer.send("PA", 1000, 424242, data=b"hello")
    peer.expect("R", seq=424242, ack=0, win=0)
    peer.send("SA", 1000, 99)
    peer.expect("R", seq=99, ack=0)


def test_no_rst_for_a_rst(peer: Peer) -> None:
    peer.send("R", 1000)
    peer.send("RA", 1000, 5)
    peer.expect_nothing(within=5)
    assert counters(peer.stack)["TcpOutRsts"] == 0


def test_rst_for_an_ack_to_a_listener(peer: Peer, listener: object) -> None:
    """RFC 9293 3.10.7.2: an ACK to a LISTEN socket (no cookie in it) gets
    <SEQ=SEG.ACK><CTL=RST>."""
    peer.send("A", 1000, 31337)
    peer.expect("R", seq=31337)
    # No recent SYN-queue overflow, so Linux does not even try it as a cookie
    # (tcp_synq_no_recent_overflow).
    assert counters(peer.stack)["TcpExtSyncookiesFailed"] == 0


def test_refused_connect(peer: Peer, net: tuple) -> None:
    """SYN-SENT: an RST acknowledging our SYN means ECONNREFUSED (RFC 9293
    3.10.7.3); one with a wrong ACK is ignored, but (Linux, observed) the SYN
    is resent soon: 8 ms later (TCP_TIMEOUT_MIN)."""
    stack, _ = net
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex((PEER, PPORT))
    syn = peer.expect("S")
    lport = IP(syn.raw)[TCP].sport
    peer.send("RA", 0, syn.seq + 5, dport=lport)  # unacceptable ACK: ignored
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    peer.expect("S", seq=syn.seq, at=0.008)
    peer.send("RA", 0, syn.seq + 1, dport=lport)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    peer.expect_nothing(within=10)


def test_synsent_bad_ack_gets_rst(peer: Peer, net: tuple) -> None:
    """RFC 9293 3.10.7.3: in SYN-SENT an unacceptable ACK (no RST) gets
    <SEQ=SEG.ACK><CTL=RST>, and the connection attempt goes on."""
    stack, _ = net
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex((PEER, PPORT))
    syn = peer.expect("S")
    lport = IP(syn.raw)[TCP].sport
    peer.send("SA", 7000, syn.seq + 100, dport=lport, opts=MSS_ONLY)
    peer.expect("R", seq=syn.seq + 100, at=0)
    peer.expect("S", seq=syn.seq, at=0.008)  # Linux: resent soon (TCP_TIMEOUT_MIN)
    peer.expect("S", seq=syn.seq, at=1.008)  # then on the usual schedule


# -- retransmission of SYN and SYN-ACK --------------------------------------------------------


def test_syn_retransmission_schedule_and_etimedout(peer: Peer, net: tuple) -> None:
    """Linux (tcp_syn_linear_timeouts = 4, tcp_syn_retries = 6 as a time
    budget of 127 s): SYNs at 0, 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s; at 131 s
    the attempt fails with ETIMEDOUT (the budget is tcp_model_timeout(6, 1 s))."""
    stack, _ = net
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex((PEER, PPORT))
    syn = peer.expect("S", at=0)
    for t in (1, 2, 3, 4, 5, 7, 11, 19, 35, 67):
        again = peer.expect("S", seq=syn.seq, at=t)
        assert again.opts[:2] == syn.opts[:2]  # the same options (TSval moves on)
    peer.expect_nothing(within=63.9)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    peer.advance(0.1)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ETIMEDOUT
    assert peer.now == 131
    peer.expect_nothing(within=300)
    c2 = counters(stack)
    assert c2["TcpAttemptFails"] == 1 and c2["TcpExtTCPAbortOnTimeout"] == 1


def test_synack_retransmission_schedule(peer: Peer, listener: object) -> None:
    """SYN-ACKs at 0, 1, 3, 7, 15, 31 s (tcp_synack_retries = 5, doubling);
    the embryo is dropped at 63 s and a late ACK gets an RST."""
    peer.send("S", 1000, opts=MSS_ONLY)
    sa = peer.expect("SA", at=0)
    for t in (1, 3, 7, 15, 31):
        peer.expect("SA", seq=sa.seq, ack=1001, at=t)
    peer.expect_nothing(within=100)
    peer.send("A", 1001, sa.seq + 1)
    peer.expect("R", seq=sa.seq + 1)


def test_retransmitted_syn_gets_the_synack_again(peer: Peer, listener: object) -> None:
    """A duplicate SYN in SYN-RECEIVED: the SYN-ACK is resent (Linux)."""
    peer.send("S", 1000, opts=MSS_ONLY)
    sa = peer.expect("SA", at=0)
    peer.advance(0.5)
    peer.send("S", 1000, opts=MSS_ONLY)
    peer.expect("SA", seq=sa.seq, ack=1001, at=0.5)


def test_bad_ack_in_syn_received_gets_rst(peer: Peer, listener: object) -> None:
    """RFC 9293 3.10.7.4 fifth check, SYN-RECEIVED: an unacceptable ACK gets
    <SEQ=SEG.ACK><CTL=RST>; the embryo stays and the right ACK completes it."""
    peer.send("S", 1000, opts=MSS_ONLY)
    sa = peer.expect("SA", ack=1001)
    peer.send("A", 1001, sa.seq + 7)
    peer.expect("R", seq=sa.seq + 7, at=0)
    peer.send("A", 1001, sa.seq + 1)
    conn, _ = listener.accept()  # type: ignore[attr-defined]
    assert conn.getpeername() == (PEER, PPORT)


def test_synsent_synack_completes_and_acks(peer: Peer, net: tuple) -> None:
    """RFC 9293 3.10.7.3: SYN-ACK in SYN-SENT -> ESTABLISHED, ACK at once."""
    stack, _ = net
    c = stack.socket()
    syn = peer.open_from(c, opts=linux_syn())
    assert syn.flags == "S"
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    # Linux __inet_stream_connect: the next connect() reports the success (0).
    assert c.connect_ex((PEER, PPORT)) == 0
    assert c.getpeername() == (PEER, PPORT)


# -- simultaneous open (RFC 9293 3.5 figure 8) -------------------------------------------------


def test_simultaneous_open(peer: Peer, net: tuple) -> None:
    """SYN crosses SYN: we answer SYN-ACK (our ISS, ack theirs), and their
    SYN-ACK completes the connection; its ACK field needs no extra answer
    beyond the ACK of their SYN."""
    stack, _ = net
    c = stack.socket()
    c.setblocking(False)
    c.connect_ex((PEER, PPORT))
    syn = peer.expect("S", at=0)
    lport = IP(syn.raw)[TCP].sport
    peer.send("S", 5000, dport=lport, opts=MSS_ONLY)
    sa = peer.expect("SA", seq=syn.seq, ack=5001, at=0)
    assert sa.names == ["MSS"]  # only what the peer's SYN offered
    peer.send("SA", 5000, syn.seq + 1, dport=lport, opts=MSS_ONLY)
    peer.expect("A", seq=syn.seq + 1, ack=5001, at=0)
    assert c.connect_ex((PEER, PPORT)) == 0
    assert c.getpeername() == (PEER, PPORT)
    c.send(b"hi")
    peer.expect("PA", seq=syn.seq + 1, ack=5001, data=b"hi")


# -- SYN cookies (RFC 4987 3.6, Linux tcp_syncookies = 1) -----------------------------------------


def test_syn_cookie_when_the_syn_queue_is_full(net: tuple) -> None:
    """Backlog 1: the first SYN takes the SYN queue; the second gets a
    cookie SYN-ACK (SyncookiesSent) and no state; its ACK rebuilds the
    connection (SyncookiesRecv) and accept() returns it, data included."""
    stack, eth = net
    lst = stack.socket()
    lst.bind((LOCAL, LPORT))
    lst.listen(1)
    lst.setblocking(False)
    a = Peer(stack, eth, port=PPORT)
    a.send("S", 1000, opts=MSS_ONLY)
    a.expect("SA", ack=1001)
    b = Peer(stack, eth, port=PPORT + 1)
    b.send("S", 9000, opts=linux_syn(tsval=42))
    cookie = b.expect("SA", ack=9001)
    assert counters(stack)["TcpExtSyncookiesSent"] == 1
    assert cookie.opt("MSS") == 1460  # the cookie's MSS table holds 1460
    assert cookie.opt("WScale") == 7 and cookie.opt("SAckOK") == b""
    b.ts_recent = cookie.tsval
    b.expect_nothing(within=3)  # no state: a cookie SYN-ACK is never resent
    b.send("PA", 9001, cookie.seq + 1, b"cookie data", win=1000,
           opts=[("NOP", None), ("NOP", None), ("Timestamp", (43, cookie.tsval))])
    assert counters(stack)["TcpExtSyncookiesRecv"] == 1
    b.expect("A", seq=cookie.seq + 1, ack=9012)  # the data is acknowledged at once
    conn, addr = lst.accept()
    assert addr == (PEER, PPORT + 1)
    assert conn.recv(100) == b"cookie data"
    conn.setblocking(False)
    conn.send(b"x" * 3000)
    # The options came back from the TSecr bits: window scale 7 on both sides.
    one = b.expect("A", seq=cookie.seq + 1, ack=9012, length=1448)
    assert one.opt("Timestamp")[1] == 43  # timestamps negotiated
    # The peer's window 1000 << 7 allows it all (1448 + 1448 + 104).
    b.expect("A", seq=cookie.seq + 1 + 1448, length=1448)
    b.expect("PA", seq=cookie.seq + 1 + 2896, length=104)


def test_syn_cookie_ack_forged_gets_rst(net: tuple) -> None:
    stack, eth = net
    lst = stack.socket()
    lst.bind((LOCAL, LPORT))
    lst.listen(1)
    a = Peer(stack, eth, port=PPORT)
    a.send("S", 1000, opts=MSS_ONLY)
    a.expect("SA")
    b = Peer(stack, eth, port=PPORT + 1)
    b.send("S", 9000, opts=MSS_ONLY)
    cookie = b.expect("SA", ack=9001)
    b.send("A", 9001, cookie.seq + 2)
    b.expect("R", seq=cookie.seq + 2)
    assert counters(stack)["TcpExtSyncookiesFailed"] == 1


__all__ = ["LPORT"]
