"""`Stack`: one host — its lock, clock, interfaces, addresses, routes,
protocols and counters.

Execution model (DESIGN.md): every protocol state change happens under the
stack's one lock. A send runs down the layers; the loopback puts the packet
on the receive backlog; the outermost holder of the lock drains the backlog
(IP input, transports, socket queues) before it returns. Replies generated
while draining join the backlog: a loop, never recursion.
"""

from __future__ import annotations

import _thread
import errno
import os
import random
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import monotonic as _monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .clock import (
    _WAKE,  # (clock.wake_all's methodcaller, inline in _Operation.__exit__)
    Clock,
    Condition,
    Quiescence,
    RealClock,
    StackLock,
    VirtualClock,
    set_descriptor_floor,
)
from .ip.addr import (
    AF_INET,
    AF_INET6,
    InterfaceAddress,
    parse_address,
    parse_prefix,
)
from .ip.ipv4 import IPv4
from .ip.ipv6 import IPv6
from .ip.route import TABLE_MAIN, UNICAST, Route, RoutingTable
from .link.capture import Capture
from .link.filter import PathRule
from .link.interface import Interface
from .link.loopback import Loopback
from .link.netem import Netem, NetemSpec
from .link.pipe import PipeInterface
from .mib import Mib
from .names import AddrInfo, Resolver
from .readiness import peer_floor
from .socket import Socket
from .transport.icmp import ICMPv4, ICMPv6
from .transport.ports import PortTable
from .transport.tcp import TCP
from .transport.udp import UDP
from .wire.icmp import PROTO_ICMP, PROTO_ICMPV6

if TYPE_CHECKING:
    from .host.bridge import Bridge, Exposure, Forward
    from .host.owner import AttachServer
    from .ping import PingReply, PingResult
    from .report.recorder import Recorder

# Every stack not yet closed: a fork hands them to the child (host/attach.py).
live_stacks: weakref.WeakSet[Stack] = weakref.WeakSet()
set_descriptor_floor(peer_floor())  # where waiting threads' eventfds go (clock.Parker)

_DEFAULT: Any = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]

DEFAULT_HOSTS: dict[str, list[str]] = {
    "localhost": ["127.0.0.1", "::1"],
    "ip6-localhost": ["::1"],
    "ip6-loopback": ["::1"],
}


@dataclass(slots=True)
class InterfaceInfo:
    """One interface as `ip -s addr` shows it."""

    index: int
    name: str
    kind: str
    mtu: int
    state: str
    flags: tuple[str, ...]
    addresses: list[str]
    stats: dict[str, int]
    qdisc: str

    def show(self) -> str:
        s = self.stats
        lines = [
            f"{self.index}: {self.name}: <{','.join(self.flags)}> mtu {self.mtu} "
            f"qdisc {self.qdisc} state {self.state}",
        ]
        for a in self.addresses:
            fam = "inet6" if ":" in a else "inet"
            scope = "host" if a.startswith("127.") or a == "::1/128" else "global"
            label = f" {self.name}" if fam == "inet" else ""
            lines.append(f"    {fam} {a} scope {scope}{label}")
        lines.append("    RX:  bytes packets errors dropped")
        lines.append(f"    {s['rx_bytes']:>10} {s['rx_packets']:>7} {s['rx_errors']:>6} "
                     f"{s['rx_dropped']:>7}")
        lines.append("    TX:  bytes packets errors dropped")
        lines.append(f"    {s['tx_bytes']:>10} {s['tx_packets']:>7} {s['tx_errors']:>6} "
                     f"{s['tx_dropped']:>7}")
        return "\n".join(lines)


_STREAM: Any = None  # stream.StreamSocket, once Stack.socket has imported it

# A block of this size is made and freed once per process (_settle_allocator).
_SETTLING_BLOCK = 4 << 20
_allocator_settled = False


def _settle_allocator() -> None:
    """Keep glibc from giving back and faulting in again, page by page, the
    memory of a socket's buffers. What the kernel holds in its own memory
    (the bytes queued in a socket, up to its buffer: megabytes once
    autotuned) loopstack holds in the process's heap, and frees in bursts
    as a reader drains them. glibc's malloc serves blocks of 128 KiB or
    more with mmap and hands free heap above 128 KiB back to the system
    until the process frees one mmap-served block; then it raises both
    thresholds past that block's size (the trim threshold to twice it;
    mallopt(3), M_MMAP_THRESHOLD). A program reading kernel sockets moves
    them a little at its first recv(bufsize) (CPython allocates bufsize
    bytes; asyncio asks 256 KiB); on loopstack the heap's own churn needs
    more: asyncio's 64 KiB bulk faulted ~10 pages a 64 KiB (the kernel
    side none) until a block of 2 MiB or more had been freed once (1 MiB
    was not enough). One 4 MiB block made and freed at the first stack
    does it. Elsewhere (other allocators) it is one allocation."""
    global _allocator_settled
    if not _allocator_settled:
        _allocator_settled = True
        block = bytearray(_SETTLING_BLOCK)
        del block


class _Operation:
    """``with stack.locked:`` — hold the stack lock for one operation; when
    the outermost operation ends, drain the receive backlog before letting go
    (DESIGN.md, execution model: run to completion), and once it has let go
    wake the threads the operation woke (clock.py, StackLock: the woken
    thread need not wait for the lock)."""

    __slots__ = ("_stack", "_lock")

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._lock = stack._slock

    def __enter__(self) -> None:
        lock = self._lock
        lock.acquire()
        lock.depth += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        lock = self._lock
        try:
            if lock.depth == 1 and self._stack._backlog:
                self._stack._drain()
        finally:
            lock.depth -= 1
            wakes = lock.wakes
            if wakes and not lock.depth:
                lock.wakes = []
                lock.release()
                deque(map(_WAKE, wakes), 0)  # (wake_all, inline)
            else:
                lock.release()


class _Waiter:
    """A thread blocked in :meth:`Stack.wait_for` on a virtual clock."""

    __slots__ = ("cond", "predicate", "deadline", "tid", "woken")

    def __init__(self, cond: threading.Condition, predicate: Callable[[], bool],
                 deadline: int | None) -> None:
        self.cond = cond
        self.predicate = predicate
        self.deadline = deadline  # virtual ns, or None
        self.tid = threading.get_native_id()
        self.woken = False  # its call can go on; it has not run since


class _VirtualTime:
    """Virtual time shared by threads (Stack.wait_for): who waits, and who
    moves the clock for them (the "driver", one of the waiters)."""

    __slots__ = ("waiters", "driver", "driver_wake", "_sleeping", "quiet", "helper",
                 "helper_tid", "helper_cond", "_helper_sleeping", "_clock", "_listener")

    def __init__(self, clock: VirtualClock, listener: Callable[[], None]) -> None:
        self.waiters: dict[int, _Waiter] = {}  # by thread ident, in arrival order
        self.driver: int | None = None
        # Wakes the driver: to look again (a new waiter), or while it waits
        # with nothing due, when a timer is armed (``sleeping``).
        self.driver_wake: Callable[[], None] | None = None
        self._sleeping: Callable[[], None] | None = None
        self.quiet = Quiescence()
        # Stack.autojump's thread: moves time while no call waits in the stack.
        self.helper: threading.Thread | None = None
        self.helper_tid = 0
        self.helper_cond: threading.Condition | None = None
        self._helper_sleeping = False
        # The clock tells ``listener`` (Stack._timer_armed) of a timer armed
        # only while the driver or the autojump thread sleeps (on_armed).
        self._clock = clock
        self._listener = listener

    @property
    def sleeping(self) -> Callable[[], None] | None:
        return self._sleeping

    @sleeping.setter
    def sleeping(self, wake: Callable[[], None] | None) -> None:
        self._sleeping = wake
        self._listen()

    @property
    def helper_sleeping(self) -> bool:
        return self._helper_sleeping

    @helper_sleeping.setter
    def helper_sleeping(self, sleeping: bool) -> None:
        self._helper_sleeping = sleeping
        self._listen()

    def _listen(self) -> None:
        on = self._sleeping is not None or self._helper_sleeping
        self._clock.on_armed = self._listener if on else None

    def exclude(self) -> set[int]:
        """Threads whose idleness is known without asking the kernel: the
        waiters (blocked in the stack) and the autojump thread."""
        out = {w.tid for w in self.waiters.values()}
        if self.helper_tid:
            out.add(self.helper_tid)
        return out


# What one look at the process gave the driver (Stack._move_time).
_MOVED, _NOT_YET, _NOTHING, _STUCK = range(4)
_IDLE_WAIT = 0.1  # real seconds between looks when nothing wakes a waiter sooner


class Stack:
    """One virtual host with a loopback interface (lo: 127.0.0.1/8, ::1/128).

    ``clock`` is "real" (default), "virtual" (time moves only through
    :meth:`advance` or a blocking call waiting on it) or a Clock. ``seed``
    makes every random choice of the stack (IP IDs, ICMP identifiers, netem
    unless given its own seed) repeatable.
    """

    def __init__(self, *, clock: str | Clock = "real", seed: int | None = None) -> None:
        if isinstance(clock, Clock):
            self.clock = clock
        elif clock == "real":
            self.clock = RealClock()
        elif clock == "virtual":
            self.clock = VirtualClock()
        else:
            raise ValueError(f"unknown clock {clock!r}: use 'real' or 'virtual'")
        self.seed = seed
        _settle_allocator()
        self.rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8)))
        # An RLock; also counts the holder's operations (depth) and keeps
        # the wake-ups they owe (clock.py). (lock's type is the RLock's: an
        # attached process's RemoteStack has a plain one.)
        self._slock = StackLock()
        self.lock: _thread.RLock = self._slock
        self.clock.set_runner(self._run_timer)
        if isinstance(self.clock, RealClock):
            self.clock.deferral = self._slock  # (timers armed in an operation: clock.py)
        self.mib = Mib()
        self.hosts: dict[str, list[str]] = {k: list(v) for k, v in DEFAULT_HOSTS.items()}
        self._interfaces: dict[str, Interface] = {}
        self._addresses: list[InterfaceAddress] = []
        # (device, packet); device None: a record (ip/packet.py Record) from lo
        self._backlog: deque[tuple[Interface | None, Any]] = deque()
        self._draining = False
        self.locked = _Operation(self)
        self._closed = False
        self.route_table = RoutingTable()
        self.lo = Loopback()
        g = self.mib.groups
        self.ipv4 = IPv4(self.route_table, self.lo, g["Ip"], g["IpExt"], g["RtCache"],
                         self.clock, self.rng)
        self.ipv6 = IPv6(self.route_table, self.lo, g["Ip6"], self.clock, self.rng)
        self.icmp4 = ICMPv4(self.ipv4, g["Icmp"], g["IcmpMsg"], self.clock, self.rng, self.lock)
        self.icmp6 = ICMPv6(self.ipv6, g["Icmp6"], g["Icmp6"], self.clock, self.rng, self.lock)
        self.ipv4.handlers[PROTO_ICMP] = self.icmp4.input
        self.ipv6.handlers[PROTO_ICMPV6] = self.icmp6.input
        self.ipv4.icmp_error = self.icmp4.send_error
        self.ipv6.icmp_error = self.icmp6.send_error
        self.udp_ports = PortTable(self.rng, tcp=False)
        self.udp = UDP(self.ipv4, self.ipv6, self.icmp4, self.icmp6, g["Udp"], g["Udp6"],
                       self.udp_ports)
        self.tcp_ports = PortTable(self.rng, tcp=True)
        self.tcp = TCP(self.ipv4, self.ipv6, self.icmp4, self.icmp6, g["Tcp"], g["TcpExt"],
                       self.clock, self.rng, self.tcp_ports)
        g["Tcp"].update(RtoAlgorithm=1, RtoMin=200, RtoMax=120000, MaxConn=-1)
        self.resolver = Resolver(self.hosts)
        self._sockets: dict[int, Socket] = {}
        # Serving attached processes (host/owner.py): made at the first fork
        # or patch(children=True). Threads running calls for an attached
        # process are "abortable": when the process dies, their waits end.
        self.attach_server: AttachServer | None = None
        self._abortable: set[int] = set()
        self._aborted: set[int] = set()
        # Threads waiting on a virtual clock (wait_for).
        self._vt: _VirtualTime | None = None
        if isinstance(self.clock, VirtualClock):
            self._vt = _VirtualTime(self.clock, self._timer_armed)
        live_stacks.add(self)
        self._attach(self.lo)
        self.add_address("lo", "127.0.0.1/8")
        self.add_address("lo", "::1/128")

    # -- the run-to-completion core -------------------------------------------
    def _netif_rx(self, iface: Interface, packet: bytes) -> None:
        """A device received ``packet``: queue it. Inside an operation (see
        :attr:`locked`) the backlog is drained when the outermost one ends, so
        no layer sees a reply before it has finished sending; otherwise now."""
        self._backlog.append((iface, packet))
        if self._slock.depth == 0:
            self._drain()

    def _drain(self) -> None:
        """Process the receive backlog (lock held). Loops, never recurses."""
        if self._draining:
            return
        self._draining = True
        try:
            backlog = self._backlog
            v4 = self.ipv4.input
            v6 = self.ipv6.input
            while backlog:
                dev, pkt = backlog.popleft()
                if dev is None:  # a datagram that crossed lo as its record (ip/packet.py)
                    pkt.deliver(pkt)
                    continue
                version = pkt[0] >> 4 if pkt else 0
                if version == 4:
                    v4(dev, pkt)
                elif version == 6:
                    v6(dev, pkt)
                else:
                    dev.stats.rx_errors += 1  # neither IPv4 nor IPv6
        finally:
            self._draining = False

    def _run_timer(self, callback: Callable[[], None]) -> None:
        with self.locked:
            if not self._closed:
                callback()
                # Timers fire at safe points only (the real clock's thread, or a
                # virtual clock moved by a waiting operation): deliver now.
                self._drain()

    # -- interfaces and addresses ----------------------------------------------
    def _attach(self, iface: Interface) -> None:
        if iface.name in self._interfaces:
            raise ValueError(f"interface {iface.name!r} already exists: choose another name")
        iface.attach(len(self._interfaces) + 1, self._netif_rx, self.clock, self.lock, self.rng)
        self._interfaces[iface.name] = iface

    def interface(self, name: str) -> Interface:
        """The interface called ``name`` (KeyError naming the known ones)."""
        try:
            return self._interfaces[name]
        except KeyError:
            known = ", ".join(self._interfaces)
            raise KeyError(f"no interface {name!r}; this stack has: {known}") from None

    def add_interface(
        self, name: str, address: str | Iterable[str] | None = None, mtu: int = 1500
    ) -> PipeInterface:
        """Add a pipe NIC whose far end is the caller (``inject``/``read``),
        with ``address`` ("192.0.2.1/24", or several) assigned to it."""
        with self.lock:
            iface = PipeInterface(name, mtu)
            self._attach(iface)
            if address is not None:
                for a in [address] if isinstance(address, str) else address:
                    self.add_address(name, a)
            return iface

    def add_address(self, ifname: str, prefix: str) -> None:
        """Assign "a.b.c.d/n" or "x::y/n" to an interface, with the routes
        Linux adds for it (`ip addr add PREFIX dev IFNAME`)."""
        with self.lock:
            iface = self.interface(ifname)
            addr, plen = parse_prefix(prefix)
            ifa = InterfaceAddress(ifname, addr, plen)
            if any(a.address == addr and a.ifname == ifname for a in self._addresses):
                raise FileExistsError(f"{prefix} is already assigned to {ifname}")
            self._addresses.append(ifa)
            iface.addresses.append(str(ifa))
            self.route_table.add_connected(ifa, iface)

    def addresses(self, ifname: str | None = None) -> list[InterfaceAddress]:
        return [a for a in self._addresses if ifname is None or a.ifname == ifname]

    def add_route(self, prefix: str, dev: str, *, via: str | None = None,
                  metric: int = 0) -> None:
        """`ip route add PREFIX [via GW] dev DEV`: "default" or "a.b.c.d/n"."""
        with self.lock:
            iface = self.interface(dev)
            if prefix == "default":
                raise ValueError('say "0.0.0.0/0" or "::/0" rather than "default"')
            addr, plen = parse_prefix(prefix)
            gw = parse_address(via) if via is not None else None
            self.route_table.add(Route(addr, plen, UNICAST, iface, TABLE_MAIN, gateway=gw,
                                       scope="global" if gw else "link", proto="boot",
                                       metric=metric if len(addr) == 4 else (metric or 1024)))

    def interfaces(self) -> list[InterfaceInfo]:
        """Every interface with its addresses, MTU, state and counters (`ip -s addr`)."""
        out = []
        for iface in self._interfaces.values():
            flags = ["LOOPBACK"] if iface.is_loopback else ["POINTOPOINT", "NOARP"]
            if iface.up:
                flags += ["UP", "LOWER_UP"]
            q = iface.qdisc
            out.append(InterfaceInfo(
                iface.index, iface.name, iface.kind, iface.mtu,
                "UNKNOWN" if iface.is_loopback and iface.up else ("UP" if iface.up else "DOWN"),
                tuple(flags), list(iface.addresses), iface.stats.as_dict(),
                f"netem {q.spec}" if q is not None else "noqueue",
            ))
        return out

    def routes(self) -> list[str]:
        """Routes of both tables, as `ip route show table all` and
        `ip -6 route show table all` print them."""
        return self.route_table.show()

    # -- impairments between particular hosts -------------------------------------
    def impair(self, src: str, dst: str, spec: str | NetemSpec, *, symmetric: bool = False,
               seed: int | None = None) -> list[PathRule]:
        """Apply a netem spec only to packets from ``src`` to ``dst``
        (addresses or prefixes; both ways with ``symmetric``), on every
        interface. Returns the rules; ``unimpair(rules)`` removes them."""
        parsed = NetemSpec.parse(spec) if isinstance(spec, str) else spec
        pairs = [(src, dst), (dst, src)] if symmetric else [(src, dst)]
        with self.locked:
            rules: list[PathRule] = []
            for a, b in pairs:
                s = self.rng.getrandbits(64) if seed is None else seed + len(rules)
                rules.append(PathRule(a, b, Netem(parsed, s)))
            self._add_rules(rules)
            return rules

    def partition(self, a: str, b: str) -> list[PathRule]:
        """Cut the link between ``a`` and ``b`` (addresses or prefixes), both
        ways, until :meth:`heal`."""
        with self.locked:
            rules = [PathRule(a, b, None), PathRule(b, a, None)]
            self._add_rules(rules)
            return rules

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Restore partitioned links: all of them, or the one between a and b."""
        with self.locked:
            for iface in self._interfaces.values():
                iface.rules = [r for r in iface.rules if r.netem is not None or (
                    a is not None and {r.src, r.dst} != {a, b})]

    def unimpair(self, rules: list[PathRule] | None = None) -> None:
        """Remove the given impairment rules (all of them when None)."""
        with self.locked:
            for iface in self._interfaces.values():
                iface.rules = [r for r in iface.rules if r.netem is None or (
                    rules is not None and r not in rules)]

    def _add_rules(self, rules: list[PathRule]) -> None:
        for iface in self._interfaces.values():
            iface.rules = iface.rules + rules

    # -- observation -----------------------------------------------------------
    def stats(self) -> dict[str, dict[str, int]]:
        """Counters by group, with Linux's names: stats()["Ip"]["InReceives"]."""
        with self.lock:
            return self.mib.snapshot()

    def capture(
        self, path: str, interfaces: Iterable[str | Interface] | None = None,
        format: str | None = None,
    ) -> Capture:
        """Write every packet crossing ``interfaces`` (default: all) to ``path``
        (pcapng when it ends in .pcapng, else pcap). Use it as a context
        manager or call ``stop()``."""
        with self.lock:
            if interfaces is None:
                ifaces = list(self._interfaces.values())
            else:
                ifaces = [i if isinstance(i, Interface) else self.interface(i) for i in interfaces]
            return Capture(path, ifaces, self.wall_ns, format)

    def report(self, path: str, *, pcap: str | None = None) -> Recorder:
        """Record this stack for a report from now on: the packets (to
        ``pcap``, by default ``capture.pcap`` beside the page), the ones
        netem drops, each TCP connection's cwnd, ssthresh and smoothed RTT,
        the counters and the socket table. ``path`` is a directory (the page
        is ``path/index.html``) or an ``.html`` file. As a context manager
        the page is written when the block ends; otherwise call ``write()``
        (any time) and ``stop()``. Nothing is recorded unless asked for."""
        from .report.recorder import Recorder

        return Recorder(self, path, pcap=pcap).start()

    def wall_ns(self) -> int:
        """Wall-clock time as the stack sees it: virtual time counts from the
        epoch, so captures and payloads repeat byte for byte."""
        return self.clock.now_ns() if self.clock.is_virtual else time.time_ns()

    # -- time ------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move a virtual clock forward, firing the timers due (ValueError on a real clock)."""
        if not isinstance(self.clock, VirtualClock):
            raise ValueError("advance() needs a virtual clock: Stack(clock='virtual')")
        self.clock.advance(int(round(seconds * 1e9)))

    def wait_for(self, cond: threading.Condition, predicate: Callable[[], bool],
                 timeout: float | None, handoff: bool = False) -> bool:
        """Wait (lock held, through ``cond``) until ``predicate()`` or the
        timeout. On a virtual clock the wait moves time instead, to each next
        timer in turn, up to the timeout, whenever every thread of the
        program is idle (see "virtual time with threads" below).
        ``handoff``: the caller waits for an answer to what it sent, so let
        whoever wakes it hand the GIL over at once (clock.py, Parker)."""
        if self._backlog:
            self._drain()  # what this operation sent must arrive before anyone waits
        if predicate():
            return True
        clock = self.clock
        if isinstance(clock, VirtualClock):
            return self._wait_virtual(clock, cond, predicate, timeout)
        # The wait lets go of the lock: other threads' operations then start
        # at depth 0 and drain what they send, so keep ours aside meanwhile.
        lock = self._slock
        depth, lock.depth = lock.depth, 0
        try:
            if self._abortable:
                me = threading.get_ident()
                if me in self._abortable:
                    return self._wait_abortable(me, cond, predicate, timeout)
            if not handoff or not isinstance(cond, Condition):
                return cond.wait_for(predicate, timeout)
            # (threading.Condition.wait_for, parking for a hand-off)
            wait = cond.wait
            end = None if timeout is None else _monotonic() + timeout
            while True:
                if end is None:
                    wait(None, True)
                else:
                    left = end - _monotonic()
                    if left <= 0:
                        return False
                    wait(left, True)
                if predicate():
                    return True
        finally:
            lock.depth = depth

    # -- virtual time with threads -------------------------------------------------
    # On a virtual clock a blocking call moves time instead of sleeping, but
    # only when the whole program is idle: when no thread could go on
    # without time moving. Then the clock jumps to the next timer, or to the
    # nearest deadline of a waiting call, whichever comes first. Precisely:
    #
    # - every thread blocked in wait_for is a waiter; one of them, the
    #   driver, moves the clock for all (the first to wait; when it leaves,
    #   the next waiter takes over). While loopstack.aio's loop runs on the
    #   stack it is the driver (_drive_loop); with no driver, autojump's
    #   thread may play the part (for programs that wait in select);
    # - a waiter whose condition has come true, or whose deadline has
    #   passed, is runnable: nothing moves until it has run;
    # - every other thread of the process must be blocked: one that is
    #   running (inside a stack call, or doing anything else, a handler a
    #   server just started included) holds time back. A thread blocked
    #   outside the stack (time.sleep, select on a descriptor, a lock, real
    #   I/O) cannot be told from an idle one: time may jump past it.
    #
    # Whether the other threads are blocked comes from the kernel (clock.py,
    # Quiescence). With one thread this is the old single-threaded rule:
    # jump from timer to timer until the condition holds; with nothing
    # scheduled and no other thread, give up at once (as a timeout would).

    def _wait_virtual(self, clock: VirtualClock, cond: threading.Condition,
                      predicate: Callable[[], bool], timeout: float | None) -> bool:
        vt = self._vt
        assert vt is not None
        me = threading.get_ident()
        deadline = None if timeout is None else clock.now_ns() + int(timeout * 1e9)
        waiter = vt.waiters[me] = _Waiter(cond, predicate, deadline)
        wake = cond.notify_all
        if vt.driver_wake is not None:
            vt.driver_wake()  # a new deadline: the driver looks again
        try:
            while True:
                if predicate():
                    return True
                if deadline is not None and clock.now_ns() >= deadline:
                    return False
                waiter.woken = False
                step = _NOTHING
                wait = _IDLE_WAIT
                if vt.driver is None or vt.driver == me:
                    vt.driver, vt.driver_wake = me, wake
                    step = self._move_time(vt, clock, me)
                    if step == _MOVED:
                        continue
                    if step == _STUCK:
                        return predicate()
                    if step == _NOT_YET:
                        wait = vt.quiet.window
                    else:
                        vt.sleeping = wake  # a timer armed now wakes us (_timer_armed)
                lock = self._slock
                depth, lock.depth = lock.depth, 0  # others' operations drain their own
                try:
                    notified = cond.wait(wait)
                finally:
                    lock.depth = depth
                    if vt.sleeping is wake:
                        vt.sleeping = None
                if step == _NOT_YET and not notified and vt.driver == me:
                    vt.quiet.waited()
        finally:
            del vt.waiters[me]
            if vt.driver == me:
                self._release_driver(vt)

    def _release_driver(self, vt: _VirtualTime) -> None:
        """The driver leaves (lock held): the next waiter drives, or
        autojump's thread if no call waits."""
        vt.driver = vt.driver_wake = vt.sleeping = None
        for other in vt.waiters.values():
            other.cond.notify_all()
            break
        else:
            if vt.helper_cond is not None:
                vt.helper_cond.notify_all()

    def _drive_loop(self, limit: int | None, wake: Callable[[], None]) -> int:
        """One look by an event loop that drives this stack's virtual time
        (loopstack.aio): as a blocking call's driver does, with the loop's
        own next deadline, ``limit``, as one more event. ``wake`` must be
        safe to call from any thread. _MOVED, _NOT_YET or _NOTHING."""
        vt = self._vt
        clock = self.clock
        assert vt is not None and isinstance(clock, VirtualClock)
        with self.lock:
            me = threading.get_ident()
            vt.driver, vt.driver_wake = me, wake  # while it runs, the loop alone drives
            step = self._move_time(vt, clock, me, limit)
            if step == _STUCK:
                step = _NOTHING  # a loop may wait for real descriptors
            vt.sleeping = wake if step == _NOTHING else None
            return step

    def _quiet(self) -> Quiescence:
        assert self._vt is not None
        return self._vt.quiet

    def _loop_woke(self, wake: Callable[[], None]) -> None:
        vt = self._vt
        if vt is not None and vt.sleeping is wake:
            vt.sleeping = None

    def _loop_done(self) -> None:
        """The event loop that drove virtual time is closing."""
        vt = self._vt
        if vt is None:
            return
        with self.lock:
            if vt.driver == threading.get_ident():
                self._release_driver(vt)

    def _move_time(self, vt: _VirtualTime, clock: VirtualClock, me: int,
                   limit: int | None = None) -> int:
        """One look by the driver: move the clock to the next event if the
        program is idle (lock held)."""
        now = clock.now_ns()
        nxt = clock.next_deadline()
        if limit is not None and (nxt is None or limit < nxt):
            nxt = limit
        for ident, w in vt.waiters.items():
            if ident != me and (w.woken or (w.deadline is not None and w.deadline <= now)
                                or w.predicate()):
                w.woken = True  # it goes on first, at this instant
                w.cond.notify_all()
                return _NOT_YET
            if w.deadline is not None and (nxt is None or w.deadline < nxt):
                nxt = w.deadline
        exclude = vt.exclude()
        if nxt is None:  # nothing will ever happen unless another thread acts
            return _NOTHING if vt.quiet.others(exclude) else _STUCK
        if not vt.quiet.look(exclude):
            return _NOT_YET
        clock.advance(max(0, nxt - now))
        vt.quiet.moved()
        return _MOVED

    def _timer_armed(self) -> None:
        """A timer was armed on the virtual clock: a driver waiting with
        nothing scheduled looks again."""
        vt = self._vt
        if vt is None:
            return
        wake = vt.sleeping
        if wake is None and vt.helper_sleeping and vt.helper_cond is not None:
            wake = vt.helper_cond.notify_all
        if wake is not None:
            try:
                wake()
            except RuntimeError:  # armed outside the stack lock: the driver looks soon anyway
                pass

    def autojump(self) -> None:
        """Also move virtual time when no call is blocked in the stack but
        the whole process is idle: for programs that wait in ``select``,
        ``selectors`` or a plain asyncio loop rather than in blocking socket
        calls (``loopstack.aio``'s loop moves time itself). A daemon thread
        does it until the stack is closed; idempotent."""
        vt = self._vt
        if vt is None:
            raise ValueError("autojump() needs a virtual clock: Stack(clock='virtual')")
        with self.lock:
            if vt.helper is None:
                vt.helper = threading.Thread(target=self._autojump, name="loopstack-autojump",
                                             daemon=True)
                vt.helper.start()

    def _autojump(self) -> None:
        vt = self._vt
        clock = self.clock
        assert vt is not None and isinstance(clock, VirtualClock)
        cond = threading.Condition(self.lock)
        with self.lock:
            vt.helper_tid = threading.get_native_id()
            vt.helper_cond = cond
            while not self._closed:
                wait = _IDLE_WAIT
                looking = False
                if not vt.waiters and vt.driver is None:  # else a call or a loop drives
                    nxt = clock.next_deadline()
                    if nxt is not None:
                        if vt.quiet.look(vt.exclude()):
                            clock.advance(max(0, nxt - clock.now_ns()))
                            vt.quiet.moved()
                            continue
                        wait, looking = vt.quiet.window, True
                vt.helper_sleeping = not looking
                try:
                    notified = cond.wait(wait)
                finally:
                    vt.helper_sleeping = False
                if looking and not notified:
                    vt.quiet.waited()

    def _wait_abortable(self, me: int, cond: threading.Condition,
                        predicate: Callable[[], bool], timeout: float | None) -> bool:
        """A wait on behalf of an attached process, which ends early with
        ECONNABORTED when that process dies (host/owner.py)."""
        aborted = self._aborted
        ok = cond.wait_for(lambda: me in aborted or predicate(), timeout)
        if me in aborted:
            raise ConnectionAbortedError(errno.ECONNABORTED,
                                         "the process this call was made for has gone")
        return ok

    # -- other processes ----------------------------------------------------------
    def serve_children(self) -> AttachServer:
        """Start serving this stack to processes this one starts (made on
        demand: at the first fork, or by ``patch(children=True)``)."""
        with self.lock:
            if self._closed:
                raise OSError(errno.EBADF, "the stack is closed")
            if self.attach_server is None:
                from .host.owner import AttachServer

                self.attach_server = AttachServer(self)
            return self.attach_server

    # -- sockets ---------------------------------------------------------------
    def socket(self, family: int = AF_INET, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> Socket:
        """A socket on this stack, as ``socket.socket(family, type, proto)``."""
        kind = type & ~(getattr(socket, "SOCK_NONBLOCK", 0) | getattr(socket, "SOCK_CLOEXEC", 0))
        if kind == socket.SOCK_STREAM and family in (AF_INET, AF_INET6):
            stream: Any = _STREAM
            if stream is None:  # (imported here: stream.py imports this module's neighbours)
                from .stream import StreamSocket as stream

                globals()["_STREAM"] = stream
            return stream(self, family, type, proto)  # type: ignore[no-any-return]
        return Socket(self, family, type, proto)

    def _unregister(self, sock: Socket) -> None:
        self._sockets.pop(id(sock), None)

    def sockets(self) -> list[dict[str, Any]]:
        """Open sockets as `ss -uanp` / `ss -tanp` rows: proto, state, local,
        peer, recv_q, send_q."""
        rows: list[dict[str, Any]] = []
        seen: set[int] = set()
        with self.lock:
            for sock in list(self._sockets.values()):
                # dup() and fromfd() make more objects of one socket (they
                # share one __dict__, socket.py): one row, as `ss` shows one
                # socket however many descriptors it has.
                shared = id(vars(sock))
                if shared not in seen:
                    seen.add(shared)
                    rows.append(sock._row())
        return rows

    def create_connection(self, address: tuple[str, int], timeout: Any = _DEFAULT,
                          source_address: tuple[str, int] | None = None, *,
                          all_errors: bool = False) -> Socket:
        """As socket.create_connection: try each address getaddrinfo gives."""
        host, port = address
        errors: list[Exception] = []
        for family, kind, proto, _, sockaddr in self.getaddrinfo(host, port, 0,
                                                                 socket.SOCK_STREAM):
            sock = None
            try:
                sock = self.socket(family, kind, proto)
                if timeout is not _DEFAULT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                errors.append(e)
                if sock is not None:
                    sock.close()
        if not errors:
            raise OSError("getaddrinfo returns an empty list")
        if all_errors:
            raise ExceptionGroup("create_connection failed", errors)
        raise errors[0]

    def create_server(self, address: tuple[str, int], *, family: int = AF_INET,
                      backlog: int | None = None, reuse_port: bool = False,
                      dualstack_ipv6: bool = False) -> Socket:
        """As socket.create_server: a listening TCP socket."""
        if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("SO_REUSEPORT not supported on this platform")
        if dualstack_ipv6 and family != AF_INET6:
            raise ValueError("dualstack_ipv6 requires AF_INET6 family")
        sock = self.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not dualstack_ipv6))
            try:
                sock.bind(address)
            except OSError as err:  # as socket.create_server words it
                msg = f"{err.strerror} (while attempting to bind on address {address!r})"
                raise OSError(err.errno, msg) from None
            listen = sock.listen
            listen() if backlog is None else listen(backlog)
            return sock
        except BaseException:
            sock.close()
            raise

    # -- names -----------------------------------------------------------------
    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[AddrInfo]:
        """As socket.getaddrinfo, from :attr:`hosts` only (never DNS)."""
        return self.resolver.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(self, name: str) -> str:
        return self.resolver.gethostbyname(name)

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        return self.resolver.gethostbyname_ex(name)

    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]:
        return self.resolver.gethostbyaddr(address)

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        return self.resolver.getnameinfo(sockaddr, flags)

    def resolve(self, host: str, family: int = 0) -> list[bytes]:
        """Addresses for a literal or a name in :attr:`hosts` (no DNS, ever).
        Raises socket.gaierror like getaddrinfo for an unknown name."""
        infos = self.getaddrinfo(host, None, family, socket.SOCK_RAW)
        out = []
        for info in infos:
            addr = parse_address(info[4][0])
            if addr not in out:
                out.append(addr)
        return out

    # -- ping ------------------------------------------------------------------
    def ping(
        self, host: str, count: int = 1, interval: float = 1.0, size: int = 56,
        timeout: float = 1.0, ttl: int = 64, *, family: int = 0,
        on_reply: Callable[[PingReply], None] | None = None,
    ) -> PingResult:
        """Send ``count`` ICMP echo requests to ``host`` through this stack,
        as `ping -c COUNT -i INTERVAL -s SIZE -W TIMEOUT -t TTL` does."""
        from .ping import run_ping

        return run_ping(self, host, count=count, interval=interval, size=size,
                        timeout=timeout, ttl=ttl, family=family, on_reply=on_reply)

    # -- lifetime --------------------------------------------------------------
    def close(self) -> None:
        """Stop the timers and drop every queue. Idempotent."""
        for bridge in self._bridges:  # expose() and forward(): their threads need the lock
            bridge.close()
        server = self.attach_server
        if server is not None:
            server.close()  # attached processes learn the owner is gone
        with self.lock:
            if self._closed:
                return
            self._closed = True
            live_stacks.discard(self)
            for sock in list(self._sockets.values()):
                sock.close()
            self._backlog.clear()
            self.ipv4.reassembler.clear()
            self.ipv6.reassembler.clear()
        self.clock.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(self._interfaces)
        return f"<loopstack.Stack interfaces=[{names}] clock={type(self.clock).__name__}>"

    # -- bridges to the host's real loopback (host/bridge.py) --------------------
    _bridges: tuple[Bridge, ...] = ()  # open ones, closed by close()

    def expose(self, port: int, *, host: str = "127.0.0.1", host_port: int | None = None,
               address: str | None = None) -> Exposure:
        """Make the virtual service on ``port`` reachable from the host: a
        real listening socket on ``host``:``host_port`` (the same number when
        None; 0 picks a free one, see ``.host_address``) whose connections
        are relayed to virtual ``address``:``port`` (127.0.0.1, or ::1 when
        ``host`` is IPv6). Bytes, FIN and RST cross both ways. A host
        address that is not loopback prints a warning. Close it, or use it
        as a context manager; the stack's close() closes it too."""
        from .host.bridge import Exposure

        return Exposure(self, port, host=host, host_port=host_port, address=address)

    def forward(self, port: int, to: tuple[str, int], *, address: str = "127.0.0.1",
                check: bool = True) -> Forward:
        """Make a real service on the host reachable from the stack: a
        virtual listener on ``address``:``port`` whose connections are
        relayed to ``to`` (host, port) on the host's network. With ``check``
        the target is tried once now: OSError (e.g. ECONNREFUSED) if it does
        not answer; later, a connection the target refuses resets the
        virtual client. Close it, or use it as a context manager; the
        stack's close() closes it too."""
        from .host.bridge import Forward

        return Forward(self, port, to, address=address, check=check)

    # -- a real Linux TUN device (link/tun.py) -------------------------------------------
    def add_tun(self, name: str, address: str | Iterable[str] | None, *,
                peer: str | Iterable[str] | None = None, netns: str | None = None,
                mtu: int = 1500) -> Interface:
        """Create TUN device ``name`` (raw IP packets, no Ethernet) in network
        namespace ``netns`` (this one when None), give the kernel's side
        ``peer`` ("192.0.2.1/24", or several; IPv6 ones `nodad`) and bring it
        up; this stack's side gets ``address``. Returns a
        :class:`~loopstack.link.tun.TunInterface`: its close(), or the
        stack's, removes the device. OSError (errno and what to do) without
        root or /dev/net/tun, for a name taken or a namespace missing."""
        from typing import cast

        from .ip.addr import parse_prefix as _parse
        from .link.tun import TunInterface

        if self.clock.is_virtual:
            raise ValueError("a TUN device needs the real clock: the kernel on its other side "
                             "does not wait for virtual time (use Stack(clock='real'))")
        addresses = [] if address is None else [address] if isinstance(address, str) \
            else list(address)
        for a in addresses:
            _parse(a)  # a bad address is a ValueError before the device exists
        with self.lock:
            if self._closed:
                raise OSError(errno.EBADF, "the stack is closed: add the TUN device to an "
                              "open one")
            if name in self._interfaces:
                raise ValueError(f"interface {name!r} already exists: choose another name")
        tun = TunInterface(name, peer=peer, netns=netns, mtu=mtu)
        try:
            with self.lock:
                self._attach(tun)
                for a in addresses:
                    self.add_address(name, a)

                # close() closes what _bridges holds (all it needs is a
                # close method), before it takes the lock.
                entry = cast("Bridge", tun)

                def forget() -> None:
                    self._bridges = tuple(b for b in self._bridges if b is not entry)

                tun.on_close = forget
                self._bridges = (*self._bridges, entry)
            tun.start()
        except BaseException:
            tun.close()
            raise
        return tun


__all__ = ["Stack", "InterfaceInfo", "AF_INET", "AF_INET6"]
