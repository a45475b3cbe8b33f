"""tc-netem as a pure model: what happens to each packet, and when it leaves.

Syntax follows tc-netem(8) as iproute2's tc parses it (tc/q_netem.c);
behaviour follows the kernel's netem_enqueue() (net/sched/sch_netem.c).
The device hands each transmitted packet to Netem.enqueue() and schedules the
copies it gets back on the stack's clock.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist
from typing import Any

_NS_PER_SEC = 1_000_000_000

DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")


@dataclass(frozen=True)
class GilbertElliott:
    """`loss gemodel p [r [1-h [1-k]]]` (tc-netem(8)).

    p: good -> bad transition, r: bad -> good, one_minus_h: loss probability in
    the bad state, one_minus_k: loss probability in the good state.
    """

    p: float
    r: float
    one_minus_h: float = 1.0
    one_minus_k: float = 0.0


@dataclass(frozen=True)
class FourStateLoss:
    """`loss state p13 [p31 [p32 [p23 [p14]]]]` (tc-netem(8)).

    State 1 is good reception, 2 good reception within a burst, 3 a burst
    loss, 4 an isolated loss; pXY is the probability of going from X to Y.
    """

    p13: float
    p31: float
    p32: float = 0.0
    p23: float = 1.0
    p14: float = 0.0


LossModel = GilbertElliott | FourStateLoss


@dataclass(frozen=True)
class NetemSpec:
    """One netem qdisc's options. Probabilities are fractions (0.01 is 1%)."""

    delay_ns: int = 0
    jitter_ns: int = 0
    delay_correlation: float = 0.0
    distribution: str = "uniform"
    loss: float = 0.0
    loss_correlation: float = 0.0
    loss_model: LossModel | None = None
    duplicate: float = 0.0
    duplicate_correlation: float = 0.0
    reorder: float = 0.0
    reorder_correlation: float = 0.0
    gap: int = 0
    corrupt: float = 0.0
    corrupt_correlation: float = 0.0
    rate_bps: int = 0
    packet_overhead: int = 0
    cell_size: int = 0
    cell_overhead: int = 0
    limit: int = 1000

    def __post_init__(self) -> None:
        probabilities = [
            (name, getattr(self, name))
            for name in (
                "delay_correlation", "loss", "loss_correlation", "duplicate",
                "duplicate_correlation", "reorder", "reorder_correlation",
                "corrupt", "corrupt_correlation",
            )
        ]
        if self.loss_model is not None:
            probabilities += dataclasses.asdict(self.loss_model).items()
        for name, value in probabilities:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"netem: {name} is {value!r}, not a fraction between 0 and 1")
        for name in ("delay_ns", "jitter_ns", "gap", "rate_bps", "cell_size", "limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"netem: {name} must not be negative")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f'netem: "{self.distribution}" is not a distribution '
                f"(use {', '.join(DISTRIBUTIONS)})"
            )
        # The checks tc makes before it talks to the kernel (tc/q_netem.c).
        if (self.loss or self.loss_correlation) and self.loss_model is not None:
            raise ValueError("netem: give one loss model, not both a loss percentage and a model")
        if self.reorder:
            if self.delay_ns == 0:
                raise ValueError(
                    "netem: reordering not possible without specifying some delay "
                    "(e.g. delay 10ms reorder 25%)"
                )
            if self.gap == 0:
                object.__setattr__(self, "gap", 1)
        elif self.gap:
            raise ValueError("netem: gap specified without reorder probability")
        if self.distribution != "uniform" and not (self.delay_ns and self.jitter_ns):
            raise ValueError(
                f"netem: distribution {self.distribution} needs a delay and a jitter "
                f"(e.g. delay 20ms 5ms distribution {self.distribution})"
            )

    @classmethod
    def parse(cls, text: str) -> NetemSpec:
        """Read tc's netem options, e.g. "delay 20ms 5ms loss 1% rate 10mbit"."""
        return _Parser(text.split()).spec()

    @classmethod
    def from_kwargs(
        cls,
        *,
        delay: float = 0,
        jitter: float = 0,
        loss: float = 0,
        duplicate: float = 0,
        reorder: float = 0,
        corrupt: float = 0,
        rate: int = 0,
        limit: int = 1000,
        gap: int = 0,
        distribution: str = "uniform",
    ) -> NetemSpec:
        """Seconds for times, fractions for probabilities, bits per second for rate."""
        return cls(
            delay_ns=round(delay * _NS_PER_SEC),
            jitter_ns=round(jitter * _NS_PER_SEC),
            distribution=distribution,
            loss=loss,
            duplicate=duplicate,
            reorder=reorder,
            gap=gap,
            corrupt=corrupt,
            rate_bps=rate,
            limit=limit,
        )

    def __str__(self) -> str:
        """tc's own syntax, in the order `tc qdisc show` prints it; parse() reads it back."""
        words = [f"limit {self.limit}"]
        if self.delay_ns or self.jitter_ns or self.delay_correlation:
            words.append(f"delay {_format_time(self.delay_ns)}")
            if self.jitter_ns or self.delay_correlation:
                words.append(_format_time(self.jitter_ns))
            if self.delay_correlation:
                words.append(_format_percent(self.delay_correlation))
        if self.distribution != "uniform":
            words.append(f"distribution {self.distribution}")
        model = self.loss_model
        if isinstance(model, GilbertElliott):
            words.append("loss gemodel")
            words += map(_format_percent, (model.p, model.r, model.one_minus_h, model.one_minus_k))
        elif isinstance(model, FourStateLoss):
            words.append("loss state")
            words += map(_format_percent, (model.p13, model.p31, model.p32, model.p23, model.p14))
        words += _format_probability("loss", self.loss, self.loss_correlation)
        words += _format_probability("duplicate", self.duplicate, self.duplicate_correlation)
        words += _format_probability("reorder", self.reorder, self.reorder_correlation)
        if self.gap > 1:
            words.append(f"gap {self.gap}")
        words += _format_probability("corrupt", self.corrupt, self.corrupt_correlation)
        if self.rate_bps or self.packet_overhead or self.cell_size or self.cell_overhead:
            words.append(f"rate {_format_rate(self.rate_bps)}")
            # positional: an option is printed when it, or any after it, is set
            tail = [self.packet_overhead, self.cell_size, self.cell_overhead]
            while tail and not tail[-1]:
                tail.pop()
            words += map(str, tail)
        return " ".join(words)


# Parsing (tc/q_netem.c, and get_time() / get_rate64() of tc's utils)

_NUMBER = re.compile(r"\d+\.?\d*|\.\d+", re.ASCII)
_TIME_UNITS = {
    "s": 10**9, "sec": 10**9, "secs": 10**9,
    "ms": 10**6, "msec": 10**6, "msecs": 10**6,
    "us": 10**3, "usec": 10**3, "usecs": 10**3,
    "ns": 1, "nsec": 1, "nsecs": 1,
    "": 10**3,  # tc reads a bare number as microseconds
}
_RATE_UNITS = {  # bits per second; tc compares suffixes case-insensitively
    "": 1, "bit": 1,
    "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
    "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40,
    "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12,
    "kibps": 8 * 2**10, "mibps": 8 * 2**20, "gibps": 8 * 2**30, "tibps": 8 * 2**40,
}
_KEYWORDS = (
    "limit", "delay", "distribution", "loss", "duplicate", "reorder", "gap", "corrupt", "rate",
)


def _number(token: str) -> tuple[Decimal, str] | None:
    """The leading decimal number of token and the unit after it."""
    match = _NUMBER.match(token)
    if match is None:
        return None
    return Decimal(match.group()), token[match.end():].lower()


def _parse_time(token: str) -> int:
    split = _number(token)
    if split is None or split[1] not in _TIME_UNITS:
        raise ValueError(f'netem: "{token}" is not a time (use e.g. 20ms)')
    value, unit = split
    return int((value * _TIME_UNITS[unit]).to_integral_value())


def _parse_percent(token: str) -> float:
    split = _number(token)
    if split is None or split[1] not in ("", "%") or split[0] > 100:
        raise ValueError(f'netem: "{token}" is not a percentage from 0% to 100% (use e.g. 1%)')
    return float(split[0] / 100)


def _parse_rate(token: str) -> int:
    split = _number(token)
    if split is None or split[1] not in _RATE_UNITS:
        raise ValueError(f'netem: "{token}" is not a rate (use e.g. 10mbit)')
    value, unit = split
    return int((value * _RATE_UNITS[unit]).to_integral_value())


def _parse_int(token: str, what: str, signed: bool = False) -> int:
    if not re.fullmatch(r"-?\d+" if signed else r"\d+", token, re.ASCII):
        raise ValueError(f'netem: "{token}" is not {what}')
    return int(token)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self._tokens = tokens
        self._i = 0
        self._fields: dict[str, Any] = {}

    def spec(self) -> NetemSpec:
        while self._i < len(self._tokens):
            keyword = self._take()
            match keyword:
                case "limit":
                    self._set(limit=_parse_int(self._arg("limit", "10"), "a packet count"))
                case "delay" | "latency":
                    self._set(delay_ns=_parse_time(self._arg(keyword, "20ms")))
                    if self._next_is_number():
                        self._set(jitter_ns=_parse_time(self._take()))
                        if self._next_is_number():
                            self._set(delay_correlation=_parse_percent(self._take()))
                case "distribution":
                    self._set(distribution=self._arg(keyword, "normal"))
                case "loss" | "drop":
                    self._loss(keyword)
                case "duplicate" | "reorder" | "corrupt":
                    self._set(**{keyword: _parse_percent(self._arg(keyword, "1%"))})
                    if self._next_is_number():
                        self._set(**{f"{keyword}_correlation": _parse_percent(self._take())})
                case "gap":
                    self._set(gap=_parse_int(self._arg(keyword, "5"), "a packet count"))
                case "rate":
                    self._rate()
                case "ecn":
                    raise ValueError('netem: "ecn" is not supported: lost packets are dropped')
                case _:
                    raise ValueError(
                        f'netem: unknown keyword "{keyword}" (expected one of: '
                        f"{', '.join(_KEYWORDS)})"
                    )
        return NetemSpec(**self._fields)

    def _loss(self, keyword: str) -> None:
        if "loss" in self._fields or "loss_model" in self._fields:
            raise ValueError(f'netem: "{keyword}" given twice')
        # "loss 1%" is the older form of "loss random 1%"
        model = "random" if self._next_is_number() else self._arg(keyword, "random 1%")
        match model:
            case "random":
                self._set(loss=_parse_percent(self._arg(f"{keyword} random", "1%")))
                if self._next_is_number():
                    self._set(loss_correlation=_parse_percent(self._take()))
            case "gemodel":
                p = _parse_percent(self._arg("loss gemodel", "1%"))
                r, one_minus_h, one_minus_k = self._optional_percents([1.0 - p, 1.0, 0.0])
                self._set(loss_model=GilbertElliott(p, r, one_minus_h, one_minus_k))
            case "state":
                p13 = _parse_percent(self._arg("loss state", "1%"))
                p31, p32, p23, p14 = self._optional_percents([1.0 - p13, 0.0, 1.0, 0.0])
                self._set(loss_model=FourStateLoss(p13, p31, p32, p23, p14))
            case _:
                raise ValueError(
                    f'netem: "{model}" is not a loss model (use a percentage, '
                    '"random", "gemodel" or "state")'
                )

    def _rate(self) -> None:
        self._set(rate_bps=_parse_rate(self._arg("rate", "10mbit")))
        if self._next_is_number(signed=True):
            self._set(packet_overhead=_parse_int(self._take(), "a byte count", signed=True))
            if self._next_is_number():
                self._set(cell_size=_parse_int(self._take(), "a byte count"))
                if self._next_is_number(signed=True):
                    overhead = _parse_int(self._take(), "a byte count", signed=True)
                    self._set(cell_overhead=overhead)

    def _optional_percents(self, defaults: list[float]) -> list[float]:
        """Positional percentages: each is read while the next token is a number."""
        values: list[float] = []
        while len(values) < len(defaults) and self._next_is_number():
            values.append(_parse_percent(self._take()))
        return values + defaults[len(values):]

    def _set(self, **fields: Any) -> None:
        self._fields.update(fields)

    def _take(self) -> str:
        token = self._tokens[self._i]
        self._i += 1
        return token

    def _arg(self, keyword: str, example: str) -> str:
        if self._i == len(self._tokens):
            raise ValueError(
                f'netem: "{keyword}" needs a value after it (e.g. {keyword} {example})'
            )
        return self._take()

    def _next_is_number(self, signed: bool = False) -> bool:
        """tc's NEXT_IS_NUMBER(): optional arguments start with a digit (or '-')."""
        if self._i == len(self._tokens):
            return False
        first = self._tokens[self._i][:1]
        return "0" <= first <= "9" or (signed and first == "-")


def _format_time(ns: int) -> str:
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def _format_rate(bps: int) -> str:
    for unit, scale in (("tbit", 10**12), ("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps and bps % scale == 0:
            return f"{bps // scale}{unit}"
    return f"{bps}bit"


def _format_percent(fraction: float) -> str:
    # The shortest repr times 100 is exact in Decimal: parsing divides back to the same float.
    return f"{(Decimal(repr(fraction)) * 100).normalize():f}%"


def _format_probability(keyword: str, probability: float, correlation: float) -> list[str]:
    if not (probability or correlation):
        return []
    words = [keyword, _format_percent(probability)]
    if correlation:
        words.append(_format_percent(correlation))
    return words


# The model


@dataclass
class NetemStats:
    """Counters as `tc -s qdisc show` would report them, plus what netem did to packets."""

    sent_packets: int = 0
    sent_bytes: int = 0
    dropped: int = 0  # lost or over the limit, as tc's "dropped"
    overlimits: int = 0  # the part of dropped that found the queue full
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0  # sent at once, ahead of delayed packets (tc's "requeues")


class _CorrelatedRandom:
    """sch_netem's get_crandom(): next = (1 - rho) * uniform + rho * last."""

    __slots__ = ("_rng", "_rho", "_last")

    def __init__(self, rng: random.Random, rho: float) -> None:
        self._rng = rng
        self._rho = rho
        self._last = rng.random()  # init_crandom() starts from a random value

    def next(self) -> float:
        value = self._rng.random()
        if self._rho:
            value = (1.0 - self._rho) * value + self._rho * self._last
            self._last = value
        return value


# iproute2's distribution tables hold the inverse CDF, scaled by NETEM_DIST_SCALE
# (8192) into 16-bit entries: no value beyond 32767 / 8192 standard deviations.
_TABLE_MAX = 32767 / 8192
_STANDARD_NORMAL = NormalDist()


def _normal(u: float) -> float:
    # u is in [0, 1); inv_cdf needs (0, 1)
    return max(-_TABLE_MAX, min(_TABLE_MAX, _STANDARD_NORMAL.inv_cdf(max(u, 1e-12))))


def _pareto(u: float) -> float:
    # netem/pareto.c: alpha 3, shifted by its mean 1.5 and scaled by 4/3
    return min(_TABLE_MAX, (math.pow(1.0 - u, -1 / 3) - 1.5) * 4 / 3)


def _paretonormal(u: float) -> float:
    # netem/paretonormal.c: a quarter normal, three quarters pareto, from the same quantile
    return (_normal(u) + 3 * _pareto(u)) / 4


_QUANTILES = {"normal": _normal, "pareto": _pareto, "paretonormal": _paretonormal}


# Told of every packet a netem drops, as (netem, packet): the report
# recorders (report/recorder.py) register here while a report is requested,
# so a stack nobody observes pays nothing.
drop_observers: list[Callable[[Netem, bytes], None]] = []


def _tell_dropped(netem: Netem, packet: bytes) -> None:
    for observer in list(drop_observers):
        observer(netem, packet)


class Netem:
    """One netem qdisc. The same seed and the same packets give the same results.

    Per packet, the random draws happen in netem_enqueue()'s order: duplicate,
    loss, corruption (then its byte and bit), reorder, delay -- each only when
    that impairment is configured.
    """

    def __init__(self, spec: NetemSpec, seed: int | None = None) -> None:
        self.spec = spec
        self.stats = NetemStats()
        self._rng = rng = random.Random(seed)
        self._delay_random = _CorrelatedRandom(rng, spec.delay_correlation)
        self._loss_random = _CorrelatedRandom(rng, spec.loss_correlation)
        self._duplicate_random = _CorrelatedRandom(rng, spec.duplicate_correlation)
        self._reorder_random = _CorrelatedRandom(rng, spec.reorder_correlation)
        self._corrupt_random = _CorrelatedRandom(rng, spec.corrupt_correlation)
        self._loss_state = 1  # Markov state: 1 good (also Gilbert-Elliott's good), 3 burst
        self._counter = 0  # packets delayed since the last one sent at once (q->counter)
        self._waiting: list[int] = []  # send times still in the future: the queue length
        self._last_send_ns = 0  # the latest send time given out

    def enqueue(self, packet: bytes, now_ns: int) -> list[tuple[int, bytes]]:
        """The copies of packet to send, each with its send time (>= now_ns)."""
        out: list[tuple[int, bytes]] = []
        self._enqueue(packet, now_ns, out, may_duplicate=True)
        return out

    def _enqueue(
        self, packet: bytes, now_ns: int, out: list[tuple[int, bytes]], may_duplicate: bool
    ) -> None:
        spec, stats = self.spec, self.stats
        # A duplicated packet that is also lost still goes out once.
        copies = 1
        if may_duplicate and spec.duplicate and self._duplicate_random.next() < spec.duplicate:
            copies += 1
        if self._loss_event():
            copies -= 1
        if copies == 0:
            stats.dropped += 1
            if drop_observers:
                _tell_dropped(self, packet)
            return
        if copies == 2:
            # The clone goes through netem first, and is never duplicated again.
            stats.duplicated += 1
            self._enqueue(packet, now_ns, out, may_duplicate=False)

        if spec.corrupt and self._corrupt_random.next() < spec.corrupt and packet:
            corrupted = bytearray(packet)
            corrupted[self._rng.randrange(len(packet))] ^= 1 << self._rng.randrange(8)
            packet = bytes(corrupted)
            stats.corrupted += 1

        while self._waiting and self._waiting[0] <= now_ns:
            heapq.heappop(self._waiting)
        if len(self._waiting) >= spec.limit:
            stats.dropped += 1
            stats.overlimits += 1
            if drop_observers:
                _tell_dropped(self, packet)
            return

        if (
            spec.gap == 0
            or self._counter < spec.gap - 1
            or self._reorder_random.next() >= spec.reorder
        ):
            send_ns = now_ns + max(0, self._delay())
            if spec.rate_bps:
                # Serialize behind the last packet still waiting, then take our own
                # transmission time.
                send_ns = max(send_ns, self._last_send_ns) + self._transmission_ns(len(packet))
            self._counter += 1
            heapq.heappush(self._waiting, send_ns)
            self._last_send_ns = max(self._last_send_ns, send_ns)
        else:
            # Reordering: this packet jumps the queue and leaves now.
            send_ns = now_ns
            self._counter = 0
            stats.reordered += 1
        stats.sent_packets += 1
        stats.sent_bytes += len(packet)
        out.append((send_ns, packet))

    def _loss_event(self) -> bool:
        model = self.spec.loss_model
        rng = self._rng
        if isinstance(model, GilbertElliott):
            # loss_gilb_ell(): move between states, then lose with the old state's probability
            if self._loss_state == 1:
                if rng.random() < model.p:
                    self._loss_state = 3
                return rng.random() < model.one_minus_k
            if rng.random() < model.r:
                self._loss_state = 1
            return rng.random() < model.one_minus_h
        if isinstance(model, FourStateLoss):
            # loss_4state(): one draw picks the next state; states 3 and 4 lose the packet
            u = rng.random()
            match self._loss_state:
                case 1:
                    if u < model.p14:
                        self._loss_state = 4
                    elif u < model.p14 + model.p13:
                        self._loss_state = 3
                case 2:
                    if u < model.p23:
                        self._loss_state = 3
                case 3:
                    if u < model.p32:
                        self._loss_state = 2
                    elif u < model.p32 + model.p31:
                        self._loss_state = 1
                case 4:
                    self._loss_state = 1
            return self._loss_state >= 3
        return bool(self.spec.loss) and self._loss_random.next() < self.spec.loss

    def _delay(self) -> int:
        """tabledist(): the delay, spread around it by the jitter (may be negative)."""
        spec = self.spec
        if spec.jitter_ns == 0:
            return spec.delay_ns
        u = self._delay_random.next()
        if spec.distribution == "uniform":
            # [-jitter, +jitter), as rnd % (2 * sigma) - sigma
            return spec.delay_ns + int(u * 2 * spec.jitter_ns) - spec.jitter_ns
        return spec.delay_ns + round(_QUANTILES[spec.distribution](u) * spec.jitter_ns)

    def _transmission_ns(self, length: int) -> int:
        """packet_time_ns(): the time the packet takes at the configured rate."""
        spec = self.spec
        length += spec.packet_overhead
        if spec.cell_size:
            cells = -(-length // spec.cell_size)
            length = cells * (spec.cell_size + spec.cell_overhead)
        return max(0, length) * 8 * _NS_PER_SEC // spec.rate_bps
