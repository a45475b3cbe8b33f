"""The differential harness: one scenario, two networks, compared records.

A scenario is ``fn(net, rec)``. It drives sockets through ``net`` — either
the kernel's ``socket`` module over the host's real loopback
(:class:`KernelNet`) or a fresh :class:`loopstack.Stack` (:class:`LoopNet`) —
and writes what it sees with ``rec(label, value)`` or
``rec.call(fn, *args)``, which records the return value or the exception as
``(class name, errno)``. The harness runs the scenario on both networks,
normalizes the records (ports the scenario did not choose, socket reprs) and
asserts they are equal.

Where loopstack deliberately differs from Linux the scenario is registered
with ``differs="why"`` and ``expect={label: (kernel_value, loopstack_value)}``:
those labels must show exactly the given value on each side (and the two must
differ: a difference that disappeared is reported), every other record must
still match. docs/differences.md lists each one.

Rules the scenarios follow on the host:
- only loopback addresses are ever sent to (127.x.x.x, ::1); binding the
  wildcard happens only where a scenario is about the wildcard, and only on a
  port the kernel just handed out;
- fixed ports come from :meth:`Net.port` (the kernel's allocator picks a free
  one), never from a constant;
- every receive is preceded by :meth:`Net.wait` (the kernel delivers loopback
  datagrams from softirq context, possibly after send() returned) and uses
  MSG_DONTWAIT or a timeout, so a missing datagram fails instead of hanging.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import loopstack
from loopstack.socket import Socket as LoopSocket
from loopstack.transport import udp

EPHEMERAL_LOW, EPHEMERAL_HIGH = 32768, 60999
WAIT_FOR_DATA = 1.0  # kernel: how long to wait for something that should arrive
WAIT_FOR_NOTHING = 0.05  # kernel: how long to wait to be sure nothing arrives


class Net(Protocol):
    """What a scenario may use: a socket factory and the resolver functions."""

    name: str

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
               proto: int = 0) -> Any: ...
    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[Any]: ...
    def gethostbyname(self, name: str) -> str: ...
    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]: ...
    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]: ...
    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]: ...
    def port(self) -> int: ...
    def sysctl(self, name: str) -> int: ...
    def wait(self, sock: Any, expect: bool = True) -> None: ...
    def settle(self) -> None: ...
    def close(self) -> None: ...


class _BaseNet:
    name = "?"

    def __init__(self) -> None:
        self.chosen: list[int] = []  # ports the scenario chose, in order
        self._open: list[Any] = []

    def _make(self, family: int, type: int, proto: int) -> Any:
        raise NotImplementedError

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
               proto: int = 0) -> Any:
        s = self._make(family, type, proto)
        self._open.append(s)
        return s

    def port(self) -> int:
        """A UDP port free on every address of this network, for the
        scenario to bind explicitly: the network's own allocator picks it
        (bind 0 on 127.0.0.1, checked free on ::1 too), so it collides with
        nothing else on the host."""
        for _ in range(20):
            s4 = self._make(socket.AF_INET, socket.SOCK_DGRAM, 0)
            s6 = self._make(socket.AF_INET6, socket.SOCK_DGRAM, 0)
            try:
                s4.bind(("127.0.0.1", 0))
                p = s4.getsockname()[1]
                try:
                    s6.bind(("::1", p))
                except OSError:
                    continue
                self.chosen.append(p)
                return int(p)
            finally:
                s4.close()
                s6.close()
        raise RuntimeError("no free UDP port found on the loopback")

    def close(self) -> None:
        for s in self._open:
            s.close()
        self._open.clear()


class KernelNet(_BaseNet):
    """The host kernel through the stdlib ``socket`` module."""

    name = "kernel"

    def _make(self, family: int, type: int, proto: int) -> Any:
        return socket.socket(family, type, proto)

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[Any]:
        return socket.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(self, name: str) -> str:
        return socket.gethostbyname(name)

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        return socket.gethostbyname_ex(name)

    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]:
        return socket.gethostbyaddr(address)

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        return socket.getnameinfo(sockaddr, flags)

    def sysctl(self, name: str) -> int:
        """A sysctl of the host, e.g. "net/core/rmem_max" (read, never written)."""
        with open(f"/proc/sys/{name}") as f:
            return int(f.read().split()[0])

    def wait(self, sock: Any, expect: bool = True) -> None:
        """Give softirq delivery time: until ``sock`` is readable (an error
        counts) when something should arrive, or a short while when not."""
        if sock.fileno() == -1:
            return
        select.select([sock], [], [], WAIT_FOR_DATA if expect else WAIT_FOR_NOTHING)

    def settle(self) -> None:
        """After a burst: let the datagrams still in softirq land."""
        time.sleep(WAIT_FOR_NOTHING)


class LoopNet(_BaseNet):
    """A fresh :class:`loopstack.Stack`; delivery is synchronous, so
    :meth:`wait` has nothing to wait for."""

    name = "loopstack"

    def __init__(self) -> None:
        super().__init__()
        self.stack = loopstack.Stack()

    def _make(self, family: int, type: int, proto: int) -> Any:
        return self.stack.socket(family, type, proto)

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[Any]:
        return self.stack.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(self, name: str) -> str:
        return self.stack.gethostbyname(name)

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        return self.stack.gethostbyname_ex(name)

    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]:
        return self.stack.gethostbyaddr(address)

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        return self.stack.getnameinfo(sockaddr, flags)

    def sysctl(self, name: str) -> int:
        """The value loopstack models for a sysctl (Linux's stock defaults)."""
        return {"net/core/rmem_max": udp.RMEM_MAX, "net/core/wmem_max": udp.WMEM_MAX,
                "net/core/rmem_default": udp.RMEM_DEFAULT,
                "net/core/wmem_default": udp.WMEM_DEFAULT}[name]

    def wait(self, sock: Any, expect: bool = True) -> None:
        return None

    def settle(self) -> None:
        return None

    def close(self) -> None:
        super().close()
        self.stack.close()


# -- normalization ---------------------------------------------------------------

def _is_host(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    if text == "":
        return True
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


_REPR_HEAD = re.compile(r"^<(?:socket\.socket|loopstack\.socket)( \[closed\])? fd=(-?\d+),")
_REPR_PORT = re.compile(r"(\('[^']*', )(\d+)")


@dataclass
class Normalizer:
    chosen: list[int]

    def port(self, p: int) -> Any:
        if p in self.chosen:
            return f"P{self.chosen.index(p)}"
        if EPHEMERAL_LOW <= p <= EPHEMERAL_HIGH:
            return "EPHEMERAL"
        return p

    def __call__(self, value: Any) -> Any:
        if isinstance(value, (socket.socket, LoopSocket)):
            return self.sock_repr(repr(value))
        if isinstance(value, tuple) and len(value) in (2, 4) and _is_host(value[0]) \
                and isinstance(value[1], int) and not isinstance(value[1], bool):
            return (value[0], self.port(value[1]), *value[2:])
        if isinstance(value, (tuple, list)):
            return type(value)(self(v) for v in value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            if len(data) > 64:
                return f"bytes(len={len(data)}, sha1={hashlib.sha1(data).hexdigest()[:12]})"
            return data
        return value

    def sock_repr(self, text: str) -> str:
        m = _REPR_HEAD.match(text)
        if m:
            fd = m.group(2) if m.group(2) == "-1" else "N"
            text = f"<socket{m.group(1) or ''} fd={fd}," + text[m.end():]
        return _REPR_PORT.sub(lambda m: m.group(1) + str(self.port(int(m.group(2)))), text)


def outcome(exc: BaseException) -> tuple[str, Any]:
    """An exception as the records keep it: class name and errno."""
    return (type(exc).__name__, getattr(exc, "errno", None))


# -- recording -------------------------------------------------------------------

class Recorder:
    """``rec(label, value)`` records a value; ``rec.call(fn, *args)`` records
    what calling ``fn`` gives: its (normalized) result, or (class, errno)."""

    def __init__(self, net: _BaseNet) -> None:
        self.net = net
        self.records: list[tuple[str, Any]] = []

    def _norm(self, value: Any) -> Any:
        return Normalizer(self.net.chosen)(value)

    def __call__(self, label: str, value: Any) -> None:
        self.records.append((label, self._norm(value)))

    def call(self, fn: Callable[..., Any], *args: Any, label: str | None = None,
             **kwargs: Any) -> Any:
        """Call ``fn``; record and return its result (None when it raised)."""
        name = label or getattr(fn, "__name__", "call")
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - an exception is an outcome here
            self.records.append((name, outcome(e)))
            return None
        self.records.append((name, self._norm(result)))
        return result

    def port(self, label: str, p: int) -> None:
        """Record a bare port number (normalized like a port in an address)."""
        self.records.append((label, Normalizer(self.net.chosen).port(p)))


# -- scenarios -------------------------------------------------------------------

Scenario = Callable[[Net, Recorder], None]


@dataclass
class Entry:
    name: str
    fn: Scenario
    differs: str | None = None
    expect: dict[str, tuple[Any, Any]] = field(default_factory=dict)


class Scenarios:
    """A test module's scenarios, in definition order."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def add(self, fn: Scenario | None = None, *, differs: str | None = None,
            expect: dict[str, tuple[Any, Any]] | None = None) -> Any:
        def register(f: Scenario) -> Scenario:
            name = f.__name__
            assert name not in self.entries, f"scenario {name} defined twice"
            assert (differs is None) == (not expect), \
                f"{name}: differs= needs expect= (and expect= needs differs=)"
            self.entries[name] = Entry(name, f, differs, dict(expect or {}))
            return f
        return register(fn) if fn is not None else register

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def ids(self) -> list[str]:
        return list(self.entries)


def record(fn: Scenario, net: _BaseNet) -> list[tuple[str, Any]]:
    rec = Recorder(net)
    try:
        fn(net, rec)
    except Exception as e:  # noqa: BLE001 - the scenario died: that is an outcome too
        rec.records.append(("scenario raised", outcome(e)))
    finally:
        net.close()
    return rec.records


def _table(kernel: list[tuple[str, Any]], loop: list[tuple[str, Any]]) -> str:
    lines = []
    for i in range(max(len(kernel), len(loop))):
        k = kernel[i] if i < len(kernel) else ("-", "-")
        lo = loop[i] if i < len(loop) else ("-", "-")
        mark = "  " if k == lo else "!="
        lines.append(f"{mark} {k[0]:<24} kernel={k[1]!r}\n   {lo[0]:<24} loopstack={lo[1]!r}")
    return "\n".join(lines)


def run(entry: Entry) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """Run ``entry`` on the kernel and on loopstack and compare the records."""
    kernel = record(entry.fn, KernelNet())
    loop = record(entry.fn, LoopNet())
    if not entry.differs:
        assert kernel == loop, f"{entry.name}: kernel and loopstack differ\n{_table(kernel, loop)}"
        return kernel, loop
    k_labels = [r[0] for r in kernel]
    l_labels = [r[0] for r in loop]
    assert k_labels == l_labels, f"{entry.name}: different steps\n{_table(kernel, loop)}"
    for label, (want_k, want_l) in entry.expect.items():
        assert k_labels.count(label) == 1, f"{entry.name}: label {label!r} must occur once"
        i = k_labels.index(label)
        got_k, got_l = kernel[i][1], loop[i][1]
        assert got_k == want_k, (f"{entry.name}: kernel shows {got_k!r} for {label!r}, "
                                 f"the documented difference says {want_k!r}")
        assert got_l == want_l, (f"{entry.name}: loopstack shows {got_l!r} for {label!r}, "
                                 f"the documented difference says {want_l!r}")
    assert any(entry.expect[label][0] != entry.expect[label][1] for label in entry.expect), \
        f"{entry.name}: marked differs= but every expected value agrees"
    same_k = [r for r in kernel if r[0] not in entry.expect]
    same_l = [r for r in loop if r[0] not in entry.expect]
    assert same_k == same_l, (f"{entry.name}: differs beyond the documented difference\n"
                              f"{_table(kernel, loop)}")
    return kernel, loop
