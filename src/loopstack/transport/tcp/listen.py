"""Listening sockets (RFC 9293 3.10.7.2): the SYN queue of embryonic
connections, the accept queue of established ones, the backlog capped at
somaxconn, and SYN cookies when the SYN queue overflows (RFC 4987, Linux
tcp_syncookies = 1)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .constants import State

if TYPE_CHECKING:
    from .tcb import TCB


class Listener:
    def __init__(self, tcb: TCB, backlog: int) -> None:
        self.tcb = tcb
        self.backlog = backlog
        # (remote addr, remote port, local addr) -> SYN-RECEIVED child
        self.syn_queue: dict[tuple[bytes, int, bytes], TCB] = {}
        self.accept_queue: deque[TCB] = deque()
        self.last_overflow_ns: int | None = None  # when the SYN queue last overflowed

    @property
    def syn_queue_full(self) -> bool:
        return len(self.syn_queue) >= max(self.backlog, 1)

    @property
    def accept_queue_full(self) -> bool:
        """Linux sk_acceptq_is_full(): more than the backlog waiting."""
        return len(self.accept_queue) > self.backlog

    def pop(self) -> TCB | None:
        while self.accept_queue:
            child = self.accept_queue.popleft()
            child.listener = None
            if child.state != State.CLOSED or child.rcvq or child.so_error:
                return child
        return None
