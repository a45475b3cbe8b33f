"""Addresses: packed bytes inside the stack, text at the edges.

IPv4 addresses are 4 bytes and IPv6 ones 16, as ``socket.inet_pton`` gives
them, so they go into headers unchanged and hash cheaply.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

V4_ANY = bytes(4)
V6_ANY = bytes(16)
V6_LOOPBACK = bytes(15) + b"\x01"
V4_LOOPBACK = bytes((127, 0, 0, 1))
V4_LIMITED_BROADCAST = b"\xff\xff\xff\xff"


def family_of(addr: bytes) -> int:
    return AF_INET if len(addr) == 4 else AF_INET6


def to_text(addr: bytes) -> str:
    return socket.inet_ntop(family_of(addr), addr)


def parse_address(text: str) -> bytes:
    """A literal IPv4 or IPv6 address as packed bytes (ValueError if it is not one)."""
    try:
        return socket.inet_pton(AF_INET6 if ":" in text else AF_INET, text)
    except OSError:
        raise ValueError(f"{text!r} is not an IP address") from None


def parse_prefix(text: str) -> tuple[bytes, int]:
    """"a.b.c.d/n" or "x::y/n" (the length defaults to the full width)."""
    addr_text, _, plen_text = text.partition("/")
    addr = parse_address(addr_text)
    width = len(addr) * 8
    if not plen_text:
        return addr, width
    if not plen_text.isdigit() or int(plen_text) > width:
        raise ValueError(f"bad prefix length in {text!r}: use 0 to {width}")
    return addr, int(plen_text)


def network_of(addr: bytes, prefixlen: int) -> bytes:
    width = len(addr) * 8
    value = int.from_bytes(addr, "big")
    mask = ((1 << width) - 1) ^ ((1 << (width - prefixlen)) - 1)
    return (value & mask).to_bytes(len(addr), "big")


def broadcast_of(addr: bytes, prefixlen: int) -> bytes:
    width = len(addr) * 8
    value = int.from_bytes(addr, "big") | ((1 << (width - prefixlen)) - 1)
    return value.to_bytes(len(addr), "big")


def is_v4_loopback(addr: bytes) -> bool:
    return len(addr) == 4 and addr[0] == 127


def is_v4_multicast(addr: bytes) -> bool:
    return 224 <= addr[0] <= 239


def is_v6_multicast(addr: bytes) -> bool:
    return addr[0] == 0xFF


def is_multicast(addr: bytes) -> bool:
    return is_v4_multicast(addr) if len(addr) == 4 else is_v6_multicast(addr)


@dataclass(slots=True, frozen=True)
class InterfaceAddress:
    """An address assigned to an interface (`ip addr`)."""

    ifname: str
    address: bytes
    prefixlen: int

    @property
    def family(self) -> int:
        return family_of(self.address)

    @property
    def scope(self) -> str:
        """RFC-derived scope as `ip addr` prints it: loopback ones are host scope."""
        if is_v4_loopback(self.address) or self.address == V6_LOOPBACK:
            return "host"
        return "global"

    def __str__(self) -> str:
        return f"{to_text(self.address)}/{self.prefixlen}"
