from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopstack.clock import (
    NS_PER_SEC,
    Clock,
    RealClock,
    Timer,
    VirtualClock,
    seconds_to_ns,
)

MS = 1_000_000


def recorder(clock: Clock, log: list[tuple[str, int]], name: str) -> Callable[[], None]:
    return lambda: log.append((name, clock.now_ns()))


def test_seconds_to_ns() -> None:
    assert NS_PER_SEC == 1_000_000_000
    assert seconds_to_ns(0.02) == 20 * MS
    assert seconds_to_ns(1.5) == 1_500_000_000


def test_fires_in_deadline_order_and_ties_in_arming_order() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    clock.call_at(30, recorder(clock, log, "c"))
    clock.call_at(10, recorder(clock, log, "a1"))
    clock.call_at(20, recorder(clock, log, "b"))
    clock.call_at(10, recorder(clock, log, "a2"))
    clock.advance(100)
    assert log == [("a1", 10), ("a2", 10), ("b", 20), ("c", 30)]
    assert clock.now_ns() == 100


def test_advance_stops_at_the_window() -> None:
    clock = VirtualClock(start_ns=1000)
    log: list[tuple[str, int]] = []
    clock.call_later(50, recorder(clock, log, "in"))
    clock.call_later(51, recorder(clock, log, "out"))
    clock.advance(50)
    assert log == [("in", 1050)]
    assert clock.now_ns() == 1050
    assert clock.next_deadline() == 1051


def test_advance_backwards_is_an_error() -> None:
    with pytest.raises(ValueError):
        VirtualClock().advance(-1)


def test_timers_armed_by_callbacks_fire_when_inside_the_window() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []

    def first() -> None:
        log.append(("first", clock.now_ns()))
        clock.call_later(5, recorder(clock, log, "inside"))
        clock.call_later(100, recorder(clock, log, "outside"))

    clock.call_at(10, first)
    clock.advance(20)
    assert log == [("first", 10), ("inside", 15)]
    clock.advance(100)
    assert log[-1] == ("outside", 110)


def test_a_timer_armed_in_the_past_fires_now_without_moving_time_back() -> None:
    clock = VirtualClock(start_ns=500)
    log: list[tuple[str, int]] = []
    clock.call_at(100, recorder(clock, log, "late"))
    clock.advance(0)
    assert log == [("late", 500)]


def test_cancel() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    timer = clock.call_at(10, recorder(clock, log, "x"))
    assert timer.active
    timer.cancel()
    assert not timer.active
    assert clock.next_deadline() is None
    clock.advance(100)
    assert log == []


def test_fires_once_and_becomes_inactive() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    timer = clock.call_at(10, recorder(clock, log, "x"))
    clock.advance(10)
    clock.advance(10)
    assert log == [("x", 10)]
    assert not timer.active


def test_reschedule_later_keeps_one_heap_entry() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    timer = clock.call_at(10, recorder(clock, log, "x"))
    for deadline in range(11, 1011):
        timer.reschedule(deadline)
    assert clock._heap_size() == 1
    assert timer.deadline == 1010
    assert clock.next_deadline() == 1010
    clock.advance(2000)
    assert log == [("x", 1010)]
    assert clock._heap_size() == 0


def test_reschedule_earlier_fires_once_at_the_new_deadline() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    timer = clock.call_at(100, recorder(clock, log, "x"))
    timer.reschedule(50)
    clock.advance(1000)
    assert log == [("x", 50)]


def test_reschedule_after_firing_or_cancel_arms_again() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    timer = clock.call_at(10, recorder(clock, log, "x"))
    clock.advance(10)
    timer.reschedule(20)
    assert timer.active
    clock.advance(10)
    timer.cancel()
    timer.reschedule(40)
    clock.advance(100)
    assert log == [("x", 10), ("x", 20), ("x", 40)]


def test_rearming_at_the_same_deadline_counts_as_armed_last() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    a = clock.call_at(10, recorder(clock, log, "a"))
    clock.call_at(10, recorder(clock, log, "b"))
    a.reschedule(10)
    clock.advance(10)
    assert [name for name, _ in log] == ["b", "a"]


def test_advance_to_next_and_run_until_idle() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    assert not clock.advance_to_next()
    clock.call_at(30, recorder(clock, log, "b"))
    clock.call_at(10, recorder(clock, log, "a1"))
    clock.call_at(10, recorder(clock, log, "a2"))
    assert clock.advance_to_next()
    assert log == [("a1", 10), ("a2", 10)]
    assert clock.now_ns() == 10
    clock.call_at(20, recorder(clock, log, "c"))
    clock.run_until_idle()
    assert log[2:] == [("c", 20), ("b", 30)]
    assert clock.now_ns() == 30
    assert clock.next_deadline() is None


def test_run_until_idle_stops_at_the_limit() -> None:
    clock = VirtualClock()
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(clock.now_ns())
        clock.call_later(10, tick)

    clock.call_later(10, tick)
    clock.run_until_idle(limit_ns=35)
    assert ticks == [10, 20, 30]
    assert clock.now_ns() == 35


def test_the_runner_fires_callbacks() -> None:
    clock = VirtualClock()
    seen: list[str] = []

    def runner(callback: Callable[[], None]) -> None:
        seen.append("before")
        callback()
        seen.append("after")

    clock.set_runner(runner)
    clock.call_at(1, lambda: seen.append("callback"))
    clock.advance(1)
    assert seen == ["before", "callback", "after"]


def test_close_cancels_everything() -> None:
    clock = VirtualClock()
    log: list[tuple[str, int]] = []
    timer = clock.call_at(10, recorder(clock, log, "x"))
    clock.close()
    assert not timer.active
    assert clock.next_deadline() is None
    late = clock.call_at(20, recorder(clock, log, "late"))
    assert not late.active
    clock.advance(100)
    assert log == []


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("arm"), st.integers(0, 7), st.integers(0, 60)),
            st.tuples(st.just("cancel"), st.integers(0, 7), st.just(0)),
            st.tuples(st.just("advance"), st.just(0), st.integers(0, 30)),
        ),
        max_size=60,
    )
)
def test_matches_a_naive_model(ops: list[tuple[str, int, int]]) -> None:
    """Any mix of arming, re-arming and cancelling fires like a sorted list would."""
    clock = VirtualClock()
    fired: list[tuple[int, int]] = []
    timers: dict[int, Timer] = {}
    armed: dict[int, tuple[int, int]] = {}  # timer -> (deadline, arming order)
    expected: list[tuple[int, int]] = []
    order = 0

    def callback(i: int) -> Callable[[], None]:
        return lambda: fired.append((i, clock.now_ns()))

    for op, i, value in ops:
        if op == "arm":
            order += 1
            deadline = clock.now_ns() + value
            armed[i] = (deadline, order)
            if i in timers:
                timers[i].reschedule(deadline)
            else:
                timers[i] = clock.call_at(deadline, callback(i))
        elif op == "cancel":
            armed.pop(i, None)
            if i in timers:
                timers[i].cancel()
        else:
            end = clock.now_ns() + value
            due = sorted((key, i) for i, key in armed.items() if key[0] <= end)
            expected += [(i, deadline) for (deadline, _), i in due]
            for _, i in due:
                del armed[i]
            clock.advance(value)
        assert fired == expected
        assert {i for i, t in timers.items() if t.active} == set(armed)
    assert clock._heap_size() <= len(timers) + sum(op == "arm" for op, _, _ in ops)


# RealClock: no tight timing asserts, only "it fires, and not before its deadline".


def test_real_clock_fires_not_before_the_deadline() -> None:
    clock = RealClock()
    assert not clock.is_virtual
    fired = threading.Event()
    fired_at: list[int] = []
    deadline = clock.now_ns() + 20 * MS

    def callback() -> None:
        fired_at.append(clock.now_ns())
        fired.set()

    clock.call_at(deadline, callback)
    try:
        assert fired.wait(5)
        assert fired_at[0] >= deadline
    finally:
        clock.close()


def test_real_clock_wakes_for_an_earlier_timer() -> None:
    clock = RealClock()
    order: list[str] = []
    done = threading.Event()
    clock.call_later(60 * NS_PER_SEC, lambda: order.append("late"))
    time.sleep(0.01)  # let the thread go to sleep until the far deadline

    def early() -> None:
        order.append("early")
        done.set()

    clock.call_later(MS, early)
    try:
        assert done.wait(5)
        assert order == ["early"]
    finally:
        clock.close()


def test_real_clock_uses_the_runner_and_survives_a_failing_callback() -> None:
    clock = RealClock()
    ran: list[str] = []
    done = threading.Event()

    def runner(callback: Callable[[], None]) -> None:
        ran.append("runner")
        callback()

    def boom() -> None:
        raise RuntimeError("expected by the test")

    clock.set_runner(runner)
    clock.call_later(MS, boom)
    clock.call_later(2 * MS, done.set)
    try:
        assert done.wait(5)
        assert ran == ["runner", "runner"]
    finally:
        clock.close()


def test_real_clock_close_stops_the_thread() -> None:
    clock = RealClock()
    fired: list[int] = []
    timer = clock.call_later(60 * NS_PER_SEC, lambda: fired.append(1))
    thread = clock._thread
    assert thread is not None and thread.is_alive()
    clock.close()
    assert not thread.is_alive()
    assert not timer.active
    assert fired == []


def test_real_clock_call_at_from_many_threads() -> None:
    clock = RealClock()
    per_thread, threads = 200, 8
    count = 0
    count_lock = threading.Lock()
    done = threading.Event()

    def callback() -> None:
        nonlocal count
        with count_lock:
            count += 1
            if count == per_thread * threads:
                done.set()

    def arm(n: int) -> None:
        for k in range(per_thread):
            if k % 3:
                clock.call_later((k % 7) * MS, callback)
            else:  # armed far away, so it cannot have fired before it is pulled in
                timer = clock.call_later(60 * NS_PER_SEC, callback)
                timer.reschedule(clock.now_ns() + (k % 5) * MS)

    workers = [threading.Thread(target=arm, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    try:
        assert done.wait(10)
        time.sleep(0.02)  # nothing fires twice
        assert count == per_thread * threads
    finally:
        clock.close()
