"""An attached process's side of a shared stack: ``RemoteStack`` and
``RemoteSocket``, the objects a process started by a stack's owner uses.

A ``RemoteSocket`` keeps only what the stdlib keeps in the socket object
(family, type, proto, timeout) and sends every call to the owner, which runs
it on the real socket with this object's timeout. ``fileno()`` is the owner's
readiness descriptor itself, received once over SCM_RIGHTS: ``select``,
``poll``, ``epoll`` and asyncio in this process watch it directly, with no
traffic on the channel. Each thread has its own call connection, so a thread
blocked in ``recv`` does not stop another thread's ``send``.

When the owner is gone, a call fails with ``OSError(ENETDOWN)`` saying so,
instead of hanging.
"""

from __future__ import annotations

import _socket as _c
import array
import errno
import os
import socket as _socket
import threading
import weakref
from typing import Any, cast

from ..socket import _RESERVED, Socket, _reserve, audit_socket, error, recvmsg_into_views, scatter
from ..stack import Stack
from .channel import (
    HELLO,
    KEY_LEN,
    MAGIC,
    Channel,
    ChannelClosed,
    ChannelError,
    owner_gone,
    unpack_error,
)

SOCK_NONBLOCK = getattr(_socket, "SOCK_NONBLOCK", 0o4000)
SOCK_CLOEXEC = getattr(_socket, "SOCK_CLOEXEC", 0o2000000)
_SENDALL_CHUNK = 8 << 20  # a frame's worth of sendall
_CANCEL_WAIT = 5.0  # seconds an interrupted call waits for the owner to end it


class Link:
    """This process's attachment to one owner: who it is (holder id and
    key), its liveness connection, and a call connection per thread."""

    def __init__(self, path: str, token: bytes, owner_pid: int, hid: int, key: bytes,
                 liveness: _socket.socket | None) -> None:
        self.path = path
        self.token = token
        self.owner_pid = owner_pid
        self.hid = hid
        self.key = key
        self.liveness = liveness
        self.dead = liveness is None
        self._local = threading.local()
        self._channels: weakref.WeakSet[_CallChannel] = weakref.WeakSet()
        # One request on the liveness connection at a time (reentrant: a
        # signal handler's call may ask while its thread waits for a reply;
        # replies are alike, so whichever it reads serves).
        self._asking = threading.RLock()

    @classmethod
    def join(cls, address: str) -> Link:
        """Attach as a new holder, from an address "PATH|TOKEN|PID"
        (LOOPSTACK_ATTACH, given to processes started by the owner)."""
        try:
            path, token_hex, pid = address.split("|")
            token, owner_pid = bytes.fromhex(token_hex), int(pid)
        except ValueError:
            raise ValueError(f"LOOPSTACK_ATTACH={address!r} is not PATH|TOKEN|PID") from None
        sock = _connect(path)
        try:
            sock.sendall(HELLO.pack(MAGIC, token, b"H", 0, bytes(KEY_LEN)))
            ch = Channel(sock)
            (hid, key), _fds = ch.recv()
        except (ChannelClosed, ChannelError, ValueError, TypeError):
            sock.close()
            raise OSError(errno.ECONNREFUSED,
                          f"the stack's owner (pid {owner_pid}) refused this process") from None
        return cls(path, token, owner_pid, hid, key, sock)

    # -- calls ------------------------------------------------------------------------
    # A connection carries one call at a time. A thread that makes a call
    # while its own call is waiting (a signal handler, a finalizer run by
    # the garbage collector) gets a second connection: on the first, the
    # second request would be answered with the first's reply.
    _POOL = 2  # idle connections a thread keeps

    def _take(self) -> _CallChannel:
        pool: list[_CallChannel] = self._local.__dict__.setdefault("pool", [])
        while pool:
            ch = pool.pop()
            if ch.pid == os.getpid() and not ch.broken:
                return ch
            ch.close()
        if self.dead:
            raise owner_gone(self.owner_pid)
        try:
            sock = self._open()
        except OSError:
            self.dead = True
            raise owner_gone(self.owner_pid) from None
        ch = _CallChannel(sock)
        self._channels.add(ch)
        return ch

    def _open(self) -> _socket.socket:
        """A new call connection: the owner makes a socket pair and passes
        one end over the liveness connection (owner.py _give_connection).
        Not connect(): a socket made and connected here raises audit events
        (socket.__new__, socket.connect) the program's hooks would see,
        which a kernel's socket calls do not."""
        live = self.liveness
        if live is None:
            raise OSError(errno.ENOTCONN, "no liveness connection")
        with self._asking:
            live.sendall(b"C")
            while True:
                data, anc, _flags, _addr = live.recvmsg(1, _FD_SPACE, _CLOEXEC)
                fds = _fds(anc)
                if not data:
                    for fd in fds:
                        os.close(fd)
                    raise OSError(errno.ECONNRESET, "the owner has gone")
                if len(fds) == 1:
                    return adopt(fds[0])
                for fd in fds:
                    os.close(fd)

    def _give(self, ch: _CallChannel) -> None:
        pool: list[_CallChannel] = self._local.__dict__.setdefault("pool", [])
        if len(pool) < self._POOL:
            pool.append(ch)
        else:
            ch.close()

    def call(self, op: str, handle: int, timeout: float | None, args: tuple[Any, ...]
             ) -> tuple[Any, list[int]]:
        """Run ``op`` in the owner; its value and any descriptors it sent."""
        for a in args:
            if type(a) not in _PLAIN:
                args = tuple(_plain(a) for a in args)
                break
        ch = self._take()
        try:
            ch.send((op, handle, timeout, args))
            reply, fds = ch.recv()
        except (ChannelClosed, ChannelError):
            ch.broken = True
            ch.close()
            raise owner_gone(self.owner_pid) from None
        except BaseException:
            # Interrupted between request and reply (KeyboardInterrupt, or
            # another exception from a signal handler): the reply would
            # answer the next call, so this connection is done.
            ch.broken = True
            _cancel(ch)
            raise
        self._give(ch)
        if type(reply) is tuple and reply and reply[0] == 0:
            return reply[1], fds
        for fd in fds:
            os.close(fd)
        if type(reply) is tuple and len(reply) == 3:
            raise unpack_error(reply[1], reply[2])
        raise owner_gone(self.owner_pid)

    # -- fork ---------------------------------------------------------------------------
    def prepare_fork(self) -> tuple[int, bytes, int] | None:
        """Before a fork: a holder for the child, holding what this process
        holds, and the child's liveness descriptor."""
        try:
            (hid, key), fds = self.call("fork", 0, None, ())
        except OSError:
            return None
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return None
        return int(hid), bytes(key), fds[0]

    def after_fork_child(self, prepared: tuple[int, bytes, int] | None) -> None:
        """In the child: drop the parent's connections (copies that would
        keep a dead parent looking alive) and become the new holder."""
        self.close_inherited()
        self._local = threading.local()
        self._asking = threading.RLock()
        if prepared is None:
            self.dead = True
            self.liveness = None
            return
        self.hid, self.key, fd = prepared
        self.liveness = adopt(fd)
        self.dead = False
        self._asking = threading.RLock()  # (another thread may have held it at the fork)

    def close_inherited(self) -> None:
        for ch in list(self._channels):
            ch.close()
        self._channels = weakref.WeakSet()
        if self.liveness is not None:
            self.liveness.close()

    def close(self) -> None:
        """Detach: the owner releases what this process held."""
        self.close_inherited()
        self.liveness = None
        self.dead = True


def _cancel(ch: Channel) -> None:
    """End an interrupted call in the owner before the program goes on, as
    Linux's interrupted recv() takes nothing from the socket: once the
    owner sees this end stop writing it aborts a call still waiting
    (owner.py _call_broken), so no data arrives later for a call nobody
    makes any more. Wait (boundedly) for its answer or its hang-up."""
    try:
        ch.sock.shutdown(_socket.SHUT_WR)
        ch.sock.settimeout(_CANCEL_WAIT)
        while True:
            _reply, fds = ch.recv()  # the call's answer (too late now), then EOF
            for fd in fds:
                os.close(fd)
    except (OSError, ChannelClosed, ChannelError):
        pass
    finally:
        ch.close()


class _CallChannel(Channel):
    __slots__ = ("pid", "broken", "__weakref__")

    def __init__(self, sock: _socket.socket) -> None:
        super().__init__(sock)
        self.pid = os.getpid()
        self.broken = False


_PLAIN = frozenset({int, bytes, str, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """What pickles without naming a class: enums and flags (socket.MSG_PEEK
    is one) as ints, buffers as bytes, containers element by element."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value) if type(value) in (tuple, list) \
            else tuple(_plain(v) for v in value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def _connect(path: str) -> _socket.socket:
    """The first connection of a process started with exec: made by the
    start-up hook, before the program could add an audit hook."""
    sock = _c.socket(_c.AF_UNIX, _c.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return cast(_socket.socket, sock)  # (the methods a Channel uses are _socket's)


_FD_SPACE = _socket.CMSG_SPACE(4 * array.array("i").itemsize)
_CLOEXEC = getattr(_socket, "MSG_CMSG_CLOEXEC", 0x40000000)


def _fds(anc: list[tuple[int, int, bytes]]) -> list[int]:
    out: list[int] = []
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            out.extend(fds)
    return out


def adopt(fd: int) -> _socket.socket:
    """A socket object for ``fd``, an AF_UNIX stream socket received over
    SCM_RIGHTS (or accepted), made without socket(fileno=fd): that raises
    socket.__new__, an audit event of the program's. _socket.socketpair()
    raises none; one end of a new pair takes ``fd``'s place (dup2, close-on-
    exec) and the other is closed. Takes ``fd`` over."""
    mine, other = _c.socketpair(_c.AF_UNIX, _c.SOCK_STREAM)
    other.close()
    try:
        os.dup2(fd, mine.fileno(), inheritable=False)
    except OSError:
        mine.close()
        raise
    finally:
        os.close(fd)
    # Blocking, whatever socket.setdefaulttimeout() either side's program
    # set: the new object takes this process's default, and the open file
    # behind ``fd`` keeps the O_NONBLOCK of the object that made it (a pair
    # the owner made while its program had a default timeout). settimeout()
    # sets both. A liveness connection read with a timeout, or with EAGAIN,
    # is taken for the owner gone (Link._open) while it is only slow to
    # answer: a forkserver's child then had ENETDOWN on its first socket.
    mine.settimeout(None)
    return cast(_socket.socket, mine)  # (the methods a Channel uses are _socket's)


def _family(value: Any) -> Any:
    try:
        return _socket.AddressFamily(value)
    except ValueError:
        return value


def _kind(value: Any) -> Any:
    try:
        return _socket.SocketKind(value)
    except ValueError:
        return value


class RemoteSocket(Socket):
    """A socket of the owner's stack, used from an attached process."""

    def __init__(self, stack: RemoteStack, handle: int | None, family: int, type: int,
                 proto: int, timeout: float | None, fd: int = -1) -> None:
        if fd < 0 and handle is not None:
            fd = _reserve()  # a number now, as socket(2), accept(2) and dup(2) take one
        self._setup(stack, handle, family, type, proto, timeout, fd)

    def _setup(self, stack: RemoteStack, handle: int | None, family: int, type: int,
               proto: int, timeout: float | None, fd: int) -> None:
        self._stack = stack
        self._link = stack._link
        self._handle = handle
        self._family = _socket.AddressFamily(family)
        self._kind = type
        self._proto = proto
        self._timeout = timeout
        self._closed = handle is None
        self._fd = fd
        self._io_refs = 0
        self._closing = False

    def __repr__(self) -> str:
        parts = [f"fd={self._fd if not self._closed else -1}", f"family={self._family.value}",
                 f"type={self._kind}", f"proto={self._proto}"]
        if not self._closed:
            try:
                parts.append(f"laddr={self.getsockname()}")
                parts.append(f"raddr={self.getpeername()}")
            except OSError:
                pass
        state = " [closed]" if self._closed else ""
        return f"<loopstack.socket{state} {', '.join(parts)} (attached)>"

    def _call(self, op: str, *args: Any) -> Any:
        if self._closed or self._handle is None or self._link is None:
            raise error(errno.EBADF)
        return self._link.call(op, self._handle, self._timeout, args)[0]

    # -- readiness --------------------------------------------------------------------
    def fileno(self) -> int:
        if self._closed or self._link is None or self._handle is None:
            return -1
        mine = self._fd
        if mine < 0 or mine in _RESERVED:
            value, fds = self._link.call("fileno", self._handle, self._timeout, ())
            if value != 0 or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                return -1
            if mine >= 0:  # the number reserved when the object was made (socket.py)
                os.dup2(fds[0], mine, os.get_inheritable(mine))
                os.close(fds[0])
                _RESERVED.discard(mine)
            else:
                mine = fds[0]
            self._fd = mine
        return self._fd

    # -- addresses and connections ------------------------------------------------------
    def getsockname(self) -> tuple[Any, ...]:
        return tuple(self._call("getsockname"))

    def getpeername(self) -> tuple[Any, ...]:
        return tuple(self._call("getpeername"))

    # The events CPython raises for these calls are raised here, in the
    # process that makes them (the owner runs the call without raising
    # any): before the call, so before the owner checks the address.
    def bind(self, address: Any) -> None:
        audit_socket(self, "socket.bind", address)
        self._call("bind", address)

    def connect(self, address: Any) -> None:
        audit_socket(self, "socket.connect", address)
        self._call("connect", address)

    def connect_ex(self, address: Any) -> int:
        audit_socket(self, "socket.connect", address)
        return int(self._call("connect_ex", address))

    def listen(self, *backlog: int) -> None:
        self._call("listen", *backlog)

    def accept(self) -> tuple[RemoteSocket, Any]:
        handle, addr = self._call("accept")
        stack = self._stack
        assert isinstance(stack, RemoteStack)
        sock = RemoteSocket(stack, handle, self._family, self._kind, self._proto,
                            _socket.getdefaulttimeout())
        return sock, tuple(addr) if addr is not None else None

    # -- data -------------------------------------------------------------------------------
    def _payload(self, data: Any) -> bytes:
        """What a send carries, checked against the channel's frame bound
        (channel.MAX_FRAME): a datagram that large is EMSGSIZE anyway
        (Linux udp_sendmsg refuses more than 0xFFFF bytes)."""
        payload = bytes(memoryview(data))
        if len(payload) > _SENDALL_CHUNK and self._kind != _socket.SOCK_STREAM:
            raise error(errno.EMSGSIZE)
        return payload

    def send(self, data: Any, flags: int = 0) -> int:
        view = memoryview(data)
        if view.nbytes <= _SENDALL_CHUNK or self._kind != _socket.SOCK_STREAM:
            return int(self._call("send", self._payload(view), flags))
        # More than one frame carries: a blocking send queues all of it, as
        # Linux's does; with a timeout (or none at all) a part is a valid answer.
        view = memoryview(bytes(view))
        total = 0
        for start in range(0, len(view), _SENDALL_CHUNK):
            piece = view[start : start + _SENDALL_CHUNK]
            try:
                n = int(self._call("send", bytes(piece), flags))
            except OSError:
                if total:
                    return total
                raise
            total += n
            if n < len(piece) or self._timeout is not None or flags & _socket.MSG_DONTWAIT:
                break
        return total

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        if len(view) <= _SENDALL_CHUNK:
            self._call("sendall", bytes(view), flags)
            return
        for start in range(0, len(view), _SENDALL_CHUNK):
            self._call("sendall", bytes(view[start : start + _SENDALL_CHUNK]), flags)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        dest = flags_or_address if address is None else address
        if dest is not None:  # (None is CPython's TypeError, before any event)
            audit_socket(self, "socket.sendto", dest)
        if self._kind == _socket.SOCK_STREAM and memoryview(data).nbytes > _SENDALL_CHUNK:
            return self.send(data, 0 if address is None else flags_or_address)
        payload = self._payload(data)
        if address is None:
            return int(self._call("sendto", payload, flags_or_address))
        return int(self._call("sendto", payload, flags_or_address, address))

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,
                address: Any = None) -> int:
        audit_socket(self, "socket.sendmsg", address)
        bufs = [bytes(memoryview(b)) for b in buffers]
        anc = [(int(level), int(kind), bytes(memoryview(value)))
               for level, kind, value in ancdata]
        if sum(len(b) for b in bufs) > _SENDALL_CHUNK:
            if self._kind != _socket.SOCK_STREAM:
                raise error(errno.EMSGSIZE)
            if not anc:
                return self.send(b"".join(bufs), flags)
        return int(self._call("sendmsg", bufs, anc, flags, address))

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return bytes(self._call("recv", bufsize, flags))

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        data, addr = self._call("recvfrom", bufsize, flags)
        return data, tuple(addr) if addr is not None else None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("recv_into() argument 'buffer' must be read-write bytes-like object")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes > len(view):
            raise ValueError("buffer too small for requested bytes")
        want = nbytes or len(view)
        if want == 0:
            return 0
        n, data = self._call("recv_into", want, flags)
        view[: len(data)] = data
        return int(n)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("recvfrom_into() argument 'buffer' must be read-write "
                            "bytes-like object")
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if nbytes > len(view):
            raise ValueError("nbytes is greater than the length of the buffer")
        n, data, addr = self._call("recvfrom_into", nbytes or len(view), flags)
        view[: len(data)] = data
        return int(n), tuple(addr) if addr is not None else None

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0
                ) -> tuple[bytes, list[Any], int, Any]:
        data, anc, msg_flags, addr = self._call("recvmsg", bufsize, ancbufsize, flags)
        return (data, [tuple(a) for a in anc], msg_flags,
                tuple(addr) if addr is not None else None)

    def recvmsg_into(self, buffers: Any, ancbufsize: int = 0, flags: int = 0
                     ) -> tuple[int, list[Any], int, Any]:
        views = recvmsg_into_views(buffers, ancbufsize)
        n, data, anc, msg_flags, addr = self._call(
            "recvmsg_into", [len(v) for v in views], ancbufsize, flags)
        scatter(data, views)
        return (int(n), [tuple(a) for a in anc], msg_flags,
                tuple(addr) if addr is not None else None)

    # -- options ---------------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None
                   ) -> None:
        if value is not None and not isinstance(value, int):
            value = bytes(memoryview(value))
        if optlen is None:
            self._call("setsockopt", level, optname, value)
        else:
            self._call("setsockopt", level, optname, value, optlen)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if buflen is None:
            return self._call("getsockopt", level, optname)
        return self._call("getsockopt", level, optname, buflen)

    def tcp_info(self) -> dict[str, Any]:
        return dict(self._call("tcp_info"))

    # -- more objects of one socket ---------------------------------------------------
    def dup(self) -> RemoteSocket:
        """Another object of the same socket, as dup(2) gives another
        descriptor of one open file: the owner counts one more reference of
        this process, and each object closes its own. With this object's
        timeout, as socket.dup() gives."""
        self._call("dup")
        stack = self._stack
        assert isinstance(stack, RemoteStack)
        return RemoteSocket(stack, self._handle, self._family, self._kind, self._proto,
                            self._timeout)

    def detach(self) -> int:
        """As socket.detach(): this object is closed and its descriptor (the
        owner's pair end, received once) stays open, the program's. The
        owner holds the socket for it and, for a stream socket, has the
        descriptor carry the connection's data (readiness.py, carry); the
        socket closes when every descriptor of it is closed. -1 on a closed
        object, as CPython's."""
        if self._closed:
            return -1
        fd = self.fileno()
        if fd < 0:
            return -1
        self._call("detach")
        self._closed = True
        self._fd = -1
        return fd

    # -- shutdown and close ---------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        self._call("shutdown", how)

    def close(self) -> None:
        if self._io_refs > 0:
            self._closing = True
            return
        if self._closed:
            return
        self._closed = True
        fd, self._fd = self._fd, -1
        if fd >= 0:
            _RESERVED.discard(fd)
            os.close(fd)
        link, handle = self._link, self._handle
        if link is not None and handle is not None and not link.dead:
            try:
                link.call("close", handle, None, ())
            except OSError:
                pass  # the owner is gone: nothing left to release

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        from ..stream import StreamSocket

        return StreamSocket.makefile(self, mode, buffering,  # type: ignore[arg-type]
                                     encoding=encoding, errors=errors, newline=newline)

    def _row(self) -> dict[str, Any]:
        return {}


class _RemoteRoutes:
    """What PassthroughSocket asks the route table: is there a route?"""

    def __init__(self, stack: RemoteStack) -> None:
        self._stack = stack

    def lookup(self, packed: bytes) -> bool:
        return bool(self._stack._call("routable", bytes(packed)))


class RemoteStack(Stack):
    """The owner's stack, seen from an attached process: sockets and name
    lookups go to the owner; the rest of ``Stack`` (interfaces, netem,
    captures, the clock) lives only in the owner's process."""

    def __init__(self, link: Link | None, owner_pid: int,
                 hosts: dict[str, list[str]] | None = None) -> None:
        self._setup(link, owner_pid, hosts)

    def _setup(self, link: Link | None, owner_pid: int,
               hosts: dict[str, list[str]] | None) -> None:
        self._link = link
        self.owner_pid = owner_pid
        self.lock = threading.RLock()
        self.locked = self.lock  # type: ignore[assignment]
        self._closed = False
        self._sockets = {}
        self.hosts = dict(hosts or {})
        self.route_table = _RemoteRoutes(self)  # type: ignore[assignment]
        self.attach_server = None
        self._abortable = set()
        self._aborted = set()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"Stack.{name} is only in the process that owns the stack (pid "
            f"{self.__dict__.get('owner_pid', '?')}); this process is attached to it and "
            "has its sockets and name lookups")

    def __repr__(self) -> str:
        return f"<loopstack.Stack attached to pid {self.owner_pid}>"

    def _call(self, op: str, *args: Any) -> Any:
        if self._link is None:
            raise owner_gone(self.owner_pid)
        return self._link.call(op, 0, None, args)[0]

    def socket(self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM,
               proto: int = 0) -> RemoteSocket:
        handle = self._call("socket", family, type, proto)
        kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
        timeout = 0.0 if type & SOCK_NONBLOCK else _socket.getdefaulttimeout()
        return RemoteSocket(self, int(handle), family, kind, proto, timeout)

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[Any]:
        infos = self._call("getaddrinfo", host, port, family, type, proto, flags)
        return [(_family(f), _kind(k), p, canon, tuple(addr))
                for f, k, p, canon, addr in infos]

    def gethostbyname(self, name: str) -> str:
        return str(self._call("gethostbyname", name))

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        host, aliases, addrs = self._call("gethostbyname_ex", name)
        return host, list(aliases), list(addrs)

    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]:
        host, aliases, addrs = self._call("gethostbyaddr", address)
        return host, list(aliases), list(addrs)

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        host, port = self._call("getnameinfo", sockaddr, flags)
        return host, port

    def sockets(self) -> list[dict[str, Any]]:
        return list(self._call("sockets"))

    def stats(self) -> dict[str, dict[str, int]]:
        return dict(self._call("stats"))

    def routes(self) -> list[str]:
        return list(self._call("routes"))

    def serve_children(self) -> Any:
        raise OSError(errno.EOPNOTSUPP,
                      "only the process that owns the stack serves it; processes this one "
                      "starts attach to the owner through LOOPSTACK_ATTACH")

    def close(self) -> None:
        """Detach this process (its sockets are released by the owner)."""
        if self._closed:
            return
        self._closed = True
        if self._link is not None:
            self._link.close()

    def __enter__(self) -> RemoteStack:
        return self


__all__ = ["Link", "RemoteSocket", "RemoteStack", "adopt"]
