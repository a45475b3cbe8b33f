"""The device every interface is: counters as `ip -s link` shows them, an
egress netem qdisc, packet taps, and a receive handler the stack installs.

Transmit path (Linux's dev_queue_xmit order): qdisc (netem) -> taps ->
device. Taps therefore see what leaves the qdisc, as tcpdump does: a packet
netem drops is never seen, a delayed one is seen when it leaves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import TYPE_CHECKING, Any

from .filter import PathRule
from .netem import Netem, NetemSpec

if TYPE_CHECKING:
    from ..clock import Clock

TapCallback = Callable[[bytes, str], None]
RxHandler = Callable[["Interface", bytes], None]


@dataclass(slots=True)
class InterfaceStats:
    """RX and TX counters, named as `ip -s link` names them."""

    rx_packets: int = 0
    rx_bytes: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class TapHandle:
    """Returned by :meth:`Interface.tap`; ``remove()`` detaches the callback."""

    __slots__ = ("_iface", "_callback")

    def __init__(self, iface: Interface, callback: TapCallback) -> None:
        self._iface = iface
        self._callback = callback

    def remove(self) -> None:
        taps = self._iface._taps
        if self._callback in taps:
            self._iface._taps = [t for t in taps if t is not self._callback]


def _drop(iface: Interface, packet: bytes) -> None:
    iface.stats.rx_dropped += 1


class Interface:
    """A network interface of one stack. Subclasses implement ``_xmit``."""

    kind = "generic"
    is_loopback = False

    def __init__(self, name: str, mtu: int) -> None:
        if not name or len(name) > 15 or "/" in name or name.strip() != name:
            raise ValueError(f"bad interface name {name!r}: use 1-15 characters, no '/' or spaces")
        self.name = name
        self.mtu = mtu
        self.index = 0  # set by the stack
        self.up = True
        self.stats = InterfaceStats()
        self.addresses: list[str] = []  # "a.b.c.d/n", kept by the stack
        self._taps: list[TapCallback] = []
        self.rules: list[PathRule] = []  # per-path impairments, first match wins
        self._netem: Netem | None = None
        self._rx_handler: RxHandler = _drop
        self._clock: Clock | None = None
        self._lock: Any = None  # the stack lock, set when attached
        self._rng: random.Random | None = None

    # -- attachment (the stack calls these) ---------------------------------
    def attach(
        self, index: int, rx_handler: RxHandler, clock: Clock, lock: Any, rng: random.Random
    ) -> None:
        self._rng = rng
        self.index = index
        self._rx_handler = rx_handler
        self._clock = clock
        self._lock = lock

    def carries_records(self) -> bool:
        """Whether a packet may cross this device as its parsed record (only
        an unobserved loopback: see Loopback.carries_records)."""
        return False

    def transmit_record(self, record: object, length: int) -> None:
        raise NotImplementedError("only an interface that carries records takes one")

    # -- checksum offload ------------------------------------------------------
    @property
    def checksum_offload(self) -> bool:
        """True when transports may skip computing and verifying checksums on
        this interface: the loopback, as on Linux (CHECKSUM_PARTIAL treated as
        verified), except while netem corrupts packets on it."""
        return self.is_loopback and not (self._netem is not None and self._netem.spec.corrupt > 0)

    # -- netem -----------------------------------------------------------------
    def netem(
        self, spec: str | NetemSpec | None = None, *, seed: int | None = None, **kwargs: Any
    ) -> NetemSpec | None:
        """Install netem on this interface's egress, like
        `tc qdisc replace dev NAME root netem SPEC`. ``spec`` is tc's text or
        a NetemSpec; keywords (delay=0.02, loss=0.01, ...) are the alternative.
        ``netem(None)`` with no keywords removes it. Returns the spec in force."""
        if spec is None and not kwargs:
            self._netem = None
            return None
        if isinstance(spec, str):
            parsed = NetemSpec.parse(spec)
        elif isinstance(spec, NetemSpec):
            parsed = spec
        else:
            parsed = NetemSpec.from_kwargs(**kwargs)
        if seed is None and self._rng is not None:
            seed = self._rng.getrandbits(64)  # from the stack's seed, when it has one
        self._netem = Netem(parsed, seed)
        return parsed

    @property
    def qdisc(self) -> Netem | None:
        return self._netem

    # -- taps ------------------------------------------------------------------
    def tap(self, callback: TapCallback) -> TapHandle:
        """Call ``callback(packet, direction)`` for every IP packet crossing
        this interface ("in" or "out"); the loopback reports each packet once,
        as "in", as libpcap does for `tcpdump -i lo`."""
        self._taps = self._taps + [callback]
        return TapHandle(self, callback)

    # -- transmit --------------------------------------------------------------
    def transmit(self, packet: bytes) -> None:
        """Hand an IP packet to the device (through netem when installed)."""
        if not self.up:
            self.stats.tx_dropped += 1
            return
        netem = self._netem
        if self.rules:
            for rule in self.rules:
                if rule.matches(packet):
                    if rule.netem is None:
                        rule.dropped += 1  # a partition
                        return
                    netem = rule.netem
                    break
        if netem is None:
            self._emit(packet)
            return
        clock = self._clock
        assert clock is not None, "interface is not attached to a stack"
        now = clock.now_ns()
        for when, pkt in netem.enqueue(packet, now):
            if when <= now:
                self._emit(pkt)
            else:
                clock.call_at(when, partial(self._emit, pkt))

    def _emit(self, packet: bytes) -> None:
        stats = self.stats
        stats.tx_packets += 1
        stats.tx_bytes += len(packet)
        self._xmit(packet)

    def _xmit(self, packet: bytes) -> None:
        raise NotImplementedError

    # -- receive ---------------------------------------------------------------
    def _receive(self, packet: bytes, direction: str = "in") -> None:
        """A packet arrived on this interface: count it, show it to the taps,
        hand it to the stack. Called with the stack lock held."""
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += len(packet)
        for tap in self._taps:
            tap(packet, direction)
        self._rx_handler(self, packet)

    def _tap_out(self, packet: bytes) -> None:
        for tap in self._taps:
            tap(packet, "out")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} mtu {self.mtu}>"
