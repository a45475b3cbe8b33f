"""Shared fixtures for the stack-level tests (IP, ICMP, pipe NICs, fragments,
fuzzing, capture, CLI).

Checksums are verified here with our own ones'-complement arithmetic (RFC
1071), independent of loopstack.wire, so a bug there cannot hide a bug in
what the stack sends.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

import loopstack
from loopstack.link.pipe import PipeInterface

# Counters that only move when input is refused somewhere.
ERROR_COUNTERS: dict[str, tuple[str, ...]] = {
    "Ip": ("InHdrErrors", "InAddrErrors", "InUnknownProtos", "InDiscards", "ReasmFails"),
    "IpExt": ("InTruncatedPkts", "InCsumErrors"),
    "Icmp": ("InErrors", "InCsumErrors"),
    "Ip6": ("InHdrErrors", "InAddrErrors", "InUnknownProtos", "InTruncatedPkts", "InDiscards",
            "ReasmFails"),
    "Icmp6": ("InErrors", "InCsumErrors"),
    "RtCache": ("in_martian_src", "in_martian_dst"),
}


def a4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def ones_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 ones'-complement sum of ``data`` (odd length padded)."""
    if len(data) % 2:
        data += b"\x00"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_header_ok(packet: bytes) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    return len(packet) >= ihl >= 20 and ones_sum(packet[:ihl]) == 0xFFFF


def checksums_ok(packet: bytes) -> bool:
    """True when every checksum of an IPv4/ICMP or IPv6/ICMPv6 packet is
    valid (fragments: only the IPv4 header). False for anything malformed."""
    if not packet:
        return False
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20 or not ipv4_header_ok(packet):
            return False
        ihl = (packet[0] & 0x0F) * 4
        total = int.from_bytes(packet[2:4], "big")
        if total > len(packet) or total < ihl:
            return False
        frag = int.from_bytes(packet[6:8], "big")
        if frag & 0x3FFF:  # MF or an offset: the ICMP checksum covers the datagram
            return True
        if packet[9] == 1:
            return ones_sum(packet[ihl:total]) == 0xFFFF
        return True
    if version == 6:
        if len(packet) < 40:
            return False
        plen = int.from_bytes(packet[4:6], "big")
        if 40 + plen > len(packet):
            return False
        nh, off = packet[6], 40
        while nh in (0, 43, 60, 44):
            if off + 8 > 40 + plen:
                return False
            if nh == 44:
                frag = int.from_bytes(packet[off + 2 : off + 4], "big")
                if frag & 0xFFF9:  # offset or M set: a real fragment
                    return True
                nh, off = packet[off], off + 8
            else:
                nh, off = packet[off], off + (packet[off + 1] + 1) * 8
        if nh != 58:
            return True
        upper = packet[off : 40 + plen]
        pseudo = packet[8:40] + struct.pack("!I3xB", len(upper), 58)
        return ones_sum(upper, ones_sum(pseudo)) == 0xFFFF
    return False


def read_all(iface: PipeInterface) -> list[bytes]:
    """Every packet the stack has sent on ``iface`` so far (no waiting)."""
    out = []
    while (p := iface.read(0)) is not None:
        out.append(p)
    return out


def delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, int]:
    """Counters that changed, as "Group.Name" -> change."""
    out = {}
    for group, counters in after.items():
        for name, value in counters.items():
            d = value - before.get(group, {}).get(name, 0)
            if d:
                out[f"{group}.{name}"] = d
    return out


def error_total(stats: dict[str, dict[str, int]]) -> int:
    return sum(stats[g].get(n, 0) for g, names in ERROR_COUNTERS.items() for n in names)


TOOLS = SimpleNamespace(
    a4=a4, a6=a6, ones_sum=ones_sum, ipv4_header_ok=ipv4_header_ok, checksums_ok=checksums_ok,
    read_all=read_all, delta=delta, error_total=error_total,
)


@pytest.fixture(scope="session")
def tools() -> SimpleNamespace:
    """Checksum checks, counter deltas and pipe draining, for any test module."""
    return TOOLS


@pytest.fixture
def vstack() -> Iterator[loopstack.Stack]:
    """A fresh stack on a virtual clock with a fixed seed."""
    stack = loopstack.Stack(clock="virtual", seed=1234)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def piped(vstack: loopstack.Stack) -> tuple[loopstack.Stack, PipeInterface]:
    """The virtual stack with a pipe NIC eth0: 192.0.2.1/24 and 2001:db8::1/64, MTU 1500.
    The test plays the peer 192.0.2.2 / 2001:db8::2."""
    eth = vstack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"], mtu=1500)
    return vstack, eth
