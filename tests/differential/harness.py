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

Where kernels differ among themselves (a version changed the behaviour, or a
host's configuration does) the scenario is registered with ``varies="why"``
and ``variants={label: [modelled, other, ...]}``: each list gives, position
by position, the outcomes one kind of kernel shows. The kernel must show one
whole row (the i-th value of every list, for one i: one kernel's outcomes go
together), loopstack must show row 0, the behaviour it models, and every
other record must still match. docs/differences.md lists each one too.
A configuration value that is simply a number is better read live instead:
:meth:`Net.sysctl` gives the host's on the kernel side, loopstack's own on
the other.

Rules the scenarios follow on the host:
- only loopback addresses are ever sent to (127.x.x.x, ::1); binding the
  wildcard happens only where a scenario is about the wildcard, and only on a
  port the kernel just handed out;
- fixed ports come from :meth:`Net.port` (the kernel's allocator picks a free
  one), never from a constant;
- every receive is preceded by :meth:`Net.wait` (the kernel delivers loopback
  datagrams from softirq context, possibly after send() returned) and uses
  MSG_DONTWAIT or a timeout, so a missing datagram fails instead of hanging.

What the host decides is read from the host, not assumed: the ephemeral port
range that normalizes ports (net.ipv4.ip_local_port_range), and whether it
has an IPv6 loopback at all (a scenario that uses IPv6 is skipped, with the
reason, on a host without ::1, e.g. a container with IPv6 disabled).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import ipaddress
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

import loopstack
from loopstack.ip import ipv4 as lo_ipv4
from loopstack.ip import ipv6 as lo_ipv6
from loopstack.socket import Socket as LoopSocket
from loopstack.transport import ports, udp
from loopstack.transport.tcp import constants as tcpc

EPHEMERAL_LOW, EPHEMERAL_HIGH = ports.EPHEMERAL_LOW, ports.EPHEMERAL_HIGH  # loopstack's
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
    def sysctl(self, name: str, field: int = 0) -> int: ...
    def ephemeral_range(self) -> tuple[int, int]: ...
    def has_ipv6(self) -> bool: ...
    def wait(self, sock: Any, expect: bool = True) -> None: ...
    def settle(self) -> None: ...
    def close(self) -> None: ...


class _BaseNet:
    name = "?"

    def __init__(self) -> None:
        self.chosen: list[int] = []  # ports the scenario chose, in order
        self._open: list[Any] = []

    def sysctl(self, name: str, field: int = 0) -> int:
        raise NotImplementedError

    def ephemeral_range(self) -> tuple[int, int]:
        """net.ipv4.ip_local_port_range as this network has it."""
        return (self.sysctl("net/ipv4/ip_local_port_range", 0),
                self.sysctl("net/ipv4/ip_local_port_range", 1))

    def has_ipv6(self) -> bool:
        return True

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
            s6 = self._make(socket.AF_INET6, socket.SOCK_DGRAM, 0) if self.has_ipv6() else None
            try:
                s4.bind(("127.0.0.1", 0))
                p = s4.getsockname()[1]
                try:
                    if s6 is not None:
                        s6.bind(("::1", p))
                except OSError:
                    continue
                self.chosen.append(p)
                return int(p)
            finally:
                s4.close()
                if s6 is not None:
                    s6.close()
        raise RuntimeError("no free UDP port found on the loopback")

    def close(self) -> None:
        for s in self._open:
            s.close()
        self._open.clear()


# What loopstack models, by sysctl name: Linux's stock values.
LOOPSTACK_SYSCTLS: dict[str, tuple[int, ...]] = {
    "net/core/rmem_max": (udp.RMEM_MAX,), "net/core/wmem_max": (udp.WMEM_MAX,),
    "net/core/rmem_default": (udp.RMEM_DEFAULT,), "net/core/wmem_default": (udp.WMEM_DEFAULT,),
    "net/core/somaxconn": (tcpc.SOMAXCONN,),
    "net/ipv4/ip_local_port_range": (ports.EPHEMERAL_LOW, ports.EPHEMERAL_HIGH),
    "net/ipv4/tcp_rmem": (4096, tcpc.RMEM_DEFAULT, tcpc.RMEM_MAX),
    "net/ipv4/tcp_wmem": (4096, tcpc.WMEM_DEFAULT, tcpc.WMEM_MAX),
    "net/ipv4/ip_default_ttl": (lo_ipv4.DEFAULT_TTL,),
    "net/ipv6/conf/all/hop_limit": (lo_ipv6.DEFAULT_HOP_LIMIT,),
    "net/ipv4/tcp_keepalive_time": (tcpc.KEEPALIVE_TIME // 10**9,),
    "net/ipv4/tcp_keepalive_intvl": (tcpc.KEEPALIVE_INTVL // 10**9,),
    "net/ipv4/tcp_keepalive_probes": (tcpc.KEEPALIVE_PROBES,),
    "net/ipv4/tcp_timestamps": (1,), "net/ipv4/tcp_sack": (1,),
    "net/ipv4/tcp_window_scaling": (1,),
    "net/ipv4/tcp_ecn": (2,),  # loopstack does not negotiate ECN: as stock 2, never asks
    "net/ipv4/ping_group_range": (1, 0),  # nobody may open ping sockets
}


@functools.cache
def _host_sysctl(name: str) -> tuple[int, ...]:
    with open(f"/proc/sys/{name}") as f:
        return tuple(int(v) for v in f.read().split())


@functools.cache
def host_has_ipv6() -> bool:
    """Whether the host has an IPv6 loopback (::1 can be bound)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


_USES_IPV6 = re.compile(r"\bV6\b|AF_INET6|[\"']::")


def uses_ipv6(fn: Callable[..., Any]) -> bool:
    """Whether a scenario's source touches IPv6 (V6, AF_INET6 or a "::" literal)."""
    return bool(_USES_IPV6.search(inspect.getsource(fn)))


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

    def sysctl(self, name: str, field: int = 0) -> int:
        """A sysctl of the host, e.g. "net/core/rmem_max" (read, never
        written); ``field`` picks one of several numbers ("tcp_rmem")."""
        return _host_sysctl(name)[field]

    def has_ipv6(self) -> bool:
        return host_has_ipv6()

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

    def sysctl(self, name: str, field: int = 0) -> int:
        """The value loopstack models for a sysctl (Linux's stock defaults)."""
        return LOOPSTACK_SYSCTLS[name][field]

    def wait(self, sock: Any, expect: bool = True) -> None:
        return None

    def settle(self) -> None:
        return None

    def close(self) -> None:
        super().close()
        self.stack.close()


def as_default(net: Net, value: Any, sysctl: str) -> Any:
    """``"default"`` where ``value`` is the network's own ``sysctl`` value (a
    reset TTL is ip_default_ttl, which a host may tune), else ``value``."""
    return "default" if value == net.sysctl(sysctl) else value


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
    ephemeral: tuple[int, int] = (EPHEMERAL_LOW, EPHEMERAL_HIGH)

    def port(self, p: int) -> Any:
        if p in self.chosen:
            return f"P{self.chosen.index(p)}"
        if self.ephemeral[0] <= p <= self.ephemeral[1]:
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

    def _normalizer(self) -> Normalizer:
        return Normalizer(self.net.chosen, self.net.ephemeral_range())

    def _norm(self, value: Any) -> Any:
        return self._normalizer()(value)

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
        self.records.append((label, self._normalizer().port(p)))


# -- scenarios -------------------------------------------------------------------

Scenario = Callable[[Net, Recorder], None]


@dataclass
class Entry:
    name: str
    fn: Scenario
    differs: str | None = None
    expect: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    varies: str | None = None
    variants: dict[str, list[Any]] = field(default_factory=dict)


class Scenarios:
    """A test module's scenarios, in definition order."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def add(self, fn: Scenario | None = None, *, differs: str | None = None,
            expect: dict[str, tuple[Any, Any]] | None = None, varies: str | None = None,
            variants: dict[str, list[Any]] | None = None) -> Any:
        def register(f: Scenario) -> Scenario:
            name = f.__name__
            assert name not in self.entries, f"scenario {name} defined twice"
            assert (differs is None) == (not expect), \
                f"{name}: differs= needs expect= (and expect= needs differs=)"
            assert (varies is None) == (not variants), \
                f"{name}: varies= needs variants= (and variants= needs varies=)"
            if variants:
                rows = {len(v) for v in variants.values()}
                assert len(rows) == 1 and rows.pop() >= 2, \
                    f"{name}: every variants list needs the same number (2 or more) of outcomes"
                assert not set(variants) & set(expect or {}), \
                    f"{name}: a label is either a difference or a variant, not both"
            self.entries[name] = Entry(name, f, differs, dict(expect or {}), varies,
                                       {k: list(v) for k, v in (variants or {}).items()})
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


def _once(entry: Entry, records: list[tuple[str, Any]], label: str, side: str) -> Any:
    labels = [r[0] for r in records]
    assert labels.count(label) == 1, \
        f"{entry.name}: label {label!r} must occur once on the {side} side"
    return records[labels.index(label)][1]


def _check_variants(entry: Entry, kernel: list[tuple[str, Any]],
                    loop: list[tuple[str, Any]]) -> None:
    """The kernel shows one whole row of ``entry.variants``; loopstack row 0."""
    got_k = {label: _once(entry, kernel, label, "kernel") for label in entry.variants}
    got_l = {label: _once(entry, loop, label, "loopstack") for label in entry.variants}
    nrows = len(next(iter(entry.variants.values())))
    rows = [{label: values[i] for label, values in entry.variants.items()} for i in range(nrows)]
    assert got_k in rows, (f"{entry.name}: the kernel shows {got_k!r}, none of the documented "
                           f"kernel variants ({entry.varies}): {rows!r}\n{_table(kernel, loop)}")
    assert got_l == rows[0], (f"{entry.name}: loopstack shows {got_l!r}, the variant it models "
                              f"is {rows[0]!r}\n{_table(kernel, loop)}")


def run(entry: Entry) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """Run ``entry`` on the kernel and on loopstack and compare the records."""
    if not host_has_ipv6() and uses_ipv6(entry.fn):
        pytest.skip("this host has no IPv6 loopback (::1): the kernel side cannot run it")
    kernel = record(entry.fn, KernelNet())
    loop = record(entry.fn, LoopNet())
    if not entry.differs and not entry.variants:
        assert kernel == loop, f"{entry.name}: kernel and loopstack differ\n{_table(kernel, loop)}"
        return kernel, loop
    k_labels = [r[0] for r in kernel]
    l_labels = [r[0] for r in loop]
    assert k_labels == l_labels, f"{entry.name}: different steps\n{_table(kernel, loop)}"
    for label, (want_k, want_l) in entry.expect.items():
        got_k = _once(entry, kernel, label, "kernel")
        got_l = _once(entry, loop, label, "loopstack")
        assert got_k == want_k, (f"{entry.name}: kernel shows {got_k!r} for {label!r}, "
                                 f"the documented difference says {want_k!r}")
        assert got_l == want_l, (f"{entry.name}: loopstack shows {got_l!r} for {label!r}, "
                                 f"the documented difference says {want_l!r}")
    if entry.expect:
        assert any(entry.expect[label][0] != entry.expect[label][1] for label in entry.expect), \
            f"{entry.name}: marked differs= but every expected value agrees"
    if entry.variants:
        _check_variants(entry, kernel, loop)
    apart = set(entry.expect) | set(entry.variants)
    same_k = [r for r in kernel if r[0] not in apart]
    same_l = [r for r in loop if r[0] not in apart]
    assert same_k == same_l, (f"{entry.name}: differs beyond the documented "
                              f"{'difference' if entry.differs else 'variants'}\n"
                              f"{_table(kernel, loop)}")
    return kernel, loop
