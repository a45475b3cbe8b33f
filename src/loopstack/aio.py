"""asyncio on loopstack, in virtual time.

``loopstack.aio.run(main())`` runs a coroutine on an event loop whose clock is
the stack's virtual clock, with :func:`loopstack.patch` active. Time moves
only when nothing is ready: no callback to run and no socket readable — then
it jumps to the next timer, whether asyncio's (a ``sleep``, a timeout) or the
stack's (a netem delay, a TCP retransmission). A test with 200 ms delays and
a 60 s timeout runs in milliseconds, and the same seed repeats it exactly.

Work handed to threads (``run_in_executor``, ``asyncio.to_thread``) takes
real time that the virtual clock cannot see: while such work is pending the
loop waits for it in real time before jumping, so a thread reading a file
does not see its caller's 60 s timeout expire at once.

Other threads on the same stack (a ThreadingHTTPServer the test started,
threads blocked in socket calls) follow the rule of ``Stack.wait_for``:
while it runs, the loop is the one that moves the stack's time, and it
jumps only when every other thread is blocked; a thread blocked in a socket
call with a timeout has its deadline respected and is woken at it.

Time is integer nanoseconds inside (``Stack.clock``); ``loop.time()`` gives
the float seconds asyncio's API wants, and every jump lands at or after the
deadline asked for, never just short of it.
"""

from __future__ import annotations

import asyncio
import selectors
import socket as _socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from functools import partial
from typing import Any, TypeVar, TypeVarTuple

from .clock import VirtualClock
from .patch import patch
from .selector import _REAL_POLL_NS, StackSelector
from .stack import _MOVED, _NOTHING, Stack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class VirtualTimeSelector(StackSelector):
    """The in-process selector of selector.py (loopstack sockets' readiness
    learned in-process, real descriptors by epoll) that, instead of
    sleeping, moves the stack's virtual clock."""

    def __init__(self, stack: Stack, busy: Callable[[], bool] = lambda: False) -> None:
        if not isinstance(stack.clock, VirtualClock):
            raise ValueError("virtual-time asyncio needs Stack(clock='virtual')")
        super().__init__()
        self._stack = stack
        self._clock: VirtualClock = stack.clock
        self._busy = busy  # True while threads work for the loop
        self.wake: Callable[[], None] = lambda: None  # the loop's, from any thread

    def close(self) -> None:
        self._stack._loop_done()
        super().close()

    def _look(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        """StackSelector's select with the real descriptors always looked at."""
        ready = self._ready_now() if self._candidates else []
        return StackSelector._select_real(self, ready, 0 if ready else timeout,
                                          time.monotonic_ns())

    # StackSelector.select's look at loopstack sockets comes first; this is
    # its second part: a loop with nothing ready that would wait (timeout
    # other than 0) moves virtual time instead.
    def _select_real(self, ready: list[tuple[selectors.SelectorKey, int]],
                     timeout: float | None, now_real: int
                     ) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0:
            return StackSelector._select_real(self, ready, 0, now_real)
        if not self._mine or now_real - self._last_real_poll >= _REAL_POLL_NS:
            events = StackSelector._select_real(self, ready, 0, now_real)
            if events:
                return events
        clock = self._clock
        now = clock.now_ns()
        limit = None if timeout is None else now + _ceil_ns(timeout)
        nxt = clock.next_deadline()
        if self._busy():
            # Threads are working for the loop: give them real time, up to
            # the jump we would make, before making it.
            target = nxt if nxt is not None and (limit is None or nxt <= limit) else limit
            events = self._look(None if target is None else (target - now) / 1e9)
            if events:
                return events
        stack = self._stack
        while True:
            step = stack._drive_loop(limit, self.wake)
            if step == _MOVED:
                return self._look(0)
            if step == _NOTHING:
                # Nothing is scheduled anywhere: only another thread or a real
                # descriptor can wake us (a timer armed meanwhile does).
                try:
                    return self._look(None)
                finally:
                    stack._loop_woke(self.wake)
            # Other threads of the program are running: give them real time.
            quiet = stack._quiet()
            events = self._look(quiet.window)
            if events:
                return events
            quiet.waited()


def _nothing() -> None:
    pass


def _ceil_ns(seconds: float) -> int:
    ns = int(seconds * 1_000_000_000)
    return ns + 1 if ns / 1_000_000_000 < seconds else ns


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop on a stack's virtual clock."""

    def __init__(self, stack: Stack) -> None:
        self._threads = 0  # executor jobs not finished yet
        selector = VirtualTimeSelector(stack, lambda: self._threads > 0)
        super().__init__(selector=selector)
        def wake() -> None:  # from any thread: select() returns
            self.call_soon_threadsafe(_nothing)

        selector.wake = wake
        self.stack = stack
        self._clock_resolution = 1e-9
        # time() below, with no Python frame (the loop asks once per iteration).
        self.time = stack.clock.now_seconds  # type: ignore[attr-defined, method-assign]
        # get_debug() likewise: every Future and Handle made asks it.
        self.get_debug = partial(getattr, self, "_debug")  # type: ignore[method-assign]

    def _run_once(self) -> None:
        """One turn of the loop. A turn with no timer scheduled and debug
        off — a busy loop's usual turn — is: look for I/O (without waiting
        when callbacks are ready or the loop is stopping), queue what the
        ready sockets call, then run the callbacks that were queued before
        this turn's own ones, skipping cancelled ones. Every other turn
        (timers to expire or to purge, debug's slow-callback warnings) is
        asyncio's own, and so is the rest of a turn in which a callback
        turns debug on (_RestOfTurn)."""
        if self._scheduled or self._debug:  # type: ignore[attr-defined]
            super()._run_once()  # type: ignore[misc]
            return
        ready: deque[asyncio.Handle] = self._ready  # type: ignore[attr-defined]
        events = self._selector.select(  # type: ignore[attr-defined]
            0 if ready or self._stopping else None)  # type: ignore[attr-defined]
        if events:
            self._process_events(events)  # type: ignore[attr-defined]
        # (No timer can have been scheduled meanwhile: selecting and queueing
        # run no callback.)
        events = None
        for left in range(len(ready), 0, -1):
            if self._debug:  # type: ignore[attr-defined]
                _RestOfTurn(self, deque(ready.popleft() for _ in range(left))).run()
                return
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()

    def run_in_executor(self, executor: Executor | None, func: Callable[[*Ts], T],
                        *args: *Ts) -> asyncio.Future[T]:
        fut = super().run_in_executor(executor, func, *args)
        self._threads += 1

        def done(_: asyncio.Future[T]) -> None:
            self._threads -= 1

        fut.add_done_callback(done)
        return fut

    def time(self) -> float:
        return self.stack.clock.now_ns() / 1_000_000_000

    # Name lookups go to the stack's table at once: no executor thread, whose
    # completion would race with virtual time.
    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> Any:
        return _socket.getaddrinfo(host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> Any:
        return _socket.getnameinfo(sockaddr, flags)


class _NoIO:
    """The selector of a _RestOfTurn: nothing to report, nothing waited for."""

    @staticmethod
    def select(timeout: float | None = None) -> list[Any]:
        return []


class _RestOfTurn:
    """The callbacks left in a turn of VirtualTimeEventLoop's own in which a
    callback turned debug on: asyncio would run them the debug way (each
    timed against ``slow_callback_duration``, the loop's current handle set
    for the exception handler). asyncio's own turn, run on this stand-in for
    the loop, runs exactly these callbacks that way and does nothing else
    (its selector has nothing, it has no timers); callbacks they schedule go
    to the loop itself. Debug, the current handle, the time and the
    slow-callback threshold are the loop's."""

    def __init__(self, loop: VirtualTimeEventLoop, handles: deque[asyncio.Handle]) -> None:
        self._loop = loop
        self._ready = handles
        self._scheduled: list[asyncio.TimerHandle] = []
        self._timer_cancelled_count = 0
        self._stopping = False
        self._selector = _NoIO()
        self._clock_resolution = loop._clock_resolution
        self.time = loop.time

    def run(self) -> None:
        try:
            asyncio.BaseEventLoop._run_once(self)  # type: ignore[attr-defined]
        finally:
            if self._ready:  # (SystemExit or KeyboardInterrupt: the rest wait in the loop's queue)
                self._loop._ready.extendleft(reversed(self._ready))  # type: ignore[attr-defined]

    def _process_events(self, events: list[Any]) -> None:
        pass

    @property
    def _debug(self) -> bool:
        return bool(self._loop._debug)  # type: ignore[attr-defined]

    @property
    def slow_callback_duration(self) -> float:
        return self._loop.slow_callback_duration

    @property
    def _current_handle(self) -> Any:
        return self._loop._current_handle  # type: ignore[attr-defined]

    @_current_handle.setter
    def _current_handle(self, handle: Any) -> None:
        self._loop._current_handle = handle  # type: ignore[attr-defined]


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
