"""The descriptor behind ``fileno()``: what select, poll, epoll, selectors
and asyncio watch for a loopstack socket.

Each is one end (the *watched* end) of a connected pair of real sockets
whose other end (the *peer*) only this module uses. It carries no data for
the program; what the OS reports for it is set from user space:

- readable (POLLIN): the peer has sent a byte the watched end has not read;
- writable (POLLOUT): see below, per kind;
- urgent (POLLPRI, select's exceptional set): the peer has sent an urgent
  byte (MSG_OOB) the watched end has not taken.

By default the pair is an **AF_UNIX** socket pair, for every socket: the
watched end's send buffer is tiny, so filling it makes it unwritable and
draining the peer writable again. Urgent data is MSG_OOB on it (Linux >=
5.15), which gives POLLPRI exactly when tcp_poll does, with one difference:
while an out-of-line urgent byte is the only unread byte, Linux's tcp_poll
reports POLLPRI alone, and an AF_UNIX descriptor reports POLLIN with it
(unix_poll sees the byte in its receive queue; no descriptor but a kernel
TCP socket shows POLLPRI without POLLIN). A program that reads when told
"readable" then finds nothing to read (EAGAIN) until the urgent byte is
taken or normal data follows. docs/differences.md says why this is the
default: it keeps loopstack off the host's network stack, and costs a
quarter of the alternative.

With **exact urgent readiness** on (``set_exact_urgent(True)``, or
``LOOPSTACK_EXACT_URGENT=1`` in the environment, or ``loopstack run
--exact-urgent``) a TCP socket's descriptor is instead a kernel TCP
connection over the host's 127.0.0.1 (a listener made for the purpose,
closed once it has accepted), which shows exactly tcp_poll's bits. The
connection never carries the program's data. Its write readiness is
TCP_NOTSENT_LOWAT: at set-up the watched end fills the peer's tiny receive
window (the peer never reads) and keeps some bytes unsent for good, so a
low-water mark of 1 makes it unwritable (tcp_stream_memory_free) and a huge
one writable, one setsockopt each and no traffic. Both ends close with an
RST (SO_LINGER 0): no TIME_WAIT, no port left behind. It costs about
0.1 ms per socket (an AF_UNIX pair: 25 us), is visible to the host (``ss``,
firewall rules on lo) and raises Python's audit events
(``socket.__new__``, ``socket.bind``, ``socket.connect``): :func:`making`
tells an audit hook that they are this module's. Where the host's
127.0.0.1 refuses TCP (a network namespace without lo, a seccomp filter)
it falls back to the AF_UNIX pair.

A socket that is connecting is thus neither readable nor writable, exactly
as a kernel socket reports it. Nobody pays for any of this until
``fileno()`` is called. Code that hands the descriptor to the OS instead of
calling the socket's methods (``os.sendfile``) must fail cleanly, not have
its data swallowed: the watched end is opened with O_APPEND, which makes
Linux's sendfile and splice answer EINVAL (``do_splice_direct``) while
leaving ``send`` and ``recv`` alone; under ``patch()`` sendfile.py answers
``os.sendfile`` on these descriptors itself.

The descriptor's file status flags are the socket's to show: O_NONBLOCK is
set exactly when the socket object is non-blocking or has a timeout, as
CPython sets it on a kernel socket (``fcntl(fd, F_GETFL)`` tells), so this
module reads and writes the pair with MSG_DONTWAIT, whatever the flag.
Descriptors dup'ed from the watched end (``socket.dup``, ``socket.fromfd``)
are the same open file: ``identity`` (its device and inode) recognises them.
"""

from __future__ import annotations

import _socket as _c
import errno
import fcntl
import os
import select
import struct
import threading
import time

_DONTWAIT = _c.MSG_DONTWAIT
_OOB = _c.MSG_OOB
_TCP_NOTSENT_LOWAT = getattr(_c, "TCP_NOTSENT_LOWAT", 25)
_WRITABLE_LOWAT = 0x7FFFFFFF  # explicit: 0 would mean the host's sysctl
_LINGER_RST = struct.pack("ii", 1, 0)
_ARRIVAL = 2.0  # seconds a byte sent over the kernel's lo may take to land (softirq)

_local = threading.local()
# Set when 127.0.0.1 refused a TCP pair: every later descriptor is AF_UNIX.
_tcp_refused = False
# Kernel TCP pairs for TCP sockets (exact POLLPRI without POLLIN): off unless asked.
_exact_urgent = os.environ.get("LOOPSTACK_EXACT_URGENT", "") not in ("", "0")


def set_exact_urgent(on: bool) -> None:
    """Give TCP sockets' descriptors made from now on exact urgent-data
    readiness (a kernel TCP pair on 127.0.0.1; see the module's text), or
    AF_UNIX pairs again (the default). Descriptors already made keep theirs."""
    global _exact_urgent
    _exact_urgent = on


def exact_urgent() -> bool:
    """Whether TCP sockets' new descriptors are kernel TCP pairs."""
    return _exact_urgent


def making() -> bool:
    """True while this thread makes a kernel TCP readiness pair, so an audit
    hook can tell its socket.__new__/bind/connect events from a program's."""
    return bool(getattr(_local, "making", False))


class Readiness:
    __slots__ = ("_watched", "_peer", "_tcp", "_poll", "readable", "writable", "urgent",
                 "identity")

    def __init__(self, stream: bool = False) -> None:
        """``stream``: for a TCP socket (urgent data possible): a kernel TCP
        pair when exact urgent readiness is on and 127.0.0.1 takes one;
        else (and for UDP) an AF_UNIX pair."""
        pair = _tcp_pair() if stream and _exact_urgent and not _tcp_refused else None
        self._tcp = pair is not None
        if pair is None:
            pair = _unix_pair()
        a, b = pair
        flags = fcntl.fcntl(a.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(a.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
        self._watched = a
        self._peer = b
        self._poll: select.poll | None = None  # (kernel TCP only: _mask)
        if self._tcp:
            self._poll = select.poll()
            self._poll.register(a.fileno(), select.POLLIN | select.POLLPRI | select.POLLOUT)
        self.readable = False
        self.writable = True
        self.urgent = False
        st = os.fstat(a.fileno())
        self.identity = (st.st_dev, st.st_ino)

    def fileno(self) -> int:
        return self._watched.fileno()

    def update(self, readable: bool, writable: bool, urgent: bool = False) -> None:
        """Make the descriptor report these states (syscalls only on change)."""
        if readable != self.readable or urgent != self.urgent:
            self._set_read(readable, urgent)
        if writable != self.writable:
            if self._tcp:
                self._set_tcp_writable(writable)
            elif writable:
                _drain(self._peer)
            else:
                try:
                    while True:
                        self._watched.send(bytes(4096), _DONTWAIT)
                except BlockingIOError:
                    pass
            self.writable = writable

    def _set_read(self, readable: bool, urgent: bool) -> None:
        # The watched end holds at most a normal byte "r" and then an urgent
        # byte "!" after it: a normal read stops in front of the mark, and one
        # starting on an urgent byte steps over it (and would lose it), so
        # "r" is never queued behind a pending "!".
        had_r, had_u = self.readable, self.urgent
        w = self._watched
        if had_u and (not urgent or readable != had_r):
            try:
                w.recv(1, _OOB | _DONTWAIT)  # POLLPRI ends (TCP: a hole stays, unseen)
            except OSError:
                pass
            had_u = False
            if not self._tcp:
                _drain(w)  # AF_UNIX shows the taken byte as POLLIN until a read
                had_r = False
        if had_r and not readable:
            try:
                w.recv(4096, _DONTWAIT)  # TCP: up to a mark, past a hole
            except OSError:
                pass
            if not self._tcp:
                _drain(w)
        elif readable and not had_r:
            self._peer.send(b"r", _DONTWAIT)
            self._landed(select.POLLIN)
        if urgent and not had_u:
            # TCP: a hole at the head of the stream is stepped over
            # (tcp_check_urg); "r", if any, stays in front of the mark.
            self._peer.send(b"!", _OOB | _DONTWAIT)
            self._landed(select.POLLPRI)
        self.readable = readable
        self.urgent = urgent

    def _landed(self, bit: int) -> None:
        """Kernel TCP: wait until what the peer sent is seen (on lo it lands
        before send returns unless softirq work was deferred)."""
        if not self._tcp or self._mask(0) & bit:
            return
        deadline = time.monotonic() + _ARRIVAL
        while not self._mask(max(1, int((deadline - time.monotonic()) * 1000))) & bit:
            if time.monotonic() >= deadline:
                return

    def _mask(self, timeout_ms: int) -> int:
        assert self._poll is not None
        got = self._poll.poll(timeout_ms)
        return got[0][1] if got else 0

    def _set_tcp_writable(self, writable: bool) -> None:
        w = self._watched
        if writable:
            w.setsockopt(_c.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _WRITABLE_LOWAT)
            return
        w.setsockopt(_c.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, 1)
        for _ in range(8):  # the unsent bytes are still there: nothing to do
            if not self._mask(0) & select.POLLOUT:
                return
            try:
                w.send(bytes(4096), _DONTWAIT)
            except OSError:
                return

    def close(self) -> None:
        self._watched.close()
        self._peer.close()


def _unix_pair() -> tuple[_c.socket, _c.socket]:
    a, b = _c.socketpair(_c.AF_UNIX, _c.SOCK_STREAM | _c.SOCK_CLOEXEC)
    a.setblocking(False)
    b.setblocking(False)
    a.setsockopt(_c.SOL_SOCKET, _c.SO_SNDBUF, 1)  # a few KB fill it
    b.setsockopt(_c.SOL_SOCKET, _c.SO_RCVBUF, 1)
    return a, b


def _tcp_pair() -> tuple[_c.socket, _c.socket] | None:
    """A kernel TCP connection over 127.0.0.1 set up as the module's
    docstring says, or None (and no more tries) if the host refuses one."""
    global _tcp_refused
    _local.making = True
    made: list[_c.socket] = []
    try:
        listener = _c.socket(_c.AF_INET, _c.SOCK_STREAM | _c.SOCK_CLOEXEC)
        made.append(listener)
        listener.settimeout(_ARRIVAL)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        peer = _c.socket(_c.AF_INET, _c.SOCK_STREAM | _c.SOCK_CLOEXEC)
        made.append(peer)
        peer.setsockopt(_c.SOL_SOCKET, _c.SO_RCVBUF, 1)  # before connect: a tiny window
        peer.setsockopt(_c.IPPROTO_TCP, _c.TCP_NODELAY, 1)
        peer.setsockopt(_c.SOL_SOCKET, _c.SO_LINGER, _LINGER_RST)
        peer.settimeout(_ARRIVAL)
        peer.connect(listener.getsockname())
        fd, _ = listener._accept()  # type: ignore[attr-defined]
        watched = _c.socket(fileno=fd)
        made.append(watched)
        listener.close()
        made.remove(listener)
        peer.setblocking(False)
        watched.setblocking(False)
        watched.setsockopt(_c.SOL_SOCKET, _c.SO_LINGER, _LINGER_RST)
        watched.setsockopt(_c.IPPROTO_TCP, _c.TCP_NODELAY, 1)
        watched.setsockopt(_c.SOL_SOCKET, _c.SO_SNDBUF, 65536)
        watched.setsockopt(_c.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, 1)
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        for _ in range(16):  # fill the peer's window, keep some bytes unsent
            if not poll.poll(0):
                break
            watched.send(bytes(4096), _DONTWAIT)
        else:
            raise OSError("the peer's window never closed")
        watched.setsockopt(_c.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _WRITABLE_LOWAT)
        if not poll.poll(0):
            raise OSError("not writable with a high low-water mark")
        return watched, peer
    except OSError as e:
        for s in made:
            s.close()
        # Out of descriptors or memory: this time only (the AF_UNIX pair will
        # most likely fail the same way). Anything else: the host refuses.
        if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
            _tcp_refused = True
        return None
    finally:
        _local.making = False


def set_nonblocking(fd: int, nonblocking: bool) -> None:
    """O_NONBLOCK on ``fd`` (one of this module's descriptors) as a socket
    object's mode says: set for a timeout or non-blocking, clear when
    blocking (CPython's internal_setblocking)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | os.O_NONBLOCK if nonblocking else flags & ~os.O_NONBLOCK
    if wanted != flags:
        fcntl.fcntl(fd, fcntl.F_SETFL, wanted)


def _drain(sock: _c.socket) -> None:
    try:
        while sock.recv(65536, _DONTWAIT):
            pass
    except BlockingIOError:
        pass
