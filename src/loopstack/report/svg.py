"""Small pieces shared by the drawings: escaping, numbers, axis ticks."""

from __future__ import annotations

import math
from html import escape


def esc(text: object) -> str:
    """Text for HTML and for SVG read as XML (no named entities but XML's)."""
    return escape(str(text), quote=True).replace("&#x27;", "&#39;")


def f1(x: float) -> str:
    """A coordinate with one decimal, no trailing zeros."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round tick values covering [lo, hi], about n of them."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def si(v: float) -> str:
    """1234567 -> "1.23M", 15000 -> "15k"."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            s = f"{v / div:.3g}"
            return s + suffix
    return f"{v:.3g}" if a and a < 1 else str(int(v))


def duration(ns: int) -> str:
    """A duration for people: "850 µs", "12.3 ms", "4.56 s", "3 min 2 s"."""
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.3g} ms"
    if ns < 120_000_000_000:
        return f"{ns / 1e9:.3g} s"
    return f"{ns // 60_000_000_000} min {ns % 60_000_000_000 // 1_000_000_000} s"


def time_unit(span_ns: int) -> tuple[float, str]:
    """(divisor from ns, unit name) for time labels over ``span_ns``."""
    if span_ns < 2_000_000:
        return 1e3, "µs"
    if span_ns < 5_000_000_000:
        return 1e6, "ms"
    return 1e9, "s"


def number(v: int) -> str:
    """12345 -> "12,345"."""
    return f"{v:,}"


def tick_label(v: float) -> str:
    if v == int(v):
        return str(int(v))
    return f"{v:.6g}"
