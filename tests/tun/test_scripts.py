"""Expectations of the TCP packet scripts (tests/tcp/) re-checked live,
with the Linux kernel's TCP as the peer instead of scripted segments:
the handshake's options, window scaling, and SACK after a segment the
kernel sent is lost."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from scapy.layers.inet import IP, TCP

from loopstack import Stack
from loopstack.link.interface import Interface
from loopstack.link.tun import TunInterface
from loopstack.socket import Socket

from .conftest import LS4, Kernel

PORT = 9
KB = 1024


@dataclass
class Echo:
    """An echo service that keeps its accepted socket, for tcp_info."""

    stack: Stack
    listener: Socket
    accepted: list[Socket] = field(default_factory=list)
    thread: threading.Thread | None = None

    def serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.accepted.append(conn)
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
        conn.shutdown(socket.SHUT_WR)


@pytest.fixture
def echo(tun: tuple[Stack, TunInterface]) -> Iterator[Echo]:
    stack = tun[0]
    listener = stack.create_server(("0.0.0.0", PORT))
    e = Echo(stack, listener)
    e.thread = threading.Thread(target=e.serve, daemon=True)
    e.thread.start()
    try:
        yield e
    finally:
        listener.close()
        for conn in e.accepted:
            conn.close()
        e.thread.join(5)


def record(iface: TunInterface) -> list[tuple[str, TCP]]:
    """Every TCP segment crossing the device from now on: ("in" or "out", segment)."""
    segments: list[tuple[str, TCP]] = []

    def tap(packet: bytes, direction: str) -> None:
        ip = IP(packet)
        if ip.proto == socket.IPPROTO_TCP:
            segments.append((direction, ip[TCP]))

    iface.tap(tap)
    return segments


def options(seg: TCP) -> dict[str, object]:
    return {name: value for name, value in seg.options}


def kernel_netstat(kernel: Kernel) -> dict[str, int]:
    """The namespace's TcpExt counters (/proc/net/netstat)."""
    lines = kernel.sh("cat", "/proc/net/netstat").stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    return {}


def test_handshake_options(tun: tuple[Stack, TunInterface], kernel: Kernel, echo: Echo) -> None:
    """test_synack_options_mirror_a_linux_syn, live: the kernel's SYN offers
    MSS, SACK-permitted, timestamps and window scale; loopstack's SYN-ACK
    mirrors each in Linux's layout (MSS, SACKOK+TS, NOP+WS), MSS 1460, TSecr
    echoing the SYN's TSval, WS 7, window 65160 (45 * 1448). Both sides
    then agree on what was negotiated (RFC 7323 2.2, 3.2; RFC 2018 2)."""
    _, iface = tun
    segments = record(iface)
    result = kernel.run("echo-client", LS4, str(PORT), str(16 * KB))
    assert result["received_sha"] == result["sent_sha"]
    syn = next(s for d, s in segments if d == "in" and s.flags == "S")
    synack = next(s for d, s in segments if d == "out" and s.flags == "SA")
    assert [name for name, _ in syn.options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    assert [name for name, _ in synack.options] == [
        "MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    assert options(synack)["MSS"] == 1460 and options(synack)["WScale"] == 7
    assert synack.ack == syn.seq + 1
    assert options(synack)["Timestamp"][1] == options(syn)["Timestamp"][0]  # type: ignore[index]
    assert synack.window == 65160
    kernel_side = result["handshake"]
    assert kernel_side["options"] & 7 == 7  # timestamps, SACK, window scaling
    assert kernel_side["snd_wscale"] == 7
    assert kernel_side["rcv_wscale"] == options(syn)["WScale"]
    ours = echo.accepted[0].tcp_info()
    assert ours["options"] == 7
    assert ours["snd_wscale"] == options(syn)["WScale"]
    assert ours["rcv_wscale"] == 7


def test_window_scaling(tun: tuple[Stack, TunInterface], kernel: Kernel, echo: Echo) -> None:
    """RFC 7323 2.2-2.3: after the SYNs every window loopstack sends is
    shifted right by 7, and the kernel shifts it back: the window it
    believes is one loopstack sent, beyond what 16 bits can say. The SYN
    windows themselves are never scaled."""
    _, iface = tun
    segments = record(iface)
    result = kernel.run("echo-client", LS4, str(PORT), str(1024 * KB))
    assert result["received_sha"] == result["sent_sha"]
    sent = [s.window << 7 for d, s in segments if d == "out" and "S" not in s.flags]
    assert max(sent) > 65535
    if "snd_wnd" in result["end"]:  # tcp_info's snd_wnd: Linux 5.4 and later
        assert result["end"]["snd_wnd"] in sent
    kernel_scale = options(next(s for d, s in segments if s.flags == "S"))["WScale"]
    assert isinstance(kernel_scale, int)
    theirs = [s.window << kernel_scale for d, s in segments if d == "in" and "S" not in s.flags]
    assert max(theirs) > 65535


def test_sack_after_a_loss_on_the_kernels_side(tun: tuple[Stack, TunInterface],
                                               kernel: Kernel, echo: Echo) -> None:
    """RFC 2018 4, test_script_retransmit's SACK expectations, live: one
    segment the kernel sent is lost before loopstack sees it; loopstack's
    duplicate ACKs acknowledge up to the hole and carry a SACK block that
    starts where the lost segment ends (the most recent block first); the
    kernel retransmits exactly the hole, and every byte arrives."""
    _, iface = tun
    segments = record(iface)
    deliver = iface._rx_handler
    lost: list[tuple[int, int]] = []
    data_segments = 0

    def lose_the_30th(dev: Interface, packet: bytes) -> None:
        nonlocal data_segments
        ip = IP(packet)
        if not lost and ip.proto == socket.IPPROTO_TCP and len(ip[TCP].payload) > 0:
            data_segments += 1
            if data_segments == 30:
                lost.append((ip[TCP].seq, len(ip[TCP].payload)))
                return
        deliver(dev, packet)

    iface._rx_handler = lose_the_30th
    before = kernel_netstat(kernel)
    result = kernel.run("echo-client", LS4, str(PORT), str(512 * KB))
    assert result["received_sha"] == result["sent_sha"]
    (hole, length), = lost
    sacks = [options(s)["SAck"] for d, s in segments
             if d == "out" and s.ack == hole and "SAck" in options(s)]
    assert sacks, "no SACK for the hole"
    assert sacks[0][0] == hole + length  # type: ignore[index]
    copies = [s for d, s in segments if d == "in" and s.seq == hole and s.payload]
    assert len(copies) >= 2  # the one lost (taps see it) and the kernel's retransmission
    assert result["end"]["total_retrans"] >= 1
    after = kernel_netstat(kernel)
    assert after["TCPSackRecovery"] > before.get("TCPSackRecovery", 0)
