"""The channel between a stack's owner and the processes attached to it.

An AF_UNIX stream connection carries frames: a 4-byte little-endian length,
then a pickle of plain values only (None, bool, int, float, str, bytes,
bytearray, tuple, list, dict). The unpickler refuses every class, so a peer
cannot make the owner run code by sending a crafted pickle; anything that
does not decode, or a frame longer than ``MAX_FRAME``, is a broken peer and
its connection is dropped. Descriptors (the readiness descriptor behind a
socket's ``fileno()``, a new process's channel) travel as SCM_RIGHTS on the
first byte of a frame and are received close-on-exec.

A connection opens with a fixed-size hello: ``MAGIC``, the owner's secret
token, a kind byte and, for a call connection, the holder it works for. The
owner reads exactly that many bytes, with a deadline, before it trusts the
peer with anything.
"""

from __future__ import annotations

import array
import errno
import io
import os
import pickle
import socket as _socket
import struct
from typing import Any

MAGIC = b"LSTK\x01"
TOKEN_LEN = 32
KEY_LEN = 16
# A hello: magic, token, kind (b"H": a new holder process, b"C": a call
# connection), holder id and holder key (zero for b"H").
HELLO = struct.Struct(f"<{len(MAGIC)}s{TOKEN_LEN}scQ{KEY_LEN}s")
MAX_FRAME = 64 << 20
MAX_FDS = 4
_LEN = struct.Struct("<I")
_FD_SPACE = _socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_RECV_CHUNK = 262144
_CLOEXEC = getattr(_socket, "MSG_CMSG_CLOEXEC", 0x40000000)


class ChannelClosed(Exception):
    """The other end went away (EOF, or the connection broke)."""


class ChannelError(Exception):
    """The other end sent something that is not a frame of plain values."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused: {module}.{name}")


def encode(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=5)
    return _LEN.pack(len(body)) + body


def decode(body: bytes | bytearray | memoryview) -> Any:
    try:
        return _PlainUnpickler(io.BytesIO(body)).load()
    except Exception as e:  # any decoding failure means a broken peer
        raise ChannelError(f"undecodable frame: {e}") from None


class Channel:
    """One end of a channel connection: whole frames in and out.

    Not thread-safe: one thread uses a channel at a time (a call connection
    belongs to one thread; the owner serves it from one worker).
    """

    __slots__ = ("sock", "_buf", "_fds")

    def __init__(self, sock: _socket.socket) -> None:
        # Blocking, whatever socket.setdefaulttimeout() the program set (a
        # new socket object takes it: a call that waits longer than the
        # program's default timeout is not the owner gone).
        sock.settimeout(None)
        self.sock = sock
        self._buf = bytearray()
        self._fds: list[int] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, value: Any, fds: tuple[int, ...] = ()) -> None:
        data = encode(value)
        try:
            if fds:
                sent = self.sock.sendmsg(
                    [data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])
                if sent < len(data):
                    self.sock.sendall(memoryview(data)[sent:])
            else:
                self.sock.sendall(data)
        except OSError as e:
            raise ChannelClosed(str(e)) from None

    def _fill(self) -> None:
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(_RECV_CHUNK, _FD_SPACE, _CLOEXEC)
        except OSError as e:
            raise ChannelClosed(str(e)) from None
        for level, kind, raw in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
                self._fds.extend(fds)
        if len(self._fds) > MAX_FDS:
            # A frame carries at most MAX_FDS descriptors: a peer sending
            # more (a few with every byte of a long frame) would otherwise
            # fill this process's descriptor table before the frame ends.
            self.drop_fds()
            raise ChannelError("too many descriptors")
        if not data:
            raise ChannelClosed("end of stream")
        self._buf += data

    def recv(self) -> tuple[Any, list[int]]:
        """The next frame's value, with the descriptors that came with it."""
        buf = self._buf
        while len(buf) < 4:
            self._fill()
        (n,) = _LEN.unpack_from(buf)
        if n > MAX_FRAME:
            self.drop_fds()
            raise ChannelError(f"frame of {n} bytes is over the limit")
        while len(buf) < 4 + n:
            self._fill()
        body = bytes(buf[4 : 4 + n])
        del buf[: 4 + n]
        fds, self._fds = self._fds, []
        try:
            return decode(body), fds
        except ChannelError:
            for fd in fds:
                os.close(fd)
            raise

    def drop_fds(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def close(self) -> None:
        self.drop_fds()
        try:
            self.sock.close()
        except OSError:
            pass

    def shutdown(self) -> None:
        """Wake a thread blocked reading this channel (it sees EOF)."""
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass


def read_exact(sock: _socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes (the socket's timeout bounds each read)."""
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ChannelClosed("end of stream during the hello")
        out += chunk
    return bytes(out)


# -- errors across the channel ------------------------------------------------
# An exception travels as (kind, args) with plain args; the receiving side
# rebuilds it. OSError(errno, text) becomes the same subclass the kernel's
# error would (ConnectionResetError, BlockingIOError, ...).
_KINDS: dict[str, type[BaseException]] = {
    "OSError": OSError,
    "TimeoutError": TimeoutError,
    "gaierror": _socket.gaierror,
    "herror": _socket.herror,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "OverflowError": OverflowError,
    "KeyError": KeyError,
    "AttributeError": AttributeError,
    "NotImplementedError": NotImplementedError,
}


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return True
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return False


def pack_error(exc: BaseException) -> tuple[str, tuple[Any, ...]]:
    if isinstance(exc, _socket.gaierror):
        kind = "gaierror"
    elif isinstance(exc, _socket.herror):
        kind = "herror"
    elif isinstance(exc, TimeoutError) and exc.errno is None:
        kind = "TimeoutError"
    elif isinstance(exc, OSError):
        kind = "OSError"
        if exc.errno is not None:
            return kind, (exc.errno, exc.strerror or os.strerror(exc.errno))
    else:
        kind = next((k for k, cls in _KINDS.items() if type(exc) is cls), "RuntimeError")
    args = exc.args if _plain(exc.args) else (str(exc),)
    return kind, tuple(args)


def unpack_error(kind: Any, args: Any) -> BaseException:
    if not isinstance(args, tuple):
        args = (str(args),)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return RuntimeError(*args)
    try:
        return cls(*args)
    except Exception:
        return RuntimeError(*args)


def owner_gone(pid: int) -> OSError:
    return OSError(errno.ENETDOWN,
                   f"loopstack: the process that owns this stack (pid {pid}) has exited "
                   "or closed the stack; its sockets are gone")


__all__ = ["Channel", "ChannelClosed", "ChannelError", "HELLO", "KEY_LEN", "MAGIC",
           "MAX_FRAME", "TOKEN_LEN", "decode", "encode", "owner_gone", "pack_error",
           "read_exact", "unpack_error"]
