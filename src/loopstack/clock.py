"""Real and virtual clocks sharing one timer heap.

Time is integer nanoseconds everywhere: a float clock and a timer due exactly
"now" have hung other tools' event loops (DESIGN.md, Pitfalls).

TCP re-arms its timers on every segment, so a timer owns at most one live heap
entry.  Re-arming later only updates the timer; when its old entry reaches the
top of the heap it is pushed back at the new deadline.  Re-arming earlier
pushes a new entry and the old one is skipped when it surfaces.
"""

from __future__ import annotations

import _thread
import fcntl
import heapq
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from operator import methodcaller
from os import read as _read
from queue import Empty, SimpleQueue
from select import POLLIN, poll
from select import select as _select
from time import monotonic as _monotonic
from typing import Any, ClassVar

NS_PER_SEC = 1_000_000_000

_log = logging.getLogger(__name__)

Callback = Callable[[], None]
Runner = Callable[[Callback], None]
_Entry = tuple[int, int, "Timer"]  # (deadline, arming sequence number, timer)


def seconds_to_ns(seconds: float) -> int:
    return round(seconds * NS_PER_SEC)


def _call(callback: Callback) -> None:
    callback()


# Shared by every Condition nobody has waited on yet: maxlen 0, so nothing
# can be kept in it by mistake.
_NO_WAITERS: deque[Any] = deque(maxlen=0)


# -- the stack's lock, and parking a waiting thread ------------------------------------
#
# A thread woken while the thread that woke it still runs Python wakes only
# to wait for the GIL: with one CPU it takes the CPU from the waker, finds
# the GIL held, sleeps again, and is woken a second and a third time when
# the waker lets go of the GIL (its condition variable, then its mutex).
# Three wake-ups and six context switches per hand-over, where two threads
# taking turns over kernel sockets need one: the kernel wakes the other
# thread inside a system call, the GIL already let go.
#
# So a wake-up that an operation owes (the stack lock held, inside
# ``Stack.locked``) is made when that operation lets go of the lock (the
# woken thread does not wake only to wait for it), and a thread that waits
# for an answer (a hand-off: ``Condition.wait(handoff=True)``) parks on an
# eventfd of its own, woken by a write made with the GIL released. Who is
# woken, in what order, and what ``wait`` returns stay those of
# ``threading.Condition``.

class StackLock(_thread.RLock):  # type: ignore[misc]  # (final in typeshed; a type at runtime)
    """The stack's lock: a ``threading.RLock`` that knows whether its holder
    is inside an operation (``depth``: ``Stack.locked`` counts them) and
    keeps the wake-ups that holder owes (``wakes``: parked waiters a
    Condition over this lock was told to wake while ``depth`` > 0). They
    are made when the operation lets go of the lock (``Stack.locked``) or
    the holder itself waits (``Condition.wait``), whichever comes first:
    ``wakes`` is empty whenever the lock is free."""

    __slots__ = ("depth", "wakes")

    def __init__(self) -> None:
        self.depth = 0
        # Parkers, and the clock thread's waker (RealClock): anything with wake().
        self.wakes: list[Any] = []


_ONE = (1).to_bytes(8, sys.byteorder)  # what an eventfd write adds
_SELECTABLE = 1024  # FD_SETSIZE: select() takes descriptors below it
_descriptor_floor = 0


def set_descriptor_floor(floor: int) -> None:
    """Parkers' descriptors go at or above ``floor`` (readiness.peer_floor:
    out of the low numbers the program's next open() would get), and below
    1024 where they can: a timed wait uses select(), whose timeout has
    microseconds (poll's has milliseconds, rounded up)."""
    global _descriptor_floor
    _descriptor_floor = min(floor, _SELECTABLE - 64)


class Parker:
    """What one waiting thread blocks on, in one of two ways, chosen for
    each wait:

    - by default on a ``queue.SimpleQueue``, woken by a put made with the
      GIL held (as a lock is released): the woken thread runs once the
      waker lets go of the GIL (blocks, or its switch interval ends), so a
      thread streaming data keeps the CPU while its reader waits;
    - for a hand-off (``handoff``: the waiter expects to be answered, and
      whoever wakes it to wait for it next) on an eventfd, woken by a write
      made with the GIL released: the woken thread can take the GIL at once.

    ``wake`` is a C callable (a list of them can be called with no Python
    code between two: a signal handler's exception cannot leave some
    asleep). A parker is reused: a wake-up meant for its earlier use may
    arrive late (its waiter timed out as it was notified). The waiter tells
    a real wake-up from such a one by looking, under the lock, whether a
    notifier took it off its Condition's waiters; if not, it parks again."""

    __slots__ = ("wake", "fd", "_handoff", "_queue", "_put", "_write", "_poll")

    def __init__(self) -> None:
        queue: SimpleQueue[None] = SimpleQueue()
        self._queue = queue
        self._put: Callable[[], Any] = partial(queue.put_nowait, None)
        self.wake: Callable[[], Any] = self._put
        self._handoff = False
        self.fd = -1  # the eventfd, made at the first hand-off
        self._write: Callable[[], Any] | None = None
        self._poll: Any = None  # select.poll(), for a descriptor select() cannot take

    def prepare(self, handoff: bool) -> None:
        """Before a wait (lock held): block the given way (a hand-off
        without an eventfd, on another system or with no descriptor left,
        blocks the default way)."""
        if handoff and (self._write is not None or self._make_fd()):
            self.wake = self._write  # type: ignore[assignment]  # (not None: just made)
            self._handoff = True
        else:
            self.wake = self._put
            self._handoff = False

    def _make_fd(self) -> bool:
        try:
            fd = os.eventfd(0, os.EFD_CLOEXEC)
        except (AttributeError, OSError):
            return False
        if _descriptor_floor and fd < _descriptor_floor:
            try:
                moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _descriptor_floor)
            except OSError:
                pass  # none free up there: keep the number it has
            else:
                os.close(fd)
                fd = moved
        self.fd = fd
        self._write = partial(os.write, fd, _ONE)
        return True

    def park(self, timeout: float | None) -> None:
        """Block until woken, or for ``timeout`` seconds (None: no limit).
        Signal handlers run meanwhile; an exception of theirs ends it."""
        if not self._handoff:
            try:
                self._queue.get(True, timeout)
            except Empty:
                pass
            return
        fd = self.fd
        if timeout is None:
            os.read(fd, 8)
        elif fd < _SELECTABLE:
            if _select((fd,), (), (), timeout)[0]:
                os.read(fd, 8)
        else:
            if self._poll is None:
                self._poll = poll()
                self._poll.register(fd, POLLIN)
            if self._poll.poll(timeout * 1e3):  # (milliseconds, rounded up)
                os.read(fd, 8)


# Parkers not in use. A thread waiting takes one (the most recently
# returned) and gives it back when its wait ends.
_PARKERS: list[Parker] = []
_WAKE = methodcaller("wake")


def wake_all(parkers: Iterable[Parker]) -> None:
    """Wake every parker, in order, with no Python code between two wakes
    (a signal handler's exception cannot leave some of them asleep)."""
    deque(map(_WAKE, parkers), 0)


def _forget_parkers() -> None:
    """In a child after fork(): the idle parkers' descriptors are the
    parent's eventfds. Nothing here can owe them a wake-up (the forking
    thread was outside the stack); the ones in use (the parent's waiting
    threads, which do not exist here) are left open, so a write to them
    lands in an eventfd, never in a descriptor reused for something else."""
    for parker in _PARKERS:
        if parker.fd >= 0:
            os.close(parker.fd)
    _PARKERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parkers)


class Condition(threading.Condition):
    """``threading.Condition`` over an ``RLock`` (the stack's lock), in a
    fraction of the memory: every socket has one, and most are never waited
    on. The stdlib's keeps five bound methods of the lock and a deque
    (about 1.2 KB a socket); this one keeps the lock and makes the deque at
    the first wait. Same semantics: ``wait`` releases the lock whatever its
    recursion depth and restores it, returns False on timeout;
    ``notify``/``notify_all`` need the lock held and wake waiters in order
    of arrival.

    Waiters park on a :class:`Parker`; over a :class:`StackLock` held inside
    an operation, the wake-ups are made when the operation lets go of the
    lock (see above)."""

    __slots__ = ("_lock", "_waiters")
    _lock: Any  # threading.RLock (a factory function, not a type, in typeshed)
    _waiters: deque[Parker]

    def __init__(self, lock: Any) -> None:  # noqa: D107 (no super().__init__: no bound copies)
        self._lock = lock
        self._waiters = _NO_WAITERS

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())

    def _release_save(self) -> Any:
        return self._lock._release_save()

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._waiters = _NO_WAITERS

    def wait(self, timeout: float | None = None, handoff: bool = False) -> bool:
        """``threading.Condition.wait``; ``handoff``: park the hand-off way
        (see Parker)."""
        lock = self._lock
        if not lock._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        if timeout is not None and timeout <= 0:
            return False  # (no one could have notified it: the lock was never let go)
        parker = _PARKERS.pop() if _PARKERS else Parker()
        if handoff and parker._write is not None:  # (prepare, inline: its eventfd is made)
            parker.wake = parker._write
            parker._handoff = True
        else:
            parker.prepare(handoff)
        waiters = self._waiters
        if waiters is _NO_WAITERS:
            waiters = self._waiters = deque()
        waiters.append(parker)
        deadline = None if timeout is None else _monotonic() + timeout
        stack_lock = type(lock) is StackLock
        try:
            while True:
                owed = None
                if stack_lock and lock.wakes:  # this thread's own, before it sleeps
                    owed, lock.wakes = lock.wakes, []
                saved = lock._release_save()
                try:
                    if owed is not None:
                        wake_all(owed)
                    if deadline is None and parker._handoff:
                        _read(parker.fd, 8)  # (park, inline: a hand-off with no time limit)
                    else:
                        parker.park(None if deadline is None
                                    else max(0.0, deadline - _monotonic()))
                finally:
                    lock._acquire_restore(saved)
                if parker not in waiters:
                    return True  # a notifier took it off
                if deadline is not None and _monotonic() >= deadline:
                    waiters.remove(parker)
                    return False
                # A late wake-up meant for the parker's earlier use: park again.
        except BaseException:
            if parker in waiters:  # (interrupted: a notification goes to the others)
                waiters.remove(parker)
            raise
        finally:
            _PARKERS.append(parker)

    def notify(self, n: int = 1) -> None:
        lock = self._lock
        if not lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        if not waiters or n <= 0:
            return
        if n >= len(waiters):
            self.notify_all()
            return
        woken = [waiters.popleft() for _ in range(n)]
        if type(lock) is StackLock and lock.depth:
            lock.wakes += woken
        else:
            wake_all(woken)

    def notify_all(self) -> None:
        lock = self._lock
        if not lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        if not waiters:
            return
        if type(lock) is StackLock and lock.depth:
            lock.wakes += waiters
        else:
            wake_all(waiters)
        waiters.clear()


class Timer:
    """A handle on one callback; fires once per arming, never before its deadline."""

    __slots__ = ("_clock", "_callback", "_deadline", "_seq", "active", "_entry")

    def __init__(self, clock: Clock, callback: Callback) -> None:
        self._clock = clock
        self._callback = callback
        self._deadline = 0
        self._seq = 0  # order of the latest arming: breaks ties between equal deadlines
        # Armed, and neither fired nor cancelled since (read it; the clock writes it).
        self.active = False
        self._entry: _Entry | None = None  # this timer's live heap entry, if any

    @property
    def deadline(self) -> int:
        return self._deadline

    def cancel(self) -> None:
        # No lock: the clock's side only reads ``active`` or stores False in
        # it (_top, _pop_due), and a store is atomic. A timer the clock has
        # already popped fires whether or not this waited for its lock (its
        # callback runs under the stack lock, after the caller's operation).
        self.active = False

    def reschedule(self, deadline_ns: int) -> None:
        """Arm again for deadline_ns, whether pending, fired or cancelled."""
        clock = self._clock
        with clock._lock:
            entry = self._entry
            if entry is not None and entry[0] <= deadline_ns and clock._later_is_quiet:
                # Later than its heap entry (still in the heap, pending or
                # cancelled since): only the deadline moves; the entry is
                # moved when it surfaces (_top). Whoever fires timers already
                # waits for something no later than that entry (the heap's
                # smallest), so nobody needs waking.
                clock._next_seq += 1
                self._deadline = deadline_ns
                self._seq = clock._next_seq
                self.active = True
                return
            clock._arm(self, deadline_ns)


class Clock:
    """The timer heap; subclasses say what "now" is and who fires due timers."""

    is_virtual: ClassVar[bool]
    # A timer re-armed later than its live heap entry need not tell the
    # clock's waker (_armed): true where _armed only wakes for an earlier
    # deadline (RealClock), or while nobody listens (VirtualClock.on_armed).
    _later_is_quiet: bool = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heap: list[_Entry] = []
        self._next_seq = 0
        self._runner: Runner = _call
        self._closed = False

    def now_ns(self) -> int:
        raise NotImplementedError

    def now(self) -> float:
        """Seconds, for display only."""
        return self.now_ns() / NS_PER_SEC

    def call_at(self, deadline_ns: int, callback: Callback) -> Timer:
        timer = Timer(self, callback)
        with self._lock:
            self._arm(timer, deadline_ns)
        return timer

    def call_later(self, delay_ns: int, callback: Callback) -> Timer:
        return self.call_at(self.now_ns() + delay_ns, callback)

    def next_deadline(self) -> int | None:
        """The deadline of the earliest active timer, or None."""
        with self._lock:
            timer = self._top()
            return None if timer is None else timer._deadline

    def set_runner(self, runner: Runner) -> None:
        """Due timers fire as runner(callback); the stack's runner takes its lock."""
        self._runner = runner

    def close(self) -> None:
        """Cancel every timer; timers armed afterwards never fire."""
        with self._lock:
            self._closed = True
            for _, _, timer in self._heap:
                timer.active = False
                timer._entry = None
            self._heap.clear()

    def _heap_size(self) -> int:
        return len(self._heap)

    # The methods below run with self._lock held.

    def _arm(self, timer: Timer, deadline_ns: int) -> None:
        if self._closed:
            return
        self._next_seq += 1
        timer._deadline = deadline_ns
        timer._seq = self._next_seq
        timer.active = True
        entry = timer._entry
        if entry is None or entry[0] > deadline_ns:
            entry = (deadline_ns, timer._seq, timer)
            timer._entry = entry
            heapq.heappush(self._heap, entry)
        self._armed(deadline_ns)

    def _armed(self, deadline_ns: int) -> None:
        """Hook: a timer was armed for deadline_ns."""

    def _top(self) -> Timer | None:
        """The earliest active timer, after settling stale entries at the top."""
        heap = self._heap
        while heap:
            entry = heap[0]
            _, seq, timer = entry
            if timer._entry is not entry:  # superseded by an earlier re-arming
                heapq.heappop(heap)
            elif not timer.active:  # cancelled
                heapq.heappop(heap)
                timer._entry = None
            elif seq != timer._seq:  # re-armed since this entry was pushed: move it
                entry = (timer._deadline, timer._seq, timer)
                timer._entry = entry
                heapq.heapreplace(heap, entry)
            else:
                return timer
        return None

    def _pop_due(self, now_ns: int) -> Timer | None:
        timer = self._top()
        if timer is None or timer._deadline > now_ns:
            return None
        heapq.heappop(self._heap)
        timer._entry = None
        timer.active = False
        return timer


class RealClock(Clock):
    """time.monotonic_ns(); a daemon thread fires due timers through the runner.

    The thread never holds the clock's lock while it runs a callback: the runner
    takes the stack lock, and threads holding the stack lock arm timers here.
    For the same reason close() must not be called while holding the lock the
    runner takes, or it would wait forever for a callback blocked on that lock.
    """

    is_virtual = False
    _later_is_quiet = True
    # A C function, not a method: the hot path reads the clock often.
    now_ns = staticmethod(time.monotonic_ns)

    def __init__(self) -> None:
        super().__init__()
        self._wakeup = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._wake_at: int | None = None  # deadline the thread sleeps until; None: no limit
        # The stack's lock (Stack sets it): a timer armed inside an operation
        # wakes the thread when the operation lets go of the lock or waits.
        self.deferral: StackLock | None = None
        self._waker = _ClockWaker(self)

    def close(self) -> None:
        super().close()
        with self._lock:
            self._wakeup.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _armed(self, deadline_ns: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="loopstack-clock", daemon=True)
            self._thread.start()
        elif self._wake_at is None or deadline_ns < self._wake_at:
            lock = self.deferral
            if lock is not None and lock.depth and lock._is_owned():  # type: ignore[attr-defined]
                # Inside an operation: the thread is woken when the operation
                # lets go of the stack lock or waits (StackLock.wakes), and
                # only if an earlier timer is still armed then: a timer armed
                # and cancelled in one operation (a SYN's retransmission
                # timer, answered at once on lo) costs the thread no wake-up.
                wakes = lock.wakes
                if not wakes or wakes[-1] is not self._waker:
                    wakes.append(self._waker)
            else:
                self._wakeup.notify()

    def _wake_if_earlier(self) -> None:
        """The deferred wake-up: if the earliest armed timer is earlier than
        what the thread sleeps until, wake it (clock lock taken here)."""
        with self._lock:
            earliest = self._top()
            if earliest is not None and (self._wake_at is None
                                         or earliest._deadline < self._wake_at):
                self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                callback = self._wait_for_due()
            if callback is None:
                return
            try:
                self._runner(callback)
            except Exception:  # one failing callback must not stop every other timer
                _log.exception("loopstack: timer callback raised")

    def _wait_for_due(self) -> Callback | None:
        while not self._closed:
            now = self.now_ns()
            timer = self._pop_due(now)
            if timer is not None:
                return timer._callback
            earliest = self._top()
            self._wake_at = None if earliest is None else earliest._deadline
            timeout = None if self._wake_at is None else (self._wake_at - now) / NS_PER_SEC
            self._wakeup.wait(timeout)
        return None


class _ClockWaker:
    """What a StackLock's owed wake-ups hold for a RealClock (wake_all calls
    ``wake()``)."""

    __slots__ = ("wake",)

    def __init__(self, clock: RealClock) -> None:
        self.wake = clock._wake_if_earlier


class VirtualClock(Clock):
    """Time moves only when the driver moves it: the deterministic mode."""

    is_virtual = True

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__()
        # Now, in ns and in float seconds (loopstack.aio's loop.time), each in
        # a one-item list that now_ns and now_seconds read with no Python frame.
        self._cell = [start_ns]
        self._seconds = [start_ns / NS_PER_SEC]
        self.now_ns = partial(self._cell.__getitem__, 0)  # type: ignore[method-assign]
        self.now_seconds: Callable[[], float] = partial(self._seconds.__getitem__, 0)
        self._on_armed: Callback | None = None
        self._later_is_quiet = True

    @property
    def on_armed(self) -> Callback | None:
        """Told when a timer is armed, while someone waits for that with
        nothing scheduled (Stack.wait_for); None while nobody does: a timer
        re-armed later than its heap entry then tells nobody (Timer.reschedule)."""
        return self._on_armed

    @on_armed.setter
    def on_armed(self, listener: Callback | None) -> None:
        self._on_armed = listener
        self._later_is_quiet = listener is None

    def _armed(self, deadline_ns: int) -> None:
        listener = self._on_armed
        if listener is not None:
            listener()

    @property
    def _now(self) -> int:
        return self._cell[0]

    @_now.setter
    def _now(self, ns: int) -> None:
        self._cell[0] = ns
        self._seconds[0] = ns / NS_PER_SEC

    def advance(self, delay_ns: int) -> None:
        """Fire, in deadline order, every timer due within delay_ns, then stop there.

        Each timer sees now == its deadline; timers armed while firing that fall
        inside the window fire too.
        """
        if delay_ns < 0:
            raise ValueError(f"a virtual clock cannot go back in time (delay_ns={delay_ns})")
        self._advance_to(self._now + delay_ns)

    def advance_to_next(self) -> bool:
        """Jump to the next deadline and fire what is due then; False if no timer is armed."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self._advance_to(deadline)
        return True

    def run_until_idle(self, limit_ns: int | None = None) -> None:
        """Jump from deadline to deadline until no timer is armed.

        With limit_ns, stop once limit_ns of virtual time has passed since the call
        (a periodic timer would otherwise keep this going forever).
        """
        end = None if limit_ns is None else self._now + limit_ns
        while (deadline := self.next_deadline()) is not None:
            if end is not None and deadline > end:
                self._advance_to(end)
                return
            self._advance_to(deadline)

    def _advance_to(self, end_ns: int) -> None:
        while True:
            with self._lock:
                timer = self._pop_due(end_ns)
                if timer is None:
                    self._now = max(self._now, end_ns)
                    return
                self._now = max(self._now, timer._deadline)
                callback = timer._callback
            self._runner(callback)


# -- is the rest of the process idle? (virtual time with threads) ----------------------
_TASKS = "/proc/self/task"


def _thread_cpu_clock(tid: int) -> int:
    """Linux's CPU-time clock of thread ``tid`` (glibc's pthread_getcpuclockid
    makes the same id; unlike it, this is safe for a thread that has gone:
    clock_gettime then fails with EINVAL)."""
    return ((~tid) << 3) | 6  # MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)


class Quiescence:
    """Tells whether every thread of this process but some is blocked, so
    that virtual time may move (Stack.wait_for on a virtual clock).

    A thread counts as blocked when it has used no CPU across a window in
    which the asking thread itself blocked (a thread waiting for the GIL got
    it then, and ran) and is not waiting for a CPU now. On Linux both come
    from the kernel: each thread's CPU clock, and its state in
    /proc/self/task/TID/stat (R: running or runnable, D: in uninterruptible
    I/O). Elsewhere only the CPU time of the process's other threads can be
    seen, over a longer window: a thread woken and not yet scheduled by then
    is missed.

    Usage: ``look(exclude)`` until it says True; between two looks that
    said False, block for ``window`` seconds (releasing every lock the
    other threads may need) and, if nothing interrupted that wait, call
    ``waited()``.
    """

    WINDOW_MIN = 100e-6
    WINDOW_MAX = 5e-3

    def __init__(self) -> None:
        self._linux = os.path.isdir(_TASKS) and hasattr(time, "clock_gettime_ns")
        self._min = self.WINDOW_MIN if self._linux else 20 * self.WINDOW_MIN
        self.window = self._min  # grows while the process stays busy
        self._last: dict[int, int] | None = None
        self._waited = False

    def others(self, exclude: set[int]) -> bool:
        """Whether any thread besides those in ``exclude`` (native ids) exists."""
        if not self._linux:
            return threading.active_count() > len(exclude)
        return any(int(t) not in exclude for t in os.listdir(_TASKS))

    def look(self, exclude: set[int]) -> bool:
        """True when every thread not in ``exclude`` (native thread ids; the
        caller's own is always left out) has been blocked since the last look
        and a window was waited between the two."""
        sample = self._sample(exclude)
        if not self._same(sample) or not self._waited:
            self._last, self._waited = sample, False
            return False
        if self._linux:
            # A thread waiting for a CPU has not run yet. One that was so at
            # the sample and has run since shows a new CPU time: sample again
            # after reading the states.
            if any(self._running(tid) for tid in sample) or self._sample(exclude) != sample:
                self._waited = False
                return False
        return True

    def _same(self, sample: dict[int, int]) -> bool:
        last = self._last
        if self._linux or last is None:
            return sample == last
        # Elsewhere the others' time is the process's less this thread's, read
        # one after the other: a few microseconds of this thread's own work
        # fall between the two reads.
        return sample.keys() == last.keys() and abs(sample[0] - last[0]) < 50_000

    def waited(self) -> None:
        """The caller blocked for a whole window since its last look."""
        self._waited = True
        self.window = min(self.window * 2, self.WINDOW_MAX)

    def moved(self) -> None:
        """Time moved: start again with the shortest window. Where a thread
        the move woke cannot be seen waiting for a CPU, give it a window."""
        self.window = self._min
        if not self._linux:
            self._waited = False

    def _sample(self, exclude: set[int]) -> dict[int, int]:
        me = threading.get_native_id()
        if not self._linux:
            return {0: time.process_time_ns() - time.thread_time_ns(), me: 0}
        out = {}
        for name in os.listdir(_TASKS):
            tid = int(name)
            if tid == me or tid in exclude:
                continue
            try:
                out[tid] = time.clock_gettime_ns(_thread_cpu_clock(tid))
            except OSError:  # it has just exited
                pass
        return out

    @staticmethod
    def _running(tid: int) -> bool:
        try:
            fd = os.open(f"{_TASKS}/{tid}/stat", os.O_RDONLY)
        except OSError:
            return False
        try:
            stat = os.read(fd, 512)
        finally:
            os.close(fd)
        # "TID (comm) S ...": the state follows the last ")" (comm may hold one).
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        return state in (b"R", b"D")
