"""Initial sequence numbers (RFC 6528) and SYN cookies (RFC 4987, with
Linux's encoding in net/ipv4/syncookies.c as the model)."""

from __future__ import annotations

import hashlib
import struct

from ...clock import NS_PER_SEC

_PORTS = struct.Struct("!HH")


def _hash(secret: bytes, *parts: bytes) -> int:
    h = hashlib.blake2b(b"".join(parts), key=secret, digest_size=4)
    return int.from_bytes(h.digest(), "big")


def initial_sequence(secret: bytes, now_ns: int, laddr: bytes, lport: int, raddr: bytes,
                     rport: int) -> int:
    """RFC 6528 3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey),
    M a timer ticking every 4 microseconds."""
    m = now_ns // 4000
    return (m + _hash(secret, laddr, raddr, _PORTS.pack(lport, rport))) % (1 << 32)


# The hashes that depend on addresses alone (no clock) are kept once made:
# a busy client connects to one address again and again. Bounded: cleared
# when it grows past _MEMO_MAX entries.
_MEMO: dict[tuple[bytes, ...], int] = {}
_MEMO_MAX = 4096


def timestamp_offset(secret: bytes, laddr: bytes, raddr: bytes) -> int:
    """A per-connection random offset for TSval (Linux tcp_timestamps = 1)."""
    key = (secret, b"ts", laddr, raddr)
    got = _MEMO.get(key)
    if got is None:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        got = _MEMO[key] = _hash(secret, b"ts", laddr, raddr)
    return got


def port_offset(secret: bytes, laddr: bytes, raddr: bytes, rport: int) -> int:
    """RFC 6056 3.3.4's F(local address, remote address, remote port,
    secret), where the ephemeral port search starts (Linux
    secure_ipv4_port_ephemeral): initial_sequence's hash with no clock
    and no local port."""
    key = (secret, laddr, raddr, _PORTS.pack(0, rport))
    got = _MEMO.get(key)
    if got is None:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        got = _MEMO[key] = initial_sequence(secret, 0, laddr, 0, raddr, rport)
    return got


# MSS values a cookie can carry (Linux msstab for IPv4).
COOKIE_MSS = (536, 1300, 1440, 1460)
COOKIE_MAX_AGE = 2  # minutes (MAX_SYNCOOKIE_AGE)
_COOKIE_BITS = 24
_COOKIE_MASK = (1 << _COOKIE_BITS) - 1


def _minute(now_ns: int) -> int:
    return now_ns // (60 * NS_PER_SEC)


def make_cookie(secret: bytes, now_ns: int, laddr: bytes, lport: int, raddr: bytes, rport: int,
                peer_isn: int, mss: int) -> tuple[int, int]:
    """The SYN-ACK's ISN that encodes the connection (RFC 4987 3.6), and
    the MSS it commits to: hash + the peer's ISN + minute counter in the top
    8 bits + (second hash + MSS index) in the low 24."""
    index = 0
    for i, value in enumerate(COOKIE_MSS):
        if mss >= value:
            index = i
    count = _minute(now_ns)
    tup = laddr + raddr + _PORTS.pack(lport, rport)
    h1 = _hash(secret, b"c1", tup)
    h2 = _hash(secret, b"c2", tup, count.to_bytes(8, "big"))
    cookie = (h1 + peer_isn + ((count & 0xFF) << _COOKIE_BITS)
              + ((h2 + index) & _COOKIE_MASK)) % (1 << 32)
    return cookie, COOKIE_MSS[index]


def check_cookie(secret: bytes, now_ns: int, laddr: bytes, lport: int, raddr: bytes, rport: int,
                 peer_isn: int, cookie: int) -> int | None:
    """The MSS a valid, fresh cookie carries, or None."""
    tup = laddr + raddr + _PORTS.pack(lport, rport)
    h1 = _hash(secret, b"c1", tup)
    value = (cookie - h1 - peer_isn) % (1 << 32)
    count_now = _minute(now_ns)
    count = (count_now & ~0xFF) | (value >> _COOKIE_BITS)
    if count > count_now:
        count -= 256
    if count_now - count >= COOKIE_MAX_AGE:
        return None
    h2 = _hash(secret, b"c2", tup, count.to_bytes(8, "big", signed=True))
    index = ((value & _COOKIE_MASK) - h2) & _COOKIE_MASK
    if index >= len(COOKIE_MSS):
        return None
    return COOKIE_MSS[index]


# With timestamps, Linux hides the SYN's options in the low bits of TSval:
# 4 bits of window scale (15 = none), 1 bit SACK-permitted.
TS_OPT_BITS = 5


def encode_ts_options(tsval: int, wscale: int | None, sack: bool) -> int:
    opts = (wscale if wscale is not None else 0xF) | (0x10 if sack else 0)
    return ((tsval >> TS_OPT_BITS) << TS_OPT_BITS | opts) % (1 << 32)


def decode_ts_options(tsecr: int) -> tuple[int | None, bool]:
    ws = tsecr & 0xF
    return (None if ws == 0xF else ws), bool(tsecr & 0x10)
