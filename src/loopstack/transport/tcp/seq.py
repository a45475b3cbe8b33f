"""Sequence numbers. On the wire they are 32-bit and wrap (RFC 9293 3.4);
inside the stack they are unbounded integers, so comparisons are plain.
``unwrap`` turns a wire value into the integer nearest a reference."""

from __future__ import annotations

MOD = 1 << 32
HALF = 1 << 31


def unwrap(value: int, ref: int) -> int:
    """The integer congruent to ``value`` mod 2**32 closest to ``ref``."""
    return ref + ((value - ref + HALF) % MOD) - HALF


def wire(value: int) -> int:
    return value % MOD
