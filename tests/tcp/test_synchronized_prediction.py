"""input.py ``_synchronized``'s shortcut: an ACK (with a FIN, data or
neither) exactly at RCV.NXT, without SYN or RST, whose TSval is not behind
TS.Recent and whose text falls into an open window goes straight to the
fifth check, the checks before it (PAWS, sequence acceptability, RST, SYN)
skipped as they would let it through. Each script here is played twice on
a virtual clock, with ``fastpath.enabled`` off and on: the stack's answers
(every byte, when), its counters and every slot of its control blocks must
be the same; the segments that must not take the shortcut (a FIN into a
zero window, a TSval behind TS.Recent, an old duplicate FIN, an RST, a SYN)
are answered as RFC 9293 3.10.7.4 and RFC 7323 say. The shortcut's own
line must run for those that take it (the handshake's last ACK, with and
without data, and the close's FINs and ACKs)."""

from __future__ import annotations

import inspect
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import loopstack
from loopstack.transport.tcp import State
from loopstack.transport.tcp import input as tcp_input

from .conftest import LOCAL, LPORT, MSS_ONLY, Peer, Seg, counters, linux_syn, off_and_on
from .test_fast_path_equivalence import _tcb

Script = Callable[[Peer, Any], list[Any]]


def _shortcut_line() -> int:
    """The line of ``_synchronized`` that only the shortcut runs."""
    lines, first = inspect.getsourcelines(tcp_input._synchronized)
    hits = [first + i for i, text in enumerate(lines) if text.strip() == "seq = rcv_nxt"]
    assert len(hits) == 1
    return hits[0]


def _play(script: Script, rcvbuf: int | None) -> tuple[list[Any], dict[str, int],
                                                        list[dict[str, Any]], int]:
    stack = loopstack.Stack(clock="virtual", seed=7)
    eth = stack.add_interface("eth0", f"{LOCAL}/24", mtu=1500)
    shortcut = _shortcut_line()
    code = tcp_input._synchronized.__code__
    taken = [0]

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        if event == "line" and frame.f_lineno == shortcut:
            taken[0] += 1
        return tracer

    try:
        lst = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        lst.bind((LOCAL, LPORT))
        lst.listen(8)
        lst.setblocking(False)
        sys.settrace(tracer)
        try:
            seen = script(Peer(stack, eth), lst)
        finally:
            sys.settrace(None)
        blocks = [_tcb(t) for t in stack.tcp.conns.values()]
        return seen, counters(stack), blocks, taken[0]
    finally:
        stack.close()


def _both(script: Script, rcvbuf: int | None = None) -> int:
    """Plays ``script`` with the fast paths off and on; the same outcome.
    Returns how often the shortcut was taken (fast paths on)."""
    general, fast = off_and_on(lambda: _play(script, rcvbuf))
    assert general[3] == 0
    assert fast[:3] == general[:3]
    return fast[3]


def _seen(seg: Seg) -> tuple[Any, ...]:
    return (seg.flags, seg.seq, seg.ack, seg.win, seg.data, seg.at_ns, seg.raw)


def test_handshake_and_close_take_it() -> None:
    """The last ACK of the handshake, the peer's FIN (CLOSE-WAIT), our FIN
    and its ACK (LAST-ACK -> CLOSED): three shortcuts."""
    def script(peer: Peer, lst: Any) -> list[Any]:
        conn = peer.open_to(lst, opts=linux_syn())
        L = peer.lss + 1
        peer.send("FA", 1001, L)
        out = [_seen(peer.expect("A", seq=L, ack=1002))]
        assert conn._tcb.state == State.CLOSE_WAIT
        conn.close()
        out.append(_seen(peer.expect("FA", seq=L, ack=1002)))
        peer.send("A", 1002, L + 1)
        out.append(conn._tcb.state)
        return out

    assert _both(script) == 3


def test_handshake_ack_with_data() -> None:
    """SYN-RECEIVED: the last ACK carries data (in the window): it
    establishes the connection and the data is queued."""
    def script(peer: Peer, lst: Any) -> list[Any]:
        peer.send("S", 1000, opts=MSS_ONLY)
        sa = peer.expect("SA", ack=1001, within=0)
        peer.lss = sa.seq
        peer.send("PA", 1001, sa.seq + 1, b"hello")
        conn, _ = lst.accept()
        conn.setblocking(False)
        out: list[Any] = [_seen(sa), conn.recv(10)]
        out.append(_seen(peer.expect("A", ack=1006)))
        return out

    assert _both(script) == 1


def test_fin_wait2_fin_to_time_wait() -> None:
    """Our FIN, its ACK (FIN-WAIT-2), the peer's FIN (TIME-WAIT): the ACK
    and the FIN take the shortcut; a retransmitted FIN (below RCV.NXT) does
    not, and is answered with an ACK."""
    def script(peer: Peer, lst: Any) -> list[Any]:
        conn = peer.open_to(lst, opts=linux_syn())
        L = peer.lss + 1
        conn.shutdown(socket.SHUT_WR)
        out = [_seen(peer.expect("FA", seq=L, ack=1001))]
        peer.send("A", 1001, L + 1)
        out.append(conn._tcb.state)
        peer.send("FA", 1001, L + 1)
        out.append(_seen(peer.expect("A", seq=L + 1, ack=1002)))
        out.append(conn._tcb.state)
        peer.advance(1.0)
        peer.send("FA", 1001, L + 1)  # retransmitted: TIME-WAIT answers it
        out.append(_seen(peer.expect("A", seq=L + 1, ack=1002)))
        return out

    assert _both(script) == 3  # (the handshake's last ACK, our FIN's ACK, their FIN)


def test_fin_into_a_zero_window() -> None:
    """A FIN at RCV.NXT once the receive window is zero is not acceptable
    (RFC 9293 3.10.7.4: a segment with text and RCV.WND = 0): it is
    answered with an ACK of zero window, its ACK field taken, the FIN left
    for later; read, the window opens and the FIN, sent again, closes."""
    def script(peer: Peer, lst: Any) -> list[Any]:
        conn = peer.open_to(lst, opts=MSS_ONLY)
        L = peer.lss + 1
        seq = 1001
        out: list[Any] = []
        while True:
            room = conn._tcb.rcv_wup + conn._tcb.rcv_wnd - conn._tcb.rcv_nxt
            if room <= 0:
                break
            n = min(room, 500)
            peer.send("PA", seq, L, b"x" * n)
            seq += n
            out.append(_seen(peer.expect("A", seq=L, ack=seq)))
        assert out[-1][3] == 0  # the window is closed
        peer.send("FA", seq, L)
        out.append(_seen(peer.expect("A", seq=L, ack=seq, win=0)))
        out.append((conn._tcb.state, conn._tcb.fin_received))
        assert conn._tcb.state == State.ESTABLISHED and not conn._tcb.fin_received
        out.append(len(conn.recv(1 << 16)))
        out.append(_seen(peer.expect("A", seq=L, ack=seq)))  # the window update
        peer.send("FA", seq, L)
        out.append(_seen(peer.expect("A", seq=L, ack=seq + 1)))
        out.append(conn._tcb.state)
        assert conn._tcb.state == State.CLOSE_WAIT
        return out

    assert _both(script, rcvbuf=4096) >= 2


def test_tsval_behind_ts_recent() -> None:
    """With timestamps, a FIN whose TSval is behind TS.Recent fails PAWS
    (RFC 7323 5.3): dropped, answered with an ACK, PAWSEstab counted; so
    is a bare ACK so far behind (whatever the answer, the same both ways);
    then the FIN with a fresh TSval closes."""
    def script(peer: Peer, lst: Any) -> list[Any]:
        conn = peer.open_to(lst, opts=linux_syn())
        L = peer.lss + 1
        peer.advance(0.5)
        peer.send("PA", 1001, L, b"abc")  # TS.Recent moves to now
        out = [_seen(peer.expect("A", ack=1004))]
        old = (peer.tsval() - 100) & 0xFFFFFFFF
        peer.send("FA", 1004, L, tsval=old)
        out.append(_seen(peer.expect("A", ack=1004)))
        out.append((conn._tcb.state, counters(peer.stack)["TcpExtPAWSEstab"]))
        assert conn._tcb.state == State.ESTABLISHED
        peer.send("A", 1004, L, tsval=old)
        answer = peer._read(0.0)
        out.append((conn._tcb.state, None if answer is None else _seen(answer)))
        peer.send("FA", 1004, L)
        out.append(_seen(peer.expect("A", ack=1005)))
        assert conn._tcb.state == State.CLOSE_WAIT
        return out

    assert _both(script) >= 2


def test_rst_and_syn_do_not_take_it() -> None:
    """An RST at RCV.NXT resets; a SYN at RCV.NXT gets a challenge ACK
    (RFC 5961 4.2); neither takes the shortcut."""
    def script(peer: Peer, lst: Any) -> list[Any]:
        conn = peer.open_to(lst, opts=MSS_ONLY)
        L = peer.lss + 1
        peer.send("S", 1001, opts=MSS_ONLY)
        out: list[Any] = [_seen(peer.expect("A", seq=L, ack=1001))]
        peer.send("RA", 1001, L)
        out.append(conn._tcb.state)
        assert conn._tcb.state == State.CLOSED
        return out

    assert _both(script) == 1  # the handshake's last ACK only
