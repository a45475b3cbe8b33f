"""Bridges between the host's real loopback and a loopstack stack.

Programs that are not Python (curl, a browser, a database) cannot call into
a stack; they meet it here, through kernel sockets on the host's loopback
relayed byte for byte to virtual ones:

- ``stack.expose(port)``: a kernel listener on the host (127.0.0.1:port
  unless told otherwise); each connection it accepts is relayed to the
  virtual service on ``port``.
- ``stack.forward(port, to=(host, host_port))``: a virtual listener on
  127.0.0.1:port; each connection it accepts is relayed to a real service on
  the host.

A relayed connection is a kernel socket, a virtual socket and two threads,
one per direction. A thread holds one chunk (64 KiB) at most: it reads a
chunk from one side and reads again only when the other side has taken all
of it, so a reader that stops on one side stops the writer on the other
through TCP's own flow control, and no buffer grows (DESIGN.md, "Pitfalls
ahead"). Both sockets' own buffers are bounded too (SO_SNDBUF, SO_RCVBUF).
Besides bytes a relay carries:

- end of stream: EOF read on one side is shutdown(SHUT_WR) on the other, a
  FIN, so half-closed connections work;
- resets: a reset (or any error) on one side makes the relay send RST on
  the other, by SO_LINGER (1, 0) and close(); a failed outbound connection
  resets the inbound one.

Kernel sockets are made from the C socket type and wrapped by descriptor,
which ``loopstack.patch`` leaves alone, so bridges work in patched programs.
The kernel side never sits in a system call that another thread cannot end:
it is non-blocking and waits in poll() beside a pipe that stopping the relay
writes to. The virtual side blocks; closing a virtual socket wakes its
waiters.
"""

from __future__ import annotations

import _socket
import errno
import ipaddress
import os
import select
import socket
import struct
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from ..socket import Socket
    from ..stack import Stack

CHUNK = 65536  # what one direction of one relay holds at most
BUFFER = 262144  # SO_SNDBUF and SO_RCVBUF asked for on both sides of a relay
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, zero seconds: close() sends RST
_JOIN = 5.0  # seconds to wait for a thread told to stop (it stops at once)
_PROBE = 5.0  # seconds forward() waits for its target to answer


def endpoint(host: str, port: int) -> str:
    """"127.0.0.1:80", "[::1]:80"."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _kernel_socket(family: int) -> socket.socket:
    """A kernel TCP socket even under ``loopstack.patch``, which passes
    sockets made from a descriptor through."""
    raw = _socket.socket(family, _socket.SOCK_STREAM)
    return socket.socket(family, socket.SOCK_STREAM, fileno=raw.detach())


def _bound_buffers(sock: socket.socket | Socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)


def _resolve(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    """The host's own resolver (not the stack's, even under patch): family
    and socket address of each answer, in the resolver's order."""
    try:
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
    except _socket.gaierror as e:
        raise socket.gaierror(e.errno, f"{host!r} is not an address the host knows "
                              f"({e.strerror}): give one such as 127.0.0.1 or ::1") from None
    return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


def _check_port(value: int, what: str, lowest: int) -> None:
    if not isinstance(value, int) or not lowest <= value <= 65535:
        raise ValueError(f"{what} {value!r} is not a port: give a number from {lowest} to 65535")


def _family(address: str) -> int:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"virtual address {address!r} is not an IP address: give one such "
                         "as 127.0.0.1 or ::1") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


class _Relay:
    """One relayed connection: a kernel socket, a virtual socket, two
    threads. ``outbound`` says which side the relay connects ("real" or
    "virtual", to ``target``); the other side is already connected."""

    def __init__(self, bridge: Bridge, real: socket.socket, virtual: Socket,
                 outbound: str, target: tuple[Any, ...]) -> None:
        self._bridge = bridge
        self.real = real
        self.virtual = virtual
        self._outbound = outbound
        self._target = target
        self.to_virtual = 0  # bytes read from the real side, not yet sent on
        self.to_real = 0
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._stopping = False
        self._virtual_ended = False  # the virtual peer's FIN was relayed
        self._running = 1
        self._threads: list[threading.Thread] = []
        self._name = ""
        real.setblocking(False)
        virtual.settimeout(None)

    def start(self, name: str) -> None:
        self._name = name
        self._spawn(self._open, f"{name} real>virtual")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=f"loopstack {name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- the two directions ---------------------------------------------------------------
    def _open(self) -> None:
        """Connect the outbound side, then relay real to virtual (the other
        direction gets a thread of its own)."""
        try:
            try:
                if self._outbound == "virtual":
                    self.virtual.connect(self._target)
                else:
                    self._dial_real()
            except OSError:
                self.abort()  # the inbound side is reset; the bridge goes on
                return
            with self._lock:
                if self._stopping:
                    return
                self._running += 1
            self._spawn(self._virtual_to_real, f"{self._name} virtual>real")
            self._real_to_virtual()
        finally:
            self._leave()

    def _dial_real(self) -> None:
        code = self.real.connect_ex(self._target)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            if not self._wait(self._poller(select.POLLOUT)):
                raise OSError(errno.ECANCELED, "the relay was stopped")
            code = self.real.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))

    def _real_to_virtual(self) -> None:
        real, virtual = self.real, self.virtual
        poller = self._poller(select.POLLIN)
        while not self._stopping:
            try:
                data = real.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                if not self._wait(poller):
                    return
                continue
            except OSError:
                self.abort()  # the real peer reset: so does the virtual side
                return
            if not data:
                self._end_stream(virtual)
                self._watch_real()
                return
            self.to_virtual = len(data)
            try:
                virtual.sendall(data)  # waits while the virtual peer's window is shut
            except OSError:
                self.abort()
                return
            self.to_virtual = 0
            if self._virtual_ended and virtual.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                # Nobody reads the virtual side any more: an RST our data drew
                # (the virtual peer had closed) shows only here.
                self.abort()
                return

    def _watch_real(self) -> None:
        """After the real peer's FIN, wait for the connection's end: the
        other thread's FIN, or an RST from the real peer, which resets
        the virtual side at once (as a kernel socket would learn of it)."""
        poller = select.poll()
        poller.register(self.real, 0)  # POLLERR and POLLHUP only
        poller.register(self._wake_r, select.POLLIN)
        if self._wait(poller) and self.real.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.abort()

    def _virtual_to_real(self) -> None:
        try:
            real, virtual = self.real, self.virtual
            poller = self._poller(select.POLLOUT)
            while True:
                try:
                    data = virtual.recv(CHUNK)
                except OSError:
                    self.abort()  # the virtual peer reset: so does the real side
                    return
                if self._stopping:
                    return
                if not data:
                    self._virtual_ended = True
                    self._end_stream(real)
                    return
                self.to_real = len(data)
                view = memoryview(data)
                while view:
                    try:
                        view = view[real.send(view):]
                    except (BlockingIOError, InterruptedError):
                        if not self._wait(poller):  # the real peer is not reading
                            return
                    except OSError:
                        self.abort()
                        return
                self.to_real = 0
        finally:
            self._leave()

    def _end_stream(self, sock: socket.socket | Socket) -> None:
        """EOF on one side: a FIN on the other (its reading side stays open)."""
        if not self._stopping:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the other side has gone meanwhile; its own thread says how

    # -- waiting on the kernel side ---------------------------------------------------------
    def _poller(self, events: int) -> select.poll:
        poller = select.poll()
        poller.register(self.real, events)
        poller.register(self._wake_r, select.POLLIN)
        return poller

    def _wait(self, poller: select.poll) -> bool:
        """Wait for the kernel socket; False once the relay is told to stop."""
        ready = poller.poll()
        return not any(fd == self._wake_r for fd, _ in ready)

    # -- ending --------------------------------------------------------------------------
    def abort(self) -> None:
        """Reset both sides (RST where a connection is still open) and stop
        both threads."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            os.write(self._wake_w, b"!")  # the kernel side's waiters
        for sock in (self.virtual, self.real):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            except OSError:
                pass
        self.virtual.close()  # RST now; wakes the virtual side's waiters

    def _leave(self) -> None:
        """A thread is done; the last one closes both sockets (the kernel
        one sends its RST now if the relay was aborted)."""
        with self._lock:
            self._running -= 1
            if self._running:
                return
            self._stopping = True
            os.close(self._wake_r)
            os.close(self._wake_w)
        self.real.close()
        self.virtual.close()
        self._bridge._forget(self)

    def join(self, timeout: float) -> None:
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout)

    @property
    def held(self) -> int:
        return self.to_virtual + self.to_real


class Bridge:
    """What :class:`Exposure` and :class:`Forward` share: the relays, the
    accepting thread, closing (as a context manager too)."""

    def __init__(self, stack: Stack) -> None:
        if stack._closed:
            raise ValueError("the stack is closed: make bridges on an open one")
        self.stack = stack
        self._relays: set[_Relay] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._name = type(self).__name__
        self._acceptor: threading.Thread | None = None

    @property
    def connections(self) -> int:
        """Connections being relayed now."""
        return len(self._relays)

    @property
    def in_flight(self) -> int:
        """Bytes the relays hold (read from one side, not yet taken by the
        other): at most one chunk per direction per connection."""
        with self._lock:
            relays = list(self._relays)
        return sum(r.held for r in relays)

    def _begin(self, name: str) -> None:
        with self.stack.lock:
            self.stack._bridges = (*self.stack._bridges, self)
        self._name = name
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"loopstack {name} accept")
        self._acceptor.start()

    def _accept_loop(self) -> None:
        raise NotImplementedError

    def _relay(self, real: socket.socket, virtual: Socket, outbound: str,
               target: tuple[Any, ...]) -> None:
        relay = _Relay(self, real, virtual, outbound, target)
        with self._lock:
            if not self._closed:
                self._relays.add(relay)
                relay.start(self._name)
                return
        relay.abort()
        relay._leave()

    def _forget(self, relay: _Relay) -> None:
        with self._lock:
            self._relays.discard(relay)

    def _stop_accepting(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting, close the listener, reset the connections still
        relayed. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_accepting()
        with self._lock:
            relays = list(self._relays)
        for relay in relays:
            relay.abort()
        for relay in relays:
            relay.join(_JOIN)
        with self.stack.lock:
            self.stack._bridges = tuple(b for b in self.stack._bridges if b is not self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Exposure(Bridge):
    """A virtual service made reachable from the host: a kernel listener at
    :attr:`host_address` relayed to virtual :attr:`address`:``port``."""

    def __init__(self, stack: Stack, port: int, *, host: str = "127.0.0.1",
                 host_port: int | None = None, address: str | None = None) -> None:
        _check_port(port, "port", 1)
        if host_port is None:
            host_port = port
        _check_port(host_port, "host_port", 0)
        super().__init__(stack)
        family, sockaddr = _resolve(host, host_port)[0]
        self.address = address or ("::1" if family == socket.AF_INET6 else "127.0.0.1")
        self.port = port
        self._vfamily = _family(self.address)
        listener = _kernel_socket(family)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bound_buffers(listener)  # accepted sockets inherit them
            listener.bind(sockaddr)
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
        except OSError as e:
            listener.close()
            where = endpoint(host, host_port)
            if e.errno == errno.EADDRINUSE:
                raise OSError(e.errno, f"{where} on the host is already in use: choose another "
                              "host port (0 picks a free one)") from None
            raise OSError(e.errno, f"cannot listen on {where} on the host ({e.strerror}): "
                          "choose another host address or port") from None
        self._listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        self.host_address: tuple[str, int] = (bound_host, bound_port)
        self._wake_r, self._wake_w = os.pipe()
        if not ipaddress.ip_address(self.host_address[0]).is_loopback:
            print(f"loopstack: warning: virtual {endpoint(self.address, port)} is exposed on "
                  f"{endpoint(*self.host_address)}, reachable from other machines",
                  file=sys.stderr, flush=True)
        self._begin(f"expose {port}")

    @property
    def url(self) -> str:
        """http://HOST:PORT/ for :attr:`host_address`."""
        return f"http://{endpoint(*self.host_address)}/"

    def _accept_loop(self) -> None:
        poller = select.poll()
        poller.register(self._listener, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        backoff: int | None = None
        while True:
            if any(fd == self._wake_r for fd, _ in poller.poll(backoff)):
                return
            try:
                real, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError:  # out of descriptors, say: try again a little later
                backoff = 100
                continue
            backoff = None
            try:
                virtual = self.stack.socket(self._vfamily, socket.SOCK_STREAM)
                virtual._private = True  # a fork does not hand the bridge's sockets over
                _bound_buffers(virtual)
            except (OSError, ValueError):  # the stack is closing
                real.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
                real.close()
                continue
            self._relay(real, virtual, "virtual", (self.address, self.port))

    def _stop_accepting(self) -> None:
        os.write(self._wake_w, b"!")
        if self._acceptor is not None:
            self._acceptor.join(_JOIN)
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.connections} connections"
        return (f"<Exposure virtual {endpoint(self.address, self.port)} at "
                f"{endpoint(*self.host_address)} {state}>")


class Forward(Bridge):
    """A real service made reachable from the stack: a virtual listener on
    :attr:`address`:``port`` relayed to :attr:`target` on the host."""

    def __init__(self, stack: Stack, port: int, to: tuple[str, int], *,
                 address: str = "127.0.0.1", check: bool = True) -> None:
        _check_port(port, "port", 1)
        host, target_port = to
        _check_port(target_port, "target port", 1)
        super().__init__(stack)
        self.address = address
        self.port = port
        candidates = _resolve(host, target_port)
        self._family, self.target = self._probe(candidates) if check else candidates[0]
        listener = stack.socket(_family(address), socket.SOCK_STREAM)
        listener._private = True
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bound_buffers(listener)  # accepted sockets inherit them
            listener.bind((address, port))
            listener.listen()
        except OSError as e:
            listener.close()
            where = endpoint(address, port)
            if e.errno == errno.EADDRINUSE:
                raise OSError(e.errno, f"virtual {where} is already in use on this stack: "
                              "forward another port, or close what listens there") from None
            raise OSError(e.errno, f"cannot listen on virtual {where} ({e.strerror}): "
                          "use an address of the stack such as 127.0.0.1 or ::1") from None
        listener.settimeout(None)
        self._listener = listener
        self._begin(f"forward {port}")

    @staticmethod
    def _probe(candidates: list[tuple[int, tuple[Any, ...]]]) -> tuple[int, tuple[Any, ...]]:
        """Connect to the target once, so that a mistake shows now rather
        than as resets later: the first of its addresses that answers."""
        first: OSError | None = None
        for family, sockaddr in candidates:
            probe = _kernel_socket(family)
            try:
                probe.settimeout(_PROBE)
                probe.connect(sockaddr)
                return family, sockaddr
            except OSError as e:
                first = first or e
            finally:
                probe.close()
        assert first is not None
        code = first.errno or errno.ETIMEDOUT
        reason = first.strerror or os.strerror(code)
        raise OSError(code, f"cannot reach {endpoint(*candidates[0][1][:2])} on the host "
                      f"({reason}): start the service there, or forward to where it "
                      "listens")

    def _accept_loop(self) -> None:
        while True:
            try:
                virtual, _ = self._listener.accept()
                virtual._private = True
            except OSError:
                if self._closed:
                    return
                continue  # ECONNABORTED and the like: the listener is still fine
            try:
                real = _kernel_socket(self._family)
                _bound_buffers(real)
            except OSError:  # out of descriptors: the virtual client is reset
                virtual.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
                virtual.close()
                continue
            self._relay(real, virtual, "real", self.target)

    def _stop_accepting(self) -> None:
        self._listener.close()  # wakes accept()
        if self._acceptor is not None:
            self._acceptor.join(_JOIN)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.connections} connections"
        return (f"<Forward virtual {endpoint(self.address, self.port)} to "
                f"{endpoint(*self.target[:2])} {state}>")


def _port(text: str, what: str, lowest: int) -> int:
    if not text.isdigit() or not lowest <= int(text) <= 65535:
        raise ValueError(f"{what} {text!r} is not a port from {lowest} to 65535")
    return int(text)


def _host_port(text: str) -> tuple[str, str]:
    """"HOST:PORT", HOST perhaps "[v6]", split (the port still text)."""
    if text.startswith("["):
        host, colon, port = text[1:].partition("]:")
        if not colon:
            raise ValueError(f"{text!r} has no ']:' after its IPv6 address")
    else:
        host, _, port = text.rpartition(":")
    if not host:
        raise ValueError("the host is missing")
    return host, port


def parse_expose(spec: str) -> tuple[int, str, int]:
    """``VPORT``, ``VPORT:HOSTPORT`` or ``VPORT:HOST:HOSTPORT`` (HOST may be
    ``[::1]``) as (virtual port, host, host port); ValueError otherwise."""
    vport, colon, rest = spec.partition(":")
    try:
        port = _port(vport, "virtual port", 1)
        if not colon:
            return port, "127.0.0.1", port
        if ":" not in rest:
            return port, "127.0.0.1", _port(rest, "host port", 0)
        host, host_port = _host_port(rest)
        return port, host, _port(host_port, "host port", 0)
    except ValueError as e:
        raise ValueError(f"{e}: write VPORT, VPORT:HOSTPORT or VPORT:HOST:HOSTPORT "
                         "(e.g. 8080, 8080:0, 8080:[::1]:8080)") from None


def parse_forward(spec: str) -> tuple[int, str, int]:
    """``VPORT:HOST:PORT`` (HOST may be ``[::1]``) as (virtual port, host,
    port); ValueError otherwise."""
    vport, _, rest = spec.partition(":")
    try:
        port = _port(vport, "virtual port", 1)
        host, target_port = _host_port(rest)
        return port, host, _port(target_port, "port", 1)
    except ValueError as e:
        raise ValueError(f"{e}: write VPORT:HOST:PORT (e.g. 5432:127.0.0.1:5432)") from None


__all__ = ["Bridge", "Exposure", "Forward", "parse_expose", "parse_forward", "endpoint"]
