"""loopstack.aio's virtual-time loop (its selector a StackSelector that
moves virtual time, its time() and get_debug() partials with no Python
frame): what callbacks see, in what order, and how their exceptions reach
the exception handler must be asyncio's own, in normal and debug mode."""

from __future__ import annotations

import asyncio
import contextvars
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
