"""``os.sendfile`` for loopstack descriptors, installed by ``patch()``.

A loopstack socket's ``fileno()`` is a readiness descriptor (readiness.py)
that carries no data, so the real sendfile(2) cannot reach the stack;
``socket.socket.sendfile`` and asyncio's ``loop.sendfile``/``sock_sendfile``
call ``os.sendfile(sock.fileno(), file.fileno(), offset, count)`` first.
:func:`sendfile` recognises a descriptor of a loopstack TCP socket
(``socket.find_descriptor``) and does what Linux's ``do_sendfile`` does,
reading the file itself and queueing through the socket; any other
descriptor goes to the real ``os.sendfile``.

Linux's answers, in its order: EBADF for an ``in_fd`` that is not open for
reading, ESPIPE for an offset on a file without pread, EINVAL for a
negative offset or count, EINVAL for an input that is neither a regular
file nor a block device (``splice_direct_to_actor``); 0 for a count of 0
or an offset at or past the end, without looking at the socket. The
socket's side is ``sock_sendmsg`` on the descriptor's own O_NONBLOCK (not
the object's timeout): blocking queues everything (SO_SNDTIMEO bounds the
wait), non-blocking queues what fits, EAGAIN when nothing does; an error
after some bytes went returns their count. With ``offset=None`` the file's
position moves by what was sent, else it stays. At most MAX_RW_COUNT bytes
per call, read in 64 KiB pieces (the pipe splice uses).
"""

from __future__ import annotations

import errno
import fcntl
import io
import operator
import os
import selectors
import socket as _socket
import stat
from typing import Any

from .socket import find_descriptor

_REAL = getattr(os, "sendfile", None)
_MAX_RW_COUNT = 0x7FFFF000  # INT_MAX & PAGE_MASK
_PIECE = 65536


def _arguments(out_fd: Any, in_fd: Any, offset: Any, count: Any) -> tuple[Any, Any, Any, Any]:
    return out_fd, in_fd, offset, count


def sendfile(*args: Any, **kwargs: Any) -> int:
    """os.sendfile(out_fd, in_fd, offset, count), loopstack-aware."""
    assert _REAL is not None
    try:
        out_fd, in_fd, offset, count = _arguments(*args, **kwargs)
        out = operator.index(out_fd)
        inp = operator.index(in_fd)
        pos = None if offset is None else operator.index(offset)
        n = operator.index(count)
    except TypeError:
        return int(_REAL(*args, **kwargs))  # its own TypeError
    from .stream import StreamSocket

    sock = find_descriptor(out) if out >= 0 else None
    if not isinstance(sock, StreamSocket):
        return int(_REAL(*args, **kwargs))
    return _send(sock, out, inp, pos, n)


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _send(sock: Any, out: int, inp: int, offset: int | None, count: int) -> int:
    st = os.fstat(inp)  # EBADF
    if fcntl.fcntl(inp, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_RDONLY, os.O_RDWR):
        raise _error(errno.EBADF)
    regular = stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)
    if offset is not None and not regular and (stat.S_ISFIFO(st.st_mode)
                                               or stat.S_ISSOCK(st.st_mode)):
        raise _error(errno.ESPIPE)  # no pread on a pipe or a socket
    pos = os.lseek(inp, 0, os.SEEK_CUR) if offset is None and regular else offset
    if (pos is not None and pos < 0) or count < 0:
        raise _error(errno.EINVAL)
    if not regular:
        raise _error(errno.EINVAL)
    assert pos is not None
    count = min(count, _MAX_RW_COUNT)
    block = not fcntl.fcntl(out, fcntl.F_GETFL) & os.O_NONBLOCK
    sent = 0
    try:
        while sent < count:
            piece = os.pread(inp, min(_PIECE, count - sent), pos + sent)
            if not piece:
                break  # the end of the file
            try:
                done = _queue(sock, piece, block)
            except OSError:
                if sent:
                    break  # what went counts; the error is the next call's
                raise
            sent += done
            if done < len(piece):
                break
    finally:
        if offset is None and sent:
            os.lseek(inp, pos + sent, os.SEEK_SET)
    return sent


def _queue(sock: Any, data: bytes, block: bool) -> int:
    # What find_descriptor gives is the socket's hidden core, which counts as
    # closed; the call goes through an object of its own for its length
    # (as sendfile(2) holds a reference to the file while it runs).
    with sock._stack.locked:
        user = sock._twin()
    try:
        with sock._stack.locked:
            return int(user._send_once(memoryview(data), block))
    finally:
        user.close()


def use_sendfile(sock: Any, file: Any, offset: int = 0, count: int | None = None) -> int:
    """``socket.socket._sendfile_use_sendfile`` (CPython's Lib/socket.py) for
    a loopstack socket object: the same checks, waits and answers, with
    :func:`sendfile` for ``os.sendfile`` (patched or not). Gives up, for
    ``send()``, with ``socket._GiveupOnSendfile`` where CPython's does."""
    giveup = _socket._GiveupOnSendfile  # type: ignore[attr-defined]
    sock._check_sendfile_params(file, offset, count)
    sockno = sock.fileno()
    try:
        fileno = file.fileno()
    except (AttributeError, io.UnsupportedOperation) as err:
        raise giveup(err) from None  # not a regular file
    try:
        fsize = os.fstat(fileno).st_size
    except OSError as err:
        raise giveup(err) from None
    if not fsize:
        return 0  # an empty file
    blocksize = min(count or fsize, 2 ** 30)
    timeout = sock.gettimeout()
    if timeout == 0:
        raise ValueError("non-blocking sockets are not supported")
    selector = selectors.PollSelector()
    selector.register(sockno, selectors.EVENT_WRITE)
    total = 0
    try:
        while True:
            if timeout and not selector.select(timeout):
                raise TimeoutError("timed out")
            if count:
                blocksize = count - total
                if blocksize <= 0:
                    break
            try:
                sent = sendfile(sockno, fileno, offset, blocksize)
            except BlockingIOError:
                if not timeout:
                    selector.select()  # until writable
                continue
            except OSError as err:
                if total == 0:
                    raise giveup(err) from None  # e.g. not a regular file: send() then
                raise err from None
            if sent == 0:
                break  # the end of the file
            offset += sent
            total += sent
        return total
    finally:
        selector.close()
        if total > 0 and hasattr(file, "seek"):
            file.seek(offset)


def install() -> None:
    if _REAL is not None:
        os.sendfile = sendfile


def uninstall() -> None:
    if _REAL is not None:
        os.sendfile = _REAL


__all__ = ["sendfile", "use_sendfile", "install", "uninstall"]
