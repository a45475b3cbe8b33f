"""The drop-in layer: route the standard library's networking to a stack.

``with loopstack.patch() as stack:`` makes ``socket.socket`` (for AF_INET and
AF_INET6), ``socket.create_connection``, ``socket.create_server``,
``socket.getaddrinfo``, ``gethostbyname`` and friends and ``socket.getfqdn``
work on a loopstack stack. The class itself is intercepted (its ``__new__``),
so code that did ``from socket import socket`` before the patch is caught too.
The object it returns for a loopstack socket is a *front*: an instance of
``socket.socket`` itself (``type(s) is socket.socket``), whose C part has no
descriptor and whose calls the loopstack socket carries out (socket.py,
``front``): the first patch (or :func:`prepare`) replaces ``socket.socket``'s
methods and properties by dispatchers, which stay for the rest of the process
— a front keeps working after the patch ends, and a kernel socket's calls
reach the class's own methods unchanged. Objects accept() and dup() return are
fronts too; ``Stack.socket()`` gives the loopstack socket itself. Code that
took ``socket.socket.recv`` (the C method) before the dispatchers were put
on would hand a front to it: installing them points such references in the
modules already loaded (globals, classes, closures, defaults) at the
dispatchers; a copy kept elsewhere is not found, so import such code after
:func:`prepare` (``pytest --loopstack`` calls it before conftest files are
imported). A descriptor a loopstack socket gave
(``fileno()``, ``detach()``, a dup of either) makes a loopstack socket again
(``socket.socket(fileno=fd)``, ``socket.fromfd``). AF_UNIX sockets,
``socket.socketpair`` and sockets made from other descriptors stay real
(asyncio's self-pipe needs them). Names the stack's hosts table does not
know fail as unknown names and addresses outside its networks are
unreachable, so a test cannot reach the real network — unless
``passthrough=True``, which sends names the hosts table does not know to the
real resolver and turns a socket into a real one when it connects or sends
to an address the stack cannot route (passthrough.py).

Processes share the stack (host/attach.py): after ``os.fork()`` the child's
sockets, inherited and new, live on this process's stack, and with
``children=True`` Python processes started with exec (``subprocess``,
``multiprocessing`` "spawn" and "forkserver") attach to it too.

Patches nest (the innermost stack wins) and are undone on exit; entering
and leaving are thread-safe. A patch is process-wide: every thread's
sockets go to the innermost active stack, whichever thread entered it.

What cannot be reached: sockets made inside C extensions (libcurl, gRPC
core, libpq, uvloop) never pass through Python's socket module; instances
of a *subclass* of ``socket.socket`` stay real sockets (an object of the
subclass cannot be a loopstack socket); functions bound before the patch
(``from socket import getaddrinfo``) keep calling the real resolver.
"""

from __future__ import annotations

import operator
import socket as _socket
import ssl as _ssl
import threading
from asyncio.selector_events import BaseSelectorEventLoop as _BaseSelectorEventLoop
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import sendfile as _sendfile
from . import tls as _tls
from .aio_transport import make_socket_transport as _make_socket_transport
from .clock import RealClock
from .selector import StackSelector as _StackSelector
from .socket import (
    Socket,
    audit,
    audit_new,
    blank,
    find_descriptor,
    front,
    implementation,
    install_dispatchers,
)
from .stack import Stack

_REAL = {
    name: getattr(_socket, name)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                 "getnameinfo", "getfqdn", "create_connection", "create_server")
}
# The class itself, as imported: a program may put another in the module
# (test_socket's MockSocket does), whose instances must stay its own.
_SOCKET = _socket.socket
_REAL_NEW = _SOCKET.__new__
_REAL_WRAP = _ssl.SSLContext.wrap_socket

_lock = threading.RLock()
# (stack, passthrough), innermost last. A tuple, replaced whole under _lock,
# so a reader in another thread sees one consistent value without locking.
_active: tuple[tuple[Stack, bool], ...] = ()


def current() -> tuple[Stack, bool] | None:
    """The innermost active patch, if any."""
    active = _active
    return active[-1] if active else None


def _new(cls: type, family: int = -1, type: int = -1, proto: int = -1,
         fileno: int | None = None) -> Any:
    top = current()
    if top is not None and cls is _SOCKET:
        if fileno is None:
            fam = _socket.AF_INET if family == -1 else family
            if fam in (_socket.AF_INET, _socket.AF_INET6):
                stack, passthrough = top
                kind = _socket.SOCK_STREAM if type == -1 else type
                prot = 0 if proto == -1 else proto
                # CPython's sock_initobj raises socket.__new__ with the
                # defaults filled in, before the socket is made.
                obj = blank()
                audit_new(obj, fam, kind, prot)
                if passthrough:
                    from .passthrough import PassthroughSocket

                    return front(PassthroughSocket(stack, fam, kind, prot), obj)
                return front(stack.socket(fam, kind, prot), obj)
        elif isinstance(fileno, int) and fileno >= 0:
            sock = find_descriptor(fileno)
            if sock is not None:
                obj = blank()
                audit_new(obj, family, type, proto)  # with a descriptor: as given
                return front(sock._adopt(fileno, family, type, proto), obj)
    return _REAL_NEW(cls, family, type, proto, fileno)  # type: ignore[call-arg]


def prepare() -> None:
    """Put the dispatchers on ``socket.socket`` now (socket.py's
    ``install_dispatchers``; the first patch does it otherwise). For code
    that takes ``socket.socket``'s methods when it is imported (trio does:
    ``_stdlib_socket.socket.recv``): what it took before is the C method,
    which a loopstack socket's object (no descriptor) cannot serve.
    Installing points the references it finds in loaded modules' globals,
    classes, closures and defaults at the dispatchers; code that keeps a
    copy elsewhere must be imported after this. ``pytest --loopstack``
    calls it before conftest files are imported."""
    install_dispatchers()


def _nothing() -> None:
    pass


# -- the name lookups' audit events ------------------------------------------------------
# The arguments CPython's socket module raises each lookup's event with, once
# it has checked them (None: they fail that check, so no event: the stack
# raises the same error).
def _c_int(value: Any) -> bool:
    try:
        number = operator.index(value)
    except TypeError:
        return False
    return -(1 << 31) <= number < (1 << 31)


def _getaddrinfo_event(host: Any, port: Any, family: Any = 0, type: Any = 0, proto: Any = 0,
                       flags: Any = 0) -> tuple[Any, ...] | None:
    if not all(_c_int(v) for v in (family, type, proto, flags)):
        return None
    if isinstance(host, str):
        try:
            host.encode("idna")
        except UnicodeError:
            return None
    elif host is not None and not isinstance(host, bytes):
        return None
    if port.__class__ is int:  # (PyLong_CheckExact)
        if not -(1 << 63) <= port < (1 << 63):
            return None
    elif isinstance(port, str):
        try:
            port.encode("utf-8")
        except UnicodeError:
            return None
    elif port is not None and not isinstance(port, bytes):
        return None
    return host, port, operator.index(family), operator.index(type), operator.index(proto)


def _hostname_event(name: Any) -> tuple[Any, ...] | None:
    if isinstance(name, str):
        try:
            name.encode("idna")
        except UnicodeError:
            return None
    elif not isinstance(name, (bytes, bytearray)):
        return None
    return (name,)


def _getnameinfo_event(sockaddr: Any, flags: Any) -> tuple[Any, ...] | None:
    if not _c_int(flags) or not isinstance(sockaddr, tuple) or not 2 <= len(sockaddr) <= 4:
        return None
    if not isinstance(sockaddr[0], str) or not _c_int(sockaddr[1]):
        return None
    try:
        rest = [operator.index(v) for v in sockaddr[2:]]
    except TypeError:
        return None
    if rest and rest[0] & 0xFFFFFFFF > 0xFFFFF:
        return None  # OverflowError: flowinfo
    return (sockaddr,)


_EVENTS: dict[str, tuple[str, Any]] = {
    "getaddrinfo": ("socket.getaddrinfo", _getaddrinfo_event),
    "gethostbyname": ("socket.gethostbyname", _hostname_event),
    "gethostbyname_ex": ("socket.gethostbyname", _hostname_event),  # (CPython's name)
    "gethostbyaddr": ("socket.gethostbyaddr", _hostname_event),
    "getnameinfo": ("socket.getnameinfo", _getnameinfo_event),
}


def _event_args(check: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
                ) -> tuple[Any, ...] | None:
    try:
        found: tuple[Any, ...] | None = check(*args, **kwargs)
    except TypeError:  # not the function's arguments: the call says so
        return None
    return found


def _resolver_fn(name: str) -> Any:
    real = _REAL[name]
    event, check = _EVENTS[name]

    def patched(*args: Any, **kwargs: Any) -> Any:
        top = current()
        if top is None:
            return real(*args, **kwargs)
        stack, passthrough = top
        shown = _event_args(check, args, kwargs)
        if shown is not None and not passthrough:
            audit(event, *shown)  # before the lookup, as CPython's
        try:
            found = getattr(stack, name)(*args, **kwargs)
        except (_socket.gaierror, _socket.herror):
            if passthrough:
                return real(*args, **kwargs)  # (which raises the kernel's event)
            raise
        except TypeError as e:
            # As the C function's: the error holds no frame, so no reference
            # to the arguments (test_socket counts them).
            del args, kwargs, shown
            raise e.with_traceback(None) from None
        if shown is not None and passthrough:
            audit(event, *shown)  # the stack answered: the event is loopstack's
        return found

    patched.__name__ = name
    patched.__doc__ = real.__doc__
    return patched


def _getfqdn(name: str = "") -> str:
    """socket.getfqdn from the stack's hosts table (never DNS)."""
    top = current()
    if top is None:
        return str(_REAL["getfqdn"](name))
    stack, _ = top
    name = name.strip()
    if not name or name in ("0.0.0.0", "::"):
        audit("socket.gethostname")  # CPython's getfqdn asks gethostname() here
        name = "localhost"
    audit("socket.gethostbyaddr", name)  # and then gethostbyaddr(name)
    try:
        hostname, aliases, _addrs = stack.gethostbyaddr(name)
    except (OSError, ValueError):
        return name
    for candidate in [hostname, *aliases]:
        if "." in candidate:
            return candidate
    return hostname


def _wrap_socket(self: _ssl.SSLContext, sock: Any, *args: Any, **kwargs: Any) -> Any:
    from .passthrough import PassthroughSocket
    from .tls import wrap as tls_wrap

    impl = implementation(sock)
    if type(impl) is PassthroughSocket and not impl._real:
        impl = impl._inner  # not real yet: TLS on the loopstack socket
    if type.__instancecheck__(Socket, impl):
        return tls_wrap(self, impl, *args, **kwargs)
    wrapped = _tls.wrap_by_descriptor(self, sock, *args, **kwargs)  # a wrapper of one
    return wrapped if wrapped is not None else _REAL_WRAP(self, sock, *args, **kwargs)


_REAL_LOOP_INIT = _BaseSelectorEventLoop.__init__
_REAL_MAKE_SOCKET_TRANSPORT = _BaseSelectorEventLoop._make_socket_transport  # type: ignore[attr-defined]


def _loop_init(self: Any, selector: Any = None) -> None:
    """asyncio's selector event loop, made under the patch without a
    selector of its own: with selector.py's, which learns loopstack
    sockets' readiness in-process."""
    _REAL_LOOP_INIT(self, _StackSelector() if selector is None else selector)


def _install() -> None:
    install_dispatchers()  # (once: they stay when the patch ends)
    _SOCKET.__new__ = _new  # type: ignore[method-assign]
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                 "getnameinfo"):
        setattr(_socket, name, _resolver_fn(name))
    _socket.getfqdn = _getfqdn
    _ssl.SSLContext.wrap_socket = _wrap_socket  # type: ignore[method-assign]
    _tls.install()  # ssl.SSLSocket's dispatchers to loopstack sockets (once, as above)
    _sendfile.install()  # os.sendfile on loopstack descriptors (sendfile.py)
    # asyncio's selector loops made from now on learn loopstack sockets'
    # readiness in-process (selector.py); selectors.DefaultSelector itself
    # stays the real one.
    _BaseSelectorEventLoop.__init__ = _loop_init  # type: ignore[method-assign]
    # Their transports of loopstack TCP sockets call the sockets' methods
    # without the fronts' dispatchers (aio_transport.py).
    _BaseSelectorEventLoop._make_socket_transport = _make_socket_transport  # type: ignore[attr-defined]


def _uninstall() -> None:
    del _SOCKET.__new__
    for name, fn in _REAL.items():
        setattr(_socket, name, fn)
    _ssl.SSLContext.wrap_socket = _REAL_WRAP  # type: ignore[method-assign]
    _sendfile.uninstall()
    _BaseSelectorEventLoop.__init__ = _REAL_LOOP_INIT  # type: ignore[method-assign]
    _BaseSelectorEventLoop._make_socket_transport = _REAL_MAKE_SOCKET_TRANSPORT  # type: ignore[attr-defined]


@contextmanager
def patch(stack: Stack | None = None, *, passthrough: bool = False,
          children: bool = False) -> Iterator[Stack]:
    """Route the standard library's sockets and name lookups to ``stack``
    (a fresh one, closed afterwards, when None). Yields the stack.
    ``children=True``: Python processes started while the patch is active
    attach to the stack (forked ones always do)."""
    global _active
    own = stack is None
    st = Stack() if stack is None else stack
    entry = (st, passthrough)
    with _lock:
        if not _active:
            _install()
        _active = (*_active, entry)
    clock = getattr(st, "clock", None)
    if isinstance(clock, RealClock):
        # Its timer thread, which would start with the first timer, starts
        # now: the program's threads do not change under it (test_socket's
        # threading_helper counts them around each test).
        clock.call_later(0, _nothing)
    try:
        if children:
            from .host.attach import children_environment

            with children_environment(st, passthrough):
                yield st
        else:
            yield st
    finally:
        with _lock:
            # Patches may end out of order (threads): remove this one only.
            i = max(i for i, e in enumerate(_active) if e is entry)
            _active = _active[:i] + _active[i + 1 :]
            if not _active:
                _uninstall()
        if own:
            st.close()


__all__ = ["patch", "current", "prepare"]
