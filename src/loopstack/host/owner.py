"""The owner's side of a shared stack: the process that created a stack
serves it to the processes it starts, as a kernel serves its sockets.

Each attached process is a *holder*: it holds some of the stack's sockets,
the way a process holds descriptors. A holder has one liveness connection
(EOF on it means the process is gone: what it held is released, as the
kernel closes a dead process's files) and one *call connection* per thread
that uses the stack, served here by one worker thread each, so a child
thread blocked in ``recv`` never stops another child thread's ``send``. The
worker runs the call on the real socket object, with the timeout the
child's socket object has, and sends back the result.

A socket held by several processes is one socket: a ``Shared`` record
counts the other holders, and ``close()`` in one of them only drops that
holder's reference (socket.py ``_hand_over`` for the owner's own objects).
The last holder's close is the real one: FIN, or RST when unread data was
left (RFC 9293 3.10.4, RFC 2525 2.17).

Who may attach: the listening socket lives in a directory only the owner's
user can enter (0700, made by ``tempfile.mkdtemp``); a peer must have the
owner's uid (SO_PEERCRED) and know the owner's random token, which only the
owner's descendants are told (inherited memory or environment). A process
forked from the owner does not even connect: its liveness connection is one
end of a socket pair made before the fork.
"""

from __future__ import annotations

import errno
import hmac
import os
import selectors
import shutil
import socket as _socket
import struct
import tempfile
import threading
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from .channel import (
    HELLO,
    KEY_LEN,
    MAGIC,
    TOKEN_LEN,
    Channel,
    ChannelClosed,
    ChannelError,
    owner_gone,
    pack_error,
    read_exact,
)

if TYPE_CHECKING:
    from ..socket import Socket
    from ..stack import Stack

HELLO_DEADLINE = 5.0  # seconds a new connection has to say who it is
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Shared:
    """A socket some attached process holds. ``refs`` counts the attached
    holders; ``local`` says whether the owner's own program still holds it."""

    __slots__ = ("handle", "sock", "refs", "local")

    def __init__(self, handle: int, sock: Socket, local: bool) -> None:
        self.handle = handle
        self.sock = sock
        self.refs = 0
        self.local = local


class Holder:
    """An attached process (or the process a fork is about to make)."""

    __slots__ = ("hid", "key", "pid", "handles", "liveness", "workers", "alive")

    def __init__(self, hid: int, pid: int) -> None:
        self.hid = hid
        self.key = os.urandom(KEY_LEN)
        self.pid = pid
        self.handles: set[int] = set()
        self.liveness: Channel | None = None
        self.workers: dict[int, Channel] = {}  # thread ident -> its call connection
        self.alive = True


# Socket methods an attached process may call, by name. Anything else is a
# broken peer. (The rest of the socket API is local to the proxy: timeouts,
# makefile, sendfile through send.)
_SOCKET_CALLS = frozenset({
    "bind", "connect", "connect_ex", "listen", "send", "sendall", "sendto", "sendmsg",
    "recv", "recvfrom", "recvmsg", "shutdown", "getsockname", "getpeername",
    "setsockopt", "getsockopt", "tcp_info",
})
_SOCKET_SPECIAL = frozenset({"close", "accept", "fileno", "recv_into", "recvfrom_into",
                             "recvmsg_into"})
_STACK_CALLS = frozenset({
    "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
    "sockets", "stats", "routes",
})


def plain(value: Any) -> Any:
    """``value`` with enums turned into ints, so it pickles as plain values."""
    if isinstance(value, IntEnum):
        return int(value)
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


class AttachServer:
    """Serves one stack to attached processes (see the module's comment)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.pid = os.getpid()
        self.token = os.urandom(TOKEN_LEN)
        self.dir = tempfile.mkdtemp(prefix="loopstack-")  # mode 0700
        self.path = os.path.join(self.dir, "stack.sock")
        self._listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(128)
        self._holders: dict[int, Holder] = {}
        self._shared: dict[int, Shared] = {}
        self._next_handle = 1
        self._next_holder = 1
        self._closed = False
        self._channels: set[Channel] = set()  # every connection, to close at fork and exit
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = _socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.counters = {"holders": 0, "calls": 0, "refused": 0, "broken": 0}
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="loopstack-attach-accept")
        self._reaper = threading.Thread(target=self._reap_loop, daemon=True,
                                        name="loopstack-attach-reaper")
        self._acceptor.start()
        self._reaper.start()

    @property
    def address(self) -> str:
        """What a process started later needs to attach (LOOPSTACK_ATTACH)."""
        return f"{self.path}|{self.token.hex()}|{self.pid}"

    # -- bookkeeping (stack lock held) -------------------------------------------
    def _new_holder(self, pid: int) -> Holder:
        h = Holder(self._next_holder, pid)
        self._next_holder += 1
        self._holders[h.hid] = h
        self.counters["holders"] += 1
        return h

    def _record(self, sock: Socket, local: bool) -> Shared:
        rec: Shared | None = sock._shared
        if rec is None:
            rec = Shared(self._next_handle, sock, local)
            self._next_handle += 1
            self._shared[rec.handle] = rec
            sock._shared = rec
        return rec

    def _hold(self, holder: Holder, rec: Shared) -> None:
        if rec.handle not in holder.handles:
            holder.handles.add(rec.handle)
            rec.refs += 1

    def _release(self, holder: Holder, handle: int) -> None:
        """``holder`` lets go of ``handle``; the last holder's release closes it."""
        if handle not in holder.handles:
            return
        holder.handles.discard(handle)
        rec = self._shared.get(handle)
        if rec is None:
            return
        rec.refs -= 1
        if rec.refs > 0:
            return
        del self._shared[handle]
        rec.sock._shared = None
        if not rec.local:
            rec.sock.close()

    def export_local(self, holder: Holder) -> dict[int, int]:
        """Give ``holder`` (the child of a fork of the owner) every socket
        the owner's program holds; returns id(socket object) -> handle."""
        out: dict[int, int] = {}
        for sock in list(self.stack._sockets.values()):
            rec = sock._shared
            if sock._closed or sock._private or (
                    rec is not None and not rec.local):
                continue  # closed, a bridge's own, or held only by other processes
            rec = self._record(sock, True)
            self._hold(holder, rec)
            out[id(sock)] = rec.handle
        return out

    def fork_holder(self, parent: Holder | None) -> tuple[Holder, _socket.socket]:
        """A holder for a process about to be forked, holding what its
        parent holds (the owner's program when ``parent`` is None), and the
        child's end of its liveness connection. Stack lock held."""
        mine, theirs = _socket.socketpair()
        holder = self._new_holder(0)
        holder.liveness = Channel(mine)
        self._channels.add(holder.liveness)
        if parent is not None:
            for handle in parent.handles:
                self._hold(holder, self._shared[handle])
        self._watch(holder)
        return holder, theirs

    # -- connections -----------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            threading.Thread(target=self._greet, args=(conn,), daemon=True,
                             name="loopstack-attach-call").start()

    def _greet(self, conn: _socket.socket) -> None:
        """Read the hello (bounded in size and time); admit or drop."""
        try:
            pid, uid, _gid = _UCRED.unpack(
                conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size))
            if uid != os.getuid():
                raise ChannelError("another user")
            conn.settimeout(HELLO_DEADLINE)
            magic, token, kind, hid, key = HELLO.unpack(read_exact(conn, HELLO.size))
            if magic != MAGIC or not hmac.compare_digest(token, self.token):
                raise ChannelError("bad hello")
            conn.settimeout(None)
        except (OSError, ChannelClosed, ChannelError, struct.error):
            self.counters["refused"] += 1
            conn.close()
            return
        ch = Channel(conn)
        with self.stack.locked:
            if self._closed:
                ch.close()
                return
            if kind == b"H":
                holder = self._new_holder(pid)
                holder.liveness = ch
                self._channels.add(ch)
                self._watch(holder)
                reply: Any = (holder.hid, holder.key)
            elif kind == b"C":
                found = self._holders.get(hid)
                if found is None or not found.alive or not hmac.compare_digest(found.key, key):
                    self.counters["refused"] += 1
                    ch.close()
                    return
                holder = found
                holder.workers[threading.get_ident()] = ch
                self._channels.add(ch)
                if not holder.pid:
                    holder.pid = pid
                reply = None
            else:
                self.counters["refused"] += 1
                ch.close()
                return
        try:
            ch.send(reply)
        except ChannelClosed:
            return
        if kind == b"C":
            self._serve(holder, ch)

    def _watch(self, holder: Holder) -> None:
        assert holder.liveness is not None
        self._selector.register(holder.liveness.sock, selectors.EVENT_READ, holder)
        try:
            self._wake_w.send(b"w")
        except OSError:
            pass

    def _reap_loop(self) -> None:
        """Watch every holder's liveness connection: EOF (or anything at
        all: nothing is sent on it) means the process is gone."""
        while not self._closed:
            try:
                events = self._selector.select()
            except (OSError, ValueError):
                return
            for key, _mask in events:
                if key.data is None:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                holder = key.data
                try:
                    self._selector.unregister(key.fileobj)
                except (KeyError, ValueError):
                    pass
                self.holder_gone(holder)

    def holder_gone(self, holder: Holder) -> None:
        """The process ended (or broke its liveness connection): abort its
        blocked calls and release what it held."""
        stack = self.stack
        with stack.locked:
            if not holder.alive:
                return
            holder.alive = False
            self._holders.pop(holder.hid, None)
            stack._aborted.update(holder.workers)
            for sock in list(stack._sockets.values()):
                sock._cond.notify_all()
            for handle in list(holder.handles):
                self._release(holder, handle)
            channels = list(holder.workers.values())
            if holder.liveness is not None:
                channels.append(holder.liveness)
        for ch in channels:
            ch.shutdown()

    # -- calls -------------------------------------------------------------------------
    def _serve(self, holder: Holder, ch: Channel) -> None:
        stack = self.stack
        me = threading.get_ident()
        with stack.locked:
            stack._abortable.add(me)
        try:
            while True:
                try:
                    request, fds = ch.recv()
                except ChannelClosed:
                    return
                except ChannelError:
                    self.counters["broken"] += 1
                    return
                for fd in fds:
                    os.close(fd)  # calls never carry descriptors
                try:
                    value, out_fds, keep = self._call(holder, request)
                    reply: Any = (0, value)
                except ChannelError:
                    self.counters["broken"] += 1
                    return
                except Exception as e:  # the call's own error goes back to the caller
                    if not holder.alive:
                        return  # aborted: the process it was for has gone
                    err = owner_gone(self.pid) if self._closed else e
                    reply, out_fds, keep = (1, *pack_error(err)), (), None
                try:
                    ch.send(reply, out_fds)
                except ChannelClosed:
                    return
                finally:
                    if keep is not None:
                        keep.close()
        finally:
            with stack.locked:
                stack._abortable.discard(me)
                stack._aborted.discard(me)
                holder.workers.pop(me, None)
                self._channels.discard(ch)
            ch.close()

    def _sock(self, holder: Holder, handle: Any) -> Socket:
        if type(handle) is not int:
            raise ChannelError("bad handle")
        rec = self._shared.get(handle)
        if rec is None or handle not in holder.handles:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return rec.sock

    def _call(self, holder: Holder, request: Any) -> tuple[Any, tuple[int, ...], Any]:
        """Run one request; returns (value, descriptors to send, an object to
        close once they are sent)."""
        if not (isinstance(request, tuple) and len(request) == 4 and isinstance(request[0], str)
                and isinstance(request[3], tuple)):
            raise ChannelError("not a call")
        op, handle, timeout, args = request
        if timeout is not None and (type(timeout) not in (int, float) or timeout < 0):
            raise ChannelError("bad timeout")
        self.counters["calls"] += 1
        stack = self.stack
        if self._closed:
            raise owner_gone(self.pid)
        if handle == 0:
            return self._stack_call(holder, op, args)
        if op not in _SOCKET_CALLS and op not in _SOCKET_SPECIAL:
            raise ChannelError(f"no such call {op!r}")
        with stack.locked:
            sock = self._sock(holder, handle)
        sock._timeout = None if timeout is None else float(timeout)
        if op in _SOCKET_CALLS:
            return plain(getattr(sock, op)(*args)), (), None
        if op == "close":
            with stack.locked:
                self._release(holder, handle)
            return None, (), None
        if op == "accept":
            new, addr = sock.accept()
            with stack.locked:
                rec = self._record(new, False)
                self._hold(holder, rec)
            return (rec.handle, plain(addr)), (), None
        if op == "fileno":
            fd = sock.fileno()
            if fd < 0:
                return -1, (), None
            dup = os.dup(fd)  # sent, then closed here: the sender keeps nothing
            return 0, (dup,), _Fd(dup)
        if op in ("recv_into", "recvfrom_into"):
            nbytes, flags = args
            buf = bytearray(nbytes)
            if op == "recv_into":
                n = sock.recv_into(buf, nbytes, flags)
                return (n, bytes(buf[: min(n, nbytes)])), (), None
            n, addr = sock.recvfrom_into(buf, nbytes, flags)
            return (n, bytes(buf[: min(n, nbytes)]), plain(addr)), (), None
        if op == "recvmsg_into":
            sizes, ancbufsize, flags = args
            bufs = [bytearray(s) for s in sizes]
            n, anc, msg_flags, addr = sock.recvmsg_into(bufs, ancbufsize, flags)
            data = b"".join(bufs)[:n]
            return (n, data, plain(anc), msg_flags, plain(addr)), (), None
        raise ChannelError(f"no such call {op!r}")

    def _stack_call(self, holder: Holder, op: str, args: tuple[Any, ...]
                    ) -> tuple[Any, tuple[int, ...], Any]:
        stack = self.stack
        if op == "socket":
            sock = stack.socket(*args)
            with stack.locked:
                rec = self._record(sock, False)
                self._hold(holder, rec)
            return rec.handle, (), None
        if op in _STACK_CALLS:
            return plain(getattr(stack, op)(*args)), (), None
        if op == "routable":
            (packed,) = args
            if not isinstance(packed, bytes) or len(packed) not in (4, 16):
                raise ChannelError("bad address")
            return stack.route_table.lookup(packed) is not None, (), None
        if op == "fork":
            with stack.locked:
                child, end = self.fork_holder(holder)
            return (child.hid, child.key), (end.fileno(),), end
        raise ChannelError(f"no such call {op!r}")

    # -- lifetime ---------------------------------------------------------------------------
    def close_inherited(self) -> None:
        """In a child of a fork: close this process's copies of the owner's
        connections (the copies would keep dead peers looking alive) without
        touching the owner's."""
        for ch in list(self._channels):
            ch.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        try:
            self._selector.close()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """The owner is done: attached processes get a clear error on their
        next call (their blocked calls end with it too)."""
        stack = self.stack
        with stack.locked:
            if self._closed:
                return
            self._closed = True
            records = list(self._shared.values())
            self._shared.clear()
            holders = list(self._holders.values())
            self._holders.clear()
            stack._aborted.update(stack._abortable)
            for sock in list(stack._sockets.values()):
                sock._cond.notify_all()
            for rec in records:
                rec.sock._shared = None
            for rec in records:
                if not rec.local:
                    rec.sock.close()
            channels = list(self._channels)
        for h in holders:
            h.alive = False
        try:
            self._listener.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for ch in channels:
            ch.shutdown()
            ch.close()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._reaper.join(1.0)
        self._acceptor.join(1.0)
        for s in (self._wake_r, self._wake_w):
            s.close()
        try:
            self._selector.close()
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class _Fd:
    """A descriptor to close after it has been sent."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)


__all__ = ["AttachServer", "Holder", "Shared"]
