"""Packet scripts for TCP (the packetdrill style): the test plays the peer
192.0.2.2 on a pipe NIC, injects segments built by scapy and checks the
exact segments the stack sends back, and when, on the virtual clock.

    p = Peer(stack, eth)                       # the far end
    p.send("S", 1000, opts=linux_syn())        # inject
    sa = p.expect("SA", ack=1001, at=0.0)      # read what the stack sent
    p.expect_nothing(within=5.0)               # and what it does not

Sequence numbers are wire values. ``p.lss`` is the stack's ISS once seen;
times (``at``) are seconds after ``p.t0`` (the peer's creation, or
``p.mark()``), compared exactly in integer nanoseconds.
"""

from __future__ import annotations

import errno
import socket
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

import loopstack
from loopstack.link.pipe import PipeInterface
from loopstack.transport.tcp import fastpath

LOCAL = "192.0.2.1"
PEER = "192.0.2.2"
LPORT = 8080
PPORT = 40000
NS = 1_000_000_000
# Segments read from a pipe for another peer than the reader: by pipe, by port.
STASH: weakref.WeakKeyDictionary[PipeInterface, dict[int, deque[tuple[bytes, int]]]] = (
    weakref.WeakKeyDictionary())



def linux_syn(tsval: int = 100, mss: int = 1460, wscale: int = 7) -> list[tuple[str, Any]]:
    """The options of a Linux SYN, in scapy's form and Linux's order."""
    return [("MSS", mss), ("SAckOK", b""), ("Timestamp", (tsval, 0)), ("NOP", None),
            ("WScale", wscale)]


MSS_ONLY = [("MSS", 1460)]
MSS_SACK = [("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b"")]


T = TypeVar("T")


def off_and_on(run: Callable[[], T]) -> tuple[T, T]:
    """``run()`` with the fast paths off (the general path), then on;
    ``fastpath.enabled`` is restored whatever happens."""
    saved = fastpath.enabled
    try:
        fastpath.enabled = False
        general = run()
        fastpath.enabled = True
        fast = run()
    finally:
        fastpath.enabled = saved
    return general, fast


def ns(seconds: float) -> int:
    return round(seconds * NS)


@dataclass
class Seg:
    """A segment the stack sent, as the test sees it."""

    flags: str
    seq: int
    ack: int
    win: int
    opts: list[tuple[str, Any]]
    data: bytes
    at_ns: int  # virtual time it was read (= sent: reads advance time to it)
    raw: bytes = field(repr=False)
    urg: int = 0  # the urgent pointer field (0 unless URG is set)

    def opt(self, name: str) -> Any:
        for k, v in self.opts:
            if k == name:
                return v
        return None

    @property
    def names(self) -> list[str]:
        return [k for k, _ in self.opts]

    @property
    def tsval(self) -> int:
        ts = self.opt("Timestamp")
        assert ts is not None, f"no timestamp in {self}"
        return int(ts[0])

    @property
    def sack(self) -> list[tuple[int, int]]:
        v = self.opt("SAck")
        if not v:
            return []
        return [(v[i], v[i + 1]) for i in range(0, len(v), 2)]


class Peer:
    """The far end of eth0: 192.0.2.2:40000 talking to 192.0.2.1:8080."""

    def __init__(self, stack: loopstack.Stack, eth: PipeInterface, *, port: int = PPORT,
                 lport: int = LPORT) -> None:
        self.stack = stack
        self.eth = eth
        self.port = port
        self.lport = lport
        self.t0 = stack.clock.now_ns()
        self.iss = 1000  # our ISN
        self.lss = 0  # the stack's ISN
        self.ts = False  # timestamps negotiated: every segment carries one
        self.ts_off = 5000  # our TSval = virtual milliseconds + this
        self.ts_recent = 0  # the stack's last TSval, echoed
        self.sent: list[bytes] = []

    # -- time -----------------------------------------------------------------
    @property
    def now(self) -> float:
        """Seconds since t0."""
        return (self.stack.clock.now_ns() - self.t0) / NS

    def mark(self) -> None:
        self.t0 = self.stack.clock.now_ns()

    def advance(self, seconds: float) -> None:
        self.stack.advance(seconds)

    def tsval(self) -> int:
        return (self.stack.clock.now_ns() // 1_000_000 + self.ts_off) & 0xFFFFFFFF

    # -- sending ----------------------------------------------------------------
    def send(self, flags: str, seq: int, ack: int = 0, data: bytes = b"", *,
             win: int = 65535, opts: list[tuple[str, Any]] | None = None,
             tsval: int | None = None, sport: int | None = None,
             dport: int | None = None, urg: int = 0) -> None:
        """Inject one segment. With timestamps negotiated and no ``opts``,
        NOP NOP TS (TSval ``tsval`` or the peer's clock, TSecr the stack's
        last TSval) is added, as a Linux peer would."""
        if opts is None:
            opts = []
            if self.ts:
                tv = self.tsval() if tsval is None else tsval
                opts = [("NOP", None), ("NOP", None), ("Timestamp", (tv, self.ts_recent))]
        tcp = TCP(sport=sport or self.port, dport=dport or self.lport, flags=flags,
                  seq=seq % (1 << 32), ack=ack % (1 << 32), window=win, options=opts,
                  urgptr=urg)
        pkt = IP(src=PEER, dst=LOCAL) / tcp
        if data:
            pkt = pkt / Raw(data)
        raw = bytes(pkt)
        self.sent.append(raw)
        self.eth.inject(raw)

    # -- receiving --------------------------------------------------------------
    def _read(self, within: float) -> Seg | None:
        """The next segment for this peer's port; segments for other peers on
        the same pipe are kept for them."""
        stash = STASH.setdefault(self.eth, {})
        mine = stash.setdefault(self.port, deque())
        clock = self.stack.clock
        deadline = clock.now_ns() + ns(within)
        while not mine:
            raw = self.eth.read(max(0, deadline - clock.now_ns()) / NS)
            if raw is None:
                return None
            dport = IP(raw)[TCP].dport if TCP in IP(raw) else self.port
            stash.setdefault(dport, deque()).append((raw, clock.now_ns()))
        raw, at_ns = mine.popleft()
        ip = IP(raw)
        assert ip.src == LOCAL and ip.dst == PEER and TCP in ip, f"not TCP to the peer: {ip!r}"
        t = ip[TCP]
        # The pipe verifies checksums inbound; ours must be right outbound too.
        check = IP(raw)
        del check.chksum
        del check[TCP].chksum
        assert bytes(check) == raw, "bad checksum on a segment the stack sent"
        seg = Seg(str(t.flags), t.seq, t.ack, t.window, list(t.options), bytes(t.payload),
                  at_ns, raw, t.urgptr)
        if seg.opt("Timestamp") is not None:
            self.ts_recent = seg.tsval
        return seg

    def expect(self, flags: str, *, seq: int | None = None, ack: int | None = None,
               win: int | None = None, data: bytes | None = None, length: int | None = None,
               opts: list[tuple[str, Any]] | None = None, at: float | None = None,
               within: float = 600.0, sport: int | None = None, urg: int | None = None) -> Seg:
        """The next segment the stack sends (waiting up to ``within`` virtual
        seconds) must match every field given. ``at`` is seconds after t0."""
        seg = self._read(within)
        assert seg is not None, f"expected {flags} within {within} s of {self.now} s, got nothing"
        where = f"{seg} at {(seg.at_ns - self.t0) / NS} s"
        assert seg.flags == flags, where
        if seq is not None:
            assert seg.seq == seq % (1 << 32), f"seq {seg.seq} != {seq % (1 << 32)}: {where}"
        if ack is not None:
            assert seg.ack == ack % (1 << 32), f"ack {seg.ack} != {ack % (1 << 32)}: {where}"
        if win is not None:
            assert seg.win == win, f"win {seg.win} != {win}: {where}"
        if data is not None:
            assert seg.data == data, where
        if length is not None:
            assert len(seg.data) == length, f"len {len(seg.data)} != {length}: {where}"
        if opts is not None:
            assert seg.opts == opts, where
        if at is not None:
            assert seg.at_ns - self.t0 == ns(at), f"sent at {(seg.at_ns - self.t0) / NS} s, " \
                f"expected {at} s: {seg}"
        if sport is not None:
            ip = IP(seg.raw)
            assert ip[TCP].sport == sport, where
        if urg is not None:
            assert seg.urg == urg, f"urgent pointer {seg.urg} != {urg}: {where}"
        return seg

    def expect_nothing(self, within: float = 0.0) -> None:
        seg = self._read(within)
        assert seg is None, f"unexpected {seg} at {(seg.at_ns - self.t0) / NS} s"

    # -- whole handshakes -----------------------------------------------------------
    def open_to(self, listener: Any, *, opts: list[tuple[str, Any]] | None = None,
                win: int = 65535) -> Any:
        """Passive open on the stack: SYN, SYN-ACK, ACK; returns accept()'s socket
        (non-blocking). Leaves snd at iss+1 and rcv at lss+1."""
        opts = MSS_ONLY if opts is None else opts
        self.send("S", self.iss, opts=opts, win=win)
        sa = self.expect("SA", ack=self.iss + 1, within=0)
        self.lss = sa.seq
        self.ts = sa.opt("Timestamp") is not None and any(k == "Timestamp" for k, _ in opts)
        self.send("A", self.iss + 1, self.lss + 1, win=win)
        conn, _ = listener.accept()
        conn.setblocking(False)
        self.expect_nothing()
        return conn

    def open_from(self, sock: Any, *, opts: list[tuple[str, Any]] | None = None,
                  win: int = 65535) -> Seg:
        """Active open by the stack: ``sock`` connects (non-blocking) to the peer,
        which answers the SYN; returns the SYN. The stack's final ACK is read."""
        sock.setblocking(False)
        assert sock.connect_ex((PEER, self.port)) == errno.EINPROGRESS
        syn = self.expect("S", within=0)
        self.lss = syn.seq
        self.lport = IP(syn.raw)[TCP].sport
        opts = MSS_ONLY if opts is None else opts
        self.ts = any(k == "Timestamp" for k, _ in opts)
        self.send("SA", self.iss, self.lss + 1, opts=opts, win=win)
        self.expect("A", seq=self.lss + 1, ack=self.iss + 1, within=0)
        return syn


@pytest.fixture
def net() -> Iterator[tuple[loopstack.Stack, PipeInterface]]:
    stack = loopstack.Stack(clock="virtual", seed=7)
    eth = stack.add_interface("eth0", f"{LOCAL}/24", mtu=1500)
    try:
        yield stack, eth
    finally:
        stack.close()


@pytest.fixture
def peer(net: tuple[loopstack.Stack, PipeInterface]) -> Peer:
    return Peer(*net)


@pytest.fixture
def listener(net: tuple[loopstack.Stack, PipeInterface]) -> Iterator[Any]:
    stack, _ = net
    s = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((LOCAL, LPORT))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def counters(stack: loopstack.Stack) -> dict[str, int]:
    """Tcp and TcpExt counters, flat (as nstat: TcpExtPAWSEstab)."""
    st = stack.stats()
    out = {f"Tcp{k}": v for k, v in st["Tcp"].items()}
    out.update({f"TcpExt{k}": v for k, v in st["TcpExt"].items()})
    return out
