"""asyncio on loopstack, in virtual time.

``loopstack.aio.run(main())`` runs a coroutine on an event loop whose clock is
the stack's virtual clock, with :func:`loopstack.patch` active. Time moves
only when nothing is ready: no callback to run and no socket readable — then
it jumps to the next timer, whether asyncio's (a ``sleep``, a timeout) or the
stack's (a netem delay, a TCP retransmission). A test with 200 ms delays and
a 60 s timeout runs in milliseconds, and the same seed repeats it exactly.

Time is integer nanoseconds inside (``Stack.clock``); ``loop.time()`` gives
the float seconds asyncio's API wants, and every jump lands at or after the
deadline asked for, never just short of it.
"""

from __future__ import annotations

import asyncio
import selectors
import socket as _socket
from collections.abc import Coroutine
from typing import Any, TypeVar

from .clock import VirtualClock
from .patch import patch
from .stack import Stack

T = TypeVar("T")


class VirtualTimeSelector(selectors.BaseSelector):
    """A real selector (it watches the sockets' descriptors) that, instead
    of sleeping, moves the stack's virtual clock."""

    def __init__(self, stack: Stack) -> None:
        if not isinstance(stack.clock, VirtualClock):
            raise ValueError("virtual-time asyncio needs Stack(clock='virtual')")
        self._clock: VirtualClock = stack.clock
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or timeout == 0:
            return events
        clock = self._clock
        now = clock.now_ns()
        limit = None if timeout is None else now + _ceil_ns(timeout)
        nxt = clock.next_deadline()
        if nxt is not None and (limit is None or nxt <= limit):
            clock.advance(max(0, nxt - now))
        elif limit is not None:
            clock.advance(limit - now)
        else:
            # Nothing is scheduled anywhere: only another thread or a real
            # descriptor can wake us, so wait for them in real time.
            return self._real.select(None)
        return self._real.select(0)


def _ceil_ns(seconds: float) -> int:
    ns = int(seconds * 1_000_000_000)
    return ns + 1 if ns / 1_000_000_000 < seconds else ns


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop on a stack's virtual clock."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(selector=VirtualTimeSelector(stack))
        self.stack = stack
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.stack.clock.now_ns() / 1_000_000_000

    # Name lookups go to the stack's table at once: no executor thread, whose
    # completion would race with virtual time.
    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> Any:
        return _socket.getaddrinfo(host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> Any:
        return _socket.getnameinfo(sockaddr, flags)


def run(main: Coroutine[Any, Any, T], *, stack: Stack | None = None, seed: int | None = None,
        debug: bool | None = None) -> T:
    """Run ``main`` on a virtual-time loop over ``stack`` (a fresh
    ``Stack(clock="virtual", seed=seed)`` when None) with the standard
    library patched to it."""
    own = stack is None
    st = Stack(clock="virtual", seed=seed) if stack is None else stack
    try:
        with patch(st), asyncio.Runner(debug=debug,
                                       loop_factory=lambda: VirtualTimeEventLoop(st)) as runner:
            return runner.run(main)
    finally:
        if own:
            st.close()


__all__ = ["run", "VirtualTimeEventLoop", "VirtualTimeSelector"]
