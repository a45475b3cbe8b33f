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

import _socket as _c
import _thread
import array
import errno
import hmac
import os
import select
import selectors
import shutil
import socket as _socket
import struct
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING, Any, cast

from ..socket import serving
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
from .remote import adopt

if TYPE_CHECKING:
    from ..socket import Socket
    from ..stack import Stack

HELLO_DEADLINE = 5.0  # seconds a new connection has to say who it is
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Shared:
    """A socket some attached process holds. ``refs`` counts the attached
    holders; ``local`` says whether the owner's own program still holds it.

    A call runs with the calling process's timeout, which the worker puts on
    the socket object for the call's length; ``calls``, ``lent`` and
    ``saved`` give the owner's program its own timeout back afterwards (a
    timeout belongs to each process's socket object, as CPython keeps it
    in the object, not in the kernel's shared file)."""

    __slots__ = ("handle", "sock", "refs", "local", "calls", "lent", "saved")

    def __init__(self, handle: int, sock: Socket, local: bool) -> None:
        self.handle = handle
        self.sock = sock
        self.refs = 0
        self.local = local
        self.calls = 0  # calls of attached processes running on it now
        self.lent: float | None = None  # the timeout those calls put on it
        self.saved: float | None = None  # the owner's program's own timeout


class Holder:
    """An attached process (or the process a fork is about to make)."""

    __slots__ = ("hid", "key", "pid", "handles", "liveness", "workers", "alive")

    def __init__(self, hid: int, pid: int) -> None:
        self.hid = hid
        self.key = os.urandom(KEY_LEN)
        self.pid = pid
        # handle -> how many of the process's socket objects refer to it
        # (a process may hold several descriptors of one socket: dup()).
        self.handles: dict[int, int] = {}
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
_SOCKET_SPECIAL = frozenset({"close", "dup", "accept", "fileno", "recv_into",
                             "recvfrom_into", "recvmsg_into", "detach"})
# Calls that may wait: while one does, the caller's call connection is
# watched, so that a caller that gives up (a KeyboardInterrupt in the child,
# its thread gone) ends the wait instead of leaving it to consume data nobody
# will receive (Linux: an interrupted recv() takes nothing from the socket).
_BLOCKING = frozenset({
    "accept", "connect", "connect_ex", "send", "sendall", "sendto", "sendmsg", "recv",
    "recvfrom", "recvmsg", "recv_into", "recvfrom_into", "recvmsg_into",
})
_SENDS = frozenset({"send", "sendall", "sendto", "sendmsg"})
_RECV_MAX = 1 << 20  # bytes one recv_into/recvmsg_into call takes at most
_STACK_CALLS = frozenset({
    "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
    "sockets", "stats", "routes",
})


def plain(value: Any) -> Any:
    """``value`` with enums and flags (IntEnum, IntFlag: any int subclass
    but bool) turned into ints, so it pickles as plain values."""
    if isinstance(value, int) and type(value) is not int and type(value) is not bool:
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
        # Removed by close(), or at exit/collection if the stack was never
        # closed (a forked child's copy of this hook leaves it alone).
        weakref.finalize(self, _remove_dir, self.dir, self.pid)
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
        # (_socket's own socketpair: the stdlib's raises audit events, which
        # are the program's, not this machinery's.)
        self._wake_r, self._wake_w = _c.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.counters = {"holders": 0, "calls": 0, "refused": 0, "broken": 0}
        self._acceptor = _Hidden(self._accept_loop)
        self._reaper = _Hidden(self._reap_loop)

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

    def _hold(self, holder: Holder, rec: Shared, count: int = 1) -> None:
        held = holder.handles.get(rec.handle, 0)
        holder.handles[rec.handle] = held + count
        if not held:
            rec.refs += 1

    def _release(self, holder: Holder, handle: int, every: bool = False) -> None:
        """One of ``holder``'s objects (``every``: all) lets go of
        ``handle``; the last holder's release closes it."""
        held = holder.handles.get(handle, 0)
        if not held:
            return
        if held > 1 and not every:
            holder.handles[handle] = held - 1
            return
        del holder.handles[handle]
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
        pair = _c.socketpair()  # (the methods a Channel uses are _socket's)
        mine, theirs = cast(tuple[_socket.socket, _socket.socket], pair)
        # The pair took the program's socket.setdefaulttimeout(): the
        # child's end must block (Link._open reads it with no deadline: a
        # timeout there is not the owner gone), and so must the open file,
        # whose O_NONBLOCK goes with the descriptor to an attached process
        # that asked for its child's holder (remote.py adopt).
        theirs.settimeout(None)
        holder = self._new_holder(0)
        holder.liveness = Channel(mine)
        self._channels.add(holder.liveness)
        if parent is not None:
            for handle, count in parent.handles.items():
                self._hold(holder, self._shared[handle], count)
        self._watch(holder)
        return holder, theirs

    # -- connections -----------------------------------------------------------------
    def _accept_loop(self) -> None:
        # Wait for a connection before calling accept(): Linux takes the new
        # descriptor's number when accept() is entered, not when a connection
        # comes (__sys_accept4_file), so a thread blocked in accept() holds
        # the process's lowest free number, unseen in /proc/self/fd, and the
        # program's next open() or dup() skips it (test_os's test_closerange
        # cannot get two consecutive descriptors). close() shuts the listener
        # down, which wakes the poll (POLLHUP); the timeout only bounds a
        # close that lands between the check of _closed and the poll.
        poller = select.poll()
        try:
            poller.register(self._listener.fileno(), select.POLLIN)
        except (OSError, ValueError):
            return  # closed before this thread began
        while not self._closed:
            try:
                if not poller.poll(1000):
                    continue
                # (socket.accept() would raise an audit event: socket.__new__)
                fd, _ = self._listener._accept()  # type: ignore[attr-defined]
                conn = adopt(fd)
            except OSError:
                if self._closed:
                    return
                continue
            _Hidden(self._greet, conn)

    def _greet(self, conn: _socket.socket) -> None:
        """Read the hello (bounded in size and time); admit or drop."""
        try:
            pid, uid, _gid = _UCRED.unpack(
                conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size))
            # The hello is read before anyone is refused: a peer hung up on
            # while it is still sending gets EPIPE instead of the refusal.
            conn.settimeout(HELLO_DEADLINE)
            magic, token, kind, hid, key = HELLO.unpack(read_exact(conn, HELLO.size))
            if uid != os.getuid():
                raise ChannelError("another user")
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
        all: nothing is sent on it) means the process is gone. Also watch
        the call connections of calls that are waiting (see _BLOCKING)."""
        while not self._closed:
            try:
                events = self._selector.select()
            except (OSError, ValueError):
                return
            for key, _mask in events:
                data = key.data
                if data is None:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                elif isinstance(data, _CallWatch):
                    self._call_broken(data)
                else:
                    self._liveness(data, key.fileobj)

    def _liveness(self, holder: Holder, sock: Any) -> None:
        """A holder's liveness connection is readable: a byte b"C" for each
        call connection it asks for (Link._open), or EOF (or anything
        else): the process is gone."""
        try:
            data = sock.recv(64, _socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data and not data.strip(b"C"):
            for _ in data:
                if not self._give_connection(holder, sock):
                    break
            else:
                return
        self._unwatch(sock)
        self.holder_gone(holder)

    def _give_connection(self, holder: Holder, liveness: Any) -> bool:
        """A call connection for ``holder``: a socket pair made here (no
        connect() in the attached process, whose audit hooks would see it),
        one end passed over the liveness connection, the other served by a
        worker thread. False if the holder cannot take it."""
        mine, theirs = _c.socketpair()
        try:
            liveness.sendmsg([b"c"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                       array.array("i", [theirs.fileno()]))],
                             _socket.MSG_DONTWAIT)
        except OSError:
            mine.close()
            return False  # gone, or not reading what it asked for
        finally:
            theirs.close()
        ch = Channel(cast(_socket.socket, mine))
        with self.stack.locked:
            if self._closed or not holder.alive:
                ch.close()
                return True
            self._channels.add(ch)
        _Hidden(self._serve_new, holder, ch)
        return True

    def _serve_new(self, holder: Holder, ch: Channel) -> None:
        with self.stack.locked:
            if self._closed or not holder.alive:
                self._channels.discard(ch)
                ch.close()
                return
            holder.workers[threading.get_ident()] = ch
        self._serve(holder, ch)

    def _unwatch(self, fileobj: Any) -> None:
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

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
                self._release(holder, handle, every=True)
            channels = list(holder.workers.values())
            liveness, holder.liveness = holder.liveness, None
            if liveness is not None:
                self._unwatch(liveness.sock)
                self._channels.discard(liveness)
        for ch in channels:
            ch.shutdown()  # each worker closes its own connection as it ends
        if liveness is not None:
            liveness.close()  # the process's end is gone: this one would only leak

    def _watch_call(self, me: int, ch: Channel) -> _CallWatch:
        """While a call waits, EOF (or any byte) on its connection means the
        caller gave up on it: see _call_broken."""
        watch = _CallWatch(me, ch)
        with self.stack.lock:
            try:
                self._selector.register(ch.sock, selectors.EVENT_READ, watch)
            except (KeyError, ValueError, OSError):
                watch.active = False  # closed under us: the call will find out
        return watch

    def _unwatch_call(self, watch: _CallWatch) -> None:
        with self.stack.lock:
            if watch.active:
                watch.active = False
                self._unwatch(watch.ch.sock)

    def _call_broken(self, watch: _CallWatch) -> None:
        """The caller of a waiting call closed its connection (interrupted,
        or its thread ended) or broke the one-call-at-a-time rule: end the
        wait with ECONNABORTED (Stack._wait_abortable) before it takes
        anything from the socket, and drop the connection."""
        stack = self.stack
        with stack.locked:
            if not watch.active:
                return  # the call ended first
            watch.active = False
            self._unwatch(watch.ch.sock)
            stack._aborted.add(watch.ident)
            for sock in list(stack._sockets.values()):
                sock._cond.notify_all()
        watch.ch.shutdown()

    # -- calls -------------------------------------------------------------------------
    def _serve(self, holder: Holder, ch: Channel) -> None:
        stack = self.stack
        me = threading.get_ident()
        with stack.locked:
            stack._abortable.add(me)
        serving.add(me)
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
                    value, out_fds, keep = self._call(holder, request, me, ch)
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
            serving.discard(me)
            with stack.locked:
                stack._abortable.discard(me)
                stack._aborted.discard(me)
                holder.workers.pop(me, None)
                self._channels.discard(ch)
            ch.close()

    def _rec(self, holder: Holder, handle: Any) -> Shared:
        """The record of a socket ``holder`` holds (stack lock held)."""
        if type(handle) is not int:
            raise ChannelError("bad handle")
        rec = self._shared.get(handle)
        if rec is None or handle not in holder.handles:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return rec

    def _call(self, holder: Holder, request: Any, me: int, ch: Channel
              ) -> tuple[Any, tuple[int, ...], Any]:
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
        if op == "close":
            with stack.locked:
                self._rec(holder, handle)
                self._release(holder, handle)
            return None, (), None
        if op == "detach":
            # The process keeps its descriptor of the socket's pair as its
            # own: a hidden object here holds the socket for it in place of
            # the process's reference (Socket._give_away).
            with stack.locked:
                held = self._rec(holder, handle).sock._detach_remote()
                self._release(holder, handle)
                held._give_away(-1)
            return None, (), None
        if op == "dup":
            with stack.locked:
                self._hold(holder, self._rec(holder, handle))  # one more object of it
            return None, (), None
        if op == "fileno":
            with stack.locked:
                sock = self._rec(holder, handle).sock
                fd = sock.fileno()
                if fd < 0:
                    return -1, (), None
                dup = os.dup(fd)  # sent, then closed here: the sender keeps nothing
            return 0, (dup,), _Fd(dup)
        t = None if timeout is None else float(timeout)
        watch = self._watch_call(me, ch) if op in _BLOCKING and t != 0.0 else None
        try:
            return self._socket_call(holder, handle, op, t, args), (), None
        finally:
            if watch is not None:
                self._unwatch_call(watch)

    def _socket_call(self, holder: Holder, handle: int, op: str, timeout: float | None,
                     args: tuple[Any, ...]) -> Any:
        stack = self.stack
        if op in ("recv_into", "recvfrom_into"):
            # The caller's buffer is in its own process: receive into one of
            # at most _RECV_MAX bytes here (a datagram is never longer; a
            # stream may return less than asked, unless MSG_WAITALL), not one
            # as large as the caller's, which may be a gigabyte.
            nbytes, flags = args
            want = int(nbytes) if flags & _socket.MSG_WAITALL else min(int(nbytes), _RECV_MAX)
            buf = bytearray(want)
            if op == "recv_into":
                n = self._run(holder, handle, op, timeout, (buf, want, flags))
                return n, bytes(buf[: min(n, want)])
            n, addr = self._run(holder, handle, op, timeout, (buf, want, flags))
            return n, bytes(buf[: min(n, want)]), plain(addr)
        if op == "recvmsg_into":
            # recvmsg() of the buffers' total size: the same bytes, flags
            # (MSG_TRUNC when the datagram is longer) and control messages;
            # the caller scatters the bytes over its buffers.
            sizes, ancbufsize, flags = args
            if not isinstance(sizes, list) or not all(type(n) is int for n in sizes):
                raise TypeError("recvmsg_into() buffer sizes must be integers")
            total = sum(sizes) if flags & _socket.MSG_WAITALL else min(sum(sizes), _RECV_MAX)
            data, anc, msg_flags, addr = self._run(holder, handle, "recvmsg", timeout,
                                                   (total, ancbufsize, flags))
            return len(data), data, plain(anc), plain(msg_flags), plain(addr)
        if op == "accept":
            new, addr = self._run(holder, handle, op, timeout, args)
            with stack.locked:
                if not holder.alive:
                    # The process died while the connection was being taken:
                    # nobody will ever hold it, so close it now.
                    new.close()
                    raise ConnectionAbortedError(errno.ECONNABORTED, "the caller has gone")
                rec = self._record(new, False)
                self._hold(holder, rec)
            return rec.handle, plain(addr)
        return plain(self._run(holder, handle, op, timeout, args))

    def _run(self, holder: Holder, handle: int, op: str, timeout: float | None,
             args: tuple[Any, ...]) -> Any:
        """``op`` on the socket ``handle`` names, with the caller's timeout.

        The stack lock is held from setting the timeout until the method
        takes it for itself, so concurrent calls with other timeouts do not
        mix theirs up. If the owner's program closes its object while the
        call waits, the socket lives on in a new object (Socket._hand_over)
        and the wait ends with EBADF: as Linux keeps a socket open for a
        process blocked on it while another process closes its descriptor,
        the call goes on on the new object. A send may have queued part of
        its data before that: it is counted from the TCP send sequence, so
        no byte is sent twice."""
        stack = self.stack
        deadline = None if not timeout else stack.clock.now() + timeout
        while True:
            with stack.lock:
                rec = self._rec(holder, handle)
                sock = rec.sock
                tcb = getattr(sock, "_tcb", None) if op in _SENDS else None
                queued = tcb.data_end if tcb is not None else 0
                self._lend(rec, sock, timeout)
                try:
                    return getattr(sock, op)(*args)
                except OSError as e:
                    if e.errno != errno.EBADF or rec.sock is sock or \
                            self._shared.get(handle) is not rec or handle not in holder.handles:
                        raise
                    sent = tcb.data_end - queued if tcb is not None else 0
                    if sent and op != "sendall":
                        return sent
                    if sent:
                        args = (memoryview(args[0])[sent:], *args[1:])
                finally:
                    self._unlend(rec)
            if deadline is not None:
                timeout = deadline - stack.clock.now()
                if timeout <= 0:
                    raise TimeoutError("timed out")

    @staticmethod
    def _lend(rec: Shared, sock: Socket, timeout: float | None) -> None:
        """Put the caller's timeout on ``sock`` for one call (lock held)."""
        if rec.calls == 0 or sock._timeout != rec.lent:
            rec.saved = sock._timeout  # the owner's program's own
        sock._timeout = rec.lent = timeout
        rec.calls += 1

    @staticmethod
    def _unlend(rec: Shared) -> None:
        """The call is over: the last one gives the owner's program its own
        timeout back, or the one it set meanwhile (lock held)."""
        rec.calls -= 1
        sock = rec.sock
        if sock._timeout != rec.lent:
            rec.saved = sock._timeout
        if rec.calls == 0:
            sock._timeout = rec.saved

    def _stack_call(self, holder: Holder, op: str, args: tuple[Any, ...]
                    ) -> tuple[Any, tuple[int, ...], Any]:
        stack = self.stack
        if op == "socket":
            sock = stack.socket(*args)
            with stack.locked:
                if not holder.alive:
                    sock.close()  # made for a process that has gone meanwhile
                    raise ConnectionAbortedError(errno.ECONNABORTED, "the caller has gone")
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


class _Hidden:
    """A thread of this machinery, started with ``_thread`` rather than
    ``threading``: a kernel serves other processes with no thread in the
    program, so these are not in ``threading.enumerate()`` or
    ``threading._dangling`` (which regrtest and multiprocessing's tests
    compare around each test), only in ``_thread._count()``. They are
    daemons: interpreter exit does not wait for them. ``join`` waits for the
    function to return."""

    __slots__ = ("_done", "native_id")

    def __init__(self, target: Any, *args: Any) -> None:
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.native_id = 0
        started = _thread.allocate_lock()
        started.acquire()
        _thread.start_new_thread(self._run, (target, args, started))
        started.acquire()  # (as threading's start() waits: native_id is known)

    def _run(self, target: Any, args: tuple[Any, ...], started: Any) -> None:
        try:
            self.native_id = _thread.get_native_id()
            started.release()
            target(*args)
        finally:
            self._done.release()

    def is_alive(self) -> bool:
        return self._done.locked()

    def join(self, timeout: float = -1) -> None:
        if self._done.acquire(timeout=timeout):
            self._done.release()


class _CallWatch:
    """A call connection watched while its call waits (AttachServer._watch_call)."""

    __slots__ = ("ident", "ch", "active")

    def __init__(self, ident: int, ch: Channel) -> None:
        self.ident = ident  # the worker thread running the call
        self.ch = ch
        self.active = True


def _remove_dir(path: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


class _Fd:
    """A descriptor to close after it has been sent."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)


__all__ = ["AttachServer", "Holder", "Shared"]
