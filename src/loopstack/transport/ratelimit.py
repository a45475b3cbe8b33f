"""Token buckets for ICMP error rate limiting (Linux icmp_ratelimit,
icmp_msgs_per_sec / icmp_msgs_burst)."""

from __future__ import annotations

from ..clock import NS_PER_SEC, Clock


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "_clock")

    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._clock = clock
        self._stamp = clock.now_ns()

    def take(self) -> bool:
        now = self._clock.now_ns()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate / NS_PER_SEC)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class IcmpRateLimiter:
    """A global bucket (1000/s, burst 50) and one per destination (one per
    second, burst 6: XRLIM_BURST_FACTOR), as Linux. Never applied when the
    error leaves through the loopback (icmpv4_xrlim_allow)."""

    def __init__(self, clock: Clock, per_sec: float = 1000, burst: float = 50) -> None:
        self._clock = clock
        self._global = TokenBucket(clock, per_sec, burst)
        self._peers: dict[bytes, TokenBucket] = {}

    def allow(self, dst: bytes, mib: dict[str, int]) -> bool:
        if not self._global.take():
            mib["OutRateLimitGlobal"] = mib.get("OutRateLimitGlobal", 0) + 1
            return False
        bucket = self._peers.get(dst)
        if bucket is None:
            if len(self._peers) > 4096:
                self._peers.clear()
            bucket = self._peers[dst] = TokenBucket(self._clock, 1.0, 6.0)
        if not bucket.take():
            mib["OutRateLimitHost"] += 1
            return False
        return True
