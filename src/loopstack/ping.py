"""ping through a stack: ICMP echo requests on a schedule, replies timed as
they arrive (`ping -c -i -s -W -t`), with iputils' arithmetic for the
summary."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .ip.addr import AF_INET, AF_INET6, family_of, to_text

if TYPE_CHECKING:
    from .stack import Stack

MAX_PAYLOAD_V4 = 65535 - 20 - 8
MAX_PAYLOAD_V6 = 65535 - 8
_TIMEVAL = struct.Struct("!qq")  # the send time at the start of the data, as iputils


@dataclass(slots=True)
class PingReply:
    seq: int
    address: str
    ttl: int
    rtt: float  # seconds
    size: int  # ICMP bytes
    duplicate: bool = False


@dataclass
class PingResult:
    host: str
    address: str
    family: int
    size: int
    transmitted: int = 0
    received: int = 0
    duplicates: int = 0
    rtts: list[float] = field(default_factory=list)  # empty when size < 16 (untimed)
    replies: list[PingReply] = field(default_factory=list)
    elapsed: float = 0.0  # seconds from first send to the end
    interrupted: bool = False

    @property
    def timed(self) -> bool:
        """iputils times replies only when the data holds a timeval (16 bytes)."""
        return self.size >= _TIMEVAL.size

    @property
    def loss(self) -> float:
        """Fraction of requests that got no reply (0.0 to 1.0)."""
        if not self.transmitted:
            return 0.0
        return (self.transmitted - self.received) / self.transmitted

    @property
    def rtt_min(self) -> float:
        return min(self.rtts) if self.rtts else 0.0

    @property
    def rtt_max(self) -> float:
        return max(self.rtts) if self.rtts else 0.0

    @property
    def rtt_avg(self) -> float:
        return sum(self.rtts) / len(self.rtts) if self.rtts else 0.0

    @property
    def rtt_mdev(self) -> float:
        """iputils' mdev: the standard deviation of the RTTs."""
        if not self.rtts:
            return 0.0
        avg = self.rtt_avg
        return math.sqrt(max(0.0, sum(r * r for r in self.rtts) / len(self.rtts) - avg * avg))


def max_payload(family: int) -> int:
    return MAX_PAYLOAD_V6 if family == AF_INET6 else MAX_PAYLOAD_V4


def _pattern(size: int) -> bytes:
    return bytes((i + 8) & 0xFF for i in range(size))


def _payload(pattern: bytes, now: int) -> bytes:
    """The send time as a timeval, then iputils' byte pattern."""
    size = len(pattern)
    if size >= _TIMEVAL.size:
        stamp = _TIMEVAL.pack(now // 1_000_000_000, (now // 1000) % 1_000_000)
        return stamp + pattern[_TIMEVAL.size :]
    return pattern


def run_ping(
    stack: Stack, host: str, *, count: int = 1, interval: float = 1.0, size: int = 56,
    timeout: float = 1.0, ttl: int = 64, family: int = 0,
    on_reply: Callable[[PingReply], None] | None = None,
    interruptible: bool = False,
) -> PingResult:
    """Ping ``host``; ``count`` 0 means until interrupted (KeyboardInterrupt
    ends it with a result when ``interruptible``)."""
    if count < 0:
        raise ValueError(f"count {count} is negative: use 1 or more (0 to ping until stopped)")
    if interval < 0:
        raise ValueError(f"interval {interval} is negative: use 0 or more seconds")
    if timeout <= 0:
        raise ValueError(f"timeout {timeout} must be positive")
    if not 1 <= ttl <= 255:
        raise ValueError(f"ttl {ttl} out of range: use 1 to 255")
    addr = stack.resolve(host, family)[0]
    fam = family_of(addr)
    if not 0 <= size <= max_payload(fam):
        raise ValueError(
            f"packet size {size} out of range: use 0 to {max_payload(fam)} over "
            f"{'IPv6' if fam == AF_INET6 else 'IPv4'}"
        )
    clock = stack.clock
    icmp = stack.icmp6 if fam == AF_INET6 else stack.icmp4
    result = PingResult(host, to_text(addr), fam, size)
    with stack.locked:
        ep = icmp.open_endpoint()
    pattern = _pattern(size)
    sent_at: dict[int, int] = {}
    seen: set[int] = set()
    interval_ns = int(interval * 1e9)
    timeout_ns = int(timeout * 1e9)

    def collect() -> None:
        while ep.replies:
            r = ep.replies.popleft()
            sent = sent_at.get(r.seq)
            if sent is None:
                continue
            dup = r.seq in seen
            reply = PingReply(r.seq, to_text(r.src), r.ttl, (r.received_ns - sent) / 1e9, r.size,
                              dup)
            if dup:
                result.duplicates += 1
            else:
                seen.add(r.seq)
                result.received += 1
                if result.timed:
                    result.rtts.append(reply.rtt)
            result.replies.append(reply)
            if on_reply is not None:
                on_reply(reply)

    def wait_until(deadline_ns: int, done: Callable[[], bool]) -> None:
        while True:
            with stack.locked:
                collect()
                now = clock.now_ns()
                if done() or now >= deadline_ns:
                    return
                stack.wait_for(ep.cond, lambda: bool(ep.replies), (deadline_ns - now) / 1e9)
                collect()

    start = clock.now_ns()
    try:
        seq = 0
        while count == 0 or seq < count:
            seq += 1
            wait_until(start + (seq - 1) * interval_ns, lambda: False)
            data = _payload(pattern, stack.wall_ns())
            with stack.locked:
                sent_at[seq & 0xFFFF] = clock.now_ns()
                ep.send_echo(addr, seq & 0xFFFF, data, ttl)  # ENETUNREACH propagates
                result.transmitted += 1
                collect()
        last = clock.now_ns()
        wait_until(last + timeout_ns, lambda: len(seen) >= result.transmitted)
    except KeyboardInterrupt:
        if not interruptible:
            raise
        result.interrupted = True
    finally:
        with stack.locked:
            collect()
            ep.close()
        result.elapsed = (clock.now_ns() - start) / 1e9
    return result


__all__ = ["PingReply", "PingResult", "run_ping", "max_payload", "AF_INET", "AF_INET6"]
