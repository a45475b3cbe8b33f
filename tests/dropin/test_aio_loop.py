"""loopstack.aio's virtual-time loop (its selector a StackSelector that
moves virtual time, its time() and get_debug() partials with no Python
frame): what callbacks see, in what order, and how their exceptions reach
the exception handler must be asyncio's own, in normal and debug mode."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import threading
from typing import Any

import pytest

import loopstack
import loopstack.aio

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="-")


class Handle(asyncio.Handle):
    """A Handle subclass of a program's own (run through its own _run)."""

    def _run(self) -> None:
        self._args = ("sub",) + self._args[1:]
        super()._run()


async def scenario() -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    seen: list[Any] = []
    errors: list[tuple[str, str, bool]] = []

    def handler(lp: Any, ctx: dict[str, Any]) -> None:
        errors.append((ctx["message"].split(" at ")[0], type(ctx.get("exception")).__name__,
                       ctx.get("handle") is not None))

    loop.set_exception_handler(handler)

    def boom(tag: str) -> None:
        seen.append(("boom", tag))
        raise ValueError(tag)

    def note(tag: str) -> None:
        seen.append((tag, var.get()))

    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    loop.call_soon(note, "a")
    loop.call_soon(boom, "b")
    loop.call_soon(note, "c", context=ctx)
    cancelled = loop.call_soon(note, "never")
    cancelled.cancel()
    loop.call_later(0.002, note, "later-2")
    loop.call_later(0.001, note, "later-1")
    gone = loop.call_later(0.0015, note, "never-later")
    gone.cancel()
    loop.call_at(loop.time() + 0.003, boom, "timer")
    loop._ready.append(Handle(note, ("x",), loop))  # type: ignore[attr-defined]
    for _ in range(50):
        loop.call_later(10, note, "far")  # many cancelled: the heap is rebuilt
    for h in list(loop._scheduled)[-50:]:  # type: ignore[attr-defined]
        h.cancel()
    await asyncio.sleep(0.01)
    debug_was = loop.get_debug()
    loop.set_debug(True)
    debug_now = loop.get_debug()
    loop.call_soon(note, "debug")
    loop.call_soon(boom, "debug")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    loop.set_debug(False)
    return {"seen": seen, "errors": errors, "debug": (debug_was, debug_now, loop.get_debug()),
            "scheduled": len(loop._scheduled)}  # type: ignore[attr-defined]


def test_callbacks_as_asyncio_runs_them() -> None:
    kernel = asyncio.run(scenario())
    virtual = loopstack.aio.run(scenario())
    with loopstack.patch():
        patched = asyncio.run(scenario())
    assert virtual == kernel
    assert patched == kernel
    assert kernel["seen"][:5] == [("a", "-"), ("boom", "b"), ("c", "in-ctx"), ("sub", "-"),
                                  ("later-1", "-")]
    assert kernel["errors"] == [
        ("Exception in callback scenario.<locals>.boom('b')", "ValueError", True),
        ("Exception in callback scenario.<locals>.boom('timer')", "ValueError", True),
        ("Exception in callback scenario.<locals>.boom('debug')", "ValueError", True)]


def test_time_and_debug_answer_without_a_frame() -> None:
    """The virtual-time loop's time() and get_debug() are partials (C), and
    time() is the virtual clock's."""

    async def main() -> tuple[str, str, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(2.5)
        return type(loop.time).__name__, type(loop.get_debug).__name__, loop.time()

    assert loopstack.aio.run(main()) == ("partial", "partial", pytest.approx(2.5))


def test_virtual_clock_tells_of_timers_only_while_someone_sleeps() -> None:
    """A virtual clock calls the stack's listener for an armed timer only
    while a driver (or the autojump thread) sleeps with nothing scheduled;
    otherwise a re-armed timer takes the quiet path (no call), and the
    loop's time reads the clock with no Python frame."""
    st = loopstack.Stack(clock="virtual")
    try:
        clock = st.clock
        vt = st._vt
        assert vt is not None
        assert clock.on_armed is None  # type: ignore[attr-defined]
        woken: list[int] = []
        timer = clock.call_later(1_000, lambda: None)
        vt.sleeping = lambda: woken.append(1)
        assert clock.on_armed is not None  # type: ignore[attr-defined]
        timer.cancel()
        timer.reschedule(2_000)  # a cancelled timer armed again: the sleeper hears of it
        assert woken == [1]
        vt.sleeping = None
        assert clock.on_armed is None  # type: ignore[attr-defined]
        timer.cancel()
        timer.reschedule(3_000)  # nobody sleeps: quiet
        assert woken == [1]
        assert clock.next_deadline() == 3_000
        clock.advance(3_000)
        assert clock.now_ns() == 3_000
        assert clock.now_seconds() == 3_000 / 1e9  # type: ignore[attr-defined]
    finally:
        st.close()


async def busy_scenario() -> dict[str, Any]:
    """Turns with no timer scheduled (the virtual-time loop's own turn,
    aio.VirtualTimeEventLoop._run_once): callbacks queued by callbacks, a
    handle cancelled by an earlier callback of the same turn, a program's
    Handle subclass, exceptions, a real descriptor's reader, a wake-up from
    another thread, a TCP echo through the in-process selector."""
    loop = asyncio.get_running_loop()
    seen: list[Any] = []
    errors: list[str] = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx["message"].split(" at ")[0]))

    def chain(n: int) -> None:
        seen.append(("chain", n, var.get()))
        if n:
            loop.call_soon(chain, n - 1)

    def boom(tag: str) -> None:
        raise ValueError(tag)

    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    loop.call_soon(chain, 2)
    loop.call_soon(boom, "b")
    later: list[asyncio.Handle] = []
    loop.call_soon(lambda: later[0].cancel())
    later.append(loop.call_soon(seen.append, "cancelled in its turn"))
    loop.call_soon(chain, 0, context=ctx)
    loop._ready.append(Handle(seen.append, ("x",), loop))  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    seen.append("after sleep(0)")

    # Debug turned on and off by callbacks of one turn: the callbacks in
    # between are timed (every one "slow" here) and reported by name.
    slow: list[str] = []

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            slow.append(record.getMessage().split(" took ")[0])

    log = logging.getLogger("asyncio")
    catch = Slow()
    log.addHandler(catch)
    loop.slow_callback_duration = 0.0
    try:
        loop.call_soon(seen.append, "before debug")
        loop.call_soon(loop.set_debug, True)
        loop.call_soon(seen.append, "timed")
        loop.call_soon(loop.set_debug, False)
        loop.call_soon(seen.append, "not timed")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        log.removeHandler(catch)
        loop.slow_callback_duration = 0.1
    seen.append(slow)

    r, w = socket.socketpair()  # real descriptors: epoll
    got: asyncio.Future[bytes] = loop.create_future()

    def on_readable() -> None:
        loop.remove_reader(r)
        got.set_result(r.recv(10))

    loop.add_reader(r, on_readable)
    w.send(b"hi")
    seen.append(await got)
    r.close()
    w.close()

    done: asyncio.Future[str] = loop.create_future()
    t = threading.Thread(target=loop.call_soon_threadsafe, args=(done.set_result, "thread"))
    t.start()
    seen.append(await done)
    t.join()

    async def echo(rd: asyncio.StreamReader, wr: asyncio.StreamWriter) -> None:
        while data := await rd.read(100):
            wr.write(data)
        wr.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    rd, wr = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    for i in range(5):
        wr.write(b"%d" % i)
        seen.append(await rd.readexactly(1))
    wr.close()
    await wr.wait_closed()
    server.close()
    await server.wait_closed()
    return {"seen": seen, "errors": errors, "scheduled": len(loop._scheduled)}  # type: ignore[attr-defined]


def test_turns_without_timers_as_asyncio_runs_them() -> None:
    kernel = asyncio.run(busy_scenario())
    virtual = loopstack.aio.run(busy_scenario())
    assert virtual == kernel
    assert kernel["seen"][:5] == [("chain", 2, "-"), ("chain", 0, "in-ctx"), "sub",
                                  "after sleep(0)", ("chain", 1, "-")]
    assert ["Executing <Handle list.append('timed')>",
            "Executing <Handle BaseEventLoop.set_debug(False)>"] in kernel["seen"]
    assert kernel["errors"] == ["Exception in callback busy_scenario.<locals>.boom('b')"]


def _stopping(loop: asyncio.AbstractEventLoop) -> list[str]:
    """stop() before run_forever(): one turn that does not wait, then out;
    stop() from a callback: the rest of that turn's callbacks run, the
    ones they queue wait for the next run_forever()."""
    seen: list[str] = []
    try:
        # (A turn that waited would be ended by the guard, 5 s later.)
        guard = threading.Timer(5.0, loop.call_soon_threadsafe, args=(seen.append, "guard"))
        guard.start()
        loop.stop()
        loop.run_forever()
        guard.cancel()
        seen.append("stopped before running")
        loop.call_soon(seen.append, "a")
        loop.call_soon(loop.stop)
        loop.call_soon(lambda: loop.call_soon(seen.append, "queued while stopping"))
        loop.call_soon(seen.append, "b")
        loop.run_forever()
        seen.append("stopped")
        loop.call_soon(loop.stop)
        loop.run_forever()
        seen.append("stopped again")
    finally:
        loop.close()
    return seen


def test_stop_from_a_callback_as_asyncio() -> None:
    kernel = _stopping(asyncio.new_event_loop())
    st = loopstack.Stack(clock="virtual")
    try:
        with loopstack.patch(st):
            virtual = _stopping(loopstack.aio.VirtualTimeEventLoop(st))
    finally:
        st.close()
    assert virtual == kernel == ["stopped before running", "a", "b", "stopped",
                                 "queued while stopping", "stopped again"]


def _interrupted(loop: asyncio.AbstractEventLoop, debug_on: bool) -> list[str]:
    """A callback raising KeyboardInterrupt ends run_forever(); the rest of
    its turn waits in the loop's queue for the next run (also when an
    earlier callback of that turn turned debug on)."""
    seen: list[str] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    try:
        loop.call_soon(seen.append, "a")
        if debug_on:
            loop.call_soon(loop.set_debug, True)
        loop.call_soon(interrupt)
        loop.call_soon(seen.append, "after the interrupt")
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            seen.append("interrupted")
        loop.set_debug(False)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    return seen


@pytest.mark.parametrize("debug_on", [False, True])
def test_an_interrupted_turn_as_asyncio(debug_on: bool) -> None:
    kernel = _interrupted(asyncio.new_event_loop(), debug_on)
    st = loopstack.Stack(clock="virtual")
    try:
        with loopstack.patch(st):
            virtual = _interrupted(loopstack.aio.VirtualTimeEventLoop(st), debug_on)
    finally:
        st.close()
    assert virtual == kernel == ["a", "interrupted", "after the interrupt"]
