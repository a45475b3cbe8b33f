"""clock.Condition and its parking (clock.py): threading.Condition's
semantics whichever way a waiter parks (the default queue, or an eventfd
for a hand-off), wake-ups owed by an operation made once it lets go of the
stack lock, late wake-ups of a reused parker ignored, signals."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from loopstack import clock
from loopstack.clock import Condition, Parker, StackLock

HANDOFF = [False, True]


def start(target: Callable[[], Any]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def until(check: Callable[[], bool], limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def waiting(cond: Condition, n: int) -> Callable[[], bool]:
    def check() -> bool:
        with cond:
            return len(cond._waiters) == n
    return check


@pytest.mark.parametrize("handoff", HANDOFF)
@pytest.mark.parametrize("lock_kind", [threading.RLock, StackLock])
def test_waiters_are_woken_in_order_of_arrival(handoff: bool, lock_kind: Any) -> None:
    cond = Condition(lock_kind())
    woken: list[int] = []

    def waiter(i: int) -> None:
        with cond:
            assert cond.wait(10, handoff) is True
            woken.append(i)

    threads = []
    for i in range(4):
        threads.append(start(lambda i=i: waiter(i)))
        until(waiting(cond, i + 1))
    for n in range(1, 5):
        with cond:
            cond.notify()
        until(lambda n=n: len(woken) == n)
    assert woken == [0, 1, 2, 3]
    for t in threads:
        t.join()


@pytest.mark.parametrize("handoff", HANDOFF)
def test_notify_n_and_notify_all(handoff: bool) -> None:
    cond = Condition(StackLock())
    woken: list[int] = []

    def waiter(i: int) -> None:
        with cond:
            cond.wait(10, handoff)
            woken.append(i)

    for i in range(5):
        start(lambda i=i: waiter(i))
        until(waiting(cond, i + 1))
    with cond:
        cond.notify(2)
    until(lambda: len(woken) == 2)
    assert sorted(woken) == [0, 1]
    with cond:
        cond.notify_all()
    until(lambda: len(woken) == 5)
    with cond:
        assert not cond._waiters
        cond.notify_all()  # nobody: nothing
        cond.notify(3)


@pytest.mark.parametrize("handoff", HANDOFF)
def test_false_on_timeout_not_before_it(handoff: bool) -> None:
    lock = StackLock()
    cond = Condition(lock)
    with cond:
        t0 = time.monotonic()
        assert cond.wait(0.05, handoff) is False
        assert time.monotonic() - t0 >= 0.05
        assert not cond._waiters
        assert lock._is_owned()
        assert cond.wait(0, handoff) is False
        assert cond.wait(-1, handoff) is False


def test_wait_needs_the_lock_and_restores_its_depth() -> None:
    lock = StackLock()
    cond = Condition(lock)
    with pytest.raises(RuntimeError):
        cond.wait(0.01)
    with pytest.raises(RuntimeError):
        cond.notify()
    with pytest.raises(RuntimeError):
        cond.notify_all()
    got: list[bool] = []
    with lock, lock, lock:  # recursion depth 3, released whole while waiting
        start(lambda: got.append(lock.acquire(timeout=5)) or lock.release())
        assert cond.wait(0.2) is False
        assert lock._release_save()[0] == 3
        lock._acquire_restore((3, threading.get_ident()))
    assert got == [True]


@pytest.mark.parametrize("handoff", HANDOFF)
def test_wakes_owed_inside_an_operation_wait_for_its_end(handoff: bool) -> None:
    """With depth > 0 (Stack.locked), notify only notes the waiter: it is
    woken when the operation lets go of the lock (clock.wake_all)."""
    lock = StackLock()
    cond = Condition(lock)
    woke = threading.Event()

    def waiter() -> None:
        with cond:
            assert cond.wait(10, handoff)
        woke.set()

    start(waiter)
    until(waiting(cond, 1))
    with lock:
        lock.depth = 1
        cond.notify_all()
        assert not cond._waiters and len(lock.wakes) == 1
        lock.depth = 0
        owed, lock.wakes = lock.wakes, []
    assert not woke.wait(0.1)  # taken off the waiters, not woken yet
    clock.wake_all(owed)
    assert woke.wait(5)


def test_the_holders_own_owed_wakes_go_before_it_waits() -> None:
    lock = StackLock()
    a, b = Condition(lock), Condition(lock)
    woke = threading.Event()

    def waiter() -> None:
        with a:
            assert a.wait(10, True)
        woke.set()

    start(waiter)
    until(waiting(a, 1))
    with lock:
        lock.depth = 1
        a.notify()
        lock.depth = 0
        assert b.wait(0.05) is False  # lets go of the lock: a's waiter woken first
        assert not lock.wakes
    assert woke.wait(5)


@pytest.mark.parametrize("handoff", HANDOFF)
def test_a_late_wake_up_of_a_reused_parker_is_ignored(handoff: bool) -> None:
    """A parker handed back with a wake-up still to come (its waiter timed
    out as it was notified) does not end its next wait early."""
    parker = clock._PARKERS.pop() if clock._PARKERS else Parker()
    parker.prepare(handoff)
    parker.wake()
    parker.wake()
    clock._PARKERS.append(parker)
    cond = Condition(StackLock())
    with cond:
        t0 = time.monotonic()
        assert cond.wait(0.05, handoff) is False
        assert time.monotonic() - t0 >= 0.05
    # and a real notification still gets through
    woken: list[bool] = []

    def waiter() -> None:
        with cond:
            woken.append(cond.wait(10, handoff))

    t = start(waiter)
    until(waiting(cond, 1))
    with cond:
        cond.notify()
    t.join(5)
    assert woken == [True]


@pytest.mark.parametrize("handoff", HANDOFF)
def test_notified_as_it_times_out_counts_as_notified(handoff: bool) -> None:
    """The notifier took the waiter off (its wake-up owed, not yet made)
    while the wait timed out: the notification is the waiter's (True), and
    the wake-up that arrives later is ignored by the parker's next wait."""
    lock = StackLock()
    cond = Condition(lock)
    result: list[bool] = []

    def notifier() -> None:
        with lock:  # (the wait lets go of it)
            lock.depth = 1
            cond.notify()
            time.sleep(0.2)  # the wait times out meanwhile
            lock.depth = 0
            owed, lock.wakes = lock.wakes, []
        time.sleep(0.05)  # the waiter has the lock back and has returned
        clock.wake_all(owed)

    with cond:
        n = start(notifier)
        t0 = time.monotonic()
        result.append(cond.wait(0.1, handoff))
        assert time.monotonic() - t0 >= 0.2
    n.join(5)
    assert result == [True]
    with cond:
        assert cond.wait(0.05, handoff) is False


@pytest.mark.parametrize("handoff", HANDOFF)
def test_a_signal_handler_runs_during_a_wait_and_its_exception_ends_it(handoff: bool) -> None:
    cond = Condition(StackLock())
    main = threading.get_ident()
    calls: list[int] = []

    class Stop(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        calls.append(signum)
        if len(calls) == 2:
            raise Stop

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        def poke() -> None:
            for _ in range(2):
                until(waiting(cond, 1))
                time.sleep(0.05)
                signal.pthread_kill(main, signal.SIGUSR1)
                until(lambda: len(calls) >= 1)

        t = start(poke)
        with cond:
            with pytest.raises(Stop):
                cond.wait(None if handoff else 10, handoff)
            assert not cond._waiters  # taken off: a notification goes to others
            assert cond._lock._is_owned()
        t.join(5)
        assert calls == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_a_wait_inside_a_signal_handler_during_a_wait() -> None:
    """The handler's own wait parks on another parker: the outer wait's
    notification is not taken by it."""
    lock = StackLock()
    outer, inner = Condition(lock), Condition(lock)
    main = threading.get_ident()
    inner_result: list[bool] = []

    def handler(signum: int, frame: Any) -> None:
        with inner:
            inner_result.append(inner.wait(0.05, True))

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        def poke() -> None:
            until(waiting(outer, 1))
            signal.pthread_kill(main, signal.SIGUSR1)
            until(waiting(inner, 1))
            with outer:
                outer.notify()

        t = start(poke)
        with outer:
            assert outer.wait(10, True) is True
        t.join(5)
        assert inner_result == [False]
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_share_the_parents_parkers() -> None:
    cond = Condition(StackLock())
    with cond:
        cond.wait(0.001, True)  # an idle parker with an eventfd in the pool
    assert any(p.fd >= 0 for p in clock._PARKERS)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        ok = not clock._PARKERS
        with cond:
            ok = ok and cond.wait(0.01, True) is False
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    os.waitpid(pid, 0)


def test_hand_off_eventfds_are_kept_out_of_the_programs_numbers() -> None:
    import loopstack.stack  # noqa: F401 (sets the floor)

    cond = Condition(StackLock())
    with cond:
        cond.wait(0.001, True)
    fds = [p.fd for p in clock._PARKERS if p.fd >= 0]
    assert fds and min(fds) >= clock._descriptor_floor > 0


def test_an_untimed_hand_off_wait_parks_again_after_a_late_wake_up() -> None:
    """The hand-off wait with no time limit reads its eventfd in
    Condition.wait itself (Parker.park, inline): a wake-up left over from
    the parker's earlier use ends that read, and the wait parks again."""
    parker = clock._PARKERS.pop() if clock._PARKERS else Parker()
    parker.prepare(True)  # its eventfd made: the next wait prepares it inline
    parker.wake()
    clock._PARKERS.append(parker)
    cond = Condition(StackLock())
    woken: list[bool] = []

    def waiter() -> None:
        with cond:
            woken.append(cond.wait(None, True))

    t = start(waiter)
    until(waiting(cond, 1))
    with cond:
        assert cond._waiters[0] is parker and parker._handoff
    time.sleep(0.05)
    assert not woken and t.is_alive()  # the stale wake-up did not end the wait
    with cond:
        cond.notify()
    t.join(5)
    assert woken == [True]
    assert clock._PARKERS[-1] is parker  # handed back


def test_a_recv_waiting_as_a_hand_off_ends_when_its_object_closes() -> None:
    """A blocking recv on an interactive connection parks the hand-off way
    with a readiness predicate that is also true once the socket object is
    closed (stream.py, socket.py _wait ``closes``): closing the object ends
    the wait with EBADF, and data still reach another object of it."""
    import errno
    import socket

    import loopstack

    stack = loopstack.Stack()
    try:
        lst = stack.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        client = stack.socket()
        client.connect(lst.getsockname())
        conn, _ = lst.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)  # pingpong mode
        assert conn._tcb.pingpong >= 1
        other = conn.dup()
        errors: list[int | None] = []

        def receive() -> None:
            try:
                conn.recv(10)
            except OSError as e:
                errors.append(e.errno)

        t = start(receive)
        until(waiting(conn._cond, 1))
        with conn._cond:
            assert conn._cond._waiters[0]._handoff  # parked the hand-off way
        conn.close()  # this object only
        t.join(5)
        assert not t.is_alive() and errors == [errno.EBADF]
        client.sendall(b"x")
        other.settimeout(5)
        assert other.recv(10) == b"x"
        for s in (other, client, lst):
            s.close()
    finally:
        stack.close()
