"""The BSD socket object: the methods, constants and exceptions of the
standard library's ``socket.socket``, over a loopstack stack; and the
datagram sockets (UDP, UDP-Lite).

``Socket`` is a subclass of ``socket.socket`` whose C part never has a
descriptor (made with ``_socket.socket.__new__``, its C ``__init__`` never
run), so ``isinstance(s, socket.socket)`` holds; every method a program can
reach is defined here in Python, with CPython's argument checks and words.
Errors are raised as ``OSError(errno, strerror)``, which Python turns into
the same subclasses the kernel's errors become (ConnectionRefusedError,
BlockingIOError, ...); timeouts raise TimeoutError("timed out") as the
stdlib does. ``fileno()`` makes a real descriptor (readiness.py) only when
asked, so select, poll, epoll and selectors can watch the socket: it reads
ready while the socket has something to read, and writable while it can
take data.

One socket may have several objects (dup, fromfd, ``socket(fileno=)``, a
fork's), as a kernel socket has several descriptors: see :class:`Socket`.
"""

from __future__ import annotations

import errno
import fcntl
import math
import operator
import os
import socket as _socket
import stat
import struct
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from types import FunctionType as _FunctionType
from typing import TYPE_CHECKING, Any, Self

from .clock import Condition
from .ip.addr import AF_INET, AF_INET6, V4_ANY, V4_LIMITED_BROADCAST, V6_ANY, to_text
from .ip.route import BROADCAST, LOCAL
from .names import needs_scope, numeric_host
from .readiness import Readiness, set_nonblocking
from .readiness import peer_floor as readiness_peer_floor
from .transport.ports import PortTable, mapped, v4_of
from .transport.udp import (
    PROTO_UDPLITE,
    RMEM_MAX,
    SOCK_MIN_RCVBUF,
    SOCK_MIN_SNDBUF,
    UDP,
    WMEM_MAX,
    UdpSock,
)

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
IP_TOS = _socket.IP_TOS
IPV6_PKTINFO = getattr(_socket, "IPV6_PKTINFO", 50)
IPV6_RECVPKTINFO = getattr(_socket, "IPV6_RECVPKTINFO", 49)
IPV6_HOPLIMIT = getattr(_socket, "IPV6_HOPLIMIT", 52)
IPV6_RECVHOPLIMIT = getattr(_socket, "IPV6_RECVHOPLIMIT", 51)
MSG_CTRUNC = int(_socket.MSG_CTRUNC)
IPV6_V6ONLY = _socket.IPV6_V6ONLY
IPV6_UNICAST_HOPS = _socket.IPV6_UNICAST_HOPS
_SOCK_TYPE_MASK = 0xF  # include/linux/net.h
_SOCK_MAX = 11  # SOCK_PACKET + 1
IPV6_TCLASS = getattr(_socket, "IPV6_TCLASS", 67)
IPV6_RECVTCLASS = getattr(_socket, "IPV6_RECVTCLASS", 66)
IPPROTO_UDPLITE = PROTO_UDPLITE
UDPLITE_SEND_CSCOV = getattr(_socket, "UDPLITE_SEND_CSCOV", 10)
UDPLITE_RECV_CSCOV = getattr(_socket, "UDPLITE_RECV_CSCOV", 11)
_TIMEVAL = struct.Struct("qq")  # struct timeval (__kernel_old_timeval on 64 bits)
# The kernel's tick: SO_RCVTIMEO and SO_SNDTIMEO are kept in jiffies, so a
# time reads back rounded up to a multiple of 1/HZ s (CONFIG_HZ=250, as the
# host kernel the differential tests run on).
HZ = 250
_MAX_JIFFIES = (1 << 63) - 1  # MAX_SCHEDULE_TIMEOUT (LONG_MAX)
UDP_CORK = 1
IP_RECVTOS = getattr(_socket, "IP_RECVTOS", 13)
# Linux's ip_tos2prio (net/ipv4/route.c): the SO_PRIORITY an IP_TOS sets,
# by the TOS bits (tos & 0x1E) >> 1.
_TOS_PRIORITY = (0, 0, 0, 0, 2, 2, 2, 2, 6, 6, 6, 6, 4, 4, 4, 4)


def tos_priority(tos: int) -> int:
    """rt_tos2priority: the socket priority Linux gives a TOS."""
    return _TOS_PRIORITY[(tos & 0x1E) >> 1]


_CAP_NET_ADMIN_OR_RAW = (1 << 12) | (1 << 13)
_capable: bool | None = None


def net_admin() -> bool:
    """Whether this process has CAP_NET_ADMIN or CAP_NET_RAW (its effective
    set in /proc/self/status), as sk_setsockopt asks for SO_PRIORITY above 6."""
    global _capable
    if _capable is None:
        _capable = False
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("CapEff:"):
                        _capable = bool(int(line.split()[1], 16) & _CAP_NET_ADMIN_OR_RAW)
        except OSError:
            _capable = os.geteuid() == 0
    return _capable
_MSG_MORE = int(getattr(_socket, "MSG_MORE", 0x8000))  # (an int: MsgFlag's & is Python code)
# UDP_ENCAP, UDP_NO_CHECK6_TX, UDP_NO_CHECK6_RX, UDP_SEGMENT, UDP_GRO
_UDP_ZERO_OPTIONS = frozenset({100, 101, 102, 103, 104})


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


# -- CPython's argument conversions, with its messages ------------------------------
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_NS = 1_000_000_000


def c_index(value: Any) -> int:
    """An integer argument as CPython's converters read it (``__index__``)."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an "
                        "integer") from None


def c_long(value: Any) -> int:
    """PyLong_AsLong."""
    n = c_index(value)
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError("Python int too large to convert to C long")
    return n


def c_int(value: Any) -> int:
    """PyArg_Parse's "i"."""
    n = c_long(value)
    if n > _INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if n < _INT_MIN:
        raise OverflowError("signed integer is less than minimum")
    return n


def c_int_strict(value: Any) -> int:
    """_PyLong_AsInt."""
    n = c_index(value)
    if not _INT_MIN <= n <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return n


DEFAULT_BACKLOG = min(_socket.SOMAXCONN, 128)  # CPython's listen() default


def listen_backlog(backlog: Any) -> int:
    """listen()'s argument as CPython reads it: a C int, negative as 0."""
    return max(0, c_int(backlog))


def parse_timeout(value: Any) -> float | None:
    """settimeout()'s argument as CPython reads it (socket_parse_timeout):
    whole nanoseconds, rounded away from zero; None means blocking."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError("Invalid value NaN (not a number)")
        d = value * 1e9
        if not -9.223372036854775808e18 <= d < 9.223372036854775808e18:
            raise OverflowError("timestamp out of range for platform time_t")
        ns = math.ceil(d) if d >= 0 else math.floor(d)
    else:
        try:
            sec = operator.index(value)
        except TypeError:
            raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an "
                            "integer") from None
        ns = sec * _NS
        if not _LONG_MIN <= ns <= _LONG_MAX:
            raise OverflowError("timestamp too large to convert to C _PyTime_t")
    if ns < 0:
        raise ValueError("Timeout value out of range")
    return float(ns // _NS) if ns % _NS == 0 else ns / 1e9


_FAMILIES: dict[int, _socket.AddressFamily] = {
    AF_INET: _socket.AddressFamily.AF_INET, AF_INET6: _socket.AddressFamily.AF_INET6}


def _enum(kind: Any, value: int) -> Any:
    """socket.py's _intenum_converter: the enum member, or the plain int."""
    try:
        return kind(value)
    except ValueError:
        return value


def c_buffer(data: Any) -> memoryview:
    """A bytes-like argument ("y*"), with CPython's message for anything else."""
    try:
        return memoryview(data).cast("B")
    except TypeError:
        pass
    try:
        memoryview(data)
    except TypeError:
        raise TypeError("a bytes-like object is required, not "
                        f"'{type(data).__name__}'") from None
    # A buffer that is not C-contiguous (a strided memoryview): "y*" asks
    # for a contiguous one (PyBUF_SIMPLE).
    raise BufferError("memoryview: underlying buffer is not C-contiguous")


# -- the socket objects of one stack -------------------------------------------------
# Descriptors fileno() made, by the identity of the open file (readiness.py):
# socket.socket(fileno=fd) and socket.fromfd (through patch.py) find the
# socket of a descriptor, or of a dup of one, here.
_BY_FILE: dict[tuple[int, int], weakref.ref[Socket]] = {}
# Descriptors detach() left open, each with the hidden object that holds the
# socket for it until socket.socket(fileno=fd) takes it back. The number is
# the program's: no object owns it (_fd_owners), so loopstack never closes
# it (the program may close it, and the number be reused, at any time).
_DETACHED: dict[int, Socket] = {}
# id(hidden object) -> the number it stands for in _DETACHED.
_HOLDER_FD: dict[int, int] = {}
# Hidden objects holding a socket an attached process detached (host/owner.py)
# whose descriptor does not carry data: kept until the stack closes.
_KEPT: dict[int, Socket] = {}
# Descriptor numbers socket objects reserved when they were made (_reserve)
# whose readiness descriptor fileno() has not yet put there.
_RESERVED: set[int] = set()
_placeholder = -1  # this process's /dev/null descriptor the reserved numbers are dups of
_placeholder_identity = (0, 0)


def _reserve() -> int:
    """A descriptor number for a new socket object, taken when the object is
    made, as socket(2), accept(2) and dup(2) take the lowest free number at
    once (EMFILE then, not later). It is a duplicate of a /dev/null
    descriptor this process keeps (close-on-exec, as a new socket is) until
    ``fileno()`` puts the socket's readiness descriptor on it (dup2), so the
    numbers a program sees, and how many it has open, are the kernel's."""
    global _placeholder, _placeholder_identity
    if _placeholder < 0:
        opened = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:  # out of the way of the program's numbers, as readiness pairs' peers
            _placeholder = fcntl.fcntl(opened, fcntl.F_DUPFD_CLOEXEC, readiness_peer_floor())
            os.close(opened)
        except OSError:
            _placeholder = opened
        st = os.fstat(_placeholder)
        _placeholder_identity = (st.st_dev, st.st_ino)
    try:
        fd = os.dup(_placeholder)
    except OSError as e:
        raise error(e.errno or errno.EMFILE) from None
    _RESERVED.add(fd)
    return fd


# Reserved numbers handed to an in-process selector (asyncio's, selector.py)
# without a descriptor made for them: number -> the socket's Readiness.
_UNMADE: dict[int, Readiness] = {}
_SELECTOR_EVENTS = os.path.join("asyncio", "selector_events.py")


def unmade_readiness(fd: int) -> Readiness | None:
    """The Readiness of the socket whose reserved number ``fd`` is, when its
    descriptor was never made (only an in-process selector knows it)."""
    return _UNMADE.get(fd)


def _for_in_process_selector() -> bool:
    """Whether this fileno() call is asyncio's selector event loop taking
    the number for its own selector, and that selector learns loopstack
    sockets' readiness in-process (StackSelector, VirtualTimeSelector): the
    number then never reaches a real poller, and no descriptor need be made
    for it. Any other caller (select, poll, epoll, a program, asyncio's
    TransportSocket, os.sendfile's path) gets a real descriptor."""
    f: Any = sys._getframe(2)
    while f is not None and f.f_code.co_filename == __file__:  # the front's dispatcher
        f = f.f_back
    if f is None or not f.f_code.co_filename.endswith(_SELECTOR_EVENTS):
        return False
    events = sys.modules.get("asyncio.events")
    loop = events._get_running_loop() if events is not None else None
    return bool(getattr(getattr(loop, "_selector", None), "in_process_readiness", False))


def _unreserve(fd: int) -> None:
    """Give back a number _reserve took, for an object that was never made."""
    _RESERVED.discard(fd)
    os.close(fd)


def udplite(stack: Stack) -> UDP:
    """The stack's UDP-Lite (RFC 3828): UDP's code with protocol 136, its
    own port table and counters (UdpLite, UdpLite6), made with the first
    UDP-Lite socket (stack lock held)."""
    lite: UDP | None = stack.__dict__.get("udplite")
    if lite is None:
        groups = stack.mib.groups
        for name, like in (("UdpLite", "Udp"), ("UdpLite6", "Udp6")):
            group = stack.mib.group(name)
            for counter in groups.get(like, {}):
                group.setdefault(counter, 0)
        lite = UDP(stack.ipv4, stack.ipv6, stack.icmp4, stack.icmp6, groups["UdpLite"],
                   groups["UdpLite6"], PortTable(stack.rng, tcp=False), proto=PROTO_UDPLITE)
        stack.__dict__["udplite"] = lite
    return lite


class SocketTable(dict):  # type: ignore[type-arg]
    """A stack's socket objects, by ``id``: each held by a weak reference (an
    unclosed socket is closed when it is collected, as a kernel socket is).
    Unlike a ``weakref.WeakValueDictionary``, putting an object in and
    taking it out (``pop``) runs no Python code: an object leaves when it
    is closed (``_let_go``; a collected one is closed first, ``__del__``),
    so the reference's callback only tidies up after one that was not.
    ``values()`` gives the live objects."""

    def values(self) -> list[Socket]:  # type: ignore[override]
        live = []
        for ref in dict.values(self):
            sock = ref()
            if sock is not None:
                live.append(sock)
        return live

    def _gone(self, ref: weakref.ref[Socket]) -> None:
        """A registered object was collected while still registered."""
        for key, held in list(self.items()):
            if held is ref:
                del self[key]


def _register(stack: Stack, sock: Socket) -> None:
    """Put ``sock`` in the stack's table of socket objects (a SocketTable
    replaces the plain dict the stack starts with)."""
    table: Any = stack._sockets
    if type(table) is not SocketTable:
        table = SocketTable()
        for key, held in stack._sockets.items():
            table[key] = weakref.ref(held, table._gone)
        stack._sockets = table
    table[id(sock)] = weakref.ref(sock, table._gone)


def find_descriptor(fd: int) -> Socket | None:
    """The socket ``fd`` is a descriptor of (fileno() gave it, detach()
    returned it, or it is a dup of one of those), or None."""
    if not _BY_FILE:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    ref = _BY_FILE.get((st.st_dev, st.st_ino))
    return ref() if ref is not None else None


def _unshare_after_fork() -> None:
    """In the child of a fork, before host/attach.py turns every socket
    object into a proxy: objects of one socket share their state (one
    __dict__); each proxy needs its own."""
    from .stack import live_stacks  # (stack.py imports this module)

    for stack in list(live_stacks):
        table = stack.__dict__.get("_sockets")
        for sock in list(table.values()) if table is not None else ():
            sock.__dict__ = dict(sock.__dict__)
    _BY_FILE.clear()  # the copied stack is not this process's to use
    _DETACHED.clear()
    _HOLDER_FD.clear()
    _KEPT.clear()


if hasattr(os, "register_at_fork"):
    # Registered on import, so before attach.py's hook, and run before it.
    os.register_at_fork(after_in_child=_unshare_after_fork)


class _Implementation(type):
    """Socket's metaclass: ``isinstance(front, Socket)`` holds for a front
    (below) whose implementation is a Socket, as the front stands for it;
    ``type(front)`` is still ``socket.socket``."""

    def __instancecheck__(cls, obj: Any) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        impl = _FRONTS.get(id(obj))
        return impl is not None and type.__instancecheck__(cls, impl)


class Socket(_socket.socket, metaclass=_Implementation):
    """A socket on a loopstack :class:`~loopstack.Stack`; behaves as
    ``socket.socket`` does on Linux's loopback, and is one: a subclass whose
    C part never has a descriptor (every method is below, in Python). Under
    :func:`loopstack.patch` the program holds a *front* for it instead (an
    instance of ``socket.socket`` itself: see :func:`front`); ``Stack.socket()``
    and the other methods of a stack give Socket objects themselves.

    A kernel socket is one open file that several descriptors may refer to
    (dup, fromfd, fork); here a socket is one ``__dict__`` that several
    objects share (:meth:`_twin`), each with what CPython keeps per object:
    its timeout, its descriptor number, whether it is closed and makefile()'s
    count. The socket closes when its last object does. The protocol's
    callbacks go to a hidden object of the socket (the core), so the stack
    never keeps a program's object alive: one dropped unclosed is closed, with
    the ResourceWarning CPython gives."""

    # _closed and _io_refs are socket.socket's slots too: declared again here
    # so that this class's code reads them as plain slots, while
    # socket.socket's own are dispatchers for fronts (install_dispatchers).
    __slots__ = ("_closed", "_io_refs", "_timeout", "_fd", "_closing", "_shared", "_made_as",
                 "_fronted", "__dict__")

    _closed: bool
    _timeout: float | None
    _io_refs: int  # makefile() objects open on this object
    _fd: int  # this object's descriptor number, -1 until fileno() makes one
    _closing: bool  # close() called while makefile() objects use it
    # (family, type, proto) this object was made with from a descriptor
    # (socket.socket(..., fileno=fd)), which CPython shows as given; else None.
    _made_as: tuple[int, int, int] | None
    # Set by host/owner.py while other processes hold this object's socket too.
    _shared: Any
    # The program holds this object through a front (below): collected
    # unclosed, it is named in the ResourceWarning as the front was shown.
    _fronted: bool
    # A socket of loopstack's own machinery (a bridge's): not handed to a fork.
    _private = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        self = _socket.SocketType.__new__(cls)  # descriptor -1, C __init__ never run
        self._closed = True  # until a socket is behind it (__init__)
        self._io_refs = 0
        self._timeout = None
        self._fd = -1
        self._closing = False
        self._shared = None
        self._made_as = None
        self._fronted = False
        return self

    def __init__(self, stack: Stack, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        nonblock = self._init_common(stack, family, type, proto, fileno)
        kind, family, proto = self._kind, int(self._family), self._proto
        self._udp: UdpSock | None = None
        if kind == _socket.SOCK_DGRAM:
            if proto in (_socket.IPPROTO_ICMP, _socket.IPPROTO_ICMPV6):
                # Linux's ping sockets need net.ipv4.ping_group_range, "1 0" by default.
                raise error(errno.EACCES)
            if proto not in (0, _socket.IPPROTO_UDP, IPPROTO_UDPLITE):
                raise error(errno.EPROTONOSUPPORT)
            number = _reserve()
            with stack.locked:
                udp = stack.udp if proto != IPPROTO_UDPLITE else udplite(stack)
                self._udp = udp.socket(family == AF_INET6)
        elif kind == _socket.SOCK_STREAM:
            raise error(errno.EPROTONOSUPPORT)  # stream sockets are StreamSocket (stream.py)
        elif kind == _socket.SOCK_RAW:
            raise error(errno.EPROTONOSUPPORT)
        else:
            raise error(errno.ESOCKTNOSUPPORT)
        if nonblock:
            self._timeout = 0.0
        self._udp.wake = self._open()._wake
        self._fd = number  # (reserved numbers are owned by their object: _RESERVED)

    def _init_common(self, stack: Stack, family: int, type: int, proto: int,
                     fileno: int | None = None) -> bool:
        """Checks and state every socket kind shares; True for SOCK_NONBLOCK."""
        if fileno is not None:
            raise error(errno.EBADF)  # descriptors are patch.py's to look up
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
        self._family = _FAMILIES[family]  # (AddressFamily(family): checked above)
        self._kind = kind
        self._proto = proto  # as given, like socket.socket().proto; SO_PROTOCOL tells the truth
        self._timeout = _socket.getdefaulttimeout()
        self._cond = Condition(stack.lock)  # (clock.py: small; its deque made at the first wait)
        self._efd: Readiness | None = None
        self._fd_owners: dict[int, int] = {}  # descriptor number -> objects that own it
        self._refs = 0  # objects of this socket not closed, and detached descriptors
        self._keepalive = 0
        self._linger = (0, 0)
        self._rcvlowat = 1
        self._priority = 0  # SO_PRIORITY (sk_priority; IP_TOS sets it too)
        self._rcvtimeo: int | None = None  # SO_RCVTIMEO in jiffies; None: wait for ever
        self._sndtimeo: int | None = None
        # sendto's last numeric address and its parsed form, one tuple
        # (replaced whole: read without the lock).
        self._last_dest: tuple[Any, tuple[bytes, int]] = (None, (b"", 0))
        return nonblock

    def _open(self) -> Socket:
        """This object is the socket's first: count it, show it to the stack,
        and make the core, the hidden object the protocol's callbacks reach."""
        core = Socket.__new__(type(self))  # closed: nothing is ever done through it
        core.__dict__ = self.__dict__
        self._core = core
        self._refs = 1
        self._closed = False
        _register(self._stack, self)
        return core

    def _twin(self) -> Self:
        """Another object of this socket, as dup(2) makes another descriptor
        of an open file (stack lock held). It has this object's timeout."""
        twin = Socket.__new__(type(self))
        twin.__dict__ = self.__dict__
        twin._timeout = self._timeout
        twin._closed = False
        self._refs += 1
        _register(self._stack, twin)
        return twin

    # -- identity ------------------------------------------------------------
    @property
    def family(self) -> _socket.AddressFamily:
        shown = self._made_as
        return self._family if shown is None else _enum(_socket.AddressFamily, shown[0])

    @property
    def type(self) -> _socket.SocketKind:
        shown = self._made_as
        return _socket.SocketKind(self._kind) if shown is None \
            else _enum(_socket.SocketKind, shown[1])

    @property
    def proto(self) -> int:
        shown = self._made_as
        return self._proto if shown is None else shown[2]

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def stack(self) -> Stack:
        return self._stack

    def __repr__(self) -> str:
        """socket.socket's, naming loopstack's socket."""
        closed = self._closed
        fd = self._fd if self._fd in _RESERVED and not closed else self.fileno()
        text = (f"<loopstack.socket{' [closed]' if closed else ''} fd={fd}, "
                f"family={self.family}, type={self.type}, proto={self.proto}")
        if not closed:
            try:
                text += f", laddr={self.getsockname()}"
            except OSError:
                pass
            try:
                text += f", raddr={self.getpeername()}"
            except OSError:
                pass
        return text + ">"

    def __getstate__(self) -> Any:
        raise TypeError("cannot pickle 'socket' object")

    # -- readiness -----------------------------------------------------------
    def _wake(self) -> None:
        """The protocol says something changed: wake waiters, update the fd."""
        cond = self._cond
        if cond._waiters:  # (nobody waits: no calls)
            cond.notify_all()
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
            fd.update(self._readable(), self._writable())

    def fileno(self) -> int:
        """A descriptor for select/poll/epoll/selectors/asyncio: readable and
        writable exactly when this socket is (see readiness.py). It carries no
        data: read and write through the socket's methods. Each object of a
        socket has its own number (a dup of the first object's), the one it
        reserved when it was made (_reserve)."""
        if self._closed:
            return -1
        fd = self._fd
        if fd >= 0 and fd not in _RESERVED:
            return fd
        with self._stack.locked:
            if self._closed:
                return -1
            fd = self._fd
            if fd < 0 or fd in _RESERVED:
                efd = self._efd
                if fd >= 0 and (efd is None or not efd.paired) and _for_in_process_selector():
                    # asyncio's own selector: readiness in-process, no descriptor
                    if efd is None:
                        efd = self._efd = Readiness(self._kind == _socket.SOCK_STREAM, False)
                        self._sync_fd()
                    _UNMADE[fd] = efd
                    return fd
                if efd is None:
                    efd = self._efd = Readiness(self._kind == _socket.SOCK_STREAM)
                    self._sync_fd()
                    _BY_FILE[efd.identity] = weakref.ref(self._core)
                elif not efd.paired:
                    efd.make_pair()
                    _BY_FILE[efd.identity] = weakref.ref(self._core)
                watched = efd.fileno()
                owners = self._fd_owners
                if fd >= 0:
                    # The reserved number becomes a descriptor of the pair's
                    # watched end: the end itself if no object has it yet.
                    if watched < 0:  # the pair's end is the program's now (detach)
                        other = self._dup_of_file(efd)
                        if other < 0:
                            return -1
                        os.dup2(other, fd, os.get_inheritable(fd))
                        os.close(other)
                    elif watched in owners:
                        os.dup2(watched, fd, os.get_inheritable(fd))
                    else:
                        efd.move_to(fd)
                    _RESERVED.discard(fd)
                    _UNMADE.pop(fd, None)
                    owners[fd] = 1
                else:
                    if watched < 0:
                        fd = self._dup_of_file(efd)
                        if fd < 0:
                            return -1
                    else:
                        fd = os.dup(watched) if watched in owners else watched
                    owners[fd] = owners.get(fd, 0) + 1
                set_nonblocking(fd, self._timeout is not None)
                self._fd = fd
            return self._fd

    # -- blocking --------------------------------------------------------------
    # CPython keeps the timeout in the object, and sets O_NONBLOCK on the
    # descriptor for a timeout or non-blocking mode; a closed object says EBADF
    # (after taking the new value, as internal_setblocking fails last).
    def setblocking(self, flag: bool) -> None:
        self._set_timeout(None if c_long(flag) else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def settimeout(self, value: float | None) -> None:
        self._set_timeout(parse_timeout(value))

    def gettimeout(self) -> float | None:
        return self._timeout

    def _set_timeout(self, timeout: float | None) -> None:
        self._timeout = timeout
        if self._closed:
            raise error(errno.EBADF)
        fd = self._fd
        if fd >= 0:
            owners = self.__dict__.get("_fd_owners")  # (an attached socket has none)
            if owners is not None and fd not in owners and fd not in _RESERVED:
                raise error(errno.EBADF)  # another object closed this number
            if fd not in _RESERVED:  # (fileno() sets it when the descriptor is made)
                set_nonblocking(fd, timeout is not None)

    def _wait(self, ready: Callable[[], bool], flags: int, sending: bool = False,
              handoff: bool = False, closes: bool = False) -> None:
        """Block (lock held) until ``ready()`` as the socket's mode says. A
        blocking socket waits for SO_RCVTIMEO (SO_SNDTIMEO when ``sending``)
        at most, and then says EAGAIN, as the kernel's call does.
        ``handoff``: a wait for an answer (Stack.wait_for). ``closes``:
        ``ready()`` is also true once the socket is closed (else a wrapper
        adds that, a frame more at each look)."""
        if ready():
            return
        timeout = self._timeout
        if timeout == 0.0 or flags & MSG_DONTWAIT:
            raise error(errno.EAGAIN)
        limit = None
        if timeout is None:
            limit = self._sndtimeo if sending else self._rcvtimeo
            if limit is not None:
                if limit == 0:
                    raise error(errno.EAGAIN)  # a negative time was set: no wait at all
                timeout = limit / HZ
        if not self._stack.wait_for(self._cond, ready if closes else
                                    lambda: ready() or self._closed, timeout, handoff):
            if limit is not None:
                raise error(errno.EAGAIN)
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
        """CPython's idna_converter and setipaddr(): '' is the wildcard,
        '<broadcast>' the limited broadcast; literals go through inet_pton
        (an IPv6 one with a scope through getaddrinfo, which checks the
        scope); names through the stack's hosts table."""
        if isinstance(host, (bytes, bytearray)):
            host = bytes(host).decode("ascii", "surrogateescape")
        elif isinstance(host, str):
            if not host.isascii():
                host = host.encode("idna").decode("ascii")
        else:
            raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
        if "\0" in host:
            raise TypeError("host name must not contain null character")
        v6 = self._family == AF_INET6
        if host == "":
            return V6_ANY if v6 else V4_ANY
        if host == "<broadcast>":
            if v6:
                raise OSError("address family mismatched")  # as CPython's setipaddr
            return V4_LIMITED_BROADCAST
        if "%" not in host:
            try:
                return _socket.inet_pton(self._family, host)
            except OSError:
                pass
        infos = self._stack.getaddrinfo(host, None, self._family)
        return numeric_host(infos[0][4][0]) or b""

    def _sockaddr(self, address: Any, what: str) -> tuple[bytes, int]:
        """getsockaddrarg(): an address checked as CPython checks it, in its
        words. For AF_INET6 the flow label must fit 20 bits, and an address
        that needs a scope (link-local) needs a scope id of this stack's
        interfaces, as Linux's bind and connect say (EINVAL, ENODEV); a
        scope in the text is checked, and then replaced by the tuple's, as
        CPython does."""
        if self._family == AF_INET:
            if not isinstance(address, tuple):
                raise TypeError(f"{what}(): AF_INET address must be tuple, not "
                                f"{type(address).__name__}")
            if len(address) != 2:
                raise TypeError("AF_INET address must be a pair (host, port)")
            host, port = address
            flowinfo = scope = 0
        else:
            if not isinstance(address, tuple):
                raise TypeError(f"{what}(): AF_INET6 address must be tuple, not "
                                f"{type(address).__name__}")
            if not 2 <= len(address) <= 4:
                raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo"
                                "[, scopeid]])")
            host, port = address[0], address[1]
            # "I": an unsigned int, masked, no overflow check.
            flowinfo = c_index(address[2]) & 0xFFFFFFFF if len(address) > 2 else 0
            scope = c_index(address[3]) & 0xFFFFFFFF if len(address) > 3 else 0
        if type(port) is not int:  # (an int is its own c_int, or out of range below)
            try:
                port = c_int(port)
            except OverflowError:
                port = -1  # CPython words any overflow of the port as its range
        if not 0 <= port <= 65535:
            raise OverflowError(f"{what}(): port must be 0-65535.")
        if flowinfo > 0xFFFFF:
            raise OverflowError(f"{what}(): flowinfo must be 0-1048575.")
        addr = self._host(host, what)
        if what == "bind" or what == "connect":
            # CPython's sock_bind/sock_connect (connect_ex too): once the
            # address is parsed, before the system call. (sendto and
            # sendmsg raise theirs in _sendto and _sendmsg_args.)
            audit_socket(self, "socket." + what, address)
            if len(addr) == 16 and needs_scope(addr):
                if not scope:
                    raise error(errno.EINVAL)  # a link-local address requires an interface
                if scope not in self._stack.resolver.interfaces.values():
                    raise error(errno.ENODEV)
        return addr, port

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

    def _check_descriptor(self) -> None:
        """The program may close this object's descriptor behind its back
        (``socket.close(s.fileno())``, ``os.close``): on Linux the socket is
        then gone and every call says EBADF. Checked (one fstat) by the calls
        that set a socket up — bind, listen, connect — not by each send and
        receive; a number closed and reused by another file counts as closed."""
        fd = self._fd
        efd = self._efd
        if fd in _RESERVED:
            identity = _placeholder_identity
        elif fd < 0 or efd is None or efd.carrying:
            return
        else:
            identity = efd.identity
        try:
            st = os.fstat(fd)
        except OSError:
            raise error(errno.EBADF) from None
        if (st.st_dev, st.st_ino) != identity:
            raise error(errno.EBADF)

    def bind(self, address: Any) -> None:
        addr, port = self._sockaddr(address, "bind")
        self._check_descriptor()
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
        self._check_descriptor()
        with self._stack.locked:
            u = self._check()
            u.connect(addr, port)
            self._wake()

    def listen(self, backlog: int = DEFAULT_BACKLOG) -> None:
        listen_backlog(backlog)
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
        return self._sendto(data if type(data) is bytes else bytes(c_buffer(data)),
                            flags if type(flags) is int else c_int(flags), None)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.send(data, flags)

    def sendto(self, *args: Any, **kwargs: Any) -> int:
        """sendto(data[, flags], address), checked as CPython checks it."""
        if len(args) == 2 and not kwargs:  # the usual form, first
            data, address = args
            if address is None:
                self._sockaddr(address, "sendto")  # CPython's TypeError
            return self._sendto(data if type(data) is bytes else bytes(c_buffer(data)), 0,
                                address)
        if kwargs:
            raise TypeError("sendto() takes no keyword arguments")
        if len(args) == 2:
            data, address = args
            flags = 0
        elif len(args) == 3:
            data, flags, address = args
        else:
            raise TypeError(f"sendto() takes 2 or 3 arguments ({len(args)} given)")
        payload = bytes(c_buffer(data))  # (no view outlives the call: an error frees the buffer)
        flags = c_int(flags)
        if address is None:
            self._sockaddr(address, "sendto")  # CPython's TypeError: no address is not None
        return self._sendto(payload, flags, address, what="sendto")

    def _sendmsg_args(self, buffers: Any, ancdata: Any, flags: Any, address: Any
                      ) -> tuple[bytes, list[tuple[int, int, bytes]], int]:
        """sendmsg()'s arguments checked as CPython checks them, before
        anything is sent: (the data joined, the control messages, flags).
        The address is checked here too, and used by the caller."""
        flags = c_int(flags)
        if address is not None:
            self._sockaddr(address, "sendmsg")
        # CPython's sock_sendmsg: after the address, before the buffers
        # (None when there is none).
        audit_socket(self, "socket.sendmsg", address)
        try:
            parts = list(buffers)
        except TypeError:
            raise TypeError("sendmsg() argument 1 must be an iterable") from None
        data = b"".join(bytes(c_buffer(p)) for p in parts)
        try:
            items = list(ancdata)
        except TypeError:
            raise TypeError("sendmsg() argument 2 must be an iterable") from None
        anc = []
        for item in items:
            try:
                fields = tuple(item)
            except TypeError:
                raise TypeError("[sendmsg() ancillary data items]() argument must be "
                                f"sequence of length 3, not {type(item).__name__}") from None
            if len(fields) != 3:
                raise TypeError("[sendmsg() ancillary data items]() argument must be "
                                f"sequence of length 3, not {len(fields)}")
            anc.append((c_int(fields[0]), c_int(fields[1]), bytes(c_buffer(fields[2]))))
        return data, anc, flags

    @staticmethod
    def _sol_socket_cmsg(kind: int) -> None:
        """__sock_cmsg_send: SCM_RIGHTS and SCM_CREDENTIALS are AF_UNIX's and
        ignored elsewhere; the rest are not for an unprivileged sender."""
        if kind not in (_socket.SCM_RIGHTS, getattr(_socket, "SCM_CREDENTIALS", 2)):
            raise error(errno.EINVAL)

    def sendmsg(self, buffers: Iterable[Any], ancdata: Iterable[Any] = (), flags: int = 0,
                address: Any = None) -> int:
        data, anc, flags = self._sendmsg_args(buffers, ancdata, flags, address)
        ttl = tclass = tos = None
        v6 = self._family == AF_INET6
        if v6 and address is not None:
            # A v4-mapped destination goes through udp_sendmsg, which reads
            # only SOL_IP's messages (ip_cmsg_send).
            v6 = v4_of(self._sockaddr(address, "sendmsg")[0]) is None
        for level, kind, value in anc:
            # Linux ip_cmsg_send / ip6_datagram_send_ctl: SOL_SOCKET's, then
            # the socket's own level; any other level is skipped.
            if level == _socket.SOL_SOCKET:
                self._sol_socket_cmsg(kind)
            elif level == _socket.IPPROTO_IP and not v6:
                if kind == IP_TTL:
                    if len(value) != 4 or not 1 <= _INT.unpack(value)[0] <= 255:
                        raise error(errno.EINVAL)
                    ttl = _INT.unpack(value)[0]
                elif kind == IP_TOS:
                    # ip_cmsg_send: an int or a byte, 0..255.
                    if len(value) == 4:
                        number = _INT.unpack(value)[0]
                    elif len(value) == 1:
                        number = value[0]
                    else:
                        raise error(errno.EINVAL)
                    if not 0 <= number <= 255:
                        raise error(errno.EINVAL)
                    tos = number
                elif kind != IP_PKTINFO:  # (accepted, not carried out: the source is the route's)
                    raise error(errno.EINVAL)
            elif level == _socket.IPPROTO_IPV6 and v6:
                if kind in (IPV6_HOPLIMIT, IPV6_TCLASS):
                    if len(value) != 4 or not -1 <= _INT.unpack(value)[0] <= 255:
                        raise error(errno.EINVAL)
                    number = _INT.unpack(value)[0]
                    if kind == IPV6_HOPLIMIT:
                        ttl = None if number == -1 else number
                    else:
                        # -1 is kept as it is and reaches the header as a u8
                        # (inet6_cork.tclass): 0xff, not the socket's class.
                        tclass = number & 0xFF
                elif kind != IPV6_PKTINFO:  # accepted, not carried out
                    raise error(errno.EINVAL)
        return self._sendto(data, flags, address, ttl, tclass, what="sendmsg", tos=tos)

    def _sendto(self, data: Any, flags: int, address: Any, ttl: int | None = None,
                tclass: int | None = None, what: str = "sendto", tos: int | None = None) -> int:
        payload = bytes(data) if type(data) is not bytes else data
        if flags & MSG_OOB:
            raise error(errno.EOPNOTSUPP)
        if address is None:
            with self._stack.locked:
                if self._closed:  # (_check, inlined: the connected socket's send)
                    raise error(errno.EBADF)
                u = self._udp
                assert u is not None
                n = u.sendto(payload, None, 0, ttl, tclass, bool(flags & _MSG_MORE), tos)
            if u.udp.starved is not None and self._may_hand_over(flags):
                u.udp.hand_over()  # a reader starved by this thread's sends runs first
            return n
        last = self._last_dest
        if address == last[0]:
            addr, port = last[1]
        else:
            addr, port = self._sockaddr(address, what)
            if numeric_host(address[0]) is not None:  # names may change: not cached
                self._last_dest = (address, (addr, port))
        if what == "sendto":
            # CPython's sock_sendto: the address parsed, before the system
            # call (sendmsg's is raised in _sendmsg_args).
            audit_socket(self, "socket.sendto", address)
        with self._stack.locked:
            u = self._check()
            n = u.sendto(payload, addr, port, ttl, tclass, bool(flags & _MSG_MORE), tos)
        if u.udp.starved is not None and self._may_hand_over(flags):
            u.udp.hand_over()  # a reader starved by this thread's sends runs first
        return n

    def _may_hand_over(self, flags: int) -> bool:
        """Whether this send may wait for a starved reader (udp.py, the
        hand-over): only a blocking send on the real clock. A non-blocking
        one (an event loop's) returns at once, as Linux's always does."""
        return self._timeout is None and not flags & MSG_DONTWAIT and self._stack._vt is None

    # -- receiving ---------------------------------------------------------------
    def _recv(self, flags: int) -> tuple[bytes, tuple[Any, ...] | None, int]:
        """One datagram: (data, source address, its full length)."""
        data, src, sport = self._recv_raw(flags)
        return data, (self._text(src, sport) if src else None), len(data)

    def _recv_raw(self, flags: int) -> tuple[bytes, bytes, int]:
        """One datagram: (data, source address bytes, source port); the
        address is b"" at end of data. MSG_OOB is ignored, as udp_recvmsg
        ignores it (sending with it is EOPNOTSUPP)."""
        readers = self._udp.readers if self._udp is not None else []
        # This thread is in a receive on the socket, waiting for the lock,
        # the GIL or data: a sender that starves it lets it run (udp.py,
        # the hand-over). (list append and pop: atomic without the lock)
        readers.append(None)
        try:
            with self._stack.locked:
                u = self._check()
                if u.rcvq and not u.so_error:
                    pass  # a datagram waits: nothing to wait for
                elif u.shut_rd and not u.rcvq and not u.so_error and (
                        self._timeout is not None or flags & MSG_DONTWAIT):
                    # Shut for reading, a datagram socket polls readable, yet
                    # udp_recvmsg finds nothing and says EAGAIN; with a timeout
                    # CPython polls again: it waits for data, up to the timeout.
                    # Only a blocking call ends at once, with no data.
                    if self._timeout == 0.0 or flags & MSG_DONTWAIT:
                        raise error(errno.EAGAIN)
                    self._wait(lambda: bool(u.rcvq) or bool(u.so_error), flags)
                else:
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
        finally:
            readers.pop()

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
            raise ValueError("buffer too small for requested bytes" if what == "recv_into"
                             else "nbytes is greater than the length of the buffer")
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
            # udpv6_recvmsg: IPV6_PKTINFO for any datagram first (the common
            # part), then ip_cmsg_recv's for one that came over IPv4, or the
            # IPv6 ones (hop limit, traffic class) for one that came over IPv6.
            v6sock = self._family == AF_INET6
            local = v4_of(d.dst) if len(d.dst) == 16 and d.v4 else d.dst
            if v6sock and u.recv_pktinfo6:
                anc.append((_socket.IPPROTO_IPV6, IPV6_PKTINFO,
                            struct.pack("16sI", d.dst, d.ifindex)))
            if not v6sock or d.v4:
                if u.recv_pktinfo and local is not None:
                    anc.append((_socket.IPPROTO_IP, IP_PKTINFO,
                                struct.pack("i4s4s", d.ifindex, local, local)))
                if u.recv_ttl:
                    anc.append((_socket.IPPROTO_IP, IP_TTL, _INT.pack(d.ttl)))
                if u.recv_tos:  # ip_cmsg_recv_tos: the header's byte
                    anc.append((_socket.IPPROTO_IP, IP_TOS, bytes((d.tclass & 0xFF,))))
            else:
                if u.recv_hoplimit:
                    anc.append((_socket.IPPROTO_IPV6, IPV6_HOPLIMIT, _INT.pack(d.ttl)))
                if u.recv_tclass:
                    anc.append((_socket.IPPROTO_IPV6, IPV6_TCLASS, _INT.pack(d.tclass)))
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
        how = c_int_strict(how)
        with self._stack.locked:
            u = self._check()
            if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
                raise error(errno.EINVAL)
            # Linux inet_shutdown(): an unconnected datagram socket says
            # ENOTCONN, yet the shutdown takes effect (it falls through to
            # set sk_shutdown): SHUT_WR makes sends EPIPE; SHUT_RD makes it
            # poll readable while recv() still waits for data unless it
            # blocks for ever (see _recv_raw).
            if how in (_socket.SHUT_RD, _socket.SHUT_RDWR):
                u.shut_rd = True
            if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
                u.shut_wr = True
            self._wake()
            if u.remote_addr is None:
                raise error(errno.ENOTCONN)

    def close(self) -> None:
        """Close this object; the socket closes with its last object. As
        close(2), EBADF when another object already closed this object's
        descriptor number (two objects made on one number)."""
        if self._io_refs > 0:
            self._closing = True  # makefile() objects still use it (as socket.socket)
            return
        efd = None
        with self._stack.locked:
            if self._closed:
                return
            stale = self._fd >= 0 and self._fd not in self._fd_owners \
                and self._fd not in _RESERVED
            # (_outlived's first test inline: no descriptor was ever made)
            if self._let_go() and not (self._efd is not None and self._outlived()):
                efd = self._close_socket()
        if efd is not None:
            efd.close()
        if stale and not self._stack._closed:  # (the stack's own close goes on)
            raise error(errno.EBADF)

    def _close_socket(self) -> Readiness | None:
        """The socket's last object is closed: close the socket itself
        (stack lock held). Returns the readiness descriptor, for the caller
        to close once the lock is let go."""
        if self._udp is not None:
            self._udp.close()
        self._cond.notify_all()
        return self._forget_readiness()

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closing and self._io_refs == 0:
            self._closing = False
            self.close()

    def _let_go(self, keep_fd: bool = False) -> bool:
        """This object is done with the socket (stack lock held): it is
        closed, its waiters wake (EBADF), its reference goes, and its
        descriptor number is closed, for every object made on that number
        (close(2)), unless ``keep_fd`` (detach: another object has it). True
        when that was the socket's last reference: the caller then closes
        the socket itself (_close_socket)."""
        rec = self._shared
        if rec is not None and rec.refs and not self._stack._closed:
            self._hand_over()
        self._closed = True
        cond = self._cond
        if cond._waiters:  # (nobody waits: no calls)
            cond.notify_all()
        self._stack._sockets.pop(id(self), None)  # (Stack._unregister)
        fd, self._fd = self._fd, -1
        owners = self._fd_owners
        number = _HOLDER_FD.pop(id(self), None) if _HOLDER_FD else None
        if number is not None and _DETACHED.get(number) is self:
            # The hidden holder of a detached number (closed with the stack,
            # or the program closed every descriptor of a carrying pair):
            # the number is the program's, never closed here.
            del _DETACHED[number]
        if _KEPT:
            _KEPT.pop(id(self), None)
        if fd in owners:
            if keep_fd:
                if owners[fd] > 1:
                    owners[fd] -= 1
                else:
                    del owners[fd]
            else:
                del owners[fd]
                efd = self._efd
                if efd is None or fd != efd.fileno():  # the readiness pair closes with the socket
                    try:
                        os.close(fd)
                    except OSError:
                        pass  # the program closed it behind our back (os.close)
        elif fd in _RESERVED:  # never made: only this object had the number
            _RESERVED.discard(fd)
            _UNMADE.pop(fd, None)
            try:
                os.close(fd)
            except OSError:
                pass  # the program closed it behind our back (os.close)
        self._refs -= 1
        return self._refs <= 0

    def _forget_readiness(self) -> Readiness | None:
        """The socket is closing: its readiness descriptor goes (lock held;
        the caller closes what is returned, after letting the lock go)."""
        efd, self._efd = self._efd, None
        if efd is not None:
            _BY_FILE.pop(efd.identity, None)
        return efd

    # -- more objects for one socket ---------------------------------------------------
    def dup(self) -> Self:
        """Another object of the same socket, as dup(2) gives another
        descriptor of the same open file: the socket stays open until both
        are closed. Non-inheritable, with this object's timeout."""
        number = _reserve()
        with self._stack.locked:
            if self._closed:
                _unreserve(number)
                raise error(errno.EBADF)
            twin = self._twin()
            twin._fd = number  # (reserved: owned by the twin, _RESERVED)
            return twin

    def detach(self) -> int:
        """As socket.detach(): this object is closed, its descriptor stays
        open (and the socket with it) and is the program's to close;
        ``socket.socket(fileno=fd)`` makes an object of it again. A stream
        socket's descriptor then carries the connection's data, as a kernel
        socket's does (os.read and os.write on it: readiness.py, carry).
        -1 on a closed object, as CPython's."""
        if self._closed:
            return -1
        fd = self.fileno()
        efd = None
        with self._stack.locked:
            if self._closed:
                return -1
            owners = self._fd_owners
            if owners.get(fd) == 1:
                self._fd = -1  # the number passes to a hidden object, with the reference
                held = self._twin()
                del owners[fd]  # the program's number now: loopstack never closes it
                _DETACHED[fd] = held
                _HOLDER_FD[id(held)] = fd
                self._let_go()
                held._give_away(fd)
            elif self._let_go(keep_fd=True):
                # Another object has the number (or closed it): only this
                # object's reference goes, and it may have been the last.
                efd = self._close_socket()
        if efd is not None:
            efd.close()
        return fd

    def _give_away(self, number: int) -> None:
        """This hidden object holds the socket for descriptors now the
        program's (``number``, or -1: another process's, host/owner.py).
        A stream socket's connection (made or being made) is carried by its
        pair from now on; anything else (a datagram socket, a listener, a
        socket never connected) keeps a readiness-only descriptor, whose
        watched end this process holds a number of its own for, so that it
        never closes the program's. Stack lock held."""
        efd = self._efd
        if efd is None:
            return
        t = self.__dict__.get("_tcb")
        if t is not None and not t.listening and t.remote_port:
            watched = efd.fileno()
            keep = watched == number or watched in self._fd_owners
            self._timeout = 0.0  # the relay's calls never wait
            if efd.carry(self, keep, lambda: _hang_up(self)):
                return
        if number >= 0:
            efd.release(number)
        else:
            _KEPT[id(self)] = self

    def _outlived(self) -> bool:
        """The socket's last object was let go (stack lock held): True if a
        connection's descriptor is still open somewhere (a dup the program
        made with os.dup, one passed to another process: multiprocessing's
        socket pickling), which keeps it open as a kernel file keeps its
        socket: a hidden object then holds it and the pair carries its data
        until every such descriptor is closed."""
        efd = self._efd
        t = self.__dict__.get("_tcb")
        if efd is None or efd.carrying or efd.kernel_pair or self._stack._closed \
                or t is None or t.listening or not t.remote_port:
            return False
        if not efd.outlived():
            return False
        holder = self._twin()
        holder._timeout = 0.0
        efd.carry(holder, True, lambda: _hang_up(holder))
        return True

    def _dup_of_file(self, efd: Readiness) -> int:
        """A new number for the pair's watched end, made from a descriptor
        of it an object or the program holds (fstat tells), or -1."""
        mine = [n for n, held in _DETACHED.items() if held.__dict__ is self.__dict__]
        for n in [*self._fd_owners, *mine]:
            try:
                st = os.fstat(n)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == efd.identity:
                return os.dup(n)
        return -1

    def _take_over(self) -> Self:
        """What ssl's wrap_socket does to the object it wraps: a new object
        takes this one's place (its descriptor number, its reference, its
        timeout, what other processes hold through it) and this one is left
        closed as detach() leaves it, the socket open."""
        with self._stack.locked:
            if self._closed:
                raise error(errno.EBADF)
            new = self._twin()
            new._fd, self._fd = self._fd, -1
            rec, self._shared = self._shared, None
            if rec is not None:
                new._shared = rec
                rec.sock = new
            self._let_go()
            return new

    def _adopt(self, fd: int, family: int = -1, type: int = -1, proto: int = -1) -> Socket:
        """``socket.socket(family, type, proto, fileno=fd)`` for a descriptor
        of this socket (patch.py): the object detach() left holding ``fd``,
        or a new object that owns ``fd``. As CPython's init_sockobject, it
        shows the family, type and protocol given (the socket's own for -1),
        and has the default timeout (0 with SOCK_NONBLOCK)."""
        with self._stack.locked:
            held = _DETACHED.pop(fd, None)
            if held is not None and (held.__dict__ is not self.__dict__ or held._closed):
                held._fd = -1  # the number was closed and reused: not its to close
                held.close()
                held = None
            efd = self._efd
            if held is None and efd is not None and efd.carrying:
                # The object the relay used takes the program's reference:
                # the socket is the adopted object's now, whatever number
                # held it (that number, if still open, is the program's).
                held = efd.carrier_socket
                number = _HOLDER_FD.get(id(held))
                if number is not None and _DETACHED.get(number) is held:
                    del _DETACHED[number]
            if held is not None:
                _HOLDER_FD.pop(id(held), None)
                sock = held
            else:
                sock = self._twin()
            sock._fd = fd
            self._fd_owners[fd] = self._fd_owners.get(fd, 0) + 1
            if efd is not None and efd.carrying:
                _put_back(self, *efd.uncarry(fd))
                self._sync_fd()
            # What is not given is read from the socket (getsockname's
            # family, SO_TYPE, SO_PROTOCOL: the real protocol number).
            udp: UdpSock | None = self.__dict__.get("_udp")
            real_proto = udp.udp.proto if udp is not None else _socket.IPPROTO_TCP
            sock._made_as = (self._family if family == -1 else family,
                             self._kind if type == -1 else type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC),
                             real_proto if proto == -1 else proto)
            if type != -1 and type & SOCK_NONBLOCK:
                sock._timeout = 0.0  # (the descriptor's flag is left as it is)
            else:
                sock._timeout = _socket.getdefaulttimeout()
                if sock._timeout is not None:
                    set_nonblocking(fd, True)
            return sock

    # -- held by several processes (host/owner.py) ---------------------------------
    def _detach_remote(self) -> Socket:
        """An attached process detached its object of this socket: a hidden
        object holds the socket for the descriptor it keeps (stack lock held;
        the caller then lets go of the process's reference and calls
        ``_give_away(-1)`` on what this returns)."""
        if self._closed:
            raise error(errno.EBADF)
        return self._twin()

    def _hand_over(self) -> None:
        """close() here while attached processes still hold the socket: as a
        kernel file stays open until its last descriptor closes, the record
        of what they hold moves to another object of the socket, which the
        owner keeps for them, and only this object is closed. Lock held."""
        rec = self._shared
        inner = self._twin()
        inner._shared = rec
        rec.sock = inner
        rec.local = False
        self._shared = None

    # -- collected without close() ---------------------------------------------------
    def __del__(self) -> None:
        """CPython closes a socket object collected unclosed, with a
        ResourceWarning (sock_finalize); so does this. Closing takes the
        stack lock: where that cannot be done now (this thread is inside
        the stack, or another holds it), the close is a timer's, at once."""
        if self._closed:
            return
        try:
            stack = self._stack
            clock = getattr(stack, "clock", None)
            if clock is None:  # attached (host/remote.py): close() is a call to the owner
                self._finalize()
                return
            lock = stack.lock
            if not lock._is_owned() and lock.acquire(  # type: ignore[attr-defined]
                    blocking=False):
                try:
                    self._finalize()
                finally:
                    lock.release()
            else:
                clock.call_later(0, self._finalize)
        except Exception:  # noqa: BLE001 - a finalizer must not raise (interpreter exit)
            pass

    def _finalize(self) -> None:
        if self._closed:
            return
        try:
            shown = repr(self) if not self._fronted else \
                "<socket.socket" + Socket.__repr__(self)[len("<loopstack.socket"):]
            warnings.warn(f"unclosed {shown}", ResourceWarning, stacklevel=1, source=self)
        except Exception:  # noqa: BLE001 - the warning is best effort (interpreter exit)
            pass
        try:
            self.close()
        except OSError:
            pass  # EBADF: another object closed its number; the socket is closed anyway

    # -- sendfile -----------------------------------------------------------------------
    def _sendfile_use_sendfile(self, file: Any, offset: int = 0,
                               count: int | None = None) -> int:
        """socket.sendfile()'s zero-copy path: CPython's, with an os.sendfile
        that knows loopstack descriptors (sendfile.py)."""
        from .sendfile import use_sendfile

        return use_sendfile(self, file, offset, count)

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
                if optname in (IP_RECVTTL, IP_PKTINFO, IP_RECVTOS, IP_TOS):
                    ival = _INT.unpack(raw[:4])[0] if raw is not None and length >= 4 else (
                        raw[0] if raw else 0)
                    if optname == IP_RECVTTL:
                        u.recv_ttl = bool(ival)
                    elif optname == IP_PKTINFO:
                        u.recv_pktinfo = bool(ival)
                    elif optname == IP_RECVTOS:
                        u.recv_tos = bool(ival)
                    elif u.tos != ival & 0xFF:
                        # __ip_sock_set_tos: kept as a byte, and the socket's
                        # priority follows it (only when it changes).
                        u.tos = ival & 0xFF
                        self._priority = tos_priority(u.tos)
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
                elif optname in (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO, IPV6_RECVTCLASS):
                    if length < 4:
                        raise error(errno.EINVAL)
                    if optname == IPV6_RECVHOPLIMIT:
                        u.recv_hoplimit = bool(ival)
                    elif optname == IPV6_RECVPKTINFO:
                        u.recv_pktinfo6 = bool(ival)
                    else:
                        u.recv_tclass = bool(ival)
                elif optname == IPV6_TCLASS:
                    if length < 4 or not -1 <= ival <= 255:
                        raise error(errno.EINVAL)
                    u.tclass = max(ival, 0)  # RFC 3542 6.5: -1 is the default, 0
                else:
                    raise error(errno.ENOPROTOOPT)
            elif level in (_socket.IPPROTO_UDP, IPPROTO_UDPLITE):
                # udp_lib_setsockopt: an int; the coverage options are
                # UDP-Lite's, kept between 8 and 65535 (0: all).
                if length < 4:
                    raise error(errno.EINVAL)
                if raw is None:
                    raise error(errno.EFAULT)
                ival = _INT.unpack(raw[:4])[0]
                if optname == UDP_CORK:
                    u.set_cork(ival != 0)
                    return
                if optname not in (UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV) or \
                        self._proto != IPPROTO_UDPLITE:
                    raise error(errno.ENOPROTOOPT)
                ival = 8 if ival != 0 and ival < 8 else min(ival, 0xFFFF)
                if optname == UDPLITE_SEND_CSCOV:
                    u.pcslen, u.send_cc = ival, True
                else:
                    u.pcrlen, u.recv_cc = ival, True
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
        elif optname in (_socket.SO_RCVTIMEO, _socket.SO_SNDTIMEO):
            self._set_timeo(optname, raw, length)
        elif optname == _socket.SO_PRIORITY:
            self._set_priority(ival)
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
                    return self._get_timeo(optname), False
                simple = {
                    _socket.SO_REUSEADDR: int(u.reuseaddr),
                    _socket.SO_REUSEPORT: int(u.reuseport),
                    _socket.SO_BROADCAST: int(u.broadcast),
                    _socket.SO_RCVBUF: u.rcvbuf,
                    _socket.SO_SNDBUF: u.sndbuf,
                    _socket.SO_TYPE: self._kind,
                    SO_DOMAIN: int(self._family),
                    SO_PROTOCOL: IPPROTO_UDPLITE if self._proto == IPPROTO_UDPLITE
                    else _socket.IPPROTO_UDP,
                    _socket.SO_KEEPALIVE: self._keepalive,
                    _socket.SO_ACCEPTCONN: 0,
                    _socket.SO_RCVLOWAT: self._rcvlowat,
                    _socket.SO_SNDLOWAT: 1,
                    _socket.SO_PRIORITY: self._priority,
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
                if optname == IP_TOS:
                    return _INT.pack(u.tos), True
                if optname == IP_RECVTOS:
                    return _INT.pack(int(u.recv_tos)), True
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
                if optname == IPV6_RECVTCLASS:
                    return _INT.pack(int(u.recv_tclass)), False
                if optname == IPV6_TCLASS:
                    return _INT.pack(u.tclass), False
                raise error(errno.ENOPROTOOPT)
            if level in (_socket.IPPROTO_UDP, IPPROTO_UDPLITE):
                # udp_lib_getsockopt: corking, encapsulation, IPv6 checksum
                # and GSO/GRO options read 0 here; the coverages are kept.
                if optname == UDPLITE_SEND_CSCOV:
                    return _INT.pack(u.pcslen), False
                if optname == UDPLITE_RECV_CSCOV:
                    return _INT.pack(u.pcrlen), False
                if optname == UDP_CORK:
                    return _INT.pack(int(u.corked)), False
                if optname in _UDP_ZERO_OPTIONS:
                    return _INT.pack(0), False
                raise error(errno.ENOPROTOOPT)
            # Any other level (TCP's, IPv6's on an AF_INET socket): udp_getsockopt
            # hands it to ip_getsockopt, which says EOPNOTSUPP for AF_INET;
            # ipv6_getsockopt says ENOPROTOOPT.
            raise error(errno.EOPNOTSUPP if self._family == AF_INET else errno.ENOPROTOOPT)

    # SO_RCVTIMEO and SO_SNDTIMEO, for every kind of socket (stack lock held).
    def _set_priority(self, value: int) -> None:
        """SO_PRIORITY (sk_setsockopt): 0 to 6 for anyone, any value with
        CAP_NET_ADMIN or CAP_NET_RAW, else EPERM."""
        if not (0 <= value <= 6 or net_admin()):
            raise error(errno.EPERM)
        self._priority = value

    def _set_timeo(self, optname: int, raw: bytes | None, length: int) -> None:
        """sock_set_timeout: a struct timeval (EINVAL if shorter), its
        microseconds below a second (EDOM), kept in jiffies rounded up; a
        negative time means no wait at all, zero no limit."""
        if length < _TIMEVAL.size:
            raise error(errno.EINVAL)
        if raw is None:
            raise error(errno.EFAULT)
        sec, usec = _TIMEVAL.unpack(raw[: _TIMEVAL.size])
        if not 0 <= usec < 1_000_000:
            raise error(errno.EDOM)
        jiffies: int | None = None
        if sec < 0:
            jiffies = 0
        elif (sec or usec) and sec < _MAX_JIFFIES // HZ - 1:
            jiffies = sec * HZ + -(-usec // (1_000_000 // HZ))
        if optname == _socket.SO_RCVTIMEO:
            self._rcvtimeo = jiffies
        else:
            self._sndtimeo = jiffies

    def _get_timeo(self, optname: int) -> bytes:
        """sock_get_timeout: the struct timeval, {0, 0} for no limit."""
        jiffies = self._rcvtimeo if optname == _socket.SO_RCVTIMEO else self._sndtimeo
        if jiffies is None:
            return _TIMEVAL.pack(0, 0)
        return _TIMEVAL.pack(jiffies // HZ, (jiffies % HZ) * 1_000_000 // HZ)

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


def _hang_up(held: Socket) -> None:
    """Every descriptor of a carrying pair is closed (readiness.py's relay,
    stack lock held): the socket closes as close() would close it."""
    held.close()


def _put_back(sock: Socket, unread: bytes, unsent: bytes) -> None:
    """A carrying pair stopped (socket.socket(fileno=...) took the socket
    back; stack lock held): bytes relayed to the program that it had not
    read go back to the front of the receive queue, bytes it wrote that the
    relay had not sent are sent, so nothing is lost or reordered. (This
    reaches into the TCP control block: the hook it stands for would be
    TCP.unread(tcb, data) and a send that may exceed the send buffer.)"""
    t: Any = sock.__dict__.get("_tcb")
    if t is None:
        return
    if unread:
        q = t.rcvq
        rest = q.read(q.size) if q.size else b""
        q.append(unread)
        q.append(rest)
    if unsent and not (t.shut_wr or t.fin_queued) and t.state.name in ("ESTABLISHED",
                                                                        "CLOSE_WAIT"):
        tcp = sock._stack.tcp
        view = memoryview(unsent)
        sent = tcp.send(t, view)
        if sent < len(view):
            # Already written by the program: queued beyond the send buffer
            # (a kernel socket's queue holds it; the next send waits for room).
            old = t.sndbuf
            t.sndbuf = t.sndq.size + len(view) - sent
            tcp.send(t, view[sent:])
            if t.sndbuf == t.sndq.size:
                t.sndbuf = old


# -- the program's object: a front --------------------------------------------------
# Under patch() the program gets an instance of socket.socket itself, so that
# type(s) is socket.socket (code may demand it: trio's from_stdlib_socket
# does). Its C part has no descriptor; it holds nothing of its own. Its
# calls are carried out by its implementation (a Socket, passthrough.py's
# socket, an attached process's RemoteSocket), found in _FRONTS by the
# front's identity. socket.socket's methods and properties, its own and
# those it inherits from the C type, are replaced on the class by
# dispatchers (install_dispatchers): a front's call goes to its
# implementation, any other object's (a kernel socket, an ssl.SSLSocket, a
# Socket) to what the class had, with the same arguments, so with the same
# results and errors.
_STDLIB_SOCKET: Any = _socket.socket  # the class, as imported (a program may swap the module's)
_C_NEW = _socket.SocketType.__new__
_CLOSED_SLOT: Any = vars(_STDLIB_SOCKET)["_closed"]
_IO_REFS_SLOT: Any = vars(_STDLIB_SOCKET)["_io_refs"]
# id(front) -> its implementation. A plain dict by identity: the lookup is on
# every call (~60 ns; a WeakKeyDictionary's is ~160 ns). Each entry goes when
# its front is collected (the weak reference's callback, which runs before
# the identity can be reused), taking the implementation with it: an
# unclosed Socket is then closed with the ResourceWarning (Socket.__del__).
_FRONTS: dict[int, Any] = {}
_FRONT_REFS: dict[int, weakref.ref[Any]] = {}
# What socket.socket had under each name replaced, once installed.
_ORIGINAL: dict[str, Any] = {}
_installed = False
_install_lock = threading.Lock()
# Names left alone: how the object is made, found and finalized, and plain data.
# makefile() stays socket.socket's own: run on the front, its SocketIO holds
# the front (as the program's object), and every call it makes is dispatched.
_NOT_DISPATCHED = frozenset({"__new__", "__del__", "__getattribute__", "__weakref__",
                             "__dict__", "__doc__", "__module__", "__slots__", "__qualname__",
                             "makefile"})
# The original slots' values a front keeps, though every read goes to its implementation.
_SETTABLE = frozenset({"_closed", "_io_refs"})


# -- audit events ---------------------------------------------------------------------
# CPython's socket module raises audit events (PEP 578) from C: socket.__new__
# when an object is made (patch.py; accept and dup below), socket.bind,
# socket.connect (connect_ex too), socket.sendto and socket.sendmsg, and one
# per name lookup (patch.py). A loopstack socket raises the same, with the
# same arguments; the socket in them is the object the program holds (its
# front under patch, else the Socket itself).
_FRONT_OF: dict[int, weakref.ref[Any]] = {}  # id(implementation) -> its front
# Threads that run calls of attached processes (host/owner.py): those
# processes raise the events of their calls themselves, as on a kernel,
# where the calls of one process are no other's business.
serving: set[int] = set()
_raising = threading.local()


def loopstack_event() -> bool:
    """True while loopstack raises an audit event of its own (for a loopstack
    socket, or a name lookup a stack answers): an audit hook that watches
    what reaches the kernel tells them apart with this."""
    return bool(getattr(_raising, "on", False))


def audit(event: str, *args: Any) -> None:
    """``sys.audit(event, *args)`` as loopstack's (see loopstack_event)."""
    if serving and threading.get_ident() in serving:
        return
    before = getattr(_raising, "on", False)
    _raising.on = True
    try:
        sys.audit(event, *args)
    finally:
        _raising.on = before


def audit_socket(sock: Any, event: str, address: Any) -> None:
    """A socket's event (bind, connect, sendto, sendmsg), naming the object
    the program holds for ``sock``."""
    if sock._private:
        return  # a bridge's own socket (host/bridge.py)
    ref = _FRONT_OF.get(id(sock))
    held = ref() if ref is not None else None
    audit(event, sock if held is None else held, address)


def audit_new(obj: Any, family: Any, type: Any, proto: Any) -> None:
    """socket.__new__ for ``obj``, with the values CPython's sock_initobj
    shows (plain ints)."""
    audit("socket.__new__", obj, int(family), int(type), int(proto))


def implementation(obj: Any) -> Any:
    """What carries out ``obj``'s socket calls: a front's implementation;
    ``obj`` itself for anything else (a Socket, a kernel socket). Everything
    in loopstack that takes a program's socket object looks through this."""
    impl = _FRONTS.get(id(obj))
    return obj if impl is None else impl


def blank() -> Any:
    """A ``socket.socket`` object not yet a front (front() makes it one):
    what the socket.__new__ event names before the socket exists, as
    CPython's names the object its __init__ is filling in."""
    if not _installed:
        install_dispatchers()
    obj = _C_NEW(_STDLIB_SOCKET)  # descriptor -1; socket.socket.__init__ never runs on it
    _CLOSED_SLOT.__set__(obj, False)
    _IO_REFS_SLOT.__set__(obj, 0)
    return obj


def front(impl: Any, obj: Any = None) -> Any:
    """A new ``socket.socket`` object whose calls ``impl`` carries out (what
    patch.py gives the program), or ``obj`` (from blank()) made one.
    Installs the dispatchers if not yet done."""
    if obj is None:
        obj = blank()
    key = id(obj)
    ref = _FRONT_REFS[key] = weakref.ref(obj, _forgetter(key))
    _FRONTS[key] = impl
    _FRONT_OF[id(impl)] = ref
    if type.__instancecheck__(Socket, impl):
        impl._fronted = True
    return obj


def _forgetter(key: int) -> Callable[[Any], None]:
    def forget(ref: Any) -> None:
        try:
            _FRONT_REFS.pop(key, None)
            impl = _FRONTS.pop(key, None)
            if impl is not None and _FRONT_OF.get(id(impl)) is ref:
                del _FRONT_OF[id(impl)]
        except Exception:  # noqa: BLE001 - interpreter exit: the module may be gone
            pass

    return forget


def _front_of(obj: Any) -> Any:
    """A loopstack socket a method returned, as the program gets it: in a
    new front (accept, dup). Anything else (a kernel socket a passthrough
    socket gave) as it is."""
    return front(obj) if type.__instancecheck__(Socket, obj) else obj


def _named(dispatch: Any, original: Any) -> Any:
    """The dispatcher under the original's name and text; ``__wrapped__``
    lets ``inspect.signature`` show the original's signature."""
    for attr in ("__name__", "__qualname__", "__doc__"):
        try:
            setattr(dispatch, attr, getattr(original, attr))
        except (AttributeError, TypeError):
            pass
    dispatch.__wrapped__ = original
    return dispatch


def _method(name: str, original: Any) -> Any:
    get = _FRONTS.get

    def dispatch(self: Any, *args: Any, **kwargs: Any) -> Any:
        impl = get(id(self))
        if impl is None:
            return original(self, *args, **kwargs)
        result = getattr(impl, name)(*args, **kwargs)
        return self if result is impl else result  # (__enter__ gives the object itself)

    return _named(dispatch, original)


def _repr(original: Any) -> Any:
    def __repr__(self: Any) -> str:
        # socket.socket's own text for a front too (its calls dispatch):
        # "<socket.socket fd=5, family=2, type=1, proto=0, laddr=...>"
        return str(original(self))

    return _named(__repr__, original)


def _init(original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if id(self) not in _FRONTS:  # a front is whole when made (patch.py's __new__)
            original(self, *args, **kwargs)

    return _named(__init__, original)


def _accept(original: Any) -> Any:
    get = _FRONTS.get

    def accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        impl = get(id(self))
        if impl is None:
            return original(self, *args, **kwargs)
        sock, address = impl.accept(*args, **kwargs)
        new = _front_of(sock)
        if new is not sock:  # (a kernel socket's accept raised its own)
            try:
                # socket.accept() makes the object with socket(self.family,
                # self.type, self.proto, fileno=fd): its socket.__new__.
                audit_new(new, impl.family, impl.type, impl.proto)
            except BaseException:
                sock.close()
                raise
        return new, address

    return _named(accept, original)


def _c_accept(original: Any) -> Any:
    get = _FRONTS.get

    def _accept(self: Any) -> tuple[int, Any]:
        # socket.socket.accept's C half, for code that kept socket.py's
        # accept from before the dispatchers: a descriptor of the new
        # socket, which socket.socket(fileno=) (patch.py) takes back.
        impl = get(id(self))
        if impl is None:
            return original(self)  # type: ignore[no-any-return]
        if not type.__instancecheck__(Socket, impl):
            return impl._accept()  # type: ignore[no-any-return]
        sock, address = impl.accept()
        return sock.detach(), address

    return _named(_accept, original)


def _dup(original: Any) -> Any:
    get = _FRONTS.get

    def dup(self: Any, *args: Any, **kwargs: Any) -> Any:
        impl = get(id(self))
        if impl is None:
            return original(self, *args, **kwargs)
        sock = impl.dup(*args, **kwargs)
        new = _front_of(sock)
        if new is not sock:  # (a kernel socket's dup raised its own)
            try:
                audit_new(new, impl.family, impl.type, impl.proto)  # as socket.dup() makes it
            except BaseException:
                sock.close()
                raise
        return new

    return _named(dup, original)


def _property(name: str, original: Any) -> property:
    get = _FRONTS.get
    settable = name in _SETTABLE

    def fget(self: Any) -> Any:
        impl = get(id(self))
        if impl is None:
            return original.__get__(self, type(self))
        return getattr(impl, name)

    def fset(self: Any, value: Any) -> None:
        impl = get(id(self))
        if impl is None or not settable:
            original.__set__(self, value)  # (a read-only one says so in its own words)
        else:
            setattr(impl, name, value)

    def fdel(self: Any) -> None:
        impl = get(id(self))
        if impl is None or not settable:
            original.__delete__(self)
        else:
            delattr(impl, name)

    return property(fget, fset, fdel, getattr(original, "__doc__", None))


def _getattr(self: Any, name: str) -> Any:
    """A name socket.socket does not have: a front gives its
    implementation's public ones (``stack``, ``tcp_info``); anything else
    fails as it would without this."""
    if not name.startswith("_"):
        impl = _FRONTS.get(id(self))
        if impl is not None:
            try:
                return getattr(impl, name)
            except AttributeError:
                pass
    raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'",
                         name=name, obj=self)


_getattr.__name__ = _getattr.__qualname__ = "__getattr__"
_SPECIAL: dict[str, Callable[[Any], Any]] = {"__init__": _init, "__repr__": _repr,
                                              "accept": _accept, "_accept": _c_accept,
                                              "dup": _dup}


def dispatched_names() -> dict[str, Any]:
    """What socket.socket has under each name it has, its own or the C
    type's, that install_dispatchers replaces: name -> the original."""
    found: dict[str, Any] = {}
    for klass in reversed(_STDLIB_SOCKET.__mro__[:-1]):  # _socket.socket, then socket.socket
        for name, value in vars(klass).items():
            if name in _NOT_DISPATCHED:
                continue
            if name in _SPECIAL or callable(value) or hasattr(type(value), "__set__"):
                found[name] = value
    return found


def install_dispatchers() -> None:
    """Replace socket.socket's methods and properties by dispatchers, for
    the rest of the process (patch.py's first patch, or its prepare()).
    They stay after the patch ends, so a front keeps working, and so that
    code which took ``socket.socket.recv`` while they were on keeps a
    function that serves fronts. Other objects' calls reach what the class
    had, with the same arguments: only a Python call's time (and a frame in
    tracebacks) is added."""
    global _installed
    with _install_lock:
        if _installed:
            return
        originals = dispatched_names()
        new: dict[str, Any] = {}
        for name, value in originals.items():
            if name in _SPECIAL:
                new[name] = _SPECIAL[name](value)
            elif hasattr(type(value), "__set__"):
                new[name] = _property(name, value)
            else:
                new[name] = _method(name, value)
        new["__getattr__"] = _getattr
        _ORIGINAL.update(originals)
        for name, value in new.items():
            setattr(_STDLIB_SOCKET, name, value)
        _installed = True
        _repoint({id(originals[name]): (originals[name], new[name]) for name in originals
                  if not isinstance(new[name], property)})


def _repoint(replaced: dict[int, tuple[Any, Any]]) -> None:
    """Code imported before the dispatchers went on may hold socket.socket's
    methods themselves (trio's socket class wraps ``socket.socket.recv``
    and friends when it is imported; pytest loads anyio's plugin, which
    imports trio, before any hook of loopstack's runs). A front given to
    such a method fails (a C method finds no descriptor). So the loaded
    modules' own functions and classes are looked through, once, and each
    reference to a replaced method (a global, a class attribute, a
    closure's cell, a default) is pointed at its dispatcher, which does
    the same for anything but a front. loopstack's own modules keep theirs."""
    seen: set[int] = set()

    def swap(value: Any) -> Any:
        hit = replaced.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else None

    def function(fn: Any, depth: int) -> None:
        if id(fn) in seen or depth > 3:
            return
        seen.add(id(fn))
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            new = swap(value)
            if new is not None:
                cell.cell_contents = new
            elif isinstance(value, _FunctionType):
                function(value, depth + 1)
        defaults = fn.__defaults__
        if defaults and any(swap(d) is not None for d in defaults):
            fn.__defaults__ = tuple(swap(d) or d for d in defaults)
        kwdefaults = fn.__kwdefaults__
        if kwdefaults:
            for key, value in kwdefaults.items():
                new = swap(value)
                if new is not None:
                    kwdefaults[key] = new

    def members(owner: Any, namespace: dict[str, Any]) -> None:
        for key, value in list(namespace.items()):
            new = swap(value)
            if new is not None:
                try:
                    setattr(owner, key, new)
                except (AttributeError, TypeError):  # a class that refuses
                    pass
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                for part in (value.fget, value.fset, value.fdel):
                    if isinstance(part, _FunctionType):
                        function(part, 0)
                continue
            if isinstance(value, _FunctionType):
                function(value, 0)

    seen.update(id(klass) for klass in _STDLIB_SOCKET.__mro__)  # where the originals live
    for name, module in list(sys.modules.items()):
        if module is None or name in ("socket", "_socket") or name.split(".")[0] == "loopstack":
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for value in list(namespace.values()):
            if isinstance(value, type) and value.__module__ == name and id(value) not in seen:
                seen.add(id(value))
                members(value, dict(vars(value)))
        members(module, namespace)


__all__ = ["Socket", "error", "front", "implementation", "install_dispatchers",
           "loopstack_event"]
