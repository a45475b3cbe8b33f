"""Addresses, routes and source selection, as Linux's lo and a second NIC have them."""

from __future__ import annotations

import errno
import threading
from types import SimpleNamespace

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

import loopstack
from loopstack.link.pipe import PipeInterface

LO_ROUTES = [
    "local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1",
    "local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1",
    "broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1",
    "::1 dev lo proto kernel metric 256 pref medium",
    "local ::1 dev lo table local proto kernel metric 0 pref medium",
]


def is_subsequence(wanted: list[str], lines: list[str]) -> bool:
    it = iter(lines)
    return all(any(w == line for line in it) for w in wanted)


def lo_packets(stack: loopstack.Stack) -> tuple[list[bytes], object]:
    seen: list[bytes] = []
    handle = stack.lo.tap(lambda p, d: seen.append(p))
    return seen, handle


# -- addresses and routes -------------------------------------------------------


def test_lo_has_127_0_0_1_slash_8_and_ipv6_loopback(vstack: loopstack.Stack) -> None:
    (lo,) = vstack.interfaces()
    assert lo.name == "lo"
    assert lo.mtu == 65536
    assert lo.addresses == ["127.0.0.1/8", "::1/128"]
    assert "LOOPBACK" in lo.flags and "UP" in lo.flags
    shown = lo.show()
    assert "    inet 127.0.0.1/8 scope host lo" in shown.splitlines()
    assert "    inet6 ::1/128 scope host" in shown.splitlines()
    assert vstack.interface("lo") is vstack.lo


def test_lo_routes_are_linux_lines_exactly(vstack: loopstack.Stack) -> None:
    assert vstack.routes() == LO_ROUTES


def test_pipe_nic_routes_are_linux_lines(vstack: loopstack.Stack) -> None:
    vstack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"])
    expected = [
        "192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.1",
        "local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1",
        "local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1",
        "broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1",
        "local 192.0.2.1 dev eth0 table local proto kernel scope host src 192.0.2.1",
        "broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.1",
        "::1 dev lo proto kernel metric 256 pref medium",
        "2001:db8::/64 dev eth0 proto kernel metric 256 pref medium",
        "local ::1 dev lo table local proto kernel metric 0 pref medium",
        "local 2001:db8::1 dev eth0 table local proto kernel metric 0 pref medium",
    ]
    routes = vstack.routes()
    for line in expected:
        assert line in routes
    # `ip route show table all` order: main before local, IPv4 before IPv6.
    assert is_subsequence(expected, routes), routes


def test_add_route_lines_as_ip_route_add_prints_them(vstack: loopstack.Stack) -> None:
    # `ip route add` uses proto boot, which `ip route show` does not print; a
    # route without a gateway gets scope link, one with a gateway scope global.
    vstack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"])
    vstack.add_route("198.51.100.0/24", "eth0", via="192.0.2.254")
    vstack.add_route("198.51.100.128/25", "eth0")
    vstack.add_route("2001:db8:1::/48", "eth0")
    routes = vstack.routes()
    assert "198.51.100.0/24 via 192.0.2.254 dev eth0" in routes, routes
    assert "198.51.100.128/25 dev eth0 scope link" in routes, routes
    assert "2001:db8:1::/48 dev eth0 metric 1024 pref medium" in routes, routes


def test_interfaces_lists_pipe_nic(vstack: loopstack.Stack) -> None:
    vstack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"], mtu=1400)
    lo, eth = vstack.interfaces()
    assert (lo.index, eth.index) == (1, 2)
    assert eth.name == "eth0" and eth.mtu == 1400
    assert eth.addresses == ["192.0.2.1/24", "2001:db8::1/64"]
    assert "    inet 192.0.2.1/24 scope global eth0" in eth.show().splitlines()


# -- every 127/8 address is ours -------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.200.3.4", "127.0.0.0", "127.1.2.3", "127.255.255.254"]
)
def test_every_127_address_answers_from_itself(vstack: loopstack.Stack, host: str) -> None:
    seen, handle = lo_packets(vstack)
    r = vstack.ping(host, count=2, interval=0)
    handle.remove()  # type: ignore[attr-defined]
    assert (r.transmitted, r.received, r.loss) == (2, 2, 0.0)
    assert [rep.address for rep in r.replies] == [host, host]
    assert [rep.ttl for rep in r.replies] == [64, 64]
    assert len(seen) == 4
    for request, reply in zip(seen[0::2], seen[1::2], strict=True):
        q, a = IP(request), IP(reply)
        assert (q[ICMP].type, a[ICMP].type) == (8, 0)
        # The request comes from lo's primary address, the reply from the pinged one.
        assert (q.src, q.dst) == ("127.0.0.1", host)
        assert (a.src, a.dst) == (host, "127.0.0.1")
        assert a.ttl == 64


def test_ipv6_loopback_answers(vstack: loopstack.Stack) -> None:
    seen, _ = lo_packets(vstack)
    r = vstack.ping("::1", count=1)
    assert r.received == 1 and r.replies[0].address == "::1" and r.replies[0].ttl == 64
    q, a = IPv6(seen[0]), IPv6(seen[1])
    assert ICMPv6EchoRequest in q and ICMPv6EchoReply in a
    assert (a.src, a.dst, a.hlim) == ("::1", "::1", 64)


@pytest.mark.parametrize("host", ["::2", "10.1.2.3", "2001:db8::5", "192.0.2.9"])
def test_no_route_is_enetunreach(vstack: loopstack.Stack, host: str) -> None:
    before = vstack.lo.stats.tx_packets
    with pytest.raises(OSError) as info:
        vstack.ping(host, count=1)
    assert info.value.errno == errno.ENETUNREACH
    assert info.value.strerror == "Network is unreachable"
    assert vstack.lo.stats.tx_packets == before  # nothing was sent


def test_no_route_counts_out_no_routes(vstack: loopstack.Stack) -> None:
    with pytest.raises(OSError):
        vstack.ping("10.1.2.3")
    assert vstack.stats()["Ip"]["OutNoRoutes"] == 1


def test_ipv6_loopback_is_only_slash_128(vstack: loopstack.Stack, tools: SimpleNamespace) -> None:
    with pytest.raises(OSError) as info:
        vstack.ipv6.route_output(tools.a6("::2"))
    assert info.value.errno == errno.ENETUNREACH


# -- source selection (connect) --------------------------------------------------


def test_connect_style_source_selection(vstack: loopstack.Stack, tools: SimpleNamespace) -> None:
    v4, v6 = vstack.ipv4, vstack.ipv6
    rt = v4.route_output(tools.a4("127.0.0.2"))
    assert (rt.src, rt.dst, rt.iface) == (tools.a4("127.0.0.1"), tools.a4("127.0.0.2"), vstack.lo)
    assert v4.route_output(tools.a4("127.9.8.7")).src == tools.a4("127.0.0.1")
    assert v4.route_output(tools.a4("127.0.0.1")).src == tools.a4("127.0.0.1")
    # Connecting to 0.0.0.0 means the loopback (and :: means ::1).
    rt = v4.route_output(tools.a4("0.0.0.0"))
    assert (rt.src, rt.dst) == (tools.a4("127.0.0.1"), tools.a4("127.0.0.1"))
    rt6 = v6.route_output(tools.a6("::"))
    assert (rt6.src, rt6.dst, rt6.iface) == (tools.a6("::1"), tools.a6("::1"), vstack.lo)


def test_ping_unspecified_addresses_reach_loopback(vstack: loopstack.Stack) -> None:
    r = vstack.ping("0.0.0.0")
    assert r.received == 1 and r.replies[0].address == "127.0.0.1"
    r = vstack.ping("::")
    assert r.received == 1 and r.replies[0].address == "::1"


def test_source_selection_with_a_pipe(
    piped: tuple[loopstack.Stack, PipeInterface], tools: SimpleNamespace
) -> None:
    stack, eth = piped
    # Our own address on eth0 is reached through lo, from itself.
    rt = stack.ipv4.route_output(tools.a4("192.0.2.1"))
    assert (rt.iface, rt.src) == (stack.lo, tools.a4("192.0.2.1"))
    rt = stack.ipv4.route_output(tools.a4("192.0.2.2"))
    assert (rt.iface, rt.src) == (eth, tools.a4("192.0.2.1"))
    rt6 = stack.ipv6.route_output(tools.a6("2001:db8::2"))
    assert (rt6.iface, rt6.src) == (eth, tools.a6("2001:db8::1"))
    rt6 = stack.ipv6.route_output(tools.a6("2001:db8::1"))
    assert (rt6.iface, rt6.src) == (stack.lo, tools.a6("2001:db8::1"))


def test_longest_prefix_match(vstack: loopstack.Stack, tools: SimpleNamespace) -> None:
    eth0 = vstack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"])
    eth1 = vstack.add_interface("eth1", ["198.51.100.1/24", "2001:db8:1:2::1/64"])

    def dev(addr: str) -> object:
        if ":" in addr:
            return vstack.ipv6.route_output(tools.a6(addr)).iface
        return vstack.ipv4.route_output(tools.a4(addr)).iface

    assert dev("198.51.100.200") is eth1
    vstack.add_route("198.51.100.128/25", "eth0")
    assert dev("198.51.100.200") is eth0  # /25 beats the connected /24
    assert dev("198.51.100.127") is eth1
    vstack.add_route("198.51.100.201/32", "eth1")
    assert dev("198.51.100.201") is eth1  # /32 beats /25
    assert dev("198.51.100.202") is eth0
    # The local table still wins for our own addresses.
    assert dev("198.51.100.1") is vstack.lo
    vstack.add_route("0.0.0.0/0", "eth1", via="198.51.100.254")
    assert dev("192.0.2.77") is eth0
    assert dev("198.51.100.129") is eth0
    assert vstack.ipv4.route_output(tools.a4("198.51.100.150")).src == tools.a4("192.0.2.1")

    vstack.add_route("2001:db8:1::/48", "eth0")
    assert dev("2001:db8:1:2::5") is eth1  # connected /64 beats /48
    assert dev("2001:db8:1:3::5") is eth0
    with pytest.raises(OSError):
        dev("2001:db8:2::5")


def test_ping_own_pipe_address_goes_through_lo(
    piped: tuple[loopstack.Stack, PipeInterface],
) -> None:
    stack, eth = piped
    r = stack.ping("192.0.2.1", count=2, interval=0)
    r6 = stack.ping("2001:db8::1", count=2, interval=0)
    assert r.received == 2 and {x.address for x in r.replies} == {"192.0.2.1"}
    assert r6.received == 2 and {x.address for x in r6.replies} == {"2001:db8::1"}
    assert eth.stats.tx_packets == 0 and eth.stats.rx_packets == 0
    assert eth.read() is None
    assert stack.lo.stats.tx_packets == 8


def test_ping_a_peer_behind_the_pipe(tools: SimpleNamespace) -> None:
    """A real-clock stack pings 192.0.2.2 and 2001:db8::2; a thread plays the peer."""
    stack = loopstack.Stack(seed=5)
    try:
        eth = stack.add_interface("eth0", ["192.0.2.1/24", "2001:db8::1/64"])
        requests: list[bytes] = []

        def peer() -> None:
            while len(requests) < 2:
                pkt = eth.read(timeout=5.0)
                if pkt is None:
                    return
                requests.append(pkt)
                if pkt[0] >> 4 == 4:
                    q = IP(pkt)
                    reply = IP(src=q.dst, dst=q.src) / ICMP(
                        type=0, id=q[ICMP].id, seq=q[ICMP].seq) / q[ICMP].payload
                else:
                    q6 = IPv6(pkt)
                    e = q6[ICMPv6EchoRequest]
                    reply = IPv6(src=q6.dst, dst=q6.src) / ICMPv6EchoReply(
                        id=e.id, seq=e.seq, data=e.data)
                eth.inject(bytes(reply))

        t = threading.Thread(target=peer)
        t.start()
        r4 = stack.ping("192.0.2.2", count=1, timeout=5.0)
        r6 = stack.ping("2001:db8::2", count=1, timeout=5.0)
        t.join(10)
        assert r4.received == 1 and r4.replies[0].address == "192.0.2.2"
        assert r6.received == 1 and r6.replies[0].address == "2001:db8::2"
        q4, q6 = IP(requests[0]), IPv6(requests[1])
        assert (q4.src, q4.dst, q4.ttl) == ("192.0.2.1", "192.0.2.2", 64)
        assert (q6.src, q6.dst, q6.hlim) == ("2001:db8::1", "2001:db8::2", 64)
        # Packets leaving for a NIC carry real checksums.
        assert tools.checksums_ok(requests[0]) and tools.checksums_ok(requests[1])
    finally:
        stack.close()


# -- the IP layer's own behaviour on lo -------------------------------------------


def test_ip_counters_for_one_ping(vstack: loopstack.Stack, tools: SimpleNamespace) -> None:
    before = vstack.stats()
    vstack.ping("127.0.0.1", size=56)
    d = tools.delta(before, vstack.stats())
    assert d["Ip.InReceives"] == 2
    assert d["Ip.InDelivers"] == 2
    assert d["Ip.OutRequests"] == 2
    assert d["IpExt.InOctets"] == 2 * 84
    assert d["IpExt.OutOctets"] == 2 * 84
    assert vstack.lo.stats.tx_packets == vstack.lo.stats.rx_packets == 2
    assert vstack.lo.stats.tx_bytes == vstack.lo.stats.rx_bytes == 2 * 84


def test_request_ttl_is_the_callers_and_reply_ttl_is_64(vstack: loopstack.Stack) -> None:
    seen, _ = lo_packets(vstack)
    r = vstack.ping("127.0.0.1", ttl=5)
    assert r.replies[0].ttl == 64
    assert IP(seen[0]).ttl == 5 and IP(seen[1]).ttl == 64
    r6 = vstack.ping("::1", ttl=7)
    assert r6.replies[0].ttl == 64
    assert IPv6(seen[2]).hlim == 7 and IPv6(seen[3]).hlim == 64


def test_largest_ipv4_ping_is_not_fragmented_on_lo(vstack: loopstack.Stack) -> None:
    seen, _ = lo_packets(vstack)
    r = vstack.ping("127.0.0.1", size=65507)
    assert r.received == 1 and r.replies[0].size == 65515
    assert [len(p) for p in seen] == [65535, 65535]
    assert vstack.stats()["Ip"]["FragCreates"] == 0


def test_largest_ipv6_ping_is_fragmented_on_lo(vstack: loopstack.Stack) -> None:
    # 40 + 8 + 65527 = 65575 bytes exceed lo's MTU of 65536: two fragments each way.
    seen, _ = lo_packets(vstack)
    r = vstack.ping("::1", size=65527)
    assert r.received == 1 and r.replies[0].size == 65535
    assert len(seen) == 4 and all(len(p) <= 65536 for p in seen)
    ip6 = vstack.stats()["Ip6"]
    assert (ip6["FragOKs"], ip6["FragCreates"], ip6["ReasmOKs"]) == (2, 4, 2)
