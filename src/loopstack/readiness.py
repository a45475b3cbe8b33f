"""The descriptor behind ``fileno()``: what select, poll, epoll, selectors
and asyncio watch for a loopstack socket.

It is one end of an AF_UNIX socket pair, because that is the only kind of
descriptor whose read and write readiness can be set independently from user
space: a byte sent from the other end makes it readable; filling its own
(tiny) send buffer makes it unwritable, and draining the other end makes it
writable again. A socket that is connecting is thus neither readable nor
writable, exactly as a kernel socket reports it. Nobody pays for this until
``fileno()`` is called.

The descriptor carries no data. Code that hands it to the OS instead of
calling the socket's methods (``os.sendfile``, which ``socket.sendfile`` and
asyncio's ``loop.sendfile`` try first) must fail cleanly and fall back to
``send()``, not have its data swallowed: the watched end is opened with
O_APPEND, which makes Linux's sendfile and splice answer EINVAL
(``do_splice_direct``) while leaving ``send`` and ``recv`` alone.

The descriptor's file status flags are the socket's to show: O_NONBLOCK is
set exactly when the socket object is non-blocking or has a timeout, as
CPython sets it on a kernel socket (``fcntl(fd, F_GETFL)`` tells), so this
module reads and writes the pair with MSG_DONTWAIT, whatever the flag.
Descriptors dup'ed from the watched end (``socket.dup``, ``socket.fromfd``)
are the same open file: ``identity`` (its device and inode) recognises them.
"""

from __future__ import annotations

import fcntl
import os
import socket as _socket

_DONTWAIT = _socket.MSG_DONTWAIT


class Readiness:
    __slots__ = ("_watched", "_peer", "readable", "writable", "identity")

    def __init__(self) -> None:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        a.setblocking(False)
        b.setblocking(False)
        a.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 1)  # a few KB fill it
        b.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1)
        flags = fcntl.fcntl(a.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(a.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
        self._watched = a
        self._peer = b
        self.readable = False
        self.writable = True
        st = os.fstat(a.fileno())
        self.identity = (st.st_dev, st.st_ino)

    def fileno(self) -> int:
        return self._watched.fileno()

    def update(self, readable: bool, writable: bool) -> None:
        """Make the descriptor report these states (a syscall only on change)."""
        if readable != self.readable:
            if readable:
                self._peer.send(b"r", _DONTWAIT)
            else:
                _drain(self._watched)
            self.readable = readable
        if writable != self.writable:
            if writable:
                _drain(self._peer)
            else:
                try:
                    while True:
                        self._watched.send(bytes(4096), _DONTWAIT)
                except BlockingIOError:
                    pass
            self.writable = writable

    def close(self) -> None:
        self._watched.close()
        self._peer.close()


def set_nonblocking(fd: int, nonblocking: bool) -> None:
    """O_NONBLOCK on ``fd`` (one of this module's descriptors) as a socket
    object's mode says: set for a timeout or non-blocking, clear when
    blocking (CPython's internal_setblocking)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | os.O_NONBLOCK if nonblocking else flags & ~os.O_NONBLOCK
    if wanted != flags:
        fcntl.fcntl(fd, fcntl.F_SETFL, wanted)


def _drain(sock: _socket.socket) -> None:
    try:
        while sock.recv(65536, _DONTWAIT):
            pass
    except BlockingIOError:
        pass
