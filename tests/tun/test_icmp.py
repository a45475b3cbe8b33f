"""Ping across the TUN device, both ways, IPv4 and IPv6: the kernel's
echo requests answered by loopstack (RFC 792, RFC 4443 4.2), loopstack's
answered by the kernel; 3000-byte pings need fragmentation and
reassembly on both sides (RFC 791 2.3, RFC 8200 4.5)."""

from __future__ import annotations

import pytest

from loopstack import Stack
from loopstack.link.tun import TunInterface

from .conftest import KERNEL4, KERNEL6, LS4, LS6, Kernel


@pytest.mark.parametrize("size", [56, 3000])
@pytest.mark.parametrize("address", [LS4, LS6])
def test_kernel_pings_loopstack(tun: tuple[Stack, TunInterface], kernel: Kernel,
                                address: str, size: int) -> None:
    stack, iface = tun
    result = kernel.run("ping", address, str(size), "3")
    assert [r["seq"] for r in result["replies"]] == [1, 2, 3]
    assert all(r["intact"] and r["size"] == size for r in result["replies"])
    stats = stack.stats()
    if ":" in address:
        assert stats["Icmp6"]["InEchos"] == 3 and stats["Icmp6"]["OutEchoReplies"] == 3
    else:
        assert stats["Icmp"]["InEchos"] == 3 and stats["Icmp"]["OutEchoReps"] == 3
    if size > 1500:  # the kernel fragmented, loopstack reassembled and fragmented back
        group = stats["Ip6"] if ":" in address else stats["Ip"]
        assert group["ReasmOKs"] == 3 and group["FragOKs"] == 3
    assert iface.stats.rx_errors == iface.stats.tx_errors == 0


@pytest.mark.parametrize("size", [56, 3000])
@pytest.mark.parametrize("address", [KERNEL4, KERNEL6])
def test_loopstack_pings_kernel(tun: tuple[Stack, TunInterface], address: str,
                                size: int) -> None:
    stack, iface = tun
    result = stack.ping(address, count=3, interval=0.05, size=size, timeout=5.0)
    assert result.received == 3, result
    assert {r.size for r in result.replies} == {size + 8}
    assert {r.address for r in result.replies} == {address}
    assert iface.stats.rx_packets >= (3 if size < 1500 else 9)
