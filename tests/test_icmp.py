"""ICMP and ICMPv6: echo, errors, and the counters Linux keeps for them."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from scapy.layers.inet import ICMP, IP, IPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ParamProblem,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
)
from scapy.packet import Raw

import loopstack
from loopstack.link.pipe import PipeInterface

Piped = tuple[loopstack.Stack, PipeInterface]


def echo(stack: loopstack.Stack, dst: str, data: bytes, v6: bool = False) -> list[object]:
    """Send one echo request with ``data`` through an echo endpoint; the replies."""
    icmp = stack.icmp6 if v6 else stack.icmp4
    with stack.lock:
        ep = icmp.open_endpoint()
        try:
            ep.send_echo(stack.resolve(dst)[0], 7, data)
            return list(ep.replies)
        finally:
            ep.close()


# -- echo -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 56, 1400, 65507])
def test_ipv4_echo_data_comes_back_intact(vstack: loopstack.Stack, size: int) -> None:
    data = os.urandom(size)
    (reply,) = echo(vstack, "127.0.0.1", data)
    assert reply.data == data  # type: ignore[attr-defined]
    assert reply.seq == 7 and reply.ttl == 64  # type: ignore[attr-defined]
    assert reply.size == size + 8  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [0, 1, 56, 1400, 65527])
def test_ipv6_echo_data_comes_back_intact(vstack: loopstack.Stack, size: int) -> None:
    data = os.urandom(size)
    (reply,) = echo(vstack, "::1", data, v6=True)
    assert reply.data == data  # type: ignore[attr-defined]
    assert reply.seq == 7 and reply.ttl == 64  # type: ignore[attr-defined]
    assert reply.size == size + 8  # type: ignore[attr-defined]


def test_echo_reply_on_the_wire(vstack: loopstack.Stack) -> None:
    seen: list[bytes] = []
    vstack.lo.tap(lambda p, d: seen.append(p))
    vstack.ping("127.3.2.1", size=100)
    q, a = IP(seen[0]), IP(seen[1])
    assert (a[ICMP].type, a[ICMP].code) == (0, 0)
    assert (a[ICMP].id, a[ICMP].seq) == (q[ICMP].id, q[ICMP].seq)
    assert bytes(a[ICMP].payload) == bytes(q[ICMP].payload)
    assert (a.src, a.dst, a.ttl, a.proto) == ("127.3.2.1", "127.0.0.1", 64, 1)


def test_broadcast_ping_is_ignored(vstack: loopstack.Stack) -> None:
    seen: list[bytes] = []
    vstack.lo.tap(lambda p, d: seen.append(p))
    r = vstack.ping("127.255.255.255", count=2, interval=0, timeout=0.5)
    assert (r.transmitted, r.received) == (2, 0)
    assert len(seen) == 2 and all(IP(p)[ICMP].type == 8 for p in seen)
    s = vstack.stats()
    assert s["Icmp"]["OutEchoReps"] == 0
    assert s["IpExt"]["InBcastPkts"] == 2


def test_ignored_broadcast_echo_counts_as_icmp_in_error(vstack: loopstack.Stack) -> None:
    # Linux icmp_rcv(): an echo to a broadcast address with
    # icmp_echo_ignore_broadcasts set goes to `error:`, which counts InErrors.
    vstack.ping("127.255.255.255", count=1, timeout=0.5)
    s = vstack.stats()
    assert s["IcmpMsg"]["InType8"] == 1
    assert s["Icmp"]["InErrors"] == 1


def test_subnet_broadcast_echo_on_pipe_is_ignored(piped: Piped) -> None:
    stack, eth = piped
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.255") / ICMP(id=1, seq=1)))
    eth.inject(bytes(IP(src="192.0.2.2", dst="255.255.255.255") / ICMP(id=1, seq=2)))
    assert eth.read() is None
    assert stack.lo.stats.tx_packets == 0


def test_ipv6_echo_to_all_nodes_is_answered_from_unicast(piped: Piped,
                                                         tools: SimpleNamespace) -> None:
    stack, eth = piped
    eth.inject(bytes(IPv6(src="2001:db8::2", dst="ff02::1") / ICMPv6EchoRequest(id=3, seq=4)))
    out = eth.read()
    assert out is not None and tools.checksums_ok(out)
    a = IPv6(out)
    assert (a.src, a.dst) == ("2001:db8::1", "2001:db8::2")
    assert (a[ICMPv6EchoReply].id, a[ICMPv6EchoReply].seq) == (3, 4)


def test_echo_reply_copies_tos(piped: Piped) -> None:
    stack, eth = piped
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1", tos=0x10) / ICMP(id=1, seq=1)))
    out = eth.read()
    assert out is not None and IP(out).tos == 0x10


# -- counters -------------------------------------------------------------------


def test_icmp_counters_for_one_ping(vstack: loopstack.Stack, tools: SimpleNamespace) -> None:
    before = vstack.stats()
    vstack.ping("127.0.0.1")
    d = tools.delta(before, vstack.stats())
    assert {k: v for k, v in d.items() if k.startswith(("Icmp.", "IcmpMsg."))} == {
        "Icmp.InMsgs": 2, "Icmp.OutMsgs": 2,
        "Icmp.InEchos": 1, "Icmp.InEchoReps": 1, "Icmp.OutEchos": 1, "Icmp.OutEchoReps": 1,
        "IcmpMsg.InType0": 1, "IcmpMsg.InType8": 1, "IcmpMsg.OutType0": 1,
        "IcmpMsg.OutType8": 1,
    }


def test_icmp6_counters_for_one_ping(vstack: loopstack.Stack, tools: SimpleNamespace) -> None:
    before = vstack.stats()
    vstack.ping("::1")
    d = tools.delta(before, vstack.stats())
    assert {k: v for k, v in d.items() if k.startswith("Icmp6.")} == {
        "Icmp6.InMsgs": 2, "Icmp6.OutMsgs": 2,
        "Icmp6.InEchos": 1, "Icmp6.InEchoReplies": 1,
        "Icmp6.OutEchos": 1, "Icmp6.OutEchoReplies": 1,
        "Icmp6.InType128": 1, "Icmp6.InType129": 1,
        "Icmp6.OutType128": 1, "Icmp6.OutType129": 1,
    }
    assert not any(k.startswith(("Icmp.", "IcmpMsg.")) for k in d)


# -- errors ---------------------------------------------------------------------


def test_protocol_unreachable(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    bad = bytes(IP(src="192.0.2.2", dst="192.0.2.1", proto=253, id=999) / Raw(b"hello world!"))
    before = stack.stats()
    eth.inject(bad)
    out = eth.read()
    assert out is not None and eth.read() is None
    assert tools.checksums_ok(out)
    e = IP(out)
    assert (e.src, e.dst, e.proto) == ("192.0.2.1", "192.0.2.2", 1)
    assert e.tos == 0xC0  # IPTOS_PREC_INTERNETCONTROL, as Linux
    assert (e[ICMP].type, e[ICMP].code) == (3, 2)
    assert bytes(e[ICMP].payload) == bad  # the whole (short) datagram is quoted
    assert e[IPerror].id == 999
    d = tools.delta(before, stack.stats())
    assert d["Ip.InUnknownProtos"] == 1
    assert d["Icmp.OutDestUnreachs"] == 1 and d["IcmpMsg.OutType3"] == 1
    assert d["Icmp.OutMsgs"] == 1
    assert "Ip.InDelivers" not in d


def test_icmp_error_is_at_most_576_bytes(piped: Piped) -> None:
    stack, eth = piped
    bad = bytes(IP(src="192.0.2.2", dst="192.0.2.1", proto=253) / Raw(bytes(1400)))
    eth.inject(bad)
    out = eth.read()
    assert out is not None and len(out) == 576
    assert out[28:] == bad[: 576 - 28]


def test_icmpv6_error_is_at_most_1280_bytes(piped: Piped) -> None:
    stack, eth = piped
    bad = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1", nh=253) / Raw(bytes(1400)))
    eth.inject(bad)
    out = eth.read()
    assert out is not None and len(out) == 1280
    assert out[48:] == bad[: 1280 - 48]


@pytest.mark.parametrize(
    ("exts", "pointer"),
    [
        ([], 6),  # Next Header of the fixed header
        ([IPv6ExtHdrDestOpt], 40),  # the destination options header's Next Header
        ([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt], 48),
    ],
)
def test_ipv6_unknown_next_header_is_param_problem_code_1(
    piped: Piped, tools: SimpleNamespace, exts: list[type], pointer: int
) -> None:
    stack, eth = piped
    pkt = IPv6(src="2001:db8::2", dst="2001:db8::1")
    for ext in exts:
        pkt = pkt / ext()
    pkt = pkt / Raw(b"x" * 16)
    pkt[IPv6].payload.lastlayer().underlayer.nh = 253
    bad = bytes(pkt)
    before = stack.stats()
    eth.inject(bad)
    out = eth.read()
    assert out is not None and tools.checksums_ok(out)
    e = IPv6(out)
    pp = e[ICMPv6ParamProblem]
    assert (e.src, e.dst) == ("2001:db8::1", "2001:db8::2")
    assert (pp.type, pp.code, pp.ptr) == (4, 1, pointer)
    assert bytes(pp.payload) == bad
    d = tools.delta(before, stack.stats())
    assert d["Ip6.InUnknownProtos"] == 1
    assert d["Icmp6.OutParmProblems"] == 1 and d["Icmp6.OutType4"] == 1


def test_unknown_option_with_discard_and_report_action(piped: Piped) -> None:
    # RFC 8200 4.2: option type 0x80 (action 10) -> discard, parameter problem
    # code 2 pointing at the option.
    stack, eth = piped
    opt = bytes((0x80, 2, 0, 0))
    req = IPv6(src="2001:db8::2", dst="2001:db8::1") / IPv6ExtHdrDestOpt(
        options=[]) / ICMPv6EchoRequest(id=1, seq=1)
    raw = bytearray(bytes(req))
    raw[42:46] = opt  # replace the PadN that filled the 8-byte header
    eth.inject(bytes(raw))
    out = eth.read()
    assert out is not None
    pp = IPv6(out)[ICMPv6ParamProblem]
    assert (pp.code, pp.ptr) == (2, 42)
    assert eth.read() is None  # and no echo reply


def test_no_icmpv6_error_about_an_icmpv6_error(piped: Piped) -> None:
    stack, eth = piped
    inner = IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest()
    err = IPv6(src="2001:db8::2", dst="2001:db8::1") / IPv6ExtHdrDestOpt(
        options=[]) / ICMPv6DestUnreach(code=4) / inner
    raw = bytearray(bytes(err))
    raw[42:46] = bytes((0x80, 2, 0, 0))  # unknown option: "discard and report"
    before = stack.stats()["Icmp6"]["OutParmProblems"]
    eth.inject(bytes(raw))
    assert eth.read() is None
    assert stack.stats()["Icmp6"]["OutParmProblems"] == before
    assert stack.stats()["Ip6"]["InHdrErrors"] == 1  # dropped all the same


def test_no_icmp_error_about_an_icmp_error(piped: Piped) -> None:
    # The first fragment of an ICMP error times out in reassembly: Linux's
    # icmp_send() refuses to answer an error with an error.
    stack, eth = piped
    inner = IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(id=1) / Raw(bytes(64))

    def first_fragment(icmp: ICMP, ident: int) -> bytes:
        head = bytes(icmp)[:56]  # a multiple of 8, with more to come
        return bytes(IP(src="192.0.2.2", dst="192.0.2.1", id=ident, flags="MF", proto=1)
                     / Raw(head))

    eth.inject(first_fragment(ICMP(type=3, code=3) / inner, 55))
    stack.advance(31)
    assert stack.stats()["Ip"]["ReasmTimeout"] == 1
    assert eth.read() is None
    assert stack.stats()["Icmp"]["OutTimeExcds"] == 0
    # The same with an echo request is answered with "fragment reassembly time exceeded".
    eth.inject(first_fragment(ICMP(type=8) / Raw(bytes(64)), 56))
    stack.advance(31)
    out = eth.read()
    assert out is not None
    assert (IP(out)[ICMP].type, IP(out)[ICMP].code) == (11, 1)


def test_bad_icmp_checksum_on_pipe_is_dropped_and_counted(
    piped: Piped, tools: SimpleNamespace
) -> None:
    stack, eth = piped
    before = stack.stats()
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=1, seq=1, chksum=0x1234)))
    eth.inject(bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest(
        id=1, seq=1, cksum=0x1234)))
    assert eth.read() is None
    d = tools.delta(before, stack.stats())
    assert d["Icmp.InCsumErrors"] == 1 and d["Icmp.InErrors"] == 1
    assert d["Icmp6.InCsumErrors"] == 1 and d["Icmp6.InErrors"] == 1
    assert "Icmp.InEchos" not in d and "IcmpMsg.InType8" not in d
    assert "Icmp6.InEchos" not in d and "Icmp6.InType128" not in d
    # The checksum is all that was wrong: the same packet fixed is answered.
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(id=1, seq=1)))
    assert eth.read() is not None


def _lo_echo_with_bad_checksum(stack: loopstack.Stack) -> None:
    pkt = bytes(IP(src="127.0.0.1", dst="127.0.0.1") / ICMP(id=4242, seq=1, chksum=0x1234))
    with stack.lock:
        stack.lo.transmit(pkt)


def test_lo_does_not_verify_icmp_checksums(vstack: loopstack.Stack,
                                           tools: SimpleNamespace) -> None:
    before = vstack.stats()
    _lo_echo_with_bad_checksum(vstack)
    d = tools.delta(before, vstack.stats())
    assert d["Icmp.InEchos"] == 1 and d["Icmp.OutEchoReps"] == 1
    assert "Icmp.InCsumErrors" not in d and "Icmp.InErrors" not in d


def test_lo_verifies_checksums_while_netem_corrupts(vstack: loopstack.Stack,
                                                    tools: SimpleNamespace) -> None:
    vstack.lo.netem("corrupt 0.0001%", seed=1)  # on, though this seed corrupts nothing here
    before = vstack.stats()
    _lo_echo_with_bad_checksum(vstack)
    d = tools.delta(before, vstack.stats())
    assert d["Icmp.InCsumErrors"] == 1 and d["Icmp.InErrors"] == 1
    assert "Icmp.InEchos" not in d
    # Packets the stack sends now carry real checksums, so a ping still works.
    seen: list[bytes] = []
    vstack.lo.tap(lambda p, d: seen.append(p))
    assert vstack.ping("127.0.0.1").received == 1
    assert vstack.ping("::1").received == 1
    assert len(seen) == 4 and all(tools.checksums_ok(p) for p in seen)


def test_netem_corruption_on_lo_is_caught(vstack: loopstack.Stack,
                                          tools: SimpleNamespace) -> None:
    vstack.lo.netem("corrupt 100%", seed=3)
    r = vstack.ping("127.0.0.1", count=20, interval=0, timeout=0.1)
    assert r.received == 0
    s = vstack.stats()
    assert s["Icmp"]["OutEchoReps"] == 0  # every request was damaged, none answered
    assert tools.error_total(s) + vstack.lo.stats.rx_errors >= 20


def test_unknown_icmp_type_counts_in_error(piped: Piped) -> None:
    # Linux icmp_rcv(): a type above NR_ICMP_TYPES (18) is counted, then InErrors.
    stack, eth = piped
    eth.inject(bytes(IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=100, code=0)))
    assert eth.read() is None
    s = stack.stats()
    assert s["IcmpMsg"]["InType100"] == 1
    assert s["Icmp"]["InErrors"] == 1


def test_icmp_errors_to_a_peer_are_rate_limited(piped: Piped) -> None:
    # Linux: one token a second per peer, a burst of 6 (XRLIM_BURST_FACTOR).
    stack, eth = piped
    bad = bytes(IP(src="192.0.2.2", dst="192.0.2.1", proto=253) / Raw(b"x" * 8))
    for _ in range(20):
        eth.inject(bad)
    assert len([p for p in iter(eth.read, None)]) == 6
    assert stack.stats()["Icmp"]["OutRateLimitHost"] == 14
    stack.advance(1.0)
    eth.inject(bad)
    eth.inject(bad)
    assert len([p for p in iter(eth.read, None)]) == 1


def test_icmp_errors_on_lo_are_not_rate_limited(vstack: loopstack.Stack) -> None:
    bad = bytes(IP(src="127.0.0.1", dst="127.0.0.1", proto=253) / Raw(b"x" * 8))
    seen: list[bytes] = []
    vstack.lo.tap(lambda p, d: seen.append(p))
    with vstack.lock:
        for _ in range(60):
            vstack.lo.transmit(bad)
    errors = [p for p in seen if p[9] == 1]
    assert len(errors) == 60
    assert all(IP(p)[ICMP].type == 3 and IP(p)[ICMP].code == 2 for p in errors)
    s = vstack.stats()
    assert s["Icmp"]["OutDestUnreachs"] == 60 and s["Icmp"]["InDestUnreachs"] == 60
