"""asyncio's socket transport for loopstack TCP sockets, under :func:`loopstack.patch`.

A selector event loop's transport calls ``self._sock.send`` at a write and
``self._sock.recv`` at each arrival. Under the patch that socket is a
``socket.socket`` front (socket.py) whose every call goes through a
dispatcher to the loopstack socket behind it, and then through the general
``send``/``recv`` (argument conversion, polling, blocking, urgent data).

:class:`StackSocketTransport` is asyncio's own ``_SelectorSocketTransport``
(a subclass that adds no method of asyncio's: every line of the transport's
logic — buffering, flow control, EOF, errors, ``sendfile``, ``start_tls`` —
is the running Python's own) whose ``_sock`` is a :class:`_DataPath`: an
object that answers ``send`` and ``recv`` with the loopstack socket's
non-blocking path directly, and hands every other attribute (``recv_into``,
``sendmsg``, ``shutdown``, ``close``, ``fileno``, ...) to the socket itself.
What it cannot answer the socket's own way without the general call (a
timeout set on the socket, a closed socket, urgent data, the end of the
stream, a pending error) it leaves to the general call, so results and
exceptions are the socket's. ``get_extra_info('socket')`` is the real
socket, as before.

patch.py gives it to asyncio's selector loops for sockets whose
implementation is a loopstack stream socket (``_make_socket_transport``);
every other socket (a kernel socket of a passthrough, a mock in CPython's
tests) gets asyncio's transport unchanged.
"""

from __future__ import annotations

from asyncio import selector_events
from typing import Any

from .socket import implementation
from .stream import StreamSocket

_SelectorSocketTransport: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
_REAL_MAKE_SOCKET_TRANSPORT = selector_events.BaseSelectorEventLoop._make_socket_transport  # type: ignore[attr-defined]


class _DataPath:
    """The transport's ``_sock``: ``send``/``recv`` straight to the
    loopstack socket's data path, every other attribute the socket's."""

    __slots__ = ("_sock", "_impl", "_tcb", "_locked", "_tcp_recv")

    def __init__(self, sock: Any, impl: StreamSocket) -> None:
        self._sock = sock
        self._impl = impl
        # What each call would look up again (a stream socket's TCB, stack
        # and protocol are its own for life).
        self._tcb = impl._tcb
        self._locked = impl._stack.locked
        self._tcp_recv = impl._stack.tcp.recv

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def send(self, data: Any) -> int:
        """``sock.send(data)``: StreamSocket.send's work for a non-blocking
        socket (asyncio's always are) that is open — put what fits in the
        send queue, under the stack lock — without the dispatcher, the
        argument conversion and the poll; the socket's own call otherwise."""
        impl = self._impl
        if impl._timeout == 0.0 and not impl._closed:
            try:
                view = memoryview(data).cast("B")
            except TypeError:
                sent: int = self._sock.send(data)  # (its own error)
                return sent
            try:
                with self._locked:
                    if not impl._closed:
                        return impl._send_once(view, False)
            finally:
                view.release()
        sent = self._sock.send(data)
        return sent

    def recv(self, size: int) -> bytes:
        """``sock.recv(size)``: when bytes are queued (no urgent data pending,
        not a listener) StreamSocket._recv_common's answer is to take them,
        which this does directly (and brings a descriptor, if one was made,
        up to date); anything else — nothing queued, the end of the stream,
        an error, a timeout on the socket — is the socket's own call."""
        impl = self._impl
        if impl._timeout == 0.0 and size > 0:
            t = self._tcb
            with self._locked:
                if t.rcvq.size and not t.urg_data and not impl._closed and not t.listening:
                    data = self._tcp_recv(t, size, False)
                    if impl._efd is not None:
                        impl._sync_fd()
                    return data
        got: bytes = self._sock.recv(size)
        return got


class StackSocketTransport(_SelectorSocketTransport):  # type: ignore[misc]
    """asyncio's socket transport, its socket calls on loopstack's data path
    (see the module's text)."""

    def __init__(self, loop: Any, sock: Any, protocol: Any, waiter: Any = None,
                 extra: Any = None, server: Any = None) -> None:
        super().__init__(loop, sock, protocol, waiter, extra, server)
        impl = implementation(sock)
        assert isinstance(impl, StreamSocket)
        self._sock = _DataPath(sock, impl)


# The same name as asyncio's (repr shows "<_SelectorSocketTransport fd=...>").
StackSocketTransport.__name__ = "_SelectorSocketTransport"
StackSocketTransport.__qualname__ = "_SelectorSocketTransport"


def make_socket_transport(self: Any, sock: Any, protocol: Any, waiter: Any = None, *,
                          extra: Any = None, server: Any = None) -> Any:
    """BaseSelectorEventLoop._make_socket_transport under the patch: a
    StackSocketTransport for a loopstack stream socket, else asyncio's."""
    if isinstance(implementation(sock), StreamSocket):
        return StackSocketTransport(self, sock, protocol, waiter, extra, server)
    return _REAL_MAKE_SOCKET_TRANSPORT(self, sock, protocol, waiter, extra=extra,
                                       server=server)


__all__ = ["StackSocketTransport", "make_socket_transport"]
