"""The pipe NIC: an interface whose far end is the caller.

``inject`` hands the stack a packet as if it arrived on the wire; ``read``
returns the next packet the stack transmitted. Tests use it to play the
peer (the packetdrill style); tools can bridge it to anything.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .interface import Interface


class PipeInterface(Interface):
    kind = "pipe"

    def __init__(self, name: str, mtu: int = 1500) -> None:
        if not 68 <= mtu <= 65536:
            raise ValueError(f"MTU {mtu} out of range: use 68 to 65536")
        super().__init__(name, mtu)
        self._outq: deque[bytes] = deque()
        self._outq_cond = threading.Condition()

    def _xmit(self, packet: bytes) -> None:
        self._tap_out(packet)
        with self._outq_cond:
            self._outq.append(packet)
            self._outq_cond.notify()

    def inject(self, packet: bytes) -> None:
        """Deliver ``packet`` (an IP packet) to the stack as received here."""
        if self._lock is None:
            raise RuntimeError(f"interface {self.name} is not attached to a stack")
        data = bytes(packet)
        with self._lock:
            if not self.up:
                self.stats.rx_dropped += 1
                return
            self._receive(data, "in")

    def pending(self) -> int:
        """How many transmitted packets wait to be read."""
        return len(self._outq)

    def read(self, timeout: float | None = 0.0) -> bytes | None:
        """The next IP packet the stack sent on this interface, or None.

        ``timeout`` 0 does not wait; None waits for ever. With a virtual
        clock the wait is virtual: timers up to the timeout fire (so a
        retransmission due in 1 s arrives at once, and the clock shows 1 s).
        """
        clock = self._clock
        if clock is not None and clock.is_virtual:
            return self._read_virtual(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._outq_cond:
            while not self._outq:
                if deadline is None:
                    self._outq_cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._outq_cond.wait(left)
            return self._outq.popleft()

    def _read_virtual(self, timeout: float | None) -> bytes | None:
        from ..clock import VirtualClock

        clock = self._clock
        assert isinstance(clock, VirtualClock)
        limit = None if timeout is None else clock.now_ns() + int(timeout * 1e9)
        while not self._outq:
            nxt = clock.next_deadline()
            if nxt is None or (limit is not None and nxt > limit):
                if limit is not None and limit > clock.now_ns():
                    clock.advance(limit - clock.now_ns())
                break
            clock.advance(max(0, nxt - clock.now_ns()))
        with self._outq_cond:
            return self._outq.popleft() if self._outq else None
