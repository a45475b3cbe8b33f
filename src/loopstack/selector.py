"""The selector of asyncio's loops under :func:`loopstack.patch`: readiness
of loopstack sockets learned in-process, no syscall per change.

A loopstack socket's descriptor (readiness.py) reports its readiness to any
poller, but keeping it in step costs a syscall at each change (a byte sent
when the socket becomes readable, one read when it stops being), and the
poller's wait is one more: an asyncio round trip paid about six syscalls
where the kernel's loopback pays four, in a stack that needs none. This
selector asks the socket instead:

- A loopstack socket registered here (asyncio registers descriptor numbers:
  each is looked up once, readiness.py's ``identity``) is watched through its
  :class:`~loopstack.readiness.Readiness`: every change the socket reports
  is a call here, which marks the socket as a candidate and, if this
  selector is blocked, wakes it (one write to an eventfd, made only then).
  While at least one such selector watches it, the descriptor itself is
  left as it was (*quiet*); when the last one lets go it is brought up to
  date, so a poller that watches the number afterwards sees the truth.
- Any other descriptor (asyncio's self-pipe, a pipe to a subprocess, a real
  socket) is watched by the real selector (epoll), as before.
- ``select(timeout)`` reports the loopstack sockets that are ready now
  (level-triggered, as epoll's default); when one is ready, or the loop
  asks without waiting (``select(0)``: callbacks are pending) while it
  watches loopstack sockets, it does not wait, and it polls the real
  selector at most once per millisecond, so a ready real descriptor is reported up to a millisecond
  later while loopstack sockets keep the loop busy. When none is ready it
  asks the real selector (with the wake-up descriptor) with the timeout
  given, as selectors' own does.

patch.py gives it to asyncio's selector event loops made without a
selector of their own (``asyncio.run``, ``new_event_loop``, the default
policy); ``selectors.DefaultSelector`` itself stays the real one, for
programs that drive their own select loop.

What a program can tell: a descriptor watched by this selector and, at the
same time, by another poller (``select.select`` on the same number from
another thread) shows the state it had when this selector started to watch
it, until this selector lets go; and a ready real descriptor is reported up
to a millisecond late while loopstack sockets stay ready. A loop given a
selector of its own (``SelectorEventLoop(selectors.EpollSelector())``)
keeps exact descriptors.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable, Mapping
from typing import Any

from .readiness import Readiness
from .socket import find_descriptor, implementation, unmade_readiness

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE
_READ_WRITE = _EVENT_READ | _EVENT_WRITE
_REAL_POLL_NS = 1_000_000  # the real selector is looked at this often while loopstack is busy
_monotonic_ns = time.monotonic_ns


# selectors.SelectorKey(...) is a Python function (namedtuple's __new__);
# tuple's own makes the same key in C: _new_key(SelectorKey, (fileobj, fd, events, data)).
_new_key: Callable[[type, tuple[Any, ...]], selectors.SelectorKey] = tuple.__new__
_Key = selectors.SelectorKey

# The class patch() replaces: selectors.DefaultSelector as the module made it.
RealDefaultSelector: type[selectors.BaseSelector] = selectors.DefaultSelector


def _readiness_of(fileobj: Any, fd: int) -> Readiness | None:
    """The Readiness behind ``fd`` if it is a loopstack socket's descriptor."""
    unmade = unmade_readiness(fd)
    if unmade is not None:
        return unmade
    sock = None
    if not isinstance(fileobj, int):
        impl = implementation(fileobj)
        sock = impl if getattr(impl, "_efd", None) is not None else None
    if sock is None:
        sock = find_descriptor(fd)
    efd = getattr(sock, "_efd", None) if sock is not None else None
    if not isinstance(efd, Readiness) or efd.carrying:  # (a detached descriptor's data: real)
        return None
    return efd


class StackSelector(selectors.BaseSelector):
    """A selector for loopstack sockets and real descriptors alike (see the
    module's text)."""

    # Numbers asyncio registers here need no descriptor (socket.py, fileno).
    in_process_readiness = True

    def __init__(self) -> None:
        self._real = RealDefaultSelector()
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._mine: dict[int, Readiness] = {}  # fd -> its Readiness (loopstack sockets)
        self._watchers: dict[int, Callable[[Readiness], None]] = {}  # fd -> what it calls
        # fds to look at in the next select: changed since, or ready last time.
        self._candidates: set[int] = set()
        self._blocked = False
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._woken = False
        self._real.register(self._wake_fd, _EVENT_READ)
        self._last_real_poll = 0
        self._closed = False
        self._map = _KeyMap(self._keys)  # (one, as selectors' own: a live view)

    # -- registration ------------------------------------------------------------
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = fileobj if type(fileobj) is int and fileobj >= 0 else \
            selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = _new_key(_Key, (fileobj, fd, events, data))
        rd = _readiness_of(fileobj, fd)
        if rd is None:
            self._real.register(fileobj, events, data)
            self._keys[fd] = key
        else:
            self._keys[fd] = key  # (first: a number in _mine has its key)
            self._mine[fd] = rd
            changed = self._watcher(fd)
            self._watchers[fd] = changed
            rd.watch(changed)
            self._candidates.add(fd)
        return key

    def _watcher(self, fd: int) -> Callable[[Readiness], None]:
        """What a watched socket calls when it becomes more ready than it was
        (readiness.py, update; any thread): ``fd`` is looked at in the next
        select, and a blocked select wakes."""
        def changed(rd: Readiness) -> None:
            self._candidates.add(fd)
            if self._blocked and not self._woken:
                self._woken = True
                try:
                    os.eventfd_write(self._wake_fd, 1)
                except OSError:
                    pass

        return changed

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if type(fileobj) is int and fileobj >= 0 else self._fd_lookup(fileobj)
        rd = self._mine.pop(fd, None)  # (before its key: see register)
        key = self._keys.pop(fd, None)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if rd is None:
            self._real.unregister(fd)
        else:
            self._candidates.discard(fd)
            changed = self._watchers.pop(fd, None)
            if changed is not None:
                rd.unwatch(changed)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if type(fileobj) is int and fileobj >= 0 else self._fd_lookup(fileobj)
        key = self._keys.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if fd not in self._mine:
            if events != key.events:
                self._real.modify(fd, events, data)
            elif data is not key.data:
                self._real.modify(fd, events, data)
            key = _new_key(_Key, (key.fileobj, fd, events, data))
            self._keys[fd] = key
            return key
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        key = _new_key(_Key, (key.fileobj, fd, events, data))  # (key._replace, without its calls)
        self._keys[fd] = key
        self._candidates.add(fd)
        return key

    def _fd_lookup(self, fileobj: Any) -> int:
        try:
            return selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined, no-any-return]
        except ValueError:
            for key in self._keys.values():  # a closed object: found by identity
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def get_map(self) -> Mapping[Any, selectors.SelectorKey] | None:  # type: ignore[override]
        # None once closed, as selectors' own (get_key then says RuntimeError).
        return None if self._closed else self._map

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        # BaseSelector's (get_map()[fileobj]) without the mapping's calls:
        # asyncio asks it at every add_reader / add_writer.
        if self._closed:
            raise RuntimeError("Selector is closed")
        try:
            fd = fileobj if type(fileobj) is int and fileobj >= 0 else \
                selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
            return self._keys[fd]
        except (ValueError, KeyError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    # -- waiting ------------------------------------------------------------------
    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # The loopstack sockets that may be ready (level-triggered: one found
        # ready is looked at again next time).
        ready = self._ready_now() if self._candidates else []
        now = _monotonic_ns()
        if ready:
            # Loopstack sockets are ready: the real descriptors are looked at
            # (without waiting) once a millisecond.
            if now - self._last_real_poll < _REAL_POLL_NS:
                return ready
            timeout = 0
        elif timeout is not None and timeout <= 0:
            # A look without waiting (the loop has callbacks to run): while
            # it watches loopstack sockets, the real descriptors are looked at
            # once a millisecond here too, as when sockets are ready.
            if self._mine and now - self._last_real_poll < _REAL_POLL_NS:
                return ready
            timeout = 0
        return self._select_real(ready, timeout, now)

    def _select_real(self, ready: list[tuple[selectors.SelectorKey, int]],
                     timeout: float | None, now: int) -> list[tuple[selectors.SelectorKey, int]]:
        """The real selector's turn (waiting up to ``timeout`` unless a
        loopstack socket changes meanwhile), after ``ready``'s look."""
        if timeout != 0:
            self._blocked = True
            if self._candidates:  # a change came in after the look above
                timeout = 0
        try:
            events = self._real.select(timeout)
        finally:
            self._blocked = False
        self._last_real_poll = now
        out = ready
        for key, mask in events:
            if key.fd == self._wake_fd:
                self._woken = False
                try:
                    os.eventfd_read(self._wake_fd)
                except OSError:
                    pass
                continue
            mine_key = self._keys.get(key.fd)
            if mine_key is not None:
                out.append((mine_key, mask & mine_key.events))
        if not ready and self._candidates:
            out.extend(self._ready_now())
        return out

    def _ready_now(self) -> list[tuple[selectors.SelectorKey, int]]:
        """The loopstack sockets ready now (select's first look). The
        candidates are swapped out, not iterated in place: other threads add
        while we look."""
        out: list[tuple[selectors.SelectorKey, int]] = []
        keys, mine = self._keys, self._mine
        candidates = self._candidates
        self._candidates = again = set()
        for fd in candidates:
            rd = mine.get(fd)
            key = keys.get(fd)
            if rd is None or key is None or rd.closed:
                # (let go of since, maybe by another thread; or closed while
                # registered: epoll drops a closed descriptor)
                continue
            if rd.want_readable:
                mask = key.events & _READ_WRITE if rd.want_writable else key.events & _EVENT_READ
            elif rd.want_writable:
                mask = key.events & _EVENT_WRITE
            else:
                continue
            if mask:
                out.append((key, mask))
                again.add(fd)  # level-triggered: looked at again next time
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in list(self._mine):
            rd = self._mine.pop(fd)
            changed = self._watchers.pop(fd, None)
            if changed is not None:
                rd.unwatch(changed)
        self._watchers.clear()
        self._keys.clear()
        self._candidates.clear()
        self._real.close()
        os.close(self._wake_fd)


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    """What get_map() gives: fileobj or fd -> key, as selectors' own."""

    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            fd = selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
            return self._keys[fd]
        except (ValueError, KeyError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Any:
        return iter(self._keys)


__all__ = ["StackSelector", "RealDefaultSelector"]
