"""Linux's TCP and loopstack's TCP as peers through the TUN device:
bulk transfers both ways checked by sha256, with and without losses on
both sides, and which loopstack services the kernel can reach."""

from __future__ import annotations

import hashlib
import json
import random
import socket
from collections.abc import Iterator

import pytest

from loopstack import Stack
from loopstack.cli.serve import Services
from loopstack.link.tun import TunInterface

from .conftest import KERNEL4, LS4, LS6, TUN, Kernel

MB = 1 << 20
ECHO = 7


@pytest.fixture
def echo(tun: tuple[Stack, TunInterface]) -> Iterator[Services]:
    services = Services(tun[0])
    services.echo(ECHO)
    try:
        yield services
    finally:
        services.close()


def test_kernel_client_echo_20mb(tun: tuple[Stack, TunInterface], kernel: Kernel,
                                 echo: Services) -> None:
    """20 MB from the kernel's TCP to loopstack's echo service and back."""
    stack, iface = tun
    result = kernel.run("echo-client", LS4, str(ECHO), str(20 * MB))
    assert result["failure"] == []
    assert result["received"] == 20 * MB
    assert result["received_sha"] == result["sent_sha"]
    assert echo.bytes_in == 20 * MB
    assert iface.stats.rx_errors == iface.stats.tx_errors == 0
    assert stack.stats()["Tcp"]["InErrs"] == 0


def test_kernel_sees_mss_1460(tun: tuple[Stack, TunInterface], kernel: Kernel,
                              echo: Services) -> None:
    """Over MTU 1500 loopstack advertises MSS 1460 (RFC 9293 3.7.1: MTU
    minus 40) and the kernel, with timestamps on, sends 1448-byte
    segments (RFC 7323: 12 bytes of options in every segment)."""
    stack, iface = tun
    syn_acks: list[bytes] = []

    def watch(packet: bytes, direction: str) -> None:
        if direction == "out" and packet[9] == socket.IPPROTO_TCP and packet[33] & 0x12 == 0x12:
            syn_acks.append(packet)

    handle = iface.tap(watch)
    result = kernel.run("echo-client", LS4, str(ECHO), str(64 * 1024))
    handle.remove()
    assert result["received_sha"] == result["sent_sha"]
    info = result["handshake"]
    assert info["options"] & 1, "timestamps were not negotiated"
    assert info["maxseg"] == 1448
    assert info["snd_mss"] == 1448
    options = syn_acks[0][40:20 + (syn_acks[0][32] >> 4) * 4]
    assert options[:4] == b"\x02\x04\x05\xb4"  # kind 2, length 4, MSS 1460


def _tbf(kernel: Kernel) -> None:
    """A small bottleneck queue on the kernel's side of the device."""
    added = kernel.sh("tc", "qdisc", "add", "dev", TUN, "root", "tbf", "rate", "20mbit",
                      "burst", "16kb", "limit", "24kb", check=False)
    if added.returncode != 0:
        pytest.skip(f"the kernel has no tbf qdisc here: {added.stderr.strip()}")


def _tbf_drops(kernel: Kernel) -> int:
    shown = json.loads(kernel.sh("tc", "-s", "-j", "qdisc", "show", "dev", TUN).stdout)
    return sum(int(q.get("drops", 0)) for q in shown if q.get("kind") == "tbf")


def test_kernel_client_echo_20mb_with_losses(tun: tuple[Stack, TunInterface], kernel: Kernel,
                                             echo: Services) -> None:
    """The same 20 MB while both TCPs lose segments: loopstack's netem on
    what it sends, a tbf queue that overflows on what the kernel sends."""
    stack, iface = tun
    _tbf(kernel)
    iface.netem("loss 3% delay 5ms reorder 10%", seed=11)
    result = kernel.run("echo-client", LS4, str(ECHO), str(20 * MB), timeout=120)
    assert result["failure"] == []
    assert result["received"] == 20 * MB
    assert result["received_sha"] == result["sent_sha"]
    assert _tbf_drops(kernel) > 0, "the bottleneck never dropped"
    assert iface.qdisc is not None and iface.qdisc.stats.dropped > 0
    assert stack.stats()["Tcp"]["RetransSegs"] > 0
    assert result["end"]["total_retrans"] > 0


def test_loopstack_client_sends_8mb(tun: tuple[Stack, TunInterface], kernel: Kernel) -> None:
    """loopstack's TCP sends 8 MB to a kernel server."""
    stack, _ = tun
    server = kernel.start("sink", KERNEL4, "5001")
    assert server.line()["listening"] == 5001
    data = random.Random(3).randbytes(8 * MB)
    with stack.create_connection((KERNEL4, 5001), timeout=30) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        reply = conn.makefile("rb").readline()
    assert reply.decode().split() == [hashlib.sha256(data).hexdigest(), str(8 * MB)]
    done = server.line()
    assert done["received"] == 8 * MB
    assert done["info"]["rcv_mss"] in (1448, 1460)


@pytest.mark.parametrize("address", [LS4, LS6])
def test_loopback_bound_service_is_not_reachable(tun: tuple[Stack, TunInterface],
                                                 kernel: Kernel, address: str) -> None:
    """A service bound to 127.0.0.1 (or ::1) serves the stack's own
    loopback only: the kernel's connection through the TUN is refused
    (RST, RFC 9293 3.10.7.1). One bound to the wildcard answers."""
    stack, _ = tun
    services = Services(stack)
    try:
        loopback = "::1" if ":" in address else "127.0.0.1"
        wildcard = "::" if ":" in address else "0.0.0.0"
        services.echo(8000, (loopback,))
        services.echo(8001, (wildcard,))
        assert kernel.run("connect", address, "8000") == {"result": "refused"}
        assert kernel.run("connect", address, "8001") == {"result": "connected",
                                                          "reply": "hello\n"}
        with stack.create_connection((loopback, 8000), timeout=5) as local:
            local.sendall(b"still here")
            assert local.recv(100) == b"still here"
    finally:
        services.close()
