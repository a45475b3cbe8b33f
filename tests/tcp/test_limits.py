"""Per-stack bounds: TIME_WAIT buckets and orphaned connections (Linux
tcp_max_tw_buckets, tcp_max_orphans), so no peer can make a stack grow
without limit."""

from __future__ import annotations

import socket

import loopstack
from loopstack.transport.tcp import State


def _pair(stack: loopstack.Stack, lst: loopstack.socket.Socket
          ) -> tuple[loopstack.socket.Socket, loopstack.socket.Socket]:
    c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.connect(lst.getsockname())
    s, _ = lst.accept()
    return c, s


def _states(stack: loopstack.Stack) -> list[State]:
    return sorted(t.state for t in stack.tcp.conns.values())


def test_time_wait_buckets_are_bounded() -> None:
    with loopstack.Stack(clock="virtual", seed=1) as stack:
        stack.tcp.max_tw_buckets = 1
        lst = stack.create_server(("127.0.0.1", 0))
        for _ in range(3):
            c, s = _pair(stack, lst)
            c.close()  # the active closer would sit in TIME_WAIT
            s.close()
        assert stack.tcp.tw_count == 1
        assert _states(stack).count(State.TIME_WAIT) == 1
        assert stack.stats()["TcpExt"]["TCPTimeWaitOverflow"] == 2
        stack.advance(61)
        assert stack.tcp.tw_count == 0 and not stack.tcp.conns


def test_orphans_are_bounded() -> None:
    with loopstack.Stack(clock="virtual", seed=2) as stack:
        stack.tcp.max_orphans = 1
        lst = stack.create_server(("127.0.0.1", 0))
        peers = []
        for _ in range(3):
            c, s = _pair(stack, lst)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.setblocking(False)
            c.send(b"x" * 1000)  # data in flight keeps an orphan alive a while
            peers.append(s)
            stack.lo.netem("loss 100%")  # nothing gets through: orphans linger
            c.close()
            stack.lo.netem(None)
        assert stack.tcp.orphans == 1
        assert stack.stats()["TcpExt"]["TCPAbortOnMemory"] == 2
        for s in peers:
            s.close()
