"""The BSD socket object: the methods, constants and exceptions of the
standard library's ``socket.socket``, over a loopstack stack.

Errors are raised as ``OSError(errno, strerror)``, which Python turns into
the same subclasses the kernel's errors become (ConnectionRefusedError,
BlockingIOError, ...); timeouts raise TimeoutError("timed out") as the
stdlib does. ``fileno()`` makes a real descriptor (readiness.py) only when
asked, so select, poll, epoll and selectors can watch the socket: it reads
ready while the socket has something to read, and is always writable.
"""

from __future__ import annotations

import builtins
import errno
import os
import socket as _socket
import struct
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .ip.addr import AF_INET, AF_INET6, V4_ANY, V4_LIMITED_BROADCAST, V6_ANY, to_text
from .ip.route import BROADCAST, LOCAL
from .names import numeric_host
from .readiness import Readiness
from .transport.ports import mapped, v4_of
from .transport.udp import RMEM_MAX, SOCK_MIN_RCVBUF, SOCK_MIN_SNDBUF, WMEM_MAX, UdpSock

if TYPE_CHECKING:
    from .stack import Stack

# Plain ints: IntFlag arithmetic costs ~450 ns a test on the hot path.
MSG_PEEK = int(_socket.MSG_PEEK)
MSG_DONTWAIT = int(_socket.MSG_DONTWAIT)
MSG_TRUNC = int(_socket.MSG_TRUNC)
MSG_WAITALL = int(_socket.MSG_WAITALL)
MSG_OOB = int(_socket.MSG_OOB)
SOCK_NONBLOCK = getattr(_socket, "SOCK_NONBLOCK", 0o4000)
SOCK_CLOEXEC = getattr(_socket, "SOCK_CLOEXEC", 0o2000000)
_MSG_KNOWN = MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC | MSG_WAITALL \
    | getattr(_socket, "MSG_NOSIGNAL", 0x4000) | getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
_INT = struct.Struct("i")
_LINGER = struct.Struct("ii")
SO_DOMAIN = getattr(_socket, "SO_DOMAIN", 39)
SO_PROTOCOL = getattr(_socket, "SO_PROTOCOL", 38)
IP_TTL = _socket.IP_TTL
IP_PKTINFO = getattr(_socket, "IP_PKTINFO", 8)
IP_RECVTTL = getattr(_socket, "IP_RECVTTL", 12)
IPV6_PKTINFO = getattr(_socket, "IPV6_PKTINFO", 50)
IPV6_RECVPKTINFO = getattr(_socket, "IPV6_RECVPKTINFO", 49)
IPV6_HOPLIMIT = getattr(_socket, "IPV6_HOPLIMIT", 52)
IPV6_RECVHOPLIMIT = getattr(_socket, "IPV6_RECVHOPLIMIT", 51)
MSG_CTRUNC = int(_socket.MSG_CTRUNC)
IPV6_V6ONLY = _socket.IPV6_V6ONLY
IPV6_UNICAST_HOPS = _socket.IPV6_UNICAST_HOPS
_SOCK_TYPE_MASK = 0xF  # include/linux/net.h
_SOCK_MAX = 11  # SOCK_PACKET + 1


def error(code: int) -> OSError:
    """OSError(code, strerror): Python maps it to the matching subclass."""
    return OSError(code, os.strerror(code))


def _optval(value: Any, optlen: int | None) -> tuple[bytes | None, int]:
    """setsockopt's value as CPython passes it: an int (as a C int), a
    bytes-like buffer, or None with an explicit length (a NULL pointer)."""
    if optlen is not None:
        if value is not None:
            raise TypeError("setsockopt() takes 3 arguments, or None and an optlen")
        if not 0 <= optlen <= 0xFFFFFFFF:
            raise OverflowError("optlen out of range")
        return None, optlen
    if not isinstance(value, (str, float)) and hasattr(value, "__index__"):
        ival = value.__index__()
        if -(1 << 31) <= ival < (1 << 31):
            return _INT.pack(ival), 4
    try:
        raw = bytes(memoryview(value))
    except TypeError:
        raise TypeError("a bytes-like object is required, not "
                        f"'{type(value).__name__}'") from None
    return raw, len(raw)


def recvmsg_into_views(buffers: Iterable[Any], ancbufsize: int) -> list[memoryview]:
    """recvmsg_into's arguments checked as CPython checks them."""
    try:
        views = [memoryview(b).cast("B") for b in buffers]
    except TypeError:
        raise TypeError("recvmsg_into() argument 1 must be an iterable of "
                        "read-write bytes-like objects") from None
    if any(v.readonly for v in views):
        raise TypeError("recvmsg_into() argument 1 must be an iterable of "
                        "read-write bytes-like objects")
    if ancbufsize < 0:
        raise ValueError("negative buffer size in recvmsg_into()")
    return views


def scatter(data: bytes, views: list[memoryview]) -> int:
    """Copy ``data`` across ``views`` in order; the count copied."""
    pos = 0
    for v in views:
        chunk = data[pos : pos + len(v)]
        v[: len(chunk)] = chunk
        pos += len(chunk)
    return pos


def _timeout() -> TimeoutError:
    return TimeoutError("timed out")


class Socket:
    """A socket on a loopstack :class:`~loopstack.Stack`; behaves as
    ``socket.socket`` does on Linux's loopback."""

    _timeout: float | None
    # Set by host/owner.py while other processes hold this socket too.
    _shared: Any = None
    # A socket of loopstack's own machinery (a bridge's): not handed to a fork.
    _private = False

    def __init__(self, stack: Stack, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        nonblock = self._init_common(stack, family, type, proto, fileno)
        kind, family, proto = self._kind, int(self._family), self._proto
        self._udp: UdpSock | None = None
        if kind == _socket.SOCK_DGRAM:
            if proto in (_socket.IPPROTO_ICMP, _socket.IPPROTO_ICMPV6):
                # Linux's ping sockets need net.ipv4.ping_group_range, "1 0" by default.
                raise error(errno.EACCES)
            if proto not in (0, _socket.IPPROTO_UDP):
                raise error(errno.EPROTONOSUPPORT)
            with stack.locked:
                self._udp = stack.udp.socket(family == AF_INET6)
        elif kind == _socket.SOCK_STREAM:
            raise error(errno.EPROTONOSUPPORT)  # stream sockets are StreamSocket (stream.py)
        elif kind == _socket.SOCK_RAW:
            raise error(errno.EPROTONOSUPPORT)
        else:
            raise error(errno.ESOCKTNOSUPPORT)
        if nonblock:
            self._timeout = 0.0
        self._udp.wake = self._wake
        stack._register(self)

    def _init_common(self, stack: Stack, family: int, type: int, proto: int,
                     fileno: int | None = None) -> bool:
        """Checks and state every socket kind shares; True for SOCK_NONBLOCK."""
        if fileno is not None:
            raise error(errno.EBADF)  # loopstack sockets are not made from descriptors
        if family == -1:
            family = AF_INET
        if type == -1:
            type = _socket.SOCK_STREAM
        if proto == -1:
            proto = 0
        nonblock = bool(type & SOCK_NONBLOCK)
        kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
        if kind & ~_SOCK_TYPE_MASK or kind >= _SOCK_MAX:
            raise error(errno.EINVAL)  # Linux __sys_socket: not a type at all
        if family not in (AF_INET, AF_INET6):
            raise error(errno.EAFNOSUPPORT)
        self._stack = stack
        self._family = _socket.AddressFamily(family)
        self._kind = kind
        self._proto = proto  # as given, like socket.socket().proto; SO_PROTOCOL tells the truth
        self._timeout = _socket.getdefaulttimeout()
        self._cond = threading.Condition(stack.lock)
        self._closed = False
        self._efd: Readiness | None = None
        self._keepalive = 0
        self._linger = (0, 0)
        self._rcvlowat = 1
        self._last_address: Any = None  # sendto's last numeric address, parsed
        self._last_sockaddr: tuple[bytes, int] = (b"", 0)
        return nonblock

    # -- identity ------------------------------------------------------------
    @property
    def family(self) -> _socket.AddressFamily:
        return self._family

    @property
    def type(self) -> _socket.SocketKind:
        return _socket.SocketKind(self._kind)

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def stack(self) -> Stack:
        return self._stack

    def __repr__(self) -> str:
        parts = [f"fd={self._efd.fileno() if self._efd is not None else -1 if self._closed else 0}",
                 f"family={self._family.value}", f"type={self._kind}", f"proto={self._proto}"]
        if not self._closed:
            try:
                parts.append(f"laddr={self.getsockname()}")
                parts.append(f"raddr={self.getpeername()}")
            except OSError:
                pass
        state = " [closed]" if self._closed else ""
        return f"<loopstack.socket{state} {', '.join(parts)}>"

    # -- readiness -----------------------------------------------------------
    def _wake(self) -> None:
        """The protocol says something changed: wake waiters, update the fd."""
        self._cond.notify_all()
        if self._efd is not None:
            self._sync_fd()

    def _readable(self) -> bool:
        u = self._udp
        return u is not None and u.readable

    def _writable(self) -> bool:
        return True  # a UDP send on lo never waits for buffer space

    def _sync_fd(self) -> None:
        fd = self._efd
        if fd is not None:
            closed = self._closed
            fd.update(closed or self._readable(), closed or self._writable())

    def fileno(self) -> int:
        """A descriptor for select/poll/epoll/selectors/asyncio: readable and
        writable exactly when this socket is (see readiness.py). It carries no
        data: read and write through the socket's methods."""
        if self._closed:
            return -1
        with self._stack.locked:
            if self._efd is None:
                self._efd = Readiness()
                self._sync_fd()
            return self._efd.fileno()

    # -- blocking --------------------------------------------------------------
    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def _wait(self, ready: Callable[[], bool], flags: int) -> None:
        """Block (lock held) until ``ready()`` as the socket's mode says."""
        if ready():
            return
        if self._timeout == 0.0 or flags & MSG_DONTWAIT:
            raise error(errno.EAGAIN)
        if not self._stack.wait_for(self._cond, lambda: ready() or self._closed, self._timeout):
            raise _timeout()
        if self._closed:
            raise error(errno.EBADF)

    def _check(self) -> UdpSock:
        if self._closed:
            raise error(errno.EBADF)
        assert self._udp is not None
        return self._udp

    # -- addresses -------------------------------------------------------------
    def _host(self, host: Any, what: str) -> bytes:
        """CPython's setipaddr(): '' is the wildcard, '<broadcast>' the
        limited broadcast; literals go through inet_pton; names through the
        stack's hosts table."""
        if not isinstance(host, str):
            raise TypeError(f"{what}(): AF_INET address must be tuple, not "
                            f"{type(host).__name__}" if self._family == AF_INET else
                            f"{what}(): host must be str")
        v6 = self._family == AF_INET6
        if host == "":
            return V6_ANY if v6 else V4_ANY
        if host == "<broadcast>":
            if v6:
                raise OSError("address family mismatched")  # as CPython's setipaddr
            return V4_LIMITED_BROADCAST
        if v6:
            try:
                return _socket.inet_pton(AF_INET6, host.split("%", 1)[0])
            except OSError:
                pass
        else:
            try:
                return _socket.inet_pton(AF_INET, host)
            except OSError:
                pass
        infos = self._stack.getaddrinfo(host, None, self._family)
        return numeric_host(infos[0][4][0]) or b""

    def _sockaddr(self, address: Any, what: str) -> tuple[bytes, int]:
        if self._family == AF_INET:
            if not isinstance(address, tuple) or len(address) != 2:
                raise TypeError(f"{what}(): AF_INET address must be tuple, not "
                                f"{type(address).__name__}")
            host, port = address
        else:
            if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
                raise TypeError(f"{what}(): AF_INET6 address must be tuple, not "
                                f"{type(address).__name__}")
            host, port = address[0], address[1]
        if not isinstance(port, int):
            raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
        if not 0 <= port <= 65535:
            raise OverflowError(f"{what}(): port must be 0-65535.")
        return self._host(host, what), port

    def _text(self, addr: bytes, port: int) -> tuple[Any, ...]:
        if self._family == AF_INET:
            return (to_text(addr), port)
        if len(addr) == 4:
            addr = mapped(addr)
        return (to_text(addr), port, 0, 0)

    def getsockname(self) -> tuple[Any, ...]:
        with self._stack.locked:
            u = self._check()
            return self._text(u.local_addr, u.local_port)

    def getpeername(self) -> tuple[Any, ...]:
        with self._stack.locked:
            u = self._check()
            # inet_getname(): a peer port of 0 (connect to port 0) is "not connected".
            if u.remote_addr is None or u.remote_port == 0:
                raise error(errno.ENOTCONN)
            return self._text(u.remote_addr, u.remote_port)

    def _is_local(self, addr: bytes) -> bool:
        four = v4_of(addr) if len(addr) == 16 else addr
        if four is not None:
            if four == V4_ANY or four[0] >= 224:
                return True  # wildcard, multicast and limited broadcast may be bound
            route = self._stack.route_table.lookup(four)
            return route is not None and route.kind in (LOCAL, BROADCAST)
        if addr == V6_ANY or addr[0] == 0xFF:
            return True
        route = self._stack.route_table.lookup(addr)
        return route is not None and route.kind == LOCAL

    def bind(self, address: Any) -> None:
        addr, port = self._sockaddr(address, "bind")
        with self._stack.locked:
            u = self._check()
            if u.v6only and len(addr) == 16 and v4_of(addr) is not None:
                # Linux __inet6_bind: "Binding to v4-mapped address on a
                # v6-only socket makes no sense".
                raise error(errno.EINVAL)
            if not self._is_local(addr):
                raise error(errno.EADDRNOTAVAIL)
            u.bind(addr, port)
            if len(addr) == 16 and addr != V6_ANY and v4_of(addr) is None:
                u.v6only = True  # __inet6_bind: a specific IPv6 address is IPv6 only

    def connect(self, address: Any) -> None:
        addr, port = self._sockaddr(address, "connect")
        with self._stack.locked:
            u = self._check()
            u.connect(addr, port)
            self._wake()

    def listen(self, backlog: int = 128) -> None:
        with self._stack.locked:
            self._check()
            raise error(errno.EOPNOTSUPP)  # datagram sockets do not listen

    def accept(self) -> tuple[Socket, Any]:
        with self._stack.locked:
            self._check()
            raise error(errno.EOPNOTSUPP)

    def connect_ex(self, address: Any) -> int:
        try:
            self.connect(address)
        except OSError as e:
            if e.errno is None:
                raise
            return e.errno
        return 0

    # -- sending ---------------------------------------------------------------
    def send(self, data: Any, flags: int = 0) -> int:
        return self._sendto(data, flags, None)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._sendto(data, flags, None)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        if address is None:
            flags, address = 0, flags_or_address
        else:
            flags = flags_or_address
        if address is None:
            raise TypeError("sendto() argument 2 must be a tuple")
        return self._sendto(data, flags, address)

    def sendmsg(self, buffers: Iterable[Any], ancdata: Iterable[Any] = (), flags: int = 0,
                address: Any = None) -> int:
        ttl = None
        for level, kind, value in ancdata:
            # The per-datagram TTL / hop limit (Linux ip_cmsg_send, ip6_datagram_send_ctl).
            if (level, kind) in ((_socket.IPPROTO_IP, IP_TTL),
                                 (_socket.IPPROTO_IPV6, IPV6_HOPLIMIT)):
                raw = bytes(value)
                if len(raw) != 4:
                    raise error(errno.EINVAL)
                ttl = _INT.unpack(raw)[0]
                if not (1 if level == _socket.IPPROTO_IP else 0) <= ttl <= 255:
                    raise error(errno.EINVAL)
            else:
                raise error(errno.EINVAL)  # other control messages are not supported
        data = b"".join(bytes(memoryview(b)) for b in buffers)
        return self._sendto(data, flags, address, ttl)

    def _sendto(self, data: Any, flags: int, address: Any, ttl: int | None = None) -> int:
        payload = bytes(memoryview(data))
        if flags & MSG_OOB:
            raise error(errno.EOPNOTSUPP)
        with self._stack.locked:
            u = self._check()
            if address is None:
                return u.sendto(payload, None, 0, ttl)
            if address == self._last_address:
                addr, port = self._last_sockaddr
            else:
                addr, port = self._sockaddr(address, "sendto")
                if numeric_host(address[0]) is not None:  # names may change: not cached
                    self._last_address, self._last_sockaddr = address, (addr, port)
            return u.sendto(payload, addr, port, ttl)

    # -- receiving ---------------------------------------------------------------
    def _recv(self, flags: int) -> tuple[bytes, tuple[Any, ...] | None, int]:
        """One datagram: (data, source address, its full length)."""
        data, src, sport = self._recv_raw(flags)
        return data, (self._text(src, sport) if src else None), len(data)

    def _recv_raw(self, flags: int) -> tuple[bytes, bytes, int]:
        """One datagram: (data, source address bytes, source port); the
        address is b"" at end of data. MSG_OOB is ignored, as udp_recvmsg
        ignores it (sending with it is EOPNOTSUPP)."""
        with self._stack.locked:
            u = self._check()
            self._wait(lambda: u.readable, flags)
            if u.so_error:
                code, u.so_error = u.so_error, 0
                self._sync_fd()
                raise error(code)
            d = u.dequeue(bool(flags & MSG_PEEK))
            u.last_dequeued = d
            if self._efd is not None:
                self._sync_fd()
            if d is None:
                return b"", b"", 0  # shut down for reading
            return d.data, d.src, d.sport

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        data = self._recv_raw(flags)[0]
        return data[:bufsize] if len(data) > bufsize else data

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        data, addr, _ = self._recv(flags)
        return data[:bufsize], addr

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._recv_into(buffer, nbytes, flags, "recv_into")[0]

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        n, src, sport = self._recv_into(buffer, nbytes, flags, "recvfrom_into")
        return n, (self._text(src, sport) if src else None)

    def _recv_into(self, buffer: Any, nbytes: int, flags: int, what: str
                   ) -> tuple[int, bytes, int]:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError(f"negative buffersize in {what}")
        if nbytes == 0:
            nbytes = len(view)
        elif nbytes > len(view):
            raise ValueError("nbytes is greater than the length of the buffer")
        data, src, sport = self._recv_raw(flags)
        n = min(len(data), nbytes)
        view[:n] = data if n == len(data) else data[:n]
        return (len(data) if flags & MSG_TRUNC else n), src, sport

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0
                ) -> tuple[bytes, list[Any], int, Any]:
        if bufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        data, src, sport, anc, msg_flags = self._recv_msg(flags, ancbufsize)
        if len(data) > bufsize:
            msg_flags |= MSG_TRUNC
        return data[:bufsize], anc, msg_flags, (self._text(src, sport) if src else None)

    def recvmsg_into(self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0
                     ) -> tuple[int, list[Any], int, Any]:
        # Check every argument before a datagram is taken, or a bad one loses it.
        views = recvmsg_into_views(buffers, ancbufsize)
        data, src, sport, anc, msg_flags = self._recv_msg(flags, ancbufsize)
        pos = scatter(data, views)
        if len(data) > sum(len(v) for v in views):
            msg_flags |= MSG_TRUNC
        return pos, anc, msg_flags, (self._text(src, sport) if src else None)

    def _recv_msg(self, flags: int, ancbufsize: int
                  ) -> tuple[bytes, bytes, int, list[tuple[int, int, bytes]], int]:
        """A datagram with the control messages its socket asked for
        (Linux ip_cmsg_recv / ip6_datagram_recv_ctl), cut to ancbufsize."""
        if ancbufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        with self._stack.locked:
            u = self._check()
            data, src, sport = self._recv_raw(flags)
            d = u.last_dequeued
        anc: list[tuple[int, int, bytes]] = []
        if d is not None and src:
            v6sock = self._family == AF_INET6
            local = v4_of(d.dst) if len(d.dst) == 16 and d.v4 else d.dst
            if not v6sock or d.v4:
                if u.recv_pktinfo and local is not None:
                    anc.append((_socket.IPPROTO_IP, IP_PKTINFO,
                                struct.pack("i4s4s", d.ifindex, local, local)))
                if u.recv_ttl:
                    anc.append((_socket.IPPROTO_IP, IP_TTL, _INT.pack(d.ttl)))
            if v6sock:
                if u.recv_pktinfo6:
                    anc.append((_socket.IPPROTO_IPV6, IPV6_PKTINFO,
                                struct.pack("16sI", d.dst, d.ifindex)))
                if u.recv_hoplimit:
                    anc.append((_socket.IPPROTO_IPV6, IPV6_HOPLIMIT, _INT.pack(d.ttl)))
        msg_flags = 0
        room = ancbufsize
        kept = []
        for item in anc:
            need = _socket.CMSG_SPACE(len(item[2]))
            if need > room:
                msg_flags |= MSG_CTRUNC
                if room >= _socket.CMSG_LEN(0):
                    kept.append((item[0], item[1], item[2][: room - _socket.CMSG_LEN(0)]))
                break
            kept.append(item)
            room -= need
        return data, src, sport, kept, msg_flags

    # -- shutdown and close -------------------------------------------------------
    def shutdown(self, how: int) -> None:
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise error(errno.EINVAL)
        with self._stack.locked:
            u = self._check()
            # Linux inet_shutdown(): an unconnected datagram socket reports
            # ENOTCONN, yet the shutdown still takes effect.
            if how in (_socket.SHUT_RD, _socket.SHUT_RDWR):
                u.shut_rd = True
            if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
                u.shut_wr = True
            self._wake()
            if u.remote_addr is None:
                raise error(errno.ENOTCONN)

    def close(self) -> None:
        with self._stack.locked:
            if self._closed:
                return
            if self._shared is not None and self._shared.refs and not self._stack._closed:
                self._hand_over()
                return
            self._closed = True
            if self._udp is not None:
                self._udp.close()
            self._cond.notify_all()
            self._stack._unregister(self)
            efd, self._efd = self._efd, None
        if efd is not None:
            efd.close()

    # -- held by several processes (host/owner.py) ---------------------------------
    def _hand_over(self) -> None:
        """close() here while attached processes still hold the socket: as a
        kernel file stays open until its last descriptor closes, the socket's
        state moves to a new object that the owner keeps for them, and only
        this object is closed. Lock held."""
        inner = object.__new__(type(self))
        inner.__dict__.update(self.__dict__)
        inner._rebind()
        self._shared.sock = inner
        self._shared.local = False
        self._stack._unregister(self)
        self._stack._register(inner)
        self._closed = True
        self._efd = None  # the inner socket's now
        self._shared = None
        self._cond.notify_all()

    def _rebind(self) -> None:
        """Point the protocol's callbacks at this object."""
        if self._udp is not None:
            self._udp.wake = self._wake

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """As socket.sendfile, through send(): the descriptor carries no data."""
        if self._kind != _socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if offset:
            file.seek(offset)
        total = 0
        while count is None or total < count:
            want = 65536 if count is None else min(65536, count - total)
            chunk = file.read(want)
            if not chunk:
                break
            self.sendall(chunk)
            total += len(chunk)
        if total and hasattr(file, "seek"):
            file.seek(offset + total)
        return total

    def detach(self) -> int:
        raise error(errno.EOPNOTSUPP)

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, exc_type: builtins.type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- options -------------------------------------------------------------------
    # Linux dispatches by level: SOL_SOCKET to sk_setsockopt/sk_getsockopt,
    # SOL_IP to do_ip_*sockopt (for AF_INET6 UDP sockets too), SOL_IPV6 to
    # do_ipv6_*sockopt (AF_INET6 only). Each reads its value its own way.
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None
                   ) -> None:
        raw, length = _optval(value, optlen)
        with self._stack.locked:
            u = self._check()
            if level == _socket.SOL_SOCKET:
                self._set_sol_socket(u, optname, raw, length)
            elif level == _socket.IPPROTO_IP:
                # do_ip_setsockopt: an int, or a single byte when shorter.
                if optname in (IP_RECVTTL, IP_PKTINFO):
                    ival = _INT.unpack(raw[:4])[0] if raw is not None and length >= 4 else (
                        raw[0] if raw else 0)
                    if optname == IP_RECVTTL:
                        u.recv_ttl = bool(ival)
                    else:
                        u.recv_pktinfo = bool(ival)
                    return
                if optname != IP_TTL:
                    raise error(errno.ENOPROTOOPT)
                if length >= 1:
                    if raw is None:
                        raise error(errno.EFAULT)
                    ival = _INT.unpack(raw[:4])[0] if length >= 4 else raw[0]
                else:
                    ival = 0
                if length < 1 or (ival != -1 and not 1 <= ival <= 255):
                    raise error(errno.EINVAL)
                u.ttl = None if ival == -1 else ival
            elif level == _socket.IPPROTO_IPV6 and self._family == AF_INET6:
                # do_ipv6_setsockopt: a NULL or short value reads as 0, and
                # the int options then insist on a whole int.
                ival = _INT.unpack(raw[:4])[0] if raw is not None and length >= 4 else 0
                if optname == IPV6_V6ONLY:
                    if length < 4 or u.bound:
                        raise error(errno.EINVAL)
                    u.v6only = bool(ival)
                elif optname == IPV6_UNICAST_HOPS:
                    if length < 4 or not -1 <= ival <= 255:
                        raise error(errno.EINVAL)
                    u.hop_limit = None if ival == -1 else ival
                elif optname in (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO):
                    if length < 4:
                        raise error(errno.EINVAL)
                    if optname == IPV6_RECVHOPLIMIT:
                        u.recv_hoplimit = bool(ival)
                    else:
                        u.recv_pktinfo6 = bool(ival)
                else:
                    raise error(errno.ENOPROTOOPT)
            else:
                raise error(errno.ENOPROTOOPT)

    def _set_sol_socket(self, u: UdpSock, optname: int, raw: bytes | None, length: int) -> None:
        # sk_setsockopt: every option needs at least an int.
        if length < 4:
            raise error(errno.EINVAL)
        if raw is None:
            raise error(errno.EFAULT)
        ival = _INT.unpack(raw[:4])[0]
        if optname == _socket.SO_REUSEADDR:
            u.reuseaddr = bool(ival)
        elif optname == _socket.SO_REUSEPORT:
            u.reuseport = bool(ival)
        elif optname == _socket.SO_BROADCAST:
            u.broadcast = bool(ival)
        elif optname == _socket.SO_RCVBUF:
            # min_t(u32, val, rmem_max), then doubled (__sock_set_rcvbuf).
            u.rcvbuf = max(SOCK_MIN_RCVBUF, min(ival & 0xFFFFFFFF, RMEM_MAX) * 2)
        elif optname == _socket.SO_SNDBUF:
            u.sndbuf = max(SOCK_MIN_SNDBUF, min(ival & 0xFFFFFFFF, WMEM_MAX) * 2)
        elif optname == _socket.SO_KEEPALIVE:
            self._keepalive = int(bool(ival))
        elif optname == _socket.SO_LINGER:
            if length < _LINGER.size:
                raise error(errno.EINVAL)
            onoff, seconds = _LINGER.unpack(raw[: _LINGER.size])
            self._linger = (int(bool(onoff)), seconds)
        elif optname == _socket.SO_RCVLOWAT:
            self._rcvlowat = ival if ival >= 0 else 0x7FFFFFFF  # negative means INT_MAX
        else:
            # SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ERROR, SO_ACCEPTCONN are
            # read-only; SO_SNDLOWAT is not changeable on Linux.
            raise error(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if buflen is not None and buflen != 0 and not 0 < buflen <= 1024:
            raise OSError("getsockopt buflen out of range")  # CPython's check, no errno
        raw, one_byte = self._getsockopt_raw(level, optname)
        if not buflen:  # CPython reads an int (what the kernel did not fill stays 0)
            return _INT.unpack(raw[:4].ljust(4, b"\0"))[0]
        value = _INT.unpack(raw[:4])[0]
        if one_byte and buflen < 4 and 0 <= value <= 255:
            return bytes((value,))  # do_ip_getsockopt: a short buffer gets one byte
        return raw[:buflen]

    def _getsockopt_raw(self, level: int, optname: int) -> tuple[bytes, bool]:
        """The option's value as the kernel would copy it out (whole), and
        whether do_ip_getsockopt's one-byte rule applies."""
        with self._stack.locked:
            u = self._check()
            if level == _socket.SOL_SOCKET:
                if optname == _socket.SO_ERROR:
                    code, u.so_error = u.so_error, 0
                    self._sync_fd()
                    return _INT.pack(code), False
                if optname == _socket.SO_LINGER:
                    return _LINGER.pack(*self._linger), False
                if optname in (_socket.SO_RCVTIMEO, _socket.SO_SNDTIMEO):
                    return bytes(16), False  # struct timeval {0, 0}: no timeout
                simple = {
                    _socket.SO_REUSEADDR: int(u.reuseaddr),
                    _socket.SO_REUSEPORT: int(u.reuseport),
                    _socket.SO_BROADCAST: int(u.broadcast),
                    _socket.SO_RCVBUF: u.rcvbuf,
                    _socket.SO_SNDBUF: u.sndbuf,
                    _socket.SO_TYPE: self._kind,
                    SO_DOMAIN: int(self._family),
                    SO_PROTOCOL: _socket.IPPROTO_UDP,
                    _socket.SO_KEEPALIVE: self._keepalive,
                    _socket.SO_ACCEPTCONN: 0,
                    _socket.SO_RCVLOWAT: self._rcvlowat,
                    _socket.SO_SNDLOWAT: 1,
                }
                if optname in simple:
                    return _INT.pack(simple[optname]), False
                raise error(errno.ENOPROTOOPT)
            if level == _socket.IPPROTO_IP:
                if optname == IP_TTL:
                    ttl = u.ttl if u.ttl is not None else self._stack.ipv4.default_ttl
                    return _INT.pack(ttl), True
                if optname == IP_RECVTTL:
                    return _INT.pack(int(u.recv_ttl)), True
                if optname == IP_PKTINFO:
                    return _INT.pack(int(u.recv_pktinfo)), True
                raise error(errno.ENOPROTOOPT)
            if level == _socket.IPPROTO_IPV6 and self._family == AF_INET6:
                if optname == IPV6_V6ONLY:
                    return _INT.pack(int(u.v6only)), False
                if optname == IPV6_UNICAST_HOPS:
                    return _INT.pack(u.hop_limit if u.hop_limit is not None
                                     else self._stack.ipv6.default_hop_limit), False
                if optname == IPV6_RECVHOPLIMIT:
                    return _INT.pack(int(u.recv_hoplimit)), False
                if optname == IPV6_RECVPKTINFO:
                    return _INT.pack(int(u.recv_pktinfo6)), False
                raise error(errno.ENOPROTOOPT)
            if level == _socket.IPPROTO_UDP:
                raise error(errno.ENOPROTOOPT)
            # Any other level (TCP's, IPv6's on an AF_INET socket): udp_getsockopt
            # hands it to ip_getsockopt, which says EOPNOTSUPP for AF_INET;
            # ipv6_getsockopt says ENOPROTOOPT.
            raise error(errno.EOPNOTSUPP if self._family == AF_INET else errno.ENOPROTOOPT)

    # -- table row -------------------------------------------------------------------
    def _row(self) -> dict[str, Any]:
        u = self._udp
        assert u is not None
        local = self._text(u.local_addr, u.local_port)
        peer = self._text(u.remote_addr, u.remote_port) if u.remote_addr is not None else None
        return {
            "proto": "udp6" if self._family == AF_INET6 else "udp",
            "state": "ESTAB" if u.remote_addr is not None else "UNCONN",
            "recv_q": u.rcv_used,
            "send_q": 0,
            "local": local,
            "peer": peer,
        }


__all__ = ["Socket", "error"]
