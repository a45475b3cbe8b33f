"""Fuzzing every input path: whatever arrives on lo or a pipe NIC is counted
and dropped, never raised, and the stack keeps working (DESIGN.md, Testing 6)."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.packet import Raw

import loopstack
from loopstack.link.pipe import PipeInterface

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seeds(v4: tuple[str, str], v6: tuple[str, str]) -> list[bytes]:
    s4, d4 = v4
    s6, d6 = v6
    big = IP(src=s4, dst=d4, id=321) / ICMP(id=1, seq=1) / Raw(bytes(range(256)) * 8)
    big6 = IPv6(src=s6, dst=d6) / IPv6ExtHdrFragment(id=5) / ICMPv6EchoRequest(data=bytes(2000))
    return [
        bytes(IP(src=s4, dst=d4) / ICMP(id=1, seq=1) / Raw(b"abcdefgh" * 4)),
        bytes(IP(src=s4, dst=d4, options=b"\x94\x04\x00\x00") / ICMP(id=2)),
        bytes(IP(src=s4, dst=d4, proto=17) / Raw(bytes(12))),
        bytes(IP(src=s4, dst=d4) / ICMP(type=3, code=3) / IP(src=d4, dst=s4, proto=17)
              / Raw(bytes(8))),
        bytes(IP(src=s4, dst=d4) / ICMP(type=11, code=1) / IP(src=d4, dst=s4) / ICMP()),
        *[bytes(f) for f in fragment(big, fragsize=512)][:2],
        bytes(IPv6(src=s6, dst=d6) / ICMPv6EchoRequest(id=1, seq=1, data=b"x" * 32)),
        bytes(IPv6(src=s6, dst=d6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
              / ICMPv6EchoRequest()),
        bytes(IPv6(src=s6, dst=d6) / IPv6ExtHdrRouting(addresses=[d6], segleft=1)
              / ICMPv6EchoRequest()),
        bytes(IPv6(src=s6, dst=d6) / ICMPv6DestUnreach(code=4) / IPv6(src=d6, dst=s6)
              / ICMPv6EchoRequest()),
        *[bytes(f) for f in fragment6(big6, 1280)][:2],
    ]


LO_SEEDS = _seeds(("127.0.0.1", "127.0.0.1"), ("::1", "::1"))
PIPE_SEEDS = _seeds(("192.0.2.2", "192.0.2.1"), ("2001:db8::2", "2001:db8::1"))

mutation = st.one_of(
    st.tuples(st.just("xor"), st.integers(0, 4095), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 4095), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 4095)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=40)),
)


def mutate(packet: bytes, ops: list[tuple[object, ...]]) -> bytes:
    buf = bytearray(packet)
    for op in ops:
        if op[0] in ("xor", "set") and buf:
            i = int(op[1]) % len(buf)  # type: ignore[call-overload]
            buf[i] = buf[i] ^ op[2] if op[0] == "xor" else op[2]  # type: ignore[assignment]
        elif op[0] == "truncate":
            del buf[int(op[1]) % (len(buf) + 1):]  # type: ignore[call-overload]
        elif op[0] == "extend":
            buf += op[1]  # type: ignore[arg-type]
    return bytes(buf)


def new_stack() -> tuple[loopstack.Stack, PipeInterface]:
    stack = loopstack.Stack(clock="virtual", seed=99)
    eth = stack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"])
    return stack, eth


def deliver_on_lo(stack: loopstack.Stack, pkt: bytes) -> None:
    with stack.lock:
        stack.lo._receive(pkt)


def transmit_on_lo(stack: loopstack.Stack, pkt: bytes) -> None:
    with stack.lock:
        stack.lo.transmit(pkt)


def still_works(stack: loopstack.Stack, eth: PipeInterface) -> None:
    """The stack answers pings on lo and the peer's echo on the pipe."""
    stack.advance(120)  # let every reassembly queue expire
    while eth.read() is not None:
        pass
    assert stack.ping("127.0.0.1", timeout=0.1).received == 1
    assert stack.ping("::1", timeout=0.1).received == 1
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=77, seq=1)))
    out = eth.read()
    assert out is not None and IP(out)[ICMP].type == 0 and IP(out)[ICMP].id == 77
    assert len(stack.ipv4.reassembler) == 0 and len(stack.ipv6.reassembler) == 0


def errors_seen(stack: loopstack.Stack, tools: SimpleNamespace) -> int:
    return tools.error_total(stack.stats()) + sum(
        i.stats["rx_errors"] for i in stack.interfaces())


@FUZZ
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=12))
def test_random_bytes_never_raise(packets: list[bytes]) -> None:
    stack, eth = new_stack()
    try:
        for pkt in packets:
            deliver_on_lo(stack, pkt)
            transmit_on_lo(stack, pkt)
            eth.inject(pkt)
        still_works(stack, eth)
    finally:
        stack.close()


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([0x45, 0x46, 0x4F, 0x60, 0x6F]),
                          st.binary(min_size=0, max_size=100)), min_size=1, max_size=12))
def test_random_bytes_behind_an_ip_version_never_raise(
        packets: list[tuple[int, bytes]]) -> None:
    stack, eth = new_stack()
    try:
        for first, rest in packets:
            pkt = bytes((first,)) + rest
            deliver_on_lo(stack, pkt)
            eth.inject(pkt)
        still_works(stack, eth)
    finally:
        stack.close()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(LO_SEEDS) - 1),
                          st.lists(mutation, min_size=1, max_size=4)),
                min_size=1, max_size=10))
def test_mutated_packets_never_raise(cases: list[tuple[int, list[tuple[object, ...]]]]) -> None:
    stack, eth = new_stack()
    try:
        for index, ops in cases:
            deliver_on_lo(stack, mutate(LO_SEEDS[index], ops))
            transmit_on_lo(stack, mutate(LO_SEEDS[index], ops))
            eth.inject(mutate(PIPE_SEEDS[index], ops))
        still_works(stack, eth)
    finally:
        stack.close()


def test_unmutated_seeds_are_accepted(tools: SimpleNamespace) -> None:
    # The fuzz seeds themselves are good input: none of them counts as an error.
    stack, eth = new_stack()
    try:
        for lo_pkt, pipe_pkt in zip(LO_SEEDS, PIPE_SEEDS, strict=True):
            deliver_on_lo(stack, lo_pkt)
            eth.inject(pipe_pkt)
        s = stack.stats()
        # Only the deliberate problems count: routing headers with segments
        # left (we forward nothing), and UDP while no UDP is registered.
        assert s["Ip6"]["InHdrErrors"] == 2
        assert s["Ip"]["InUnknownProtos"] in (0, 2)
        assert tools.error_total(s) == s["Ip"]["InUnknownProtos"] + 2
    finally:
        stack.close()


# Each of these is broken beyond doubt; every one must move an error counter.

clearly_broken = st.one_of(
    # A byte of the IPv4 header after the version/IHL byte changed: the header
    # checksum (or the length check) catches it, on lo as on the pipe.
    st.tuples(st.just("v4-header"), st.sampled_from(["lo", "pipe"]),
              st.integers(1, 19), st.integers(1, 255)),
    # An ICMP or ICMPv6 byte changed on the pipe, where checksums are verified.
    st.tuples(st.just("v4-icmp"), st.just("pipe"), st.integers(20, 59), st.integers(1, 255)),
    st.tuples(st.just("v6-icmp"), st.just("pipe"), st.integers(40, 79), st.integers(1, 255)),
    # Cut short of the length the header claims (or of the header itself).
    st.tuples(st.just("v4-cut"), st.sampled_from(["lo", "pipe"]), st.integers(0, 59),
              st.just(0)),
    st.tuples(st.just("v6-cut"), st.sampled_from(["lo", "pipe"]), st.integers(0, 79),
              st.just(0)),
)


def broken_packet(kind: str, where: str, position: int, value: int) -> bytes:
    if kind.startswith("v4"):
        src, dst = ("127.0.0.1", "127.0.0.1") if where == "lo" else ("192.0.2.2", "192.0.2.1")
        pkt = bytearray(bytes(IP(src=src, dst=dst) / ICMP(id=3, seq=4) / Raw(bytes(32))))
    else:
        src, dst = ("::1", "::1") if where == "lo" else ("2001:db8::2", "2001:db8::1")
        pkt = bytearray(bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest(data=bytes(32))))
    if kind.endswith("cut"):
        return bytes(pkt[:position])
    pkt[position] ^= value
    return bytes(pkt)


@FUZZ
@given(st.lists(clearly_broken, min_size=1, max_size=15))
def test_clearly_broken_input_is_counted(tools: SimpleNamespace,
                                         cases: list[tuple[str, str, int, int]]) -> None:
    stack, eth = new_stack()
    try:
        replies_before = stack.stats()["Icmp"]["OutEchoReps"], stack.stats()["Icmp6"][
            "OutEchoReplies"]
        for kind, where, position, value in cases:
            pkt = broken_packet(kind, where, position, value)
            before = errors_seen(stack, tools)
            if where == "lo":
                deliver_on_lo(stack, pkt)
            else:
                eth.inject(pkt)
            assert errors_seen(stack, tools) > before, (kind, where, pkt.hex())
        assert tools.read_all(eth) == []
        s = stack.stats()
        assert (s["Icmp"]["OutEchoReps"], s["Icmp6"]["OutEchoReplies"]) == replies_before
        still_works(stack, eth)
    finally:
        stack.close()


def test_a_batch_of_broken_input_moves_every_kind_of_counter(tools: SimpleNamespace) -> None:
    stack, eth = new_stack()
    try:
        good4 = bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP() / Raw(bytes(20)))
        good6 = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest())
        bad_csum = bytearray(good4)
        bad_csum[11] ^= 1
        bad_icmp = bytearray(good4)
        bad_icmp[30] ^= 1
        for pkt in [good4[:10], good4[:-3], bytes(bad_csum), bytes(bad_icmp), good6[:20],
                    good6[:-2], bytes(IP(src="192.0.2.2", dst="192.0.2.9") / ICMP()),
                    b"\x00" * 30]:
            eth.inject(pkt)
        s = stack.stats()
        assert s["IpExt"]["InTruncatedPkts"] >= 1
        assert s["IpExt"]["InCsumErrors"] == 1
        assert s["Icmp"]["InCsumErrors"] == 1 and s["Icmp"]["InErrors"] == 1
        assert s["Ip6"]["InTruncatedPkts"] >= 1
        assert s["Ip"]["InAddrErrors"] == 1
        assert eth.stats.rx_errors == 1
        assert tools.error_total(s) >= 7
        assert tools.read_all(eth) == []
        still_works(stack, eth)
    finally:
        stack.close()
