"""Fragmentation and reassembly through a pipe NIC of MTU 1500, the test
playing the peer (192.0.2.2 / 2001:db8::2)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from scapy.layers.inet import ICMP, IP, defragment, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrFragment,
    defragment6,
    fragment6,
)
from scapy.packet import Raw

import loopstack
from loopstack.link.pipe import PipeInterface

Piped = tuple[loopstack.Stack, PipeInterface]
DATA = bytes((i * 7 + 3) & 0xFF for i in range(60000))


def v4_fragments(data: bytes, ident: int, fragsize: int = 1480) -> list[bytes]:
    req = IP(src="192.0.2.2", dst="192.0.2.1", id=ident) / ICMP(id=9, seq=1) / Raw(data)
    return [bytes(f) for f in fragment(req, fragsize=fragsize)]


def v6_fragments(data: bytes, ident: int, mtu: int = 1500) -> list[bytes]:
    req = (IPv6(src="2001:db8::2", dst="2001:db8::1") / IPv6ExtHdrFragment(id=ident)
           / ICMPv6EchoRequest(id=9, seq=1, data=data))
    return [bytes(f) for f in fragment6(req, mtu)]


def v4_piece(ident: int, offset: int, payload: bytes, more: bool, proto: int = 1) -> bytes:
    """One IPv4 fragment carrying ``payload`` at byte ``offset``."""
    return bytes(IP(src="192.0.2.2", dst="192.0.2.1", id=ident, proto=proto,
                    flags="MF" if more else 0, frag=offset // 8) / Raw(payload))


def v6_piece(ident: int, offset: int, payload: bytes, more: bool, nh: int = 58) -> bytes:
    return bytes(IPv6(src="2001:db8::2", dst="2001:db8::1")
                 / IPv6ExtHdrFragment(id=ident, offset=offset // 8, m=int(more), nh=nh)
                 / Raw(payload))


def v4_echo_payload(data: bytes) -> bytes:
    return bytes(ICMP(id=9, seq=1) / Raw(data))


def v6_echo_payload(data: bytes) -> bytes:
    return bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest(
        id=9, seq=1, data=data))[40:]


# -- the 60000-byte ping ------------------------------------------------------------


def test_ipv4_60000_byte_ping_through_mtu_1500(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    frags = v4_fragments(DATA, 4321)
    assert len(frags) == 41
    before = stack.stats()
    for f in frags:
        eth.inject(f)
    out = tools.read_all(eth)
    d = tools.delta(before, stack.stats())
    assert d["Ip.ReasmReqds"] == 41 and d["Ip.ReasmOKs"] == 1 and "Ip.ReasmFails" not in d
    assert d["Ip.FragOKs"] == 1 and d["Ip.FragCreates"] == len(out)
    assert len(out) == 41
    assert all(len(p) <= 1500 for p in out)
    assert all(tools.ipv4_header_ok(p) for p in out)
    hdrs = [IP(p) for p in out]
    assert len({h.id for h in hdrs}) == 1
    assert [h.frag * 8 for h in hdrs] == sorted(h.frag * 8 for h in hdrs)
    assert all(h.flags.MF for h in hdrs[:-1]) and not hdrs[-1].flags.MF
    assert all(h.frag % 1 == 0 and (h.frag * 8) % 8 == 0 for h in hdrs)
    (whole,) = defragment(hdrs)
    reply = IP(bytes(whole))
    assert (reply.src, reply.dst) == ("192.0.2.1", "192.0.2.2")
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 9, 1)
    assert bytes(reply[ICMP].payload) == DATA
    assert tools.checksums_ok(bytes(reply))  # the ICMP checksum covers the datagram


def test_ipv6_60000_byte_ping_through_mtu_1500(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    frags = v6_fragments(DATA, 0xABCDEF)
    before = stack.stats()
    for f in frags:
        eth.inject(f)
    out = tools.read_all(eth)
    d = tools.delta(before, stack.stats())
    assert d["Ip6.ReasmReqds"] == len(frags) and d["Ip6.ReasmOKs"] == 1
    assert "Ip6.ReasmFails" not in d
    assert d["Ip6.FragOKs"] == 1 and d["Ip6.FragCreates"] == len(out)
    assert len(out) > 40 and all(len(p) <= 1500 for p in out)
    hdrs = [IPv6(p) for p in out]
    assert len({h[IPv6ExtHdrFragment].id for h in hdrs}) == 1
    offsets = [h[IPv6ExtHdrFragment].offset * 8 for h in hdrs]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert [h[IPv6ExtHdrFragment].m for h in hdrs] == [1] * (len(hdrs) - 1) + [0]
    whole = defragment6(hdrs)
    reply = IPv6(bytes(whole))
    assert (reply.src, reply.dst) == ("2001:db8::1", "2001:db8::2")
    e = reply[ICMPv6EchoReply]
    assert (e.id, e.seq, e.data) == (9, 1, DATA)
    assert tools.checksums_ok(bytes(reply))


def test_locally_sent_datagrams_are_fragmented_for_the_pipe(piped: Piped,
                                                            tools: SimpleNamespace) -> None:
    stack, eth = piped
    stack.ping("192.0.2.2", size=3000, timeout=0.1)
    out = tools.read_all(eth)
    assert len(out) == 3 and all(len(p) <= 1500 for p in out)
    whole = IP(bytes(defragment([IP(p) for p in out])[0]))
    assert whole[ICMP].type == 8 and len(whole[ICMP].payload) == 3000
    assert tools.checksums_ok(bytes(whole))
    stack.ping("2001:db8::2", size=3000, timeout=0.1)
    out6 = tools.read_all(eth)
    assert len(out6) == 3 and all(len(p) <= 1500 for p in out6)
    whole6 = IPv6(bytes(defragment6([IPv6(p) for p in out6])))
    assert len(whole6[ICMPv6EchoRequest].data) == 3000
    assert tools.checksums_ok(bytes(whole6))
    s = stack.stats()
    assert (s["Ip"]["FragOKs"], s["Ip"]["FragCreates"]) == (1, 3)
    assert (s["Ip6"]["FragOKs"], s["Ip6"]["FragCreates"]) == (1, 3)


# -- order, duplicates, overlaps --------------------------------------------------------


def test_ipv4_out_of_order_and_duplicate_fragments(piped: Piped,
                                                    tools: SimpleNamespace) -> None:
    stack, eth = piped
    data = os.urandom(5000)
    frags = v4_fragments(data, 77)
    assert len(frags) == 4
    for f in [frags[3], frags[1], frags[1], frags[0], frags[3], frags[2]]:
        eth.inject(f)
    eth.inject(frags[2])  # a duplicate after completion starts a new (stale) queue
    out = tools.read_all(eth)
    ip = stack.stats()["Ip"]
    assert ip["ReasmOKs"] == 1 and ip["ReasmFails"] == 0
    reply = IP(bytes(defragment([IP(p) for p in out])[0]))
    assert bytes(reply[ICMP].payload) == data


def test_ipv6_out_of_order_and_duplicate_fragments(piped: Piped,
                                                    tools: SimpleNamespace) -> None:
    stack, eth = piped
    data = os.urandom(5000)
    frags = v6_fragments(data, 78)
    assert len(frags) == 4
    for f in [frags[2], frags[3], frags[0], frags[2], frags[0], frags[1]]:
        eth.inject(f)
    out = tools.read_all(eth)
    ip6 = stack.stats()["Ip6"]
    assert ip6["ReasmOKs"] == 1 and ip6["ReasmFails"] == 0
    reply = IPv6(bytes(defragment6([IPv6(p) for p in out])))
    assert reply[ICMPv6EchoReply].data == data


def test_ipv4_overlapping_fragments_discard_the_datagram(piped: Piped,
                                                         tools: SimpleNamespace) -> None:
    stack, eth = piped
    payload = v4_echo_payload(bytes(2000))  # 2008 bytes
    eth.inject(v4_piece(5, 0, payload[:1000], True))
    eth.inject(v4_piece(5, 800, payload[800:1600], True))  # overlaps 800..1000
    assert stack.stats()["Ip"]["ReasmFails"] == 1
    eth.inject(v4_piece(5, 1600, payload[1600:], False))
    assert tools.read_all(eth) == []
    assert stack.stats()["Ip"]["ReasmOKs"] == 0
    # Without the overlap, the same datagram is reassembled and answered.
    eth.inject(v4_piece(6, 0, payload[:1000], True))
    eth.inject(v4_piece(6, 1000, payload[1000:1600], True))
    eth.inject(v4_piece(6, 1600, payload[1600:], False))
    assert stack.stats()["Ip"]["ReasmOKs"] == 1
    (reply,) = defragment([IP(p) for p in tools.read_all(eth)])
    assert IP(bytes(reply))[ICMP].type == 0


def test_ipv6_overlapping_fragments_discard_the_datagram(piped: Piped,
                                                         tools: SimpleNamespace) -> None:
    # RFC 5722: a datagram with overlapping fragments is silently discarded.
    stack, eth = piped
    payload = v6_echo_payload(bytes(2000))
    eth.inject(v6_piece(5, 0, payload[:1000], True))
    eth.inject(v6_piece(5, 1600, payload[1600:], False))
    eth.inject(v6_piece(5, 992, payload[992:1600], True))  # overlaps 992..1000
    assert stack.stats()["Ip6"]["ReasmFails"] == 1
    eth.inject(v6_piece(5, 1000, payload[1000:1600], True))
    assert tools.read_all(eth) == []
    assert stack.stats()["Ip6"]["ReasmOKs"] == 0
    eth.inject(v6_piece(6, 0, payload[:1000], True))
    eth.inject(v6_piece(6, 1000, payload[1000:1600], True))
    eth.inject(v6_piece(6, 1600, payload[1600:], False))
    assert stack.stats()["Ip6"]["ReasmOKs"] == 1
    reply = defragment6([IPv6(p) for p in tools.read_all(eth)])
    assert ICMPv6EchoReply in IPv6(bytes(reply))


def test_last_fragments_that_disagree_discard_the_datagram(piped: Piped,
                                                           tools: SimpleNamespace) -> None:
    stack, eth = piped
    payload = v4_echo_payload(bytes(2000))
    eth.inject(v4_piece(8, 1600, payload[1600:], False))
    eth.inject(v4_piece(8, 1600, payload[1600:1800], False))  # a second, shorter end
    assert stack.stats()["Ip"]["ReasmFails"] == 1
    eth.inject(v4_piece(8, 0, payload[:1600], True))
    assert tools.read_all(eth) == []


# -- timeouts ---------------------------------------------------------------------------


def test_ipv4_reassembly_timeout_is_30_seconds(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    frags = v4_fragments(bytes(4000), 1234)
    eth.inject(frags[0])
    stack.advance(10)
    eth.inject(frags[1])  # a later fragment does not restart the timer
    stack.advance(19.9)
    assert eth.read() is None
    assert stack.stats()["Ip"]["ReasmTimeout"] == 0 and len(stack.ipv4.reassembler) == 1
    stack.advance(0.1)  # 30 s after the first fragment arrived
    ip = stack.stats()["Ip"]
    assert ip["ReasmTimeout"] == 1 and ip["ReasmFails"] == 1
    assert len(stack.ipv4.reassembler) == 0 and stack.ipv4.reassembler.mem == 0
    out = eth.read()
    assert out is not None and eth.read() is None
    assert tools.checksums_ok(out)
    e = IP(out)
    assert (e.src, e.dst) == ("192.0.2.1", "192.0.2.2")
    assert (e[ICMP].type, e[ICMP].code) == (11, 1)
    quoted = bytes(e[ICMP].payload)
    assert quoted == frags[0][: len(quoted)] and len(quoted) >= 28  # the first fragment
    assert stack.stats()["Icmp"]["OutTimeExcds"] == 1
    # The late fragment of the expired datagram does not complete anything.
    eth.inject(frags[2])
    assert eth.read() is None


def test_ipv4_timeout_without_first_fragment_sends_nothing(piped: Piped) -> None:
    stack, eth = piped
    frags = v4_fragments(bytes(4000), 99)
    eth.inject(frags[1])
    eth.inject(frags[2])
    stack.advance(30)
    assert stack.stats()["Ip"]["ReasmTimeout"] == 1
    assert eth.read() is None


def test_ipv6_reassembly_timeout_is_60_seconds(piped: Piped, tools: SimpleNamespace) -> None:
    stack, eth = piped
    frags = v6_fragments(bytes(4000), 4321)
    eth.inject(frags[0])
    stack.advance(30)
    assert stack.stats()["Ip6"]["ReasmTimeout"] == 0  # IPv4's timeout is not IPv6's
    stack.advance(29.9)
    assert eth.read() is None and stack.stats()["Ip6"]["ReasmTimeout"] == 0
    stack.advance(0.1)
    assert stack.stats()["Ip6"]["ReasmTimeout"] == 1
    out = eth.read()
    assert out is not None and tools.checksums_ok(out)
    e = IPv6(out)
    te = e[ICMPv6TimeExceeded]
    assert (e.src, e.dst, te.code) == ("2001:db8::1", "2001:db8::2", 1)
    quoted = bytes(te.payload)
    assert quoted == frags[0][: len(quoted)] and len(quoted) >= 48
    assert len(out) <= 1280


def test_memory_bound(piped: Piped, tools: SimpleNamespace) -> None:
    """Incomplete datagrams never hold more than ipfrag_high_thresh (4 MiB)."""
    stack, eth = piped
    limit = 4 * 1024 * 1024
    piece = bytes(1480)
    count = 3200  # 4.7 MB of fragments that never complete
    for ident in range(count):
        eth.inject(v4_piece(ident, 1480, piece, True))
        assert stack.ipv4.reassembler.mem <= limit
    r = stack.ipv4.reassembler
    assert limit - 4096 < r.mem <= limit  # filled up to the bound, not past it
    assert len(r) < count
    ip = stack.stats()["Ip"]
    assert ip["ReasmReqds"] == count and ip["ReasmFails"] == count - len(r)
    # Memory is given back when they expire, and reassembly works again.
    stack.advance(30)
    assert r.mem == 0 and len(r) == 0
    for f in v4_fragments(bytes(3000), 40000):
        eth.inject(f)
    assert stack.stats()["Ip"]["ReasmOKs"] == 1
    assert len([p for p in tools.read_all(eth) if IP(p).proto == 1]) == 3


# -- limits of the datagram -------------------------------------------------------------


def test_ipv4_reassembly_beyond_65535_bytes_fails(piped: Piped, tools: SimpleNamespace) -> None:
    # Header 20 + payload 65520 > 65535: Linux ip_frag_reasm() -> out_oversize,
    # counted in ReasmFails and not in ReasmOKs.
    stack, eth = piped
    payload = bytes(65520)
    eth.inject(v4_piece(3, 0, payload[:32000], True))
    eth.inject(v4_piece(3, 32000, payload[32000:], False))
    assert tools.read_all(eth) == []
    ip = stack.stats()["Ip"]
    assert ip["InDelivers"] == 0
    assert ip["ReasmFails"] == 1
    assert ip["ReasmOKs"] == 0


def test_ipv6_fragment_not_multiple_of_8_is_param_problem(piped: Piped,
                                                          tools: SimpleNamespace) -> None:
    # RFC 8200 4.5: M set and a length not a multiple of 8 -> discard, and a
    # Parameter Problem code 0 pointing to the Payload Length field (Linux does).
    stack, eth = piped
    bad = v6_piece(11, 0, v6_echo_payload(bytes(100))[:101], True)
    eth.inject(bad)
    out = eth.read()
    assert out is not None, "no ICMPv6 parameter problem was sent"
    pp = IPv6(out)[ICMPv6ParamProblem]
    assert (pp.code, pp.ptr) == (0, 4)
    assert stack.stats()["Ip6"]["InHdrErrors"] == 1


def test_ipv6_fragment_beyond_65535_is_param_problem(piped: Piped) -> None:
    # RFC 8200 4.5: offset + length > 65535 -> Parameter Problem code 0
    # pointing to the Fragment Offset field (40 + 2).
    stack, eth = piped
    eth.inject(v6_piece(12, 65528, bytes(16), False))
    out = eth.read()
    assert out is not None, "no ICMPv6 parameter problem was sent"
    pp = IPv6(out)[ICMPv6ParamProblem]
    assert (pp.code, pp.ptr) == (0, 42)


def test_ipv6_atomic_fragment_is_processed_at_once(piped: Piped) -> None:
    # RFC 6946: offset 0 and M clear: a whole datagram in a fragment header.
    stack, eth = piped
    eth.inject(v6_piece(13, 0, v6_echo_payload(b"atomic!!"), False))
    out = eth.read()
    assert out is not None and IPv6(out)[ICMPv6EchoReply].data == b"atomic!!"
    assert len(stack.ipv6.reassembler) == 0
