"""Congestion control: Reno (RFC 5681) and CUBIC (RFC 9438), Linux's
default. Windows count segments, as Linux's snd_cwnd does.
"""

from __future__ import annotations

from ...clock import NS_PER_SEC

INFINITE_SSTHRESH = 0x7FFFFFFF


class Reno:
    """RFC 5681 3.1: slow start below ssthresh, then one segment per RTT."""

    __slots__ = ("cwnd", "ssthresh", "_cwnd_cnt")
    name = "reno"

    def __init__(self, initial_cwnd: int) -> None:
        self.cwnd = initial_cwnd
        self.ssthresh = INFINITE_SSTHRESH
        self._cwnd_cnt = 0

    def on_ack(self, acked: int, now_ns: int, srtt_ns: int) -> None:
        """``acked`` segments were newly acknowledged outside recovery."""
        if acked <= 0:
            return
        if self.cwnd < self.ssthresh:
            grow = min(acked, self.ssthresh - self.cwnd)
            self.cwnd += grow
            acked -= grow
            if acked <= 0:
                return
        self._congestion_avoidance(acked, now_ns, srtt_ns)

    def _congestion_avoidance(self, acked: int, now_ns: int, srtt_ns: int) -> None:
        self._cwnd_cnt += acked
        if self._cwnd_cnt >= self.cwnd:
            self.cwnd += self._cwnd_cnt // self.cwnd
            self._cwnd_cnt %= self.cwnd

    def ssthresh_after_loss(self, now_ns: int) -> int:
        """RFC 5681 (4): half the window, at least two segments."""
        return max(self.cwnd >> 1, 2)

    def on_loss(self, now_ns: int) -> None:
        self.ssthresh = self.ssthresh_after_loss(now_ns)

    def on_timeout(self, now_ns: int) -> None:
        self.ssthresh = self.ssthresh_after_loss(now_ns)
        self.cwnd = 1
        self._cwnd_cnt = 0


class Cubic(Reno):
    """RFC 9438: W_cubic(t) = C (t - K)^3 + W_max, with the Reno-friendly
    estimate (4.3) and fast convergence (4.7). C = 0.4, beta = 0.7."""

    __slots__ = ("w_max", "w_last_max", "k", "epoch_start", "w_est", "_acc")
    name = "cubic"
    C = 0.4
    BETA = 0.7

    def __init__(self, initial_cwnd: int) -> None:
        super().__init__(initial_cwnd)
        self.w_max = 0.0
        self.w_last_max = 0.0
        self.k = 0.0
        self.epoch_start: int | None = None
        self.w_est = 0.0
        self._acc = 0.0

    def _congestion_avoidance(self, acked: int, now_ns: int, srtt_ns: int) -> None:
        if self.epoch_start is None:
            self.epoch_start = now_ns
            if self.cwnd < self.w_max:
                self.k = ((self.w_max - self.cwnd) / self.C) ** (1 / 3)
            else:
                self.k = 0.0
                self.w_max = float(self.cwnd)
            self.w_est = float(self.cwnd)
        t = (now_ns - self.epoch_start + srtt_ns) / NS_PER_SEC
        target = self.C * (t - self.k) ** 3 + self.w_max
        # 4.3: the Reno-friendly region, alpha = 3 (1 - beta) / (1 + beta)
        alpha = 3 * (1 - self.BETA) / (1 + self.BETA)
        self.w_est += alpha * acked / self.cwnd
        target = max(target, self.w_est)
        target = min(target, 1.5 * self.cwnd)  # 4.4: at most 1.5x per RTT
        if target > self.cwnd:
            self._acc += (target - self.cwnd) / self.cwnd * acked
        else:
            self._acc += acked / (100 * self.cwnd)
        if self._acc >= 1:
            step = int(self._acc)
            self.cwnd += step
            self._acc -= step

    def ssthresh_after_loss(self, now_ns: int) -> int:
        return max(int(self.cwnd * self.BETA), 2)

    def on_loss(self, now_ns: int) -> None:
        self.epoch_start = None
        w = float(self.cwnd)
        # 4.7 fast convergence: give up bandwidth when W_max keeps shrinking.
        self.w_max = w * (1 + self.BETA) / 2 if w < self.w_last_max else w
        self.w_last_max = w
        self.ssthresh = self.ssthresh_after_loss(now_ns)

    def on_timeout(self, now_ns: int) -> None:
        self.on_loss(now_ns)
        self.cwnd = 1
        self._cwnd_cnt = 0


ALGORITHMS: dict[str, type[Reno]] = {"reno": Reno, "cubic": Cubic}
