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
import _thread
import errno
import fcntl
import os
import select
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

_DONTWAIT = _c.MSG_DONTWAIT
_OOB = _c.MSG_OOB
_TCP_NOTSENT_LOWAT = getattr(_c, "TCP_NOTSENT_LOWAT", 25)
_WRITABLE_LOWAT = 0x7FFFFFFF  # explicit: 0 would mean the host's sysctl
_LINGER_RST = struct.pack("ii", 1, 0)
_ARRIVAL = 2.0  # seconds a byte sent over the kernel's lo may take to land (softirq)


def _peer_floor() -> int:
    """The lowest number a pair's peer end is moved to. A kernel socket is
    one descriptor; a loopstack socket's readiness is two, and the peer, never
    the program's, should not take the low numbers the program's next
    open() or socket() would get (socket.py reserves the socket's own). Three
    quarters of the soft descriptor limit, at most 4096 (the descriptor
    table grows to it once), at least 64."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(64, min(4096, soft * 3 // 4))


_PEER_FLOOR = _peer_floor()


def peer_floor() -> int:
    """Where descriptors loopstack keeps for itself go (see _peer_floor)."""
    return _PEER_FLOOR


def _out_of_the_way(s: _c.socket) -> _c.socket:
    """``s`` on a number at or above _PEER_FLOOR (the lowest free one there;
    where none is free, where it was)."""
    try:
        n = fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, _PEER_FLOOR)
    except OSError:
        return s
    moved = _own(s, n)
    s.close()
    return moved


def _own(s: _c.socket, number: int) -> _c.socket:
    """A socket object for ``number`` (a descriptor of the same socket as
    ``s``). Only a constructor makes an object for a given number, and it
    raises the ``socket.__new__`` audit event: marked as this module's
    (:func:`making`), as the exact pair's are."""
    was = getattr(_local, "making", False)
    _local.making = True
    try:
        return _c.socket(s.family, s.type, s.proto, fileno=number)
    finally:
        _local.making = was

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


def _no_socket() -> _c.socket:
    """A closed socket object: what a Readiness without its pair holds in
    place of each end (fileno() -1; every call on it fails with EBADF, which
    the pair's code takes as "nothing to do"). Made by socketpair(), which
    raises no audit event."""
    a, b = _c.socketpair(_c.AF_UNIX, _c.SOCK_STREAM | _c.SOCK_CLOEXEC)
    a.close()
    b.close()
    return a


_NO_SOCKET = _no_socket()


class Readiness:
    __slots__ = ("_watched", "_peer", "_tcp", "_poll", "readable", "writable", "urgent",
                 "identity", "_carrier", "want_readable", "want_writable", "want_urgent",
                 "_watchers", "_stream", "closed")

    def __init__(self, stream: bool = False, paired: bool = True) -> None:
        """``stream``: for a TCP socket (urgent data possible): a kernel TCP
        pair when exact urgent readiness is on and 127.0.0.1 takes one;
        else (and for UDP) an AF_UNIX pair. ``paired=False``: no pair yet
        (:meth:`make_pair`): the socket's readiness is only known in-process
        (selector.py watches it) and no descriptor shows it."""
        self._stream = stream
        self._tcp = False
        self._watched = self._peer = _NO_SOCKET
        self._poll: select.poll | None = None  # (kernel TCP only: _mask)
        self.readable = False
        self.writable = True
        self.urgent = False
        self.identity = (-1, -1)
        self._carrier: _Carrier | None = None
        if paired:
            self._pair()
        # What the socket last reported (update), whether or not the
        # descriptor shows it yet, and the in-process selectors watching it
        # (selector.py), while which the descriptor is left alone (quiet).
        self.want_readable = False
        self.want_writable = True
        self.want_urgent = False
        self._watchers: tuple[Callable[[Readiness], None], ...] = ()
        # The socket let go of it (close): its descriptor is gone, and an
        # in-process selector passes it over, as epoll drops a descriptor
        # closed while registered.
        self.closed = False

    def _pair(self) -> None:
        pair = _tcp_pair() if self._stream and _exact_urgent and not _tcp_refused else None
        self._tcp = pair is not None
        if pair is None:
            pair = _unix_pair()
        a, b = pair
        flags = fcntl.fcntl(a.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(a.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
        self._watched = a
        self._peer = _out_of_the_way(b)
        if self._tcp:
            self._poll = select.poll()
            self._poll.register(a.fileno(), select.POLLIN | select.POLLPRI | select.POLLOUT)
        self.readable = False
        self.writable = True
        self.urgent = False
        st = os.fstat(a.fileno())
        self.identity = (st.st_dev, st.st_ino)

    @property
    def paired(self) -> bool:
        """Whether the descriptor exists (a Readiness made with paired=False
        has none until :meth:`make_pair`)."""
        return self._watched is not _NO_SOCKET or self._peer is not _NO_SOCKET

    def make_pair(self) -> None:
        """Make the descriptor of a Readiness made without one; it shows what
        the socket last reported unless an in-process selector watches it."""
        if self.paired:
            return
        self._pair()
        if not self._watchers:
            self._apply(self.want_readable, self.want_writable, self.want_urgent)

    def fileno(self) -> int:
        """The watched end's number this object holds; -1 once it holds none
        (the descriptor is the program's: see :meth:`release` and :meth:`carry`),
        or before it has one (paired=False)."""
        return self._watched.fileno()

    @property
    def carrying(self) -> bool:
        """Whether the pair carries the socket's data (:meth:`carry`)."""
        return self._carrier is not None

    def update(self, readable: bool, writable: bool, urgent: bool = False) -> None:
        """Make the descriptor report these states (syscalls only on change).
        While the pair carries data, tell the relay instead (the states are
        then the pair's own)."""
        carrier = self._carrier
        if carrier is not None:
            if carrier.wait_tcp and not carrier.poked and (readable or writable):
                carrier.poke()
            return
        watchers = self._watchers
        if watchers:  # in-process selectors learn it; the descriptor stays quiet
            # Only a state that comes on is told: a selector looks at a
            # socket it found ready again at its next select, and drops it
            # then if it is no longer ready (level-triggered).
            rise = (readable and not self.want_readable) or (
                writable and not self.want_writable) or (urgent and not self.want_urgent)
            self.want_readable = readable
            self.want_writable = writable
            self.want_urgent = urgent
            if rise:
                for changed in watchers:
                    changed(self)
            return
        self.want_readable = readable
        self.want_writable = writable
        self.want_urgent = urgent
        if self._watched is not _NO_SOCKET:  # (no descriptor yet: make_pair shows it)
            self._apply(readable, writable, urgent)

    def watch(self, changed: Callable[[Readiness], None]) -> None:
        """An in-process selector (selector.py) watches this socket: every
        update that turns a state on (readable, writable or urgent) calls
        ``changed(self)``, and the descriptor is no longer kept
        in step until the last watcher lets go (no syscall per change)."""
        self._watchers = (*self._watchers, changed)

    def unwatch(self, changed: Callable[[Readiness], None]) -> None:
        """The selector lets go; the last one brings the descriptor up to date."""
        watchers = self._watchers
        if len(watchers) == 1 and watchers[0] == changed:  # (the usual: one loop)
            self._watchers = ()
        else:
            self._watchers = tuple(w for w in watchers if w != changed)
        if not self._watchers and self._carrier is None and self._watched.fileno() >= 0:
            self._apply(self.want_readable, self.want_writable, self.want_urgent)

    def _apply(self, readable: bool, writable: bool, urgent: bool) -> None:
        """Make the descriptor show these states (syscalls only on change)."""
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
                except OSError:
                    pass  # full (or shut by a relay that ran: writes fail at once)
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
            try:
                self._peer.send(b"r", _DONTWAIT)
            except OSError:
                pass  # shut by a relay that ran (carry): the end shows EOF, readable
            self._landed(select.POLLIN)
        if urgent and not had_u:
            # TCP: a hole at the head of the stream is stepped over
            # (tcp_check_urg); "r", if any, stays in front of the mark.
            try:
                self._peer.send(b"!", _OOB | _DONTWAIT)
            except OSError:
                pass
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
        """Close what this object holds: the peer, and the watched end unless
        it was handed to the program (release, carry)."""
        self.closed = True
        carrier, self._carrier = self._carrier, None
        if carrier is not None:
            carrier.stop()
        self._watched.close()
        self._peer.close()

    def move_to(self, number: int) -> None:
        """Make ``number`` (a number the socket reserved when it was made:
        socket.py, _reserve) the watched end's, closing the one the pair was
        made with, so the socket's descriptor number is the one a kernel
        socket would have had. The number keeps its close-on-exec flag; it is
        the same open file as before (``identity``, O_APPEND, the flags)."""
        w = self._watched
        old = w.fileno()
        os.dup2(old, number, os.get_inheritable(number))
        w.detach()
        self._watched = _own(w, number)
        os.close(old)
        if self._poll is not None:
            self._poll.unregister(old)
            self._poll.register(number, select.POLLIN | select.POLLPRI | select.POLLOUT)

    # -- the descriptor handed to the program (socket.detach) ---------------------------
    def release(self, number: int) -> None:
        """detach() handed ``number`` (a descriptor of the watched end) to the
        program, which may close it (and the number be reused) whenever it
        likes: if it is the number this object holds, hold a private
        duplicate instead, so that this object never closes the program's
        number. The descriptor stays readiness only."""
        w = self._watched
        if w.fileno() == number:
            mine = os.dup(number)
            w.detach()
            self._watched = _c.socket(fileno=mine)

    def carry(self, sock: Any, keep_watched: bool, on_hangup: Callable[[], None]) -> bool:
        """Make the pair carry the stream socket ``sock``'s data (detach(),
        socket.py): what the program writes to the watched end is sent on
        ``sock``, what ``sock`` receives is written to the peer for the
        program to read, EOF and errors cross both ways, and when the last
        descriptor of the watched end is closed (the peer hangs up) the
        relay flushes what the program wrote and calls ``on_hangup`` (stack
        lock held), which closes the socket as close() would. Readiness is
        then the pair's own, real data. ``keep_watched``: the number this
        object holds on the watched end is some object's or the program's
        (leave it open); else it is closed now, so that the program's
        descriptors are the only ones left. False (nothing changes) for a
        kernel TCP pair (exact urgent readiness): that descriptor stays
        readiness only. Stack lock held."""
        if self._tcp or self._carrier is not None:
            return self._carrier is not None
        w = self._watched
        # What stood for readiness goes: fillers the watched end sent, and
        # the "r" and urgent "!" sent to it.
        self._plain()
        self.writable = False  # (stream.py's check before a sync: never true now)
        if w.fileno() >= 0:  # (none left: see outlived; the flags stay as they were)
            flags = fcntl.fcntl(w.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(w.fileno(), fcntl.F_SETFL, flags & ~os.O_APPEND)  # sendfile/splice work
            w.setsockopt(_c.SOL_SOCKET, _c.SO_SNDBUF, _CARRY_BUF)
        if keep_watched:
            w.detach()
        else:
            w.close()
        self._carrier = _Carrier(self, sock, on_hangup)
        self._carrier.start()
        return True

    def _plain(self) -> None:
        """Take back every byte that stands for readiness (AF_UNIX pair)."""
        w = self._watched
        _drain(self._peer)
        if self.urgent:
            try:
                w.recv(1, _OOB | _DONTWAIT)
            except OSError:
                pass
        _drain(w)
        self.readable = self.urgent = False
        self.writable = True

    def outlived(self) -> bool:
        """The socket's last object closed (stack lock held): close the
        number this object holds and say whether descriptors of the watched
        end are still open elsewhere (os.dup of fileno(), one passed to
        another process, a child's copy), which hold the socket as a kernel
        file does: the caller then has the pair carry the socket's data
        (carry) until they are closed. Not for a kernel TCP pair."""
        if self._tcp or self._carrier is not None or not self.paired:
            return False
        self._plain()
        self._watched.close()
        return not _hung_up(self._peer)

    @property
    def kernel_pair(self) -> bool:
        """A kernel TCP pair (exact urgent readiness), which never carries data."""
        return self._tcp

    @property
    def carrier_socket(self) -> Any:
        """The object the relay reads and writes through, while carrying."""
        carrier = self._carrier
        return carrier.sock if carrier is not None else None

    def uncarry(self, number: int) -> tuple[bytes, bytes]:
        """Stop carrying data (socket.socket(fileno=...) takes the socket
        back; stack lock held) and return what sat in the pair: the bytes
        relayed to the watched end that the program has not read (read back
        through ``number``, a descriptor of the watched end, which this
        object duplicates to hold again), and the bytes the program wrote
        that the relay has not sent. The pair reports readiness again."""
        carrier, self._carrier = self._carrier, None
        if carrier is None:
            return b"", b""
        carrier.stop()
        w = _c.socket(fileno=os.dup(number))
        self._watched = w
        unread = _read_all(w)
        unsent = _read_all(self._peer)
        flags = fcntl.fcntl(w.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(w.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
        w.setsockopt(_c.SOL_SOCKET, _c.SO_SNDBUF, 1)
        self.readable = self.urgent = False
        self.writable = True
        return unread, unsent


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
    except OSError:
        pass


def _read_all(sock: _c.socket) -> bytes:
    """Every byte ``sock`` has to read now (to EOF or EAGAIN)."""
    parts = []
    try:
        while True:
            data = sock.recv(_CHUNK, _DONTWAIT)
            if not data:
                break
            parts.append(data)
    except OSError:
        pass
    return b"".join(parts)



# -- data-carrying descriptors (detach) --------------------------------------------------
# A detached stream socket's descriptor is what multiprocessing.connection and
# others read and write with os.read/os.write: its pair carries the socket's
# data, moved by one relay thread for the whole process (an epoll over the
# peers of every carrying pair, and a wake-up eventfd the stack pokes when a
# socket a relay waits on changes). Each step is done under the socket's
# stack lock and never blocks, and moves only what the other side takes at
# once (a peek, a non-blocking send, then as many bytes consumed as were
# sent), so nothing is ever held in between: the pair's buffers and the
# socket's queues are the only places bytes wait (back-pressure both ways),
# and socket.socket(fileno=...) can stop the relay at any moment and take
# back what sits in the pair (uncarry).
_CHUNK = 65536
_CARRY_BUF = 106496  # SO_SNDBUF of the program's end (Linux doubles it: its default)
_STEP_CHUNKS = 16  # chunks a step moves each way before another pair's turn
_WAIT_TCP, _WAIT_PEER, _DONE, _HANGUP = 0, 1, 2, 3


class _Carrier:
    """The relay of one pair (Readiness.carry)."""

    __slots__ = ("efd", "sock", "peer", "pfd", "on_hangup", "in_done", "out_done", "wait_tcp",
                 "poked", "stopped", "mask")

    def __init__(self, efd: Readiness, sock: Any, on_hangup: Callable[[], None]) -> None:
        self.efd = efd
        self.sock = sock
        self.peer = efd._peer
        self.pfd = efd._peer.fileno()
        self.on_hangup = on_hangup
        self.in_done = False  # nothing more from the socket to the program (EOF given)
        self.out_done = False  # nothing more from the program to the socket
        self.wait_tcp = False  # a step waits for the socket to change
        self.poked = False
        self.stopped = False
        self.mask = -1

    def start(self) -> None:
        _relay_add(self)
        self.poke()

    def poke(self) -> None:
        """The socket changed (stack lock held): the relay steps this pair."""
        self.poked = True
        relay = _relay
        if relay is not None and not self.stopped:
            relay.poke(self)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        relay = _relay
        if relay is not None:
            relay.remove(self)

    # -- one step (the relay thread) -------------------------------------------------
    def step(self) -> None:
        sock = self.sock
        with sock._stack.locked:
            if self.stopped:
                return
            self.poked = False
            self.wait_tcp = False
            mask = 0
            if not self.in_done:
                state = self._to_program()
                if state == _WAIT_PEER:
                    mask |= select.EPOLLOUT
                elif state == _WAIT_TCP:
                    self.wait_tcp = True
            state = self._to_socket() if not self.out_done else \
                _HANGUP if _hung_up(self.peer) else _DONE
            if state == _HANGUP:
                self.stop()
                self.on_hangup()
                return
            if state == _WAIT_PEER:
                mask |= select.EPOLLIN
            elif state == _WAIT_TCP:
                self.wait_tcp = True
            if mask != self.mask:
                self.mask = mask
                relay = _relay
                if relay is not None:
                    relay.watch(self, mask)

    def _to_program(self) -> int:
        sock, peer = self.sock, self.peer
        for _ in range(_STEP_CHUNKS):
            try:
                data = sock.recv(_CHUNK, _c.MSG_PEEK | _DONTWAIT)
            except BlockingIOError:
                return _WAIT_TCP
            except OSError:
                data = b""  # reset, timed out: the program reads EOF
            if not data:
                self.in_done = True
                try:
                    peer.shutdown(_c.SHUT_WR)
                except OSError:
                    pass
                return _DONE
            try:
                n = peer.send(data, _DONTWAIT)
            except BlockingIOError:
                return _WAIT_PEER
            except OSError:
                self.in_done = True  # the program shut its reading side, or hung up
                return _DONE
            sock.recv(n, _DONTWAIT)  # exactly what the program now has
        return _WAIT_PEER  # more to move: EPOLLOUT is ready at once if there is room

    def _to_socket(self) -> int:
        sock, peer = self.sock, self.peer
        for _ in range(_STEP_CHUNKS):
            try:
                data = peer.recv(_CHUNK, _c.MSG_PEEK | _DONTWAIT)
            except BlockingIOError:
                return _WAIT_PEER
            except OSError:
                data = b""
            if not data:
                # EOF: the program shut its writing side, or every descriptor
                # of its end is closed (a hang-up: close the socket).
                self.out_done = True
                if _hung_up(peer):
                    return _HANGUP
                try:
                    sock.shutdown(_c.SHUT_WR)
                except OSError:
                    pass
                return _DONE
            try:
                n = sock.send(data, _DONTWAIT)
            except BlockingIOError:
                return _WAIT_TCP
            except OSError:
                # The connection is gone (reset): the program's writes fail
                # from now on (EPIPE), as they would on the socket.
                self.out_done = True
                try:
                    peer.shutdown(_c.SHUT_RD)
                except OSError:
                    pass
                _drain(peer)
                return _DONE
            peer.recv(n, _DONTWAIT)
        return _WAIT_PEER  # more to move: EPOLLIN is ready at once


def _hung_up(peer: _c.socket) -> bool:
    p = select.poll()
    p.register(peer.fileno(), 0)
    got = p.poll(0)
    return bool(got and got[0][1] & select.POLLHUP)


class _Relay:
    """The thread that steps every carrying pair of this process."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ep.register(self.wake, select.EPOLLIN)
        self.carriers: dict[int, _Carrier] = {}
        self.pending: deque[_Carrier] = deque()
        self.lock = threading.Lock()
        self.pid = os.getpid()
        # Not a threading.Thread: the program's thread checks (regrtest's
        # dangling threads, threading.enumerate) see only its own threads.
        _thread.start_new_thread(self._run, ())

    def add(self, c: _Carrier) -> None:
        with self.lock:
            self.carriers[c.pfd] = c
            self.ep.register(c.pfd, 0)
            c.mask = 0

    def watch(self, c: _Carrier, mask: int) -> None:
        with self.lock:
            if self.carriers.get(c.pfd) is c:
                self.ep.modify(c.pfd, mask)

    def remove(self, c: _Carrier) -> None:
        with _relay_lock, self.lock:
            if self.carriers.get(c.pfd) is c:
                del self.carriers[c.pfd]
                try:
                    self.ep.unregister(c.pfd)
                except OSError:
                    pass
                if not self.carriers and _relay is self:
                    # The thread may wait with no time limit: let it see
                    # that it is idle (under _relay_lock: it cannot have
                    # retired and closed the eventfd meanwhile).
                    os.eventfd_write(self.wake, 1)

    def poke(self, c: _Carrier) -> None:
        self.pending.append(c)
        try:
            os.eventfd_write(self.wake, 1)
        except OSError:
            pass

    def _run(self) -> None:
        wake = self.wake
        while True:
            try:
                events = self.ep.poll(None if self.carriers else _IDLE)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return  # closed (a child of a fork)
            if not events and not self.pending and self._retire():
                return
            ready: dict[int, _Carrier] = {}
            for fd, _ev in events:
                if fd == wake:
                    try:
                        os.eventfd_read(wake)
                    except OSError:
                        pass
                    continue
                c = self.carriers.get(fd)
                if c is not None:
                    ready[id(c)] = c
            pending = self.pending
            while pending:
                c = pending.popleft()
                ready[id(c)] = c
            for c in ready.values():
                try:
                    c.step()
                except Exception:  # noqa: BLE001 - one pair's failure must not stop the others
                    c.stop()


    def _retire(self) -> bool:
        """Idle with no pair to carry: the thread ends (a program's check
        that its threads are gone, regrtest's, then holds), unless a pair
        came meanwhile."""
        global _relay
        with _relay_lock:
            if self.carriers or self.pending:
                return False
            if _relay is self:
                _relay = None
            self.ep.close()
            os.close(self.wake)
            return True


_IDLE = 0.5  # seconds the relay thread outlives its last pair (connections come in bursts)
_relay: _Relay | None = None
_relay_lock = threading.Lock()


def _relay_add(c: _Carrier) -> None:
    """Carry ``c`` on this process's relay thread, started if none runs."""
    global _relay
    with _relay_lock:
        relay = _relay
        if relay is None or relay.pid != os.getpid():
            relay = _relay = _Relay()
        relay.add(c)


def _forget_relay() -> None:
    """In the child of a fork: the relay thread stayed in the parent, whose
    pairs it keeps carrying; this process's copies of its descriptors go."""
    global _relay
    relay, _relay = _relay, None
    if relay is not None:
        relay.ep.close()
        try:
            os.close(relay.wake)
        except OSError:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_relay)
