"""Stream sockets: the TCP half of the socket object (connect, listen,
accept, send, recv, shutdown, close, options, tcp_info, makefile), with
the errno values Linux gives on loopback."""

from __future__ import annotations

import errno
import io
import socket as _socket
import struct
from typing import TYPE_CHECKING, Any

from .ip.addr import AF_INET6, V4_ANY, V6_ANY
from .readiness import Readiness
from .socket import (
    DEFAULT_BACKLOG,
    HZ,
    IP_RECVTOS,
    IP_TOS,
    IP_TTL,
    IPV6_RECVTCLASS,
    IPV6_TCLASS,
    IPV6_UNICAST_HOPS,
    IPV6_V6ONLY,
    MSG_DONTWAIT,
    MSG_OOB,
    MSG_PEEK,
    MSG_WAITALL,
    SO_DOMAIN,
    SO_PROTOCOL,
    Socket,
    _reserve,
    c_buffer,
    c_index,
    c_int,
    c_int_strict,
    error,
    listen_backlog,
    recvmsg_into_views,
    scatter,
    tos_priority,
)
from .transport.ports import mapped, v4_of
from .transport.tcp import TCB, State
from .transport.tcp.ack import PINGPONG_THRESH
from .transport.tcp.constants import (
    CORE_RMEM_MAX,
    CORE_WMEM_MAX,
    MIN_RCVBUF,
    MIN_SNDBUF,
    URG_VALID,
)
from .transport.tcp.tcb import _nothing

if TYPE_CHECKING:
    from .stack import Stack

TCP_NODELAY = _socket.TCP_NODELAY
TCP_MAXSEG = _socket.TCP_MAXSEG
TCP_KEEPIDLE = getattr(_socket, "TCP_KEEPIDLE", 4)
TCP_KEEPINTVL = getattr(_socket, "TCP_KEEPINTVL", 5)
TCP_KEEPCNT = getattr(_socket, "TCP_KEEPCNT", 6)
TCP_INFO = getattr(_socket, "TCP_INFO", 11)
TCP_CONGESTION = getattr(_socket, "TCP_CONGESTION", 13)
TCP_QUICKACK = getattr(_socket, "TCP_QUICKACK", 12)
_LINGER = struct.Struct("ii")
# The head of Linux's struct tcp_info (include/uapi/linux/tcp.h), up to tcpi_total_retrans.
_TCP_INFO = struct.Struct("BBBBBBBB" + "I" * 24)

# The socket's own state, as Linux keeps it apart from the TCP state
# (struct socket's SS_*): inet_stream_connect, inet_listen and inet_shutdown
# decide by it. CPython's connect with a timeout leaves it "connecting" after
# success or failure, which is why the next connect() answers as it does.
_UNCONNECTED, _CONNECTING, _CONNECTED, _DISCONNECTING = 0, 1, 2, 3
_ESTABLISHED = State.ESTABLISHED
_CONNECTED_STATES = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1,
                               State.FIN_WAIT2, State.CLOSING, State.LAST_ACK, State.TIME_WAIT})


class StreamSocket(Socket):
    """A TCP socket (SOCK_STREAM)."""

    def __init__(self, stack: Stack, family: int, type: int, proto: int,
                 *, tcb: TCB | None = None) -> None:
        nonblock = self._init_common(stack, family, type, proto)
        if self._proto not in (0, _socket.IPPROTO_TCP):
            raise error(errno.EPROTONOSUPPORT)
        number = _reserve()
        with stack.locked:
            self._tcb = tcb if tcb is not None else stack.tcp.new_tcb(family == AF_INET6)
            self._conn = _CONNECTED if tcb is not None else _UNCONNECTED
            self._recv_tclass = False
            if nonblock:
                self._timeout = 0.0
            core = self._open()  # the protocol's callbacks reach the socket through it
            self._tcb.owner = core
            self._tcb.wake = core._wake
            self._fd = number  # (reserved numbers are owned by their object: _RESERVED)

    # -- readiness (Linux tcp_poll) ------------------------------------------------
    @staticmethod
    def _state(t: TCB) -> State:
        """The TCP state as the socket shows it: Linux hands TIME_WAIT to a
        separate mini-socket and leaves the user's socket CLOSED."""
        return State.CLOSED if t.state == State.TIME_WAIT else t.state

    def _readable(self) -> bool:
        """POLLIN, POLLHUP or POLLERR: what select() counts as readable. A
        CLOSED socket (even a fresh one) reports POLLHUP."""
        t = self._tcb
        if t.listening:
            return bool(t._listen_state and t._listen_state.accept_queue)
        # (An out-of-line urgent byte at the mark is not readable data: tcp_poll.)
        data = t.rcvq.size != 0 if not t.urg_data else self._stack.tcp.recv_avail(t) > 0
        return data or t.fin_received or t.so_error != 0 or t.shut_rd or \
            t.state == State.CLOSED or t.state == State.TIME_WAIT  # (_state: CLOSED)

    def _urgent(self) -> bool:
        """POLLPRI, select's exceptional condition (tcp_poll): an urgent byte
        arrived and recv(MSG_OOB) has not taken it (inline or not)."""
        t = self._tcb
        return bool(t.urg_data & URG_VALID) and \
            t.state not in (State.LISTEN, State.SYN_SENT, State.SYN_RECV)

    def _sync_fd(self) -> None:
        fd = self._efd
        if fd is None:
            return
        t = self._tcb
        state = t.state
        # _readable, _writable and _urgent inline: every segment that changes
        # the socket comes here.
        if state == _ESTABLISHED and not t.so_error and not t.urg_data:
            # The usual case, first: no error, no urgent data, neither
            # closed nor listening nor connecting.
            readable = t.rcvq.size != 0 or t.fin_received or t.shut_rd
            writable = t.shut_wr or t.fin_queued or t.sndq.size < t.sndbuf
        elif t.listening or t.urg_data:
            fd.update(self._readable(), self._writable(), self._urgent())
            return
        else:
            closed = state == State.CLOSED or state == State.TIME_WAIT  # (_state)
            if t.so_error or closed:
                writable = True
            elif state in (State.LISTEN, State.SYN_SENT, State.SYN_RECV):
                writable = False
            else:
                writable = t.shut_wr or t.fin_queued or t.sndq.size < t.sndbuf
            readable = t.rcvq.size != 0 or t.fin_received or t.so_error != 0 or t.shut_rd \
                or closed
        fd.update(readable, writable, False)

    def _writable(self) -> bool:
        """POLLOUT, POLLHUP or POLLERR."""
        t = self._tcb
        state = t.state
        if t.so_error or state == State.CLOSED or state == State.TIME_WAIT:  # (_state)
            return True
        if state in (State.LISTEN, State.SYN_SENT, State.SYN_RECV):
            return False
        return t.shut_wr or t.fin_queued or t.sndq.size < t.sndbuf

    def _poll_first(self, ready: Any) -> None:
        """CPython polls a socket that has a timeout before each call
        (sock_call_ex): not ready in time is TimeoutError, whatever the call."""
        if self._timeout:
            self._wait(ready, 0)

    def _check_tcb(self) -> TCB:
        if self._closed:
            raise error(errno.EBADF)
        return self._tcb

    # -- addresses -------------------------------------------------------------
    def _shown(self, addr: bytes) -> bytes:
        if self._family == AF_INET6 and len(addr) == 4:
            return mapped(addr)
        return addr

    def getsockname(self) -> tuple[Any, ...]:
        # Linux inet_getname: the source address stays after the connection
        # ends; only a disconnect (a failed connect seen by connect()) resets it.
        with self._stack.locked:
            t = self._check_tcb()
            addr = t.bind_addr if t.state == State.LISTEN else (t.local_addr or t.bind_addr)
            return self._text(self._shown(addr or (V6_ANY if t.v6 else V4_ANY)), t.local_port)

    def getpeername(self) -> tuple[Any, ...]:
        # Linux inet_getname: by the TCP state alone (a non-blocking connect
        # that completed has a peer before connect() is called again).
        with self._stack.locked:
            t = self._check_tcb()
            if not t.remote_port or self._state(t) in (State.CLOSED, State.LISTEN,
                                                       State.SYN_SENT):
                raise error(errno.ENOTCONN)
            return self._text(self._shown(t.remote_addr), t.remote_port)

    def bind(self, address: Any) -> None:
        addr, port = self._sockaddr(address, "bind")
        self._check_descriptor()
        with self._stack.locked:
            t = self._check_tcb()
            # Linux inet_bind: EINVAL unless CLOSED with no port (a port connect()
            # picked is given back when a connection ends, tcp_set_state).
            if t.bound and not t.autobound or t.state != State.CLOSED:
                raise error(errno.EINVAL)
            mapped_addr = len(addr) == 16 and v4_of(addr) is not None
            if t.v6only and mapped_addr:
                # Linux __inet6_bind: "Binding to v4-mapped address on a
                # v6-only socket makes no sense".
                raise error(errno.EINVAL)
            if not self._is_local(addr):
                raise error(errno.EADDRNOTAVAIL)
            if t.bound:
                self._stack.tcp_ports.unbind(t)  # a port a failed connect left behind
                t.bound = t.autobound = False
            self._stack.tcp.bind(t, addr, port)
            if len(addr) == 16 and addr != V6_ANY and not mapped_addr:
                t.v6only = True  # __inet6_bind: a specific IPv6 address is IPv6 only

    # -- connection establishment ---------------------------------------------------
    def listen(self, backlog: int = DEFAULT_BACKLOG) -> None:
        backlog = listen_backlog(backlog)
        self._check_descriptor()
        with self._stack.locked:
            t = self._check_tcb()
            # inet_listen: SS_UNCONNECTED only; a refused connect() is back
            # there (see _fail_connect), one still "connecting" is not.
            if self._conn != _UNCONNECTED:
                raise error(errno.EINVAL)
            self._stack.tcp.listen(t, int(backlog))
            self._sync_fd()  # a closed socket polls as HUP (readable); a listener does not

    def accept(self) -> tuple[StreamSocket, Any]:
        with self._stack.locked:
            t = self._check_tcb()
            self._poll_first(self._readable)  # so a connected socket times out (facts)
            if not t.listening:
                raise error(errno.EINVAL)
            lst = t._listen_state
            if lst is None or not lst.accept_queue:  # (_wait's first answer, without it)
                # A hand-off: the connecting thread that wakes this one
                # lets go of the GIL as it does, as accept(2) is woken
                # inside connect(2)'s system call (clock.py, Parker).
                self._wait(lambda: bool(t.listen_state.accept_queue) or not t.listening, 0,
                           False, True)
                if not t.listening:
                    raise error(errno.EINVAL)  # shut down while we waited
            child = self._stack.tcp.accept(t)
            self._sync_fd()
            if child is None:
                raise error(errno.EAGAIN)
            sock = StreamSocket(self._stack, self._family, self._kind, self._proto, tcb=child)
            sock._timeout = _socket.getdefaulttimeout()  # as socket.accept() does
            # (SO_PRIORITY starts at 0 on an accepted socket: observed on Linux
            # 6.18, whatever the listener's; its IP_TOS is inherited: TCB.)
            return sock, self._text(self._shown(child.remote_addr), child.remote_port)

    def _target(self, address: Any) -> tuple[bytes, int]:
        addr, port = self._sockaddr(address, "connect")
        if self._family == AF_INET6 and len(addr) == 16:
            four = v4_of(addr)
            if four is not None:
                if self._tcb.v6only:
                    raise error(errno.ENETUNREACH)
                return four, port
        return addr, port

    def connect(self, address: Any) -> None:
        """Linux inet_stream_connect, as CPython drives it: a timeout makes
        the descriptor non-blocking, then CPython polls and reads SO_ERROR
        itself, leaving the socket "connecting" until the next connect()."""
        dst, port = self._target(address)
        self._check_descriptor()
        with self._stack.locked:
            t = self._check_tcb()
            if self._conn == _CONNECTED:
                raise error(errno.EISCONN)
            if self._conn == _DISCONNECTING:
                raise error(errno.EINVAL)
            if self._conn == _CONNECTING:
                if t.state in (State.SYN_SENT, State.SYN_RECV):
                    if self._timeout is not None:
                        raise error(errno.EALREADY)
                    self._wait_connected(t)
                    return
                if self._state(t) == State.CLOSED:
                    self._fail_connect(t, errno.ECONNABORTED)
                self._conn = _CONNECTED
                return
            if self._state(t) != State.CLOSED:
                raise error(errno.EISCONN)
            t.so_error = 0
            if len(dst) == 4 and self._family == AF_INET6 and t.v6only:
                raise error(errno.ENETUNREACH)
            self._stack.tcp.connect(t, dst, port)
            self._conn = _CONNECTING
            if self._timeout == 0.0:
                raise error(errno.EINPROGRESS)
            if self._timeout is None:
                self._wait_connected(t)
                return
            # CPython: poll for writability, then getsockopt(SO_ERROR).
            self._wait(self._writable, 0)
            code, t.so_error = t.so_error, 0
            self._sync_fd()
            if code:
                raise error(code)

    def _wait_connected(self, t: TCB) -> None:
        """A blocking connect waits for the handshake's end (inet_wait_for_connect),
        for SO_SNDTIMEO at most: then EINPROGRESS, still connecting."""
        try:
            if t.state in (State.SYN_SENT, State.SYN_RECV):  # (_wait's first answer, without it)
                self._wait(lambda: t.state not in (State.SYN_SENT, State.SYN_RECV), 0, True)
        except BlockingIOError:
            raise error(errno.EINPROGRESS) from None
        if self._state(t) == State.CLOSED:
            self._fail_connect(t, errno.ECONNREFUSED)
        self._conn = _CONNECTED

    def _fail_connect(self, t: TCB, default: int) -> None:
        """__inet_stream_connect's sock_error path: report the error and
        disconnect (tcp_disconnect, which has nothing to undo in CLOSE and
        returns 0): the socket is SS_UNCONNECTED again, its source address
        forgotten and a port it was given released, so bind(), listen() and
        connect() work again (one host kernel refuses listen():
        docs/differences.md)."""
        code, t.so_error = t.so_error, 0
        self._conn = _UNCONNECTED
        t.local_addr = t.bind_addr
        t.reset_seen = False
        if t.autobound:
            self._stack.tcp_ports.unbind(t)
            t.bound = t.autobound = False
        self._sync_fd()
        raise error(code or default)

    # -- data ----------------------------------------------------------------------
    def _send_error(self, t: TCB) -> OSError | None:
        """Linux tcp_sendmsg_locked's checks: a pending error first, then
        EPIPE for anything that cannot carry data (sk_stream_wait_connect)."""
        if t.so_error:
            code, t.so_error = t.so_error, 0
            self._sync_fd()
            return error(code)
        if t.shut_wr or t.fin_queued:
            return error(errno.EPIPE)
        if t.state in (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_SENT, State.SYN_RECV):
            return None  # SYN states wait for the connection (sk_stream_wait_connect)
        return error(errno.EPIPE)

    def _send_once(self, data: memoryview, block: bool, urgent: bool = False) -> int:
        """One send(): blocking queues all of ``data`` (less, if an error
        comes after some was queued); non-blocking what fits, else EAGAIN.
        ``urgent``: MSG_OOB, the last byte queued is urgent."""
        t = self._tcb
        tcp = self._stack.tcp
        sent = 0
        while True:
            state = t.state
            if t.so_error or t.shut_wr or t.fin_queued or (
                    state != State.ESTABLISHED and state != State.CLOSE_WAIT):
                e = self._send_error(t)
                if e is not None:
                    if sent:
                        return sent
                    raise e
                sendable = t.state in (State.ESTABLISHED, State.CLOSE_WAIT)
            else:
                sendable = True  # (_send_error's answer, None: the state can carry data)
            if sendable:
                # (TCP.send slices what it queues: the caller's view is never kept)
                sent += tcp.send(t, data[sent:] if sent else data, urgent)
                efd = self._efd
                # (A connection that can carry data is writable while the
                # send buffer has room: _writable is asked only when it is full.)
                if efd is not None and t.sndq.size >= t.sndbuf and efd.writable and \
                        not self._writable():
                    self._sync_fd()  # the send buffer is full: POLLOUT ends now
                if sent >= len(data):
                    return sent
            if not block:
                if sent:
                    return sent
                raise error(errno.EAGAIN)
            limit = self._sndtimeo  # SO_SNDTIMEO bounds a blocking send's wait
            ok = self._stack.wait_for(
                self._cond,
                lambda: self._closed or self._send_error_pending(t) or (
                    t.state in (State.ESTABLISHED, State.CLOSE_WAIT)
                    and t.sndq.size < t.sndbuf),
                None if limit is None else limit / HZ)
            if self._closed:
                if sent:
                    return sent  # what was queued before the close stays queued
                raise error(errno.EBADF)
            if not ok:  # SO_SNDTIMEO, or a virtual clock with nothing left to happen
                if sent:
                    return sent
                if limit is not None:
                    raise error(errno.EAGAIN)
                raise TimeoutError("timed out")

    def _send_error_pending(self, t: TCB) -> bool:
        return bool(t.so_error) or t.shut_wr or t.state not in (
            State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_SENT, State.SYN_RECV)

    def send(self, data: Any, flags: int = 0) -> int:
        view = c_buffer(data)
        try:
            with self._stack.locked:
                if self._closed:  # (_check_tcb)
                    raise error(errno.EBADF)
                if self._timeout:  # (_poll_first)
                    self._wait(self._writable, 0)
                return self._send_once(view, self._timeout is None and not flags & MSG_DONTWAIT,
                                       bool(flags & MSG_OOB))
        finally:
            # As CPython's: the caller's buffer is free again when the call
            # ends, an error too (asyncio clears its bytearray in the handler).
            view.release()

    def sendall(self, data: Any, flags: int = 0) -> None:
        """As CPython's sock_sendall: send() until done; a timeout bounds the whole call."""
        try:  # (c_buffer, inline: every send of a two-thread exchange comes here)
            view = memoryview(data).cast("B")
        except TypeError:
            raise TypeError("a bytes-like object is required, not "
                            f"'{type(data).__name__}'") from None
        try:
            with self._stack.locked:
                if self._closed:  # (_check_tcb)
                    raise error(errno.EBADF)
                clock = self._stack.clock
                deadline = None if not self._timeout else clock.now() + self._timeout
                block = self._timeout is None and not flags & MSG_DONTWAIT
                sent = 0
                while True:
                    if deadline is not None:
                        remaining = deadline - clock.now()
                        if remaining <= 0 or not self._stack.wait_for(
                                self._cond, lambda: self._closed or self._writable(), remaining):
                            raise TimeoutError("timed out")
                        if self._closed:
                            raise error(errno.EBADF)
                    sent += self._send_once(view[sent:] if sent else view, block,
                                            bool(flags & MSG_OOB))
                    if sent >= len(view):
                        return
        finally:
            view.release()  # (as send's)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        flags = 0 if address is None else flags_or_address
        # Linux ignores the address on a connected TCP socket (facts).
        return self.send(data, flags)

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,
                address: Any = None) -> int:
        data, anc, flags = self._sendmsg_args(buffers, ancdata, flags, address)
        for level, kind, _value in anc:
            # tcp_sendmsg reads SOL_SOCKET's control messages only.
            if level == _socket.SOL_SOCKET:
                self._sol_socket_cmsg(kind)
        return self.send(data, flags)

    def _recv_bytes(self, n: int, flags: int) -> bytes:
        got = self._recv_common(n, flags, None)
        assert isinstance(got, bytes)
        return got

    def _recv_common(self, n: int, flags: int, into: memoryview | None) -> bytes | int:
        """Bytes, or with ``into`` the count copied there (one copy, straight
        from the receive queue). Linux tcp_recvmsg's order: a listener says ENOTCONN; then data;
        then a pending error; then end of stream (FIN, SHUT_RD, a connection
        that ended); then a socket never connected says ENOTCONN."""
        with self._stack.locked:
            if self._closed:  # (_check_tcb)
                raise error(errno.EBADF)
            t = self._tcb
            if self._timeout:  # (_poll_first)
                self._wait(self._readable, 0)
            if t.listening:
                raise error(errno.ENOTCONN)
            if flags & MSG_OOB:
                return self._recv_oob(t, flags, into)
            peek = bool(flags & MSG_PEEK)
            tcp = self._stack.tcp
            if t.urg_data and not peek:
                tcp.urgent_skip(t)  # a read starting on the urgent byte steps over it
                if not t.urg_data:
                    self._sync_fd()  # and the urgent data is over: POLLPRI ends
            # Under a timeout CPython's descriptor is non-blocking, so MSG_WAITALL
            # takes what is there once the poll said readable (facts).
            want = n if flags & MSG_WAITALL and not peek and self._timeout is None else 1
            # After the poll the call itself does not wait; nor when enough is
            # queued or the peer's FIN is in (ready()'s first answer, without
            # the call).
            if not self._timeout and (t.urg_data or t.rcvq.size < want) and not t.fin_received:
                # (made only when the call may wait)
                def ready() -> bool:
                    # (also true once the socket is closed: _wait's ``closes``)
                    if t.urg_data:  # reads stop at the urgent mark (tcp_recvmsg_locked)
                        avail = tcp.recv_avail(t)
                        if avail >= want or 0 < avail < t.rcvq.size:
                            return True
                    elif t.rcvq.size >= want:
                        return True
                    return t.fin_received or t.so_error != 0 or t.shut_rd \
                        or t.state == State.CLOSED or t.state == State.TIME_WAIT \
                        or self._closed  # (_state(t) == CLOSED, inline)
                try:
                    # An interactive connection (Linux's pingpong: it answers
                    # what it receives) waits for an answer: a hand-off.
                    self._wait(ready, flags, False, t.pingpong >= PINGPONG_THRESH, True)
                except BlockingIOError:
                    if not t.rcvq or not tcp.recv_avail(t):
                        raise  # (MSG_DONTWAIT | MSG_WAITALL returns what there is)
            if t.rcvq.size and (not t.urg_data or tcp.recv_avail(t)):
                if into is not None:
                    count = tcp.recv_into(t, into[:n], peek)
                    if self._efd is not None:
                        self._sync_fd()
                    return count
                data = tcp.recv(t, n, peek)
                if self._efd is not None:
                    self._sync_fd()
                return data
            if t.fin_received:
                return b"" if into is None else 0
            if t.so_error:
                code, t.so_error = t.so_error, 0
                self._sync_fd()
                raise error(code)
            if t.shut_rd or self._conn != _UNCONNECTED:
                return b"" if into is None else 0
            raise error(errno.ENOTCONN)

    def _recv_oob(self, t: TCB, flags: int, into: memoryview | None) -> bytes | int:
        """recv(MSG_OOB) (Linux tcp_recv_urg): the urgent byte, which never
        waits: EAGAIN while it has not arrived, which CPython retries until
        a timeout, if the socket has one, runs out (sock_call_ex)."""
        tcp = self._stack.tcp
        peek = bool(flags & MSG_PEEK)

        def settled() -> bool:
            try:
                tcp.recv_urgent(t, True)
            except BlockingIOError:
                return False
            except OSError:
                pass
            return True
        if self._timeout and not settled():
            if not self._stack.wait_for(self._cond, lambda: self._closed or settled(),
                                        self._timeout):
                raise TimeoutError("timed out")
            if self._closed:
                raise error(errno.EBADF)
        byte = tcp.recv_urgent(t, peek)
        self._sync_fd()
        if byte is None:
            return b"" if into is None else 0
        if into is None:
            return bytes((byte,))
        into[0] = byte
        return 1

    def sockatmark(self) -> bool:
        """sockatmark(3), which Python's socket module lacks: whether the next
        byte to read is the urgent one (Linux tcp_ioctl, SIOCATMARK). Reads
        stop in front of it. (A listener says False.)"""
        with self._stack.locked:
            return self._stack.tcp.at_mark(self._check_tcb())

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""  # CPython answers without asking the socket
        got = self._recv_common(bufsize, flags, None)  # (_recv_bytes)
        assert isinstance(got, bytes)
        return got

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        return self.recv(bufsize, flags), None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes == 0 or nbytes > len(view):
            if nbytes > len(view):
                raise ValueError("buffer too small for requested bytes")
            nbytes = len(view)
        if nbytes == 0:
            return 0
        got = self._recv_common(nbytes, flags, view)
        assert isinstance(got, int)
        return got

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        return self.recv_into(buffer, nbytes, flags), None

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0
                ) -> tuple[bytes, list[Any], int, Any]:
        if c_index(bufsize) < 0 or c_index(ancbufsize) < 0:
            raise ValueError("negative buffer size in recvmsg()")
        return self.recv(bufsize, c_int(flags)), [], 0, None

    def recvmsg_into(self, buffers: Any, ancbufsize: int = 0, flags: int = 0
                     ) -> tuple[int, list[Any], int, Any]:
        views = recvmsg_into_views(buffers, ancbufsize)
        return scatter(self.recv(sum(len(v) for v in views), flags), views), [], 0, None

    # -- shutdown and close -----------------------------------------------------------
    def shutdown(self, how: int) -> None:
        """Linux inet_shutdown: an unconnected socket says ENOTCONN (the
        flags still stick); SHUT_RD on a listener, or any shutdown while
        connecting, disconnects it."""
        how = c_int_strict(how)
        rd, wr = how != _socket.SHUT_WR, how != _socket.SHUT_RD
        with self._stack.locked:
            t = self._check_tcb()
            if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
                raise error(errno.EINVAL)
            if self._conn == _CONNECTING:
                self._conn = _DISCONNECTING if t.state in (
                    State.SYN_SENT, State.SYN_RECV, State.CLOSED) else _CONNECTED
            state = self._state(t)
            if state == State.LISTEN:
                if rd:
                    self._disconnect_listener(t)
                return
            if state == State.SYN_SENT:
                self._stack.tcp.shutdown_write(t)  # the attempt ends, nothing is sent
                t.so_error = errno.ECONNRESET  # tcp_disconnect in SYN-SENT
                self._conn = _UNCONNECTED
                t.local_addr = t.bind_addr
                if t.autobound:
                    self._stack.tcp_ports.unbind(t)
                    t.bound = t.autobound = False
                self._wake()
                return
            t.shut_rd = t.shut_rd or rd
            t.shut_wr = t.shut_wr or wr
            if state == State.CLOSED:
                self._wake()
                raise error(errno.ENOTCONN)
            if wr:
                self._stack.tcp.shutdown_write(t)
            self._wake()

    def _disconnect_listener(self, t: TCB) -> None:
        """tcp_disconnect on a listener (inet_csk_listen_stop): connections
        nobody accepted are reset, the socket is CLOSED and keeps its port."""
        tcp = self._stack.tcp
        lst = t.listen_state
        for child in list(lst.accept_queue) + list(lst.syn_queue.values()):
            child.listener = None
            child.orphan = True
            tcp.abort(child)
        lst.accept_queue.clear()
        lst.syn_queue.clear()
        t.listening = False
        tcp.index_listeners(t.local_port)
        t.state = State.CLOSED
        tcp.on_state(t)
        self._wake()

    def _close_socket(self) -> Readiness | None:
        """The socket's last object is closed: TCP's close, FIN or RST
        (stack lock held); SO_LINGER waits here."""
        t = self._tcb
        self._stack.tcp.close(t)
        linger_on, linger_secs = t.linger
        if linger_on and linger_secs > 0 and self._timeout != 0.0:
            # SO_LINGER: wait for the FIN to be acknowledged, or the time.
            self._stack.wait_for(
                self._cond,
                lambda: t.state in (State.CLOSED, State.TIME_WAIT, State.FIN_WAIT2),
                float(linger_secs))
        # The connection (a TIME-WAIT or a FIN-WAIT-2 one lives on for a
        # minute) lets go of the socket, and the socket of its core: nothing
        # of the closed socket is kept in a cycle, so it is freed at once,
        # not by the garbage collector (what wake did, nobody waits for now).
        t.owner = None
        t.wake = _nothing
        if t.state == State.CLOSED:
            self._stack.tcp.destroy(t)
        cond = self._cond
        if cond._waiters:  # (nobody waits: no calls)
            cond.notify_all()
        self.__dict__.pop("_core", None)
        return self._forget_readiness()

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """As socket.socket.makefile: a file object over this socket."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = _socket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    # -- options ---------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None
                   ) -> None:
        if value is None:
            raise error(errno.EINVAL)
        with self._stack.locked:
            t = self._check_tcb()
            if level == _socket.SOL_SOCKET and optname in (_socket.SO_RCVTIMEO,
                                                           _socket.SO_SNDTIMEO):
                raw = bytes(c_buffer(value)) if not isinstance(value, int) else b""
                self._set_timeo(optname, raw, len(raw) if raw else 4)
                return
            if level == _socket.IPPROTO_TCP and optname == TCP_CONGESTION:
                raw = struct.pack("i", value) if isinstance(value, int) \
                    else bytes(memoryview(value))
                if not raw:
                    raise error(errno.EINVAL)  # tcp_setsockopt: optlen < 1
                name = raw[:15].split(b"\0", 1)[0].decode("ascii", "replace")
                if name not in ("cubic", "reno"):
                    raise error(errno.ENOENT)
                t.set_congestion(name)
                return
            if level == _socket.SOL_SOCKET and optname == _socket.SO_LINGER:
                raw = bytes(value) if not isinstance(value, int) else b""
                if len(raw) < _LINGER.size:
                    raise error(errno.EINVAL)
                onoff, secs = _LINGER.unpack_from(raw)
                t.linger = (1 if onoff else 0, max(secs, 0))
                return
            if level == _socket.IPPROTO_IP and optname in (IP_TOS, IP_RECVTOS):
                # do_ip_setsockopt: an int, or one byte when shorter.
                if isinstance(value, int):
                    ival = value
                else:
                    raw = bytes(memoryview(value))
                    if not raw:
                        raise error(errno.EINVAL)
                    ival = int(struct.unpack_from("i", raw)[0]) if len(raw) >= 4 else raw[0]
                if optname == IP_RECVTOS:
                    self._recv_tos = bool(ival)
                    return
                # __ip_sock_set_tos: a byte; a stream's ECN bits stay TCP's;
                # the priority follows a changed TOS.
                old = t.tos
                tos = (ival & 0xFC) | (old & 3)
                if tos != old:
                    t.tos = tos  # (every segment from now on carries it: output.py)
                    self._priority = tos_priority(tos)
                return
            ival = self._int_value(value)
            if level == _socket.SOL_SOCKET:
                if optname == _socket.SO_REUSEADDR:
                    t.reuseaddr = bool(ival)
                elif optname == _socket.SO_REUSEPORT:
                    t.reuseport = bool(ival)
                elif optname == _socket.SO_KEEPALIVE:
                    t.keepalive = bool(ival)
                    from .transport.tcp import timers

                    timers.arm_keepalive(t)
                elif optname == _socket.SO_RCVBUF:
                    t.rcvbuf = max(MIN_RCVBUF, min(max(ival, 0), CORE_RMEM_MAX) * 2)
                    t.rcvbuf_locked = True
                elif optname == _socket.SO_SNDBUF:
                    t.sndbuf = max(MIN_SNDBUF, min(max(ival, 0), CORE_WMEM_MAX) * 2)
                    t.sndbuf_locked = True
                elif optname == _socket.SO_OOBINLINE:
                    t.urg_inline = bool(ival)  # the urgent byte stays in the stream
                elif optname == _socket.SO_BROADCAST:
                    self._broadcast = bool(ival)
                elif optname == _socket.SO_PRIORITY:
                    self._set_priority(ival)
                else:
                    raise error(errno.ENOPROTOOPT)
            elif level == _socket.IPPROTO_TCP:
                if optname == TCP_NODELAY:
                    t.nodelay = bool(ival)
                    if t.nodelay:
                        from .transport.tcp.output import output

                        output(t)
                elif optname == TCP_MAXSEG:
                    if ival and not 88 <= ival <= 32767:
                        raise error(errno.EINVAL)
                    t.mss_clamp = ival
                elif optname in (TCP_KEEPIDLE, TCP_KEEPINTVL):
                    if not 1 <= ival <= 32767:
                        raise error(errno.EINVAL)
                    if optname == TCP_KEEPIDLE:
                        t.keepidle = ival
                        from .transport.tcp import timers

                        timers.arm_keepalive(t)
                    else:
                        t.keepintvl = ival
                elif optname == TCP_KEEPCNT:
                    if not 1 <= ival <= 127:
                        raise error(errno.EINVAL)
                    t.keepcnt = ival
                elif optname == TCP_QUICKACK:
                    from .transport.tcp.ack import set_quickack

                    set_quickack(t, ival)
                else:
                    raise error(errno.ENOPROTOOPT)
            elif level == _socket.IPPROTO_IP and optname == IP_TTL:
                if ival == -1:
                    t.ttl = None
                elif not 1 <= ival <= 255:
                    raise error(errno.EINVAL)
                else:
                    t.ttl = ival
            elif level == _socket.IPPROTO_IPV6 and self._family == AF_INET6:
                if optname == IPV6_TCLASS:
                    if not -1 <= ival <= 255:
                        raise error(errno.EINVAL)
                    t.tclass = max(ival, 0) & ~3  # a stream's ECN bits are TCP's
                elif optname == IPV6_RECVTCLASS:
                    self._recv_tclass = bool(ival)
                elif optname == IPV6_V6ONLY:
                    if t.bound:
                        raise error(errno.EINVAL)
                    t.v6only = bool(ival)
                elif optname == IPV6_UNICAST_HOPS:
                    if not -1 <= ival <= 255:
                        raise error(errno.EINVAL)
                    t.ttl = None if ival == -1 else ival
                else:
                    raise error(errno.ENOPROTOOPT)
            else:
                raise error(errno.ENOPROTOOPT)

    @staticmethod
    def _int_value(value: Any) -> int:
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            if len(raw) < 4:
                raise error(errno.EINVAL)
            return int(struct.unpack_from("i", raw)[0])
        return int(value)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        with self._stack.locked:
            t = self._check_tcb()
            # Without a buffer length CPython reads a C int: the first four bytes.
            if level == _socket.IPPROTO_TCP and optname == TCP_INFO:
                raw = self._tcp_info_bytes(t)
                return raw[:buflen] if buflen else struct.unpack_from("i", raw)[0]
            if level == _socket.IPPROTO_TCP and optname == TCP_CONGESTION:
                raw = t.cc.name.encode().ljust(16, b"\0")  # TCP_CA_NAME_MAX
                return raw[:buflen] if buflen else struct.unpack_from("i", raw)[0]
            if level == _socket.SOL_SOCKET and optname == _socket.SO_LINGER:
                raw = _LINGER.pack(*t.linger)
                return raw[:buflen] if buflen else _LINGER.unpack(raw)[0]
            if level == _socket.SOL_SOCKET and optname in (_socket.SO_RCVTIMEO,
                                                           _socket.SO_SNDTIMEO):
                raw = self._get_timeo(optname)
                return raw[:buflen] if buflen else struct.unpack_from("i", raw)[0]
            value = self._tcp_int_option(t, level, optname)
        if buflen is None:
            return value
        return struct.pack("i", value)[:buflen]

    def _tcp_int_option(self, t: TCB, level: int, optname: int) -> int:
        if level == _socket.SOL_SOCKET:
            if optname == _socket.SO_ERROR:
                code, t.so_error = t.so_error, 0
                self._sync_fd()
                return code
            table = {
                _socket.SO_REUSEADDR: int(t.reuseaddr), _socket.SO_REUSEPORT: int(t.reuseport),
                _socket.SO_KEEPALIVE: int(t.keepalive), _socket.SO_RCVBUF: t.rcvbuf,
                _socket.SO_SNDBUF: t.sndbuf, _socket.SO_TYPE: self._kind,
                SO_DOMAIN: int(self._family), SO_PROTOCOL: _socket.IPPROTO_TCP,
                _socket.SO_ACCEPTCONN: int(t.listening),
                _socket.SO_BROADCAST: int(getattr(self, "_broadcast", False)),
                _socket.SO_OOBINLINE: int(t.urg_inline),
                _socket.SO_PRIORITY: self._priority,
            }
            if optname in table:
                return table[optname]
            raise error(errno.ENOPROTOOPT)
        if level == _socket.IPPROTO_TCP:
            if optname == TCP_NODELAY:
                return int(t.nodelay)
            if optname == TCP_MAXSEG:
                return t.mss if t.state in _CONNECTED_STATES else (t.mss_clamp or 536)
            if optname == TCP_KEEPIDLE:
                return t.keepidle or 7200
            if optname == TCP_KEEPINTVL:
                return t.keepintvl or 75
            if optname == TCP_KEEPCNT:
                return t.keepcnt or 9
            raise error(errno.ENOPROTOOPT)
        if level == _socket.IPPROTO_IP and optname == IP_TTL:
            return t.ttl if t.ttl is not None else self._stack.ipv4.default_ttl
        if level == _socket.IPPROTO_IP and optname == IP_TOS:
            return t.tos
        if level == _socket.IPPROTO_IP and optname == IP_RECVTOS:
            return int(self.__dict__.get("_recv_tos", False))
        if level == _socket.IPPROTO_IPV6 and self._family == AF_INET6:
            if optname == IPV6_TCLASS:
                return t.tclass
            if optname == IPV6_RECVTCLASS:
                return int(self._recv_tclass)
            if optname == IPV6_V6ONLY:
                return int(t.v6only)
            if optname == IPV6_UNICAST_HOPS:
                return t.ttl if t.ttl is not None else self._stack.ipv6.default_hop_limit
        if self._family != AF_INET6 and level != _socket.IPPROTO_IP:
            raise error(errno.EOPNOTSUPP)  # do_ip_getsockopt: not SOL_IP
        raise error(errno.ENOPROTOOPT)

    def tcp_info(self) -> dict[str, Any]:
        """Linux struct tcp_info's fields that matter, by name (times in
        microseconds, windows in segments as Linux reports them)."""
        with self._stack.locked:
            return self._stack.tcp.info(self._check_tcb())

    def _tcp_info_bytes(self, t: TCB) -> bytes:
        i = self._stack.tcp.info(t)
        pmtu = t.route.iface.mtu if t.route is not None else 0

        def u32(v: int) -> int:
            return max(0, min(int(v), 0xFFFFFFFF))
        # Field by field as include/uapi/linux/tcp.h lays struct tcp_info out.
        return _TCP_INFO.pack(
            int(self._state(t)), i["ca_state"], min(i["retransmits"], 255), 0,
            min(i["backoff"], 255), i["options"],
            ((i["snd_wscale"] & 15) | (i["rcv_wscale"] & 15) << 4), 0,
            u32(i["rto"]), 40000, u32(i["snd_mss"]), u32(i["rcv_mss"]),  # rto, ato, mss
            u32(i["unacked"]), u32(i["sacked"]), u32(i["lost"]), u32(i["retrans"]), 0,
            0, 0, 0, 0,  # last_data_sent, last_ack_sent, last_data_recv, last_ack_recv
            pmtu, u32(i["rcv_space"]), u32(i["rtt"]), u32(i["rttvar"]),
            u32(min(i["snd_ssthresh"], 0x7FFFFFFF)), u32(i["snd_cwnd"]), u32(i["advmss"]),
            self._stack.tcp.reordering, 0, u32(i["rcv_space"]), u32(i["total_retrans"]))

    # -- table row -------------------------------------------------------------------
    def _row(self) -> dict[str, Any]:
        t = self._tcb
        state = t.state
        listening = t.listening and state == State.LISTEN
        peer = None
        if not listening and state != State.CLOSED and t.remote_port:
            peer = self._text(self._shown(t.remote_addr), t.remote_port)
        local_addr = t.local_addr if not listening and t.local_addr else (
            t.bind_addr or (V6_ANY if t.v6 else V4_ANY))
        recv_q = len(t.listen_state.accept_queue) if listening else t.rcvq.size
        send_q = t.listen_state.backlog if listening else t.sndq.size
        return {
            "proto": "tcp6" if self._family == AF_INET6 else "tcp",
            "state": state.ss_name if state != State.CLOSED else "UNCONN",
            "recv_q": recv_q, "send_q": send_q,
            "local": self._text(self._shown(local_addr), t.local_port), "peer": peer,
        }


__all__ = ["StreamSocket"]
