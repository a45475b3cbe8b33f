"""TLS over loopstack sockets. ``ssl.SSLContext.wrap_socket`` cannot use a
socket without a kernel descriptor: OpenSSL reads and writes the descriptor
itself. Under :func:`loopstack.patch` it returns a real ``ssl.SSLSocket``
(of the context's ``sslsocket_class``, so ``type(s) is ssl.SSLSocket``)
whose descriptor is none and whose two halves are loopstack's:

* its ``_sslobj``, which on a kernel socket is the C ``_ssl._SSLSocket``
  doing I/O on the descriptor, is a :class:`_Pump`: the same C object made
  over two ``ssl.MemoryBIO`` buffers (``SSLContext._wrap_bio``, with the
  ``SSLSocket`` as its owner, so ``sni_callback`` and ``_msg_callback`` see
  it), which moves the bytes through the loopstack socket, waiting as the
  socket's timeout says;
* what ``SSLSocket`` does on the plain socket (``super().recv``, ``fileno``,
  ``settimeout``, ``getpeername``, ``family``...) goes to the loopstack socket:
  :func:`install` (the first patch) puts dispatchers on ``ssl.SSLSocket``,
  which leave every other ``SSLSocket`` (a kernel one) as it was.

So ``ssl.py``'s own code runs for everything else, with its checks, messages
and exceptions.
"""

from __future__ import annotations

import errno
import socket as _socket
import ssl
import threading
import warnings
import weakref
from typing import Any

from .socket import Socket, find_descriptor

_CHUNK = 65536
_TLS_HEADER = 5  # content type, version, length (RFC 8446 5.1)
_KEY = "_loopstack_sock"  # in an SSLSocket's __dict__: the loopstack socket behind it
_SSLSocket = ssl.SSLSocket
_C_SOCKET: Any = _socket.socket.__mro__[-2]  # _socket.socket, the C type
_ORIGINAL = dict(_SSLSocket.__dict__)  # its own methods, before install() replaces some


class _Pump:
    """An ``SSLSocket``'s TLS engine over a loopstack socket: what the C
    ``_ssl._SSLSocket`` is over a kernel one (same methods, same errors,
    since it *is* that object, over memory buffers). Blocking sockets wait
    through SSL_ERROR_WANT_READ/WRITE as OpenSSL's callers do; non-blocking
    ones raise SSLWantReadError/SSLWantWriteError; a timeout raises
    TimeoutError with _ssl's messages."""

    def __init__(self, owner: Any, sock: Socket, context: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None, session: ssl.SSLSession | None) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj: Any = context._wrap_bio(  # type: ignore[attr-defined]
            self._in, self._out, server_side, server_hostname, owner=owner, session=session)
        self._unsent = bytearray()  # ciphertext a non-blocking socket had no room for
        self._unsent_for = 0  # the bytes of the write() those records carry
        self._header = bytearray()  # the part read so far of the next record's header
        self._record_left = 0  # bytes of the current record not read yet
        self._reset = False  # the socket failed under a read: its EOF is a reset
        self._sending = threading.Lock()  # one sender at a time: a reader's flush and a writer's

    # -- what the C object has and SSLSocket uses ---------------------------------
    @property
    def context(self) -> ssl.SSLContext:
        ctx: ssl.SSLContext = self._obj.context
        return ctx

    @context.setter
    def context(self, ctx: ssl.SSLContext) -> None:
        self._obj.context = ctx

    @property
    def session(self) -> ssl.SSLSession | None:
        session: ssl.SSLSession | None = self._obj.session
        return session

    @session.setter
    def session(self, session: ssl.SSLSession | None) -> None:
        self._obj.session = session

    def __getattr__(self, name: str) -> Any:
        # getpeercert, cipher, shared_ciphers, compression, version, pending,
        # selected_alpn_protocol, get_channel_binding, session_reused,
        # server_side, server_hostname, owner, verify_client_post_handshake
        return getattr(self._obj, name)

    def do_handshake(self) -> None:
        self._run("handshake", self._obj.do_handshake)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if buffer is not None:
            return self._run("read", self._obj.read, len, buffer)
        return self._run("read", self._obj.read, len)

    def write(self, data: Any) -> int:
        """As SSL_write on a non-blocking socket: when the socket cannot take
        all the records, SSLWantWriteError, and the caller calls again with
        the same data; that call sends the rest and reports the bytes
        written. (Reporting success at once would leave the rest here, where
        nothing sends it unless the caller calls again.)"""
        if self._unsent_for:  # the retry of a write that was half sent
            self._flush()  # (a read may have sent the rest meanwhile)
            if self._unsent:
                raise _want_write()
            n, self._unsent_for = self._unsent_for, 0
            return n
        n = int(self._run("write", self._obj.write, data))
        if self._unsent and self._sock.gettimeout() == 0.0:
            self._unsent_for = n
            raise _want_write()
        return n

    def shutdown(self) -> Any:
        """SSL_shutdown both ways (close_notify sent, the peer's awaited);
        the socket comes back, as from the C object."""
        self._run("shutdown", self._obj.shutdown)
        if self._unsent and self._sock.gettimeout() == 0.0:
            raise _want_write()
        return self._obj.owner

    # -- moving bytes ---------------------------------------------------------
    def _flush(self) -> None:
        """Send the TLS engine's output. A blocking socket sends all of it; a
        non-blocking one what fits, keeping the rest for the next call (the
        engine has already counted those bytes as written: dropping them
        would corrupt the stream). One thread sends at a time; another that
        finds it sending leaves its output to it (which looks again after
        letting go), rather than wait behind a send that waits for the peer."""
        while self._out.pending or self._unsent:
            if not self._sending.acquire(blocking=False):
                return
            try:
                while True:
                    data = self._out.read()
                    if data:
                        self._unsent += data
                    if not self._unsent:
                        break
                    try:
                        n = self._sock.send(bytes(self._unsent[:_CHUNK]))
                    except BlockingIOError:
                        return
                    del self._unsent[:n]
            finally:
                self._sending.release()

    def _fill(self) -> None:
        """Read ciphertext from the socket into the TLS engine, one TLS
        record at most (its 5-byte header, then the length the header gives),
        as OpenSSL reads a kernel socket without read-ahead: what the engine
        does not need yet stays in the socket, where select() sees it. A
        greedy read would hide a request that came with the handshake's last
        message from a server waiting for readability."""
        if self._record_left:
            data = self._sock.recv(min(self._record_left, _CHUNK))
            self._record_left -= len(data)
        else:
            data = self._sock.recv(_TLS_HEADER - len(self._header))
            self._header += data
            if len(self._header) == _TLS_HEADER:
                self._record_left = int.from_bytes(self._header[3:5], "big")
                self._header.clear()
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def _run(self, what: str, op: Any, *args: Any) -> Any:
        """Drive ``op`` through WANT_READ/WANT_WRITE as _ssl does on a
        blocking socket; a non-blocking socket gets the engine's own
        SSLWantReadError (args[0] SSL_ERROR_WANT_READ, which asyncore-style
        callers test)."""
        while True:
            try:
                result = op(*args)
            except ssl.SSLWantReadError as want:
                try:
                    self._flush()
                    if self._unsent and what != "write" and self._sock.gettimeout() == 0.0:
                        raise _want_write() from None  # OpenSSL's send would have refused
                    self._fill()
                except BlockingIOError:
                    raise want from None
                except TimeoutError:
                    raise _timed_out(what, reading=True) from None
                except OSError:
                    if what != "read":
                        raise
                    # _ssl's read (SSL_read_ex) reports a failed recv or send
                    # (ECONNRESET...) as an EOF with no OpenSSL reason.
                    self._in.write_eof()
                    self._reset = True
                continue
            except ssl.SSLWantWriteError:  # (the memory buffer never refuses)
                continue
            except ssl.SSLEOFError as e:
                if not self._reset:
                    raise
                self._reset = False
                # The engine saw the end of its input; _ssl on a reset
                # socket says no more than "EOF" (SSL_ERROR_SYSCALL).
                raise _eof(str(e.args[1]).split("] ", 1)[-1]) from None
            except ssl.SSLError:
                # A failed handshake (a certificate refused, say) leaves an
                # alert for the peer in the engine: send it, as OpenSSL does
                # on a kernel socket, or the peer waits for it forever.
                try:
                    self._flush()
                except OSError:
                    pass
                raise
            try:
                self._flush()
            except TimeoutError:
                raise _timed_out(what, reading=False) from None
            except BlockingIOError:
                raise
            except OSError:
                if what not in ("read", "write"):
                    raise
                raise _eof() from None  # as _ssl's read and write (SSL_*_ex) report it
            return result

    def _last_flush(self) -> None:
        """What a non-blocking socket could not send, tried once more
        before the socket closes."""
        if self._unsent or self._out.pending:
            try:
                self._flush()
            except OSError:
                pass


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(int(ssl.SSL_ERROR_WANT_WRITE),
                                 "The operation did not complete (write)")


def _eof(text: str = "EOF occurred in violation of protocol") -> ssl.SSLEOFError:
    """What _ssl raises when SSL_write_ex (or SSL_read_ex) fails in the
    socket: ``ret == 0`` with SSL_ERROR_SYSCALL reads as an EOF."""
    err = ssl.SSLEOFError(int(ssl.SSL_ERROR_EOF), text)
    err.reason = None  # type: ignore[assignment]
    err.library = None  # type: ignore[assignment]
    return err


def _timed_out(what: str, reading: bool) -> TimeoutError:
    """_ssl's TimeoutError messages."""
    if what == "handshake":
        return TimeoutError("The handshake operation timed out")
    if what == "shutdown":
        what = "read" if reading else "write"
    return TimeoutError(f"The {what} operation timed out")


# -- the SSLSocket ---------------------------------------------------------------
def _check(context: ssl.SSLContext, sock: Any, server_side: bool,
           server_hostname: str | None, session: ssl.SSLSession | None) -> None:
    """SSLSocket._create's checks, in its order."""
    if sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_TYPE) != _socket.SOCK_STREAM:
        raise NotImplementedError("only stream sockets are supported")
    if server_side:
        if server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        if session is not None:
            raise ValueError("session can only be specified in client mode")
    if context.check_hostname and not server_hostname:
        raise ValueError("check_hostname requires server_hostname")


def wrap_by_descriptor(context: ssl.SSLContext, sock: Any, server_side: bool = False,
                       do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                       server_hostname: str | None = None,
                       session: ssl.SSLSession | None = None) -> Any:
    """``wrap_socket`` of an object that is no socket but whose fileno() is
    a loopstack socket's descriptor (a wrapper that passes calls on, as
    CPython's asyncio tests use): SSLSocket._create takes over the
    descriptor and detaches the object, and so does this. None when the
    descriptor is not a loopstack socket's (patch.py then calls the ssl
    module's own wrap_socket)."""
    try:
        fd = sock.fileno()
    except Exception:  # noqa: BLE001 - not a socket: the ssl module says how
        return None
    target = find_descriptor(fd) if type(fd) is int and fd >= 0 else None
    if target is None:
        return None
    _check(context, sock, server_side, server_hostname, session)
    family, kind, proto, timeout = sock.family, sock.type, sock.proto, sock.gettimeout()
    sock.detach()
    impl = target._adopt(fd, family, kind, proto)
    impl.settimeout(timeout)
    return wrap(context, impl, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                server_hostname, session)


def wrap(context: ssl.SSLContext, sock: Socket, server_side: bool = False,
         do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
         server_hostname: str | None = None, session: ssl.SSLSession | None = None
         ) -> Any:
    """What ``SSLContext.wrap_socket`` does (``SSLSocket._create``), for a
    loopstack socket: the same checks in the same order, the socket given
    left detached, a failed handshake closing the new socket."""
    _check(context, sock, server_side, server_hostname, session)
    cls = context.sslsocket_class
    # No descriptor; SSLSocket.__init__ (which refuses to run) is not called.
    self: Any = _C_SOCKET.__new__(cls)
    self._io_refs = 0
    self._closed = True  # until the socket is taken over
    if "_refs" in sock.__dict__:  # a socket of this process's stack (not an attached one's)
        sock = sock._take_over()  # the object given is left detached, as SSLSocket leaves it
    d = self.__dict__
    d[_KEY] = sock
    self._closed = False
    self._context = context
    self._session = session
    self._sslobj = None
    self.server_side = server_side
    self.server_hostname = context._encode_hostname(server_hostname)  # type: ignore[attr-defined]
    self.do_handshake_on_connect = do_handshake_on_connect
    self.suppress_ragged_eofs = suppress_ragged_eofs
    d["_loopstack_finalizer"] = _finalizer(self, sock)
    try:
        sock.getpeername()
        connected = True
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            self.close()
            raise
        connected = False
        _refuse_early_data(self, sock)
    self._connected = connected
    if connected:
        try:
            self._sslobj = _Pump(self, sock, context, server_side, self.server_hostname,
                                 session)
            if do_handshake_on_connect:
                if sock.gettimeout() == 0.0:
                    raise ValueError("do_handshake_on_connect should not be specified for "
                                     "non-blocking sockets")
                self.do_handshake()
        except (OSError, ValueError):
            self.close()  # the peer sees the connection end, as with a kernel socket
            raise
    return self


def _refuse_early_data(self: Any, sock: Socket) -> None:
    """SSLSocket._create's check of a socket that is not connected (any
    more): data left in it must not pass for data that came through TLS."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        early = sock.recv(1)
    except OSError as e:
        if e.errno not in (errno.ENOTCONN, errno.EINVAL):
            sock.settimeout(timeout)
            self.close()
            raise
        early = b""
    sock.settimeout(timeout)
    if early:
        reason = "Closed before TLS handshake with data in recv buffer."
        err = ssl.SSLError(errno.ENOTCONN, reason)
        err.reason = reason
        err.library = None  # type: ignore[assignment]
        try:
            self.close()
        except OSError:
            pass
        raise err


class _Collected:
    """An SSLSocket collected without close(): its loopstack socket is
    closed with the ResourceWarning CPython gives (the C finalizer, which
    closes a kernel SSLSocket, sees no descriptor here). Holds no reference
    to the SSLSocket, only its class, for the warning's text."""

    def __init__(self, cls: type, sock: Socket) -> None:
        self.cls = cls
        self.sock = sock

    def __call__(self) -> None:
        sock = self.sock
        if sock._closed:
            return
        try:
            warnings.warn(f"unclosed {_describe(self.cls, sock)}", ResourceWarning,
                          stacklevel=2)
        except Exception:  # noqa: BLE001 - best effort (interpreter exit)
            pass
        try:
            sock.close()
        except OSError:
            pass


def _finalizer(front: Any, sock: Socket) -> weakref.finalize:  # type: ignore[type-arg]
    fin = weakref.finalize(front, _Collected(type(front), sock))
    fin.atexit = False
    return fin


def _describe(cls: type, sock: Socket) -> str:
    """socket.socket.__repr__ of an SSLSocket of class ``cls`` over ``sock``."""
    closed = sock._closed
    text = (f"<{cls.__module__}.{cls.__qualname__}{' [closed]' if closed else ''} "
            f"fd={sock.fileno()}, family={sock.family}, type={sock.type}, proto={sock.proto}")
    if not closed:
        for what, get in (("laddr", sock.getsockname), ("raddr", sock.getpeername)):
            try:
                text += f", {what}={get()}"
            except OSError:
                pass
    return text + ">"


# -- what SSLSocket does on the plain socket, done on the loopstack socket -----------
def _sock_of(self: Any) -> Socket | None:
    d = getattr(self, "__dict__", None)
    return None if d is None else d.get(_KEY)


def _plain_method(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        sock = _sock_of(self)
        if sock is None:
            return getattr(super(_SSLSocket, self), name)(*args, **kwargs)
        return getattr(sock, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def _plain_property(name: str) -> property:
    def get(self: Any) -> Any:
        sock = _sock_of(self)
        if sock is None:
            return getattr(super(_SSLSocket, self), name)
        return getattr(sock, name)

    return property(get)


def _when_clear(name: str) -> Any:
    """SSLSocket's method, which calls the plain socket's (``super()``)
    when no TLS is on: that call goes to the loopstack socket."""
    tls_method = _ORIGINAL[name]

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        sock = _sock_of(self)
        if sock is None or self._sslobj is not None:
            return tls_method(self, *args, **kwargs)
        return getattr(sock, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def _recv_into(self: Any, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
    sock = _sock_of(self)
    if sock is None or self._sslobj is not None:
        n: int = _ORIGINAL["recv_into"](self, buffer, nbytes, flags)
        return n
    return sock.recv_into(buffer, nbytes or 0, flags)


def _recvfrom_into(self: Any, buffer: Any, nbytes: int | None = None, flags: int = 0) -> Any:
    sock = _sock_of(self)
    if sock is None or self._sslobj is not None:
        return _ORIGINAL["recvfrom_into"](self, buffer, nbytes, flags)
    return sock.recvfrom_into(buffer, nbytes or 0, flags)


def _shutdown(self: Any, how: int) -> None:
    sock = _sock_of(self)
    if sock is None:
        _ORIGINAL["shutdown"](self, how)
        return
    pump = self._sslobj
    if isinstance(pump, _Pump):
        pump._last_flush()
    self._sslobj = None
    sock.shutdown(how)


def _real_close(self: Any) -> None:
    sock = _sock_of(self)
    if sock is None:
        _ORIGINAL["_real_close"](self)
        return
    pump = self._sslobj
    if isinstance(pump, _Pump):
        pump._last_flush()
    self._sslobj = None
    fin = self.__dict__.get("_loopstack_finalizer")
    if fin is not None:
        fin.detach()
    sock.close()


def _detach(self: Any) -> int:
    sock = _sock_of(self)
    if sock is None:
        fd: int = super(_SSLSocket, self).detach()
        return fd
    self._closed = True
    fin = self.__dict__.get("_loopstack_finalizer")
    if fin is not None:
        fin.detach()
    return sock.detach()


def _real_connect(self: Any, addr: Any, connect_ex: bool) -> Any:
    sock = _sock_of(self)
    if sock is None:
        return _ORIGINAL["_real_connect"](self, addr, connect_ex)
    if self.server_side:
        raise ValueError("can't connect in server-side mode")
    if self._connected or self._sslobj is not None:
        raise ValueError("attempt to connect already-connected SSLSocket!")
    self._sslobj = _Pump(self, sock, self.context, False, self.server_hostname, self._session)
    try:
        rc: int | None = None
        if connect_ex:
            rc = sock.connect_ex(addr)
        else:
            sock.connect(addr)
        if not rc:
            self._connected = True
            if self.do_handshake_on_connect:
                self.do_handshake()
        return rc
    except (OSError, ValueError):
        self._sslobj = None
        raise


def _accept(self: Any) -> tuple[Any, Any]:
    sock = _sock_of(self)
    if sock is None:
        pair: tuple[Any, Any] = _ORIGINAL["accept"](self)
        return pair
    conn, addr = sock.accept()
    wrapped = self.context.wrap_socket(conn, do_handshake_on_connect=self.do_handshake_on_connect,
                                       suppress_ragged_eofs=self.suppress_ragged_eofs,
                                       server_side=True)
    return wrapped, addr


_PLAIN_METHODS = ("fileno", "getpeername", "getsockname", "getsockopt", "setsockopt",
                  "settimeout", "gettimeout", "setblocking", "getblocking", "bind", "listen",
                  "get_inheritable", "set_inheritable")
_PLAIN_PROPERTIES = ("family", "type", "proto", "timeout")
_WHEN_CLEAR = ("send", "sendto", "sendall", "sendfile", "recv", "recvfrom")
_OWN: dict[str, Any] = {
    "recv_into": _recv_into, "recvfrom_into": _recvfrom_into, "shutdown": _shutdown,
    "_real_close": _real_close, "detach": _detach, "_real_connect": _real_connect,
    "accept": _accept,
}
_saved: dict[str, Any] = {}  # what install() replaced on ssl.SSLSocket, by name


def install() -> None:
    """Put the dispatchers on ``ssl.SSLSocket`` (patch.py, first patch).
    They stay when the patch ends, as socket.socket's do (socket.py): an
    SSLSocket made under the patch keeps working, and every other one
    reaches SSLSocket's own methods."""
    with _install_lock:
        if _installed:
            return
        new: dict[str, Any] = dict(_OWN)
        new.update((name, _plain_method(name)) for name in _PLAIN_METHODS)
        new.update((name, _plain_property(name)) for name in _PLAIN_PROPERTIES)
        new.update((name, _when_clear(name)) for name in _WHEN_CLEAR)
        for name, value in new.items():
            setattr(_SSLSocket, name, value)
        _installed.append(True)


_install_lock = threading.Lock()
_installed: list[bool] = []


class _TLSSocketMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _SSLSocket) and _sock_of(obj) is not None


class TLSSocket(metaclass=_TLSSocketMeta):
    """Not a class of objects: ``isinstance(s, TLSSocket)`` tells whether
    ``s`` is an ``ssl.SSLSocket`` over a loopstack socket (made by
    :func:`wrap`)."""


__all__ = ["TLSSocket", "install", "wrap", "wrap_by_descriptor"]
