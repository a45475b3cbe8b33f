"""TLS over loopstack sockets: ``ssl.SSLContext.wrap_socket`` cannot use a
socket without a kernel descriptor, so under :func:`loopstack.patch` it
returns a :class:`TLSSocket`, which runs the same TLS engine (``ssl.SSLObject``)
over two ``ssl.MemoryBIO`` buffers and moves the bytes through the loopstack
socket. It offers what ``ssl.SSLSocket`` offers to client and server code.
"""

from __future__ import annotations

import io
import socket as _socket
import ssl
from types import TracebackType
from typing import Any

from .socket import Socket

_CHUNK = 65536
_TLS_HEADER = 5  # content type, version, length (RFC 8446 5.1)


class TLSSocket:
    """An ``ssl.SSLSocket`` look-alike over a loopstack socket."""

    def __init__(self, context: ssl.SSLContext, sock: Socket, *, server_side: bool = False,
                 server_hostname: str | None = None, do_handshake_on_connect: bool = True,
                 suppress_ragged_eofs: bool = True, session: ssl.SSLSession | None = None
                 ) -> None:
        self._sock = sock
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.do_handshake_on_connect = do_handshake_on_connect
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._session = session
        self._obj: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._unsent = bytearray()  # ciphertext a non-blocking socket had no room for
        self._unsent_for = 0  # the bytes of the write() those records carry
        self._header = bytearray()  # the part read so far of the next record's header
        self._record_left = 0  # bytes of the current record not read yet
        self._closed = False
        self._io_refs = 0
        if self._connected():
            self._start()
            if do_handshake_on_connect:
                try:
                    self.do_handshake()
                except (OSError, ValueError):
                    self.close()  # as SSLSocket._create: a failed handshake closes the socket
                    raise

    def _connected(self) -> bool:
        try:
            self._sock.getpeername()
            return True
        except OSError:
            return False

    def _start(self) -> None:
        if self._obj is None:
            self._obj = self.context.wrap_bio(self._in, self._out, self.server_side,
                                              self.server_hostname, self._session)

    # -- moving bytes ---------------------------------------------------------
    def _flush(self) -> None:
        """Send the TLS engine's output. A blocking socket sends all of it; a
        non-blocking one what fits, keeping the rest for the next call (the
        engine has already counted those bytes as written: dropping them
        would corrupt the stream)."""
        data = self._out.read()
        if data:
            self._unsent += data
        while self._unsent:
            try:
                n = self._sock.send(bytes(self._unsent[:_CHUNK]))
            except BlockingIOError:
                return
            del self._unsent[:n]

    def _fill(self) -> bool:
        """Read ciphertext from the socket into the TLS engine, one TLS
        record at most (its 5-byte header, then the length the header gives),
        as OpenSSL reads a kernel socket without read-ahead: what the engine
        does not need yet stays in the socket, where select() sees it. A
        greedy read would hide a request that came with the handshake's last
        message from a server waiting for readability. False at EOF."""
        if self._record_left:
            data = self._sock.recv(min(self._record_left, _CHUNK))
            self._record_left -= len(data)
        else:
            data = self._sock.recv(_TLS_HEADER - len(self._header))
            self._header += data
            if len(self._header) == _TLS_HEADER:
                self._record_left = int.from_bytes(self._header[3:5], "big")
                self._header.clear()
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def _run(self, op: Any, *args: Any) -> Any:
        """Drive ``op`` through WANT_READ/WANT_WRITE like a blocking SSLSocket;
        a non-blocking socket gets SSLWantReadError as SSLSocket raises it."""
        assert self._obj is not None
        while True:
            try:
                result = op(*args)
                self._flush()
                return result
            except ssl.SSLWantReadError as want:
                self._flush()
                try:
                    self._fill()
                except BlockingIOError:
                    # The engine's own error: args[0] is SSL_ERROR_WANT_READ,
                    # which asyncore-style callers test.
                    raise want from None
            except ssl.SSLWantWriteError:
                self._flush()
            except ssl.SSLError:
                # A failed handshake (a certificate refused, say) leaves an
                # alert for the peer in the engine: send it, as OpenSSL does
                # on a kernel socket, or the peer waits for it forever.
                try:
                    self._flush()
                except OSError:
                    pass
                raise

    # -- the SSLSocket API -------------------------------------------------------
    def do_handshake(self, block: bool = False) -> None:
        self._start()
        assert self._obj is not None
        self._run(self._obj.do_handshake)

    def connect(self, address: Any) -> None:
        self._sock.connect(address)
        self._start()
        if self.do_handshake_on_connect:
            self.do_handshake()

    def connect_ex(self, address: Any) -> int:
        try:
            self.connect(address)
        except OSError as e:
            return e.errno or 0
        return 0

    def accept(self) -> tuple[TLSSocket, Any]:
        conn, addr = self._sock.accept()
        wrapped = TLSSocket(self.context, conn, server_side=True,
                            do_handshake_on_connect=self.do_handshake_on_connect,
                            suppress_ragged_eofs=self.suppress_ragged_eofs)
        return wrapped, addr

    def write(self, data: bytes) -> int:
        """As SSL_write on a non-blocking socket: when the socket cannot take
        all the records, SSLWantWriteError, and the caller calls again with
        the same data; that call sends the rest and reports the bytes
        written. (Reporting success at once would leave the rest in this
        object, where nothing sends it unless the caller calls again.)"""
        if self._obj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        if self._unsent_for:  # the retry of a write that was half sent
            self._flush()  # (a read may have sent the rest meanwhile)
            if self._unsent:
                raise _want_write()
            n, self._unsent_for = self._unsent_for, 0
            return n
        n = int(self._run(self._obj.write, data))
        if self._unsent:
            self._unsent_for = n
            raise _want_write()
        return n

    def send(self, data: Any, flags: int = 0) -> int:
        if self._obj is None:
            return self._sock.send(data, flags)
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on TLSSocket")
        return self.write(bytes(memoryview(data)))

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self._obj is None:
            self._sock.sendall(data, flags)
            return
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            sent += self.send(view[sent : sent + 16384], flags)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """As SSLSocket.sendfile: TLS cannot hand the file to os.sendfile, so
        it goes through send() in blocks; the file is left after the last
        byte sent."""
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if count is not None and count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
        file.seek(offset)
        total = 0
        while count is None or total < count:
            block = file.read(_CHUNK if count is None else min(_CHUNK, count - total))
            if not block:
                break
            self.sendall(block)
            total += len(block)
        return total

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if self._obj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is not None:
                return self._run(self._obj.read, len, buffer)
            return self._run(self._obj.read, len)
        except ssl.SSLEOFError:
            if self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise
        except ssl.SSLZeroReturnError:
            return 0 if buffer is not None else b""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._obj is None:
            return self._sock.recv(buflen, flags)
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on TLSSocket")
        data: bytes = self.read(buflen)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self._obj is None:
            return self._sock.recv_into(buffer, nbytes, flags)
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on TLSSocket")
        view = memoryview(buffer).cast("B")
        n = nbytes or len(view)
        result: int = self.read(n, view)
        return result

    def pending(self) -> int:
        return self._obj.pending() if self._obj is not None else 0

    def unwrap(self) -> TLSSocket:
        """Shut TLS down (close_notify both ways), as SSLSocket.unwrap: the
        same object comes back, now sending and receiving in the clear. A
        non-blocking socket may raise SSLWantReadError: call again."""
        if self._obj is None:
            raise ValueError("No SSL wrapper around " + str(self))
        self._run(self._obj.unwrap)
        self._obj = None
        return self

    @property
    def _sslobj(self) -> ssl.SSLObject | None:
        """SSLSocket's name for the TLS engine (None once unwrapped), which
        some callers test."""
        return self._obj

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        if self._io_refs > 0:
            self._closed = True
            return
        self._closed = True
        if self._unsent:
            try:  # one last try for what a non-blocking socket could not send
                self._flush()
            except OSError:
                pass
        self._sock.close()

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._sock.close()

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        writing = "w" in mode
        reading = "r" in mode or not writing
        raw = _socket.SocketIO(self, ("r" if reading else "") + ("w" if writing else ""))  # type: ignore[arg-type]
        self._io_refs += 1
        size = io.DEFAULT_BUFFER_SIZE if buffering is None or buffering < 0 else buffering
        if size == 0:
            return raw
        buf: Any
        if reading and writing:
            buf = io.BufferedRWPair(raw, raw, size)
        elif reading:
            buf = io.BufferedReader(raw, size)
        else:
            buf = io.BufferedWriter(raw, size)
        return buf if "b" in mode else io.TextIOWrapper(buf, encoding, errors, newline)

    # -- what SSLSocket reports --------------------------------------------------
    def getpeercert(self, binary_form: bool = False) -> Any:
        if self._obj is None:
            raise ValueError("handshake not done yet")
        return self._obj.getpeercert(binary_form)

    def cipher(self) -> Any:
        return self._obj.cipher() if self._obj is not None else None

    def shared_ciphers(self) -> Any:
        return self._obj.shared_ciphers() if self._obj is not None else None

    def version(self) -> str | None:
        return self._obj.version() if self._obj is not None else None

    def selected_alpn_protocol(self) -> str | None:
        return self._obj.selected_alpn_protocol() if self._obj is not None else None

    def compression(self) -> str | None:
        return self._obj.compression() if self._obj is not None else None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        return self._obj.get_channel_binding(cb_type) if self._obj is not None else None

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._obj.session if self._obj is not None else self._session

    @property
    def session_reused(self) -> bool:
        return bool(self._obj is not None and self._obj.session_reused)

    # -- the rest is the plain socket's --------------------------------------------
    @property  # type: ignore[misc]
    def __class__(self) -> type:  # what isinstance() consults
        """``isinstance(tls, ssl.SSLSocket)`` (and ``socket.socket``) holds,
        as code that checks for a TLS socket expects (the technique of
        unittest.mock's spec); ``type(tls)`` still tells the truth."""
        return ssl.SSLSocket

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def __enter__(self) -> TLSSocket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<loopstack.TLSSocket {self._sock!r}>"


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE,
                                 "The operation did not complete (write)")


def wrap(context: ssl.SSLContext, sock: Socket, server_side: bool = False,
         do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
         server_hostname: str | None = None, session: ssl.SSLSession | None = None
         ) -> TLSSocket:
    """What ``SSLContext.wrap_socket`` does, for a loopstack socket."""
    if server_side and server_hostname:
        raise ValueError("server_hostname can only be specified in client mode")
    if context.check_hostname and not server_side and not server_hostname:
        raise ValueError("check_hostname requires server_hostname")
    if "_refs" in sock.__dict__:  # a socket of this process's stack (not an attached one's)
        sock = sock._take_over()  # the object given is left detached, as SSLSocket leaves it
    return TLSSocket(context, sock, server_side=server_side, server_hostname=server_hostname,
                     do_handshake_on_connect=do_handshake_on_connect,
                     suppress_ragged_eofs=suppress_ragged_eofs, session=session)
