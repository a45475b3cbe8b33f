"""Socket options on UDP sockets, the kernel's against loopstack's."""

from __future__ import annotations

import socket as S

import pytest

from .harness import Entry, Net, Recorder, Scenarios, as_default, run

V4, V6, DGRAM = S.AF_INET, S.AF_INET6, S.SOCK_DGRAM
SOL = S.SOL_SOCKET
SO_DOMAIN = getattr(S, "SO_DOMAIN", 39)
SO_PROTOCOL = getattr(S, "SO_PROTOCOL", 38)
scenarios = Scenarios()
scenario = scenarios.add


@scenario
def buffer_sizes_double(net: Net, rec: Recorder) -> None:
    # The defaults are net.core.rmem_default / wmem_default (212992 stock; a
    # host may tune them): each side is compared with its own.
    s = net.socket(V4, DGRAM)
    rec("rcvbuf default", s.getsockopt(SOL, S.SO_RCVBUF) == net.sysctl("net/core/rmem_default"))
    rec("sndbuf default", s.getsockopt(SOL, S.SO_SNDBUF) == net.sysctl("net/core/wmem_default"))
    # 1 and 0 give SOCK_MIN_RCVBUF/SNDBUF (2304/4608: 2048 + sizeof(struct
    # sk_buff) rounded to a cache line, the same for every x86-64 build of a
    # recent kernel; a debug build with a larger sk_buff would differ).
    for size in (4096, 65536, 1, 0):
        s.setsockopt(SOL, S.SO_RCVBUF, size)
        s.setsockopt(SOL, S.SO_SNDBUF, size)
        rec(f"rcvbuf {size}", s.getsockopt(SOL, S.SO_RCVBUF))
        rec(f"sndbuf {size}", s.getsockopt(SOL, S.SO_SNDBUF))


@scenario
def buffer_sizes_clamped_at_max(net: Net, rec: Recorder) -> None:
    # The ceiling is net.core.rmem_max / wmem_max: the host's may be tuned,
    # loopstack's is the stock 212992. Both must show twice their own.
    for opt, name in ((S.SO_RCVBUF, "rmem_max"), (S.SO_SNDBUF, "wmem_max")):
        s = net.socket(V4, DGRAM)
        s.setsockopt(SOL, opt, 1 << 30)
        rec(f"{name} x2", s.getsockopt(SOL, opt) == 2 * net.sysctl(f"net/core/{name}"))
        s.setsockopt(SOL, opt, -1)  # taken as unsigned: the maximum too
        rec(f"{name} -1", s.getsockopt(SOL, opt) == 2 * net.sysctl(f"net/core/{name}"))


@scenario
def identity_options(net: Net, rec: Recorder) -> None:
    for family in (V4, V6):
        for proto in (0, S.IPPROTO_UDP):
            s = net.socket(family, DGRAM, proto)
            rec(f"{family}/{proto} proto attr", s.proto)
            for opt, name in ((S.SO_TYPE, "type"), (SO_DOMAIN, "domain"),
                              (SO_PROTOCOL, "protocol"), (S.SO_ACCEPTCONN, "acceptconn")):
                rec.call(s.getsockopt, SOL, opt, label=f"{family}/{proto} {name}")
    s = net.socket(V4, DGRAM)
    for opt in (S.SO_TYPE, SO_DOMAIN, SO_PROTOCOL, S.SO_ERROR):
        rec.call(s.setsockopt, SOL, opt, 1, label=f"set {opt}")


@scenario
def flag_options(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    for opt, name in ((S.SO_REUSEADDR, "reuseaddr"), (S.SO_REUSEPORT, "reuseport"),
                      (S.SO_BROADCAST, "broadcast"), (S.SO_KEEPALIVE, "keepalive")):
        rec(f"{name} default", s.getsockopt(SOL, opt))
        s.setsockopt(SOL, opt, 5)
        rec(f"{name} set 5", s.getsockopt(SOL, opt))
        s.setsockopt(SOL, opt, b"\0\0\0\0")
        rec(f"{name} set bytes 0", s.getsockopt(SOL, opt))
        rec.call(s.setsockopt, SOL, opt, b"\1", label=f"{name} short bytes")


@scenario
def so_error_default_and_icmp(net: Net, rec: Recorder) -> None:
    s = net.socket(V6, DGRAM)
    rec("default", s.getsockopt(SOL, S.SO_ERROR))
    s.connect(("::1", net.port()))
    s.send(b"x")
    net.wait(s)
    rec.call(s.getsockopt, SOL, S.SO_ERROR, label="after icmp")
    rec.call(s.getsockopt, SOL, S.SO_ERROR, label="cleared")
    rec.call(s.recv, 1, S.MSG_DONTWAIT, label="recv")


@scenario
def ip_ttl(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec("default is ip_default_ttl",
        s.getsockopt(S.IPPROTO_IP, S.IP_TTL) == net.sysctl("net/ipv4/ip_default_ttl"))
    for ttl in (10, 255, 1, 0, 256, -1, -2):
        rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, ttl, label=f"set {ttl}")
        got = s.getsockopt(S.IPPROTO_IP, S.IP_TTL)  # -1 resets to the default
        rec(f"get after {ttl}", as_default(net, got, "net/ipv4/ip_default_ttl")
            if ttl < 0 else got)


@scenario
def ip_ttl_on_ipv6_socket(net: Net, rec: Recorder) -> None:
    s = net.socket(V6, DGRAM)
    rec.call(lambda: as_default(net, s.getsockopt(S.IPPROTO_IP, S.IP_TTL),
                                "net/ipv4/ip_default_ttl"), label="get")
    rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, 7, label="set")
    rec.call(s.getsockopt, S.IPPROTO_IP, S.IP_TTL, label="get after")


@scenario
def ipv6_unicast_hops(net: Net, rec: Recorder) -> None:
    s = net.socket(V6, DGRAM)
    # Unconnected: do_ipv6_getsockopt falls back to conf/all/hop_limit (64 stock).
    rec("default is hop_limit", s.getsockopt(S.IPPROTO_IPV6, S.IPV6_UNICAST_HOPS)
        == net.sysctl("net/ipv6/conf/all/hop_limit"))
    for hops in (10, 0, 255, 256, -1, -2):
        rec.call(s.setsockopt, S.IPPROTO_IPV6, S.IPV6_UNICAST_HOPS, hops, label=f"set {hops}")
        got = s.getsockopt(S.IPPROTO_IPV6, S.IPV6_UNICAST_HOPS)  # -1 resets to the default
        rec(f"get after {hops}", as_default(net, got, "net/ipv6/conf/all/hop_limit")
            if hops < 0 else got)
    t = net.socket(V4, DGRAM)
    rec.call(t.getsockopt, S.IPPROTO_IPV6, S.IPV6_UNICAST_HOPS, label="on v4 socket")
    rec.call(t.setsockopt, S.IPPROTO_IPV6, S.IPV6_UNICAST_HOPS, 5, label="set on v4 socket")


@scenario
def ipv6_v6only(net: Net, rec: Recorder) -> None:
    s = net.socket(V6, DGRAM)
    rec("default", s.getsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY))
    rec.call(s.setsockopt, S.IPPROTO_IPV6, S.IPV6_V6ONLY, 7, label="set 7")
    rec("get", s.getsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY))
    s.setsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY, 0)
    s.bind(("::1", 0))
    rec.call(s.setsockopt, S.IPPROTO_IPV6, S.IPV6_V6ONLY, 1, label="after bind")
    rec("still", s.getsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY))
    t = net.socket(V6, DGRAM)
    t.sendto(b"x", ("::1", net.port()))  # autobinds
    rec.call(t.setsockopt, S.IPPROTO_IPV6, S.IPV6_V6ONLY, 1, label="after autobind")
    u = net.socket(V4, DGRAM)
    rec.call(u.getsockopt, S.IPPROTO_IPV6, S.IPV6_V6ONLY, label="on v4 socket")


@scenario
def tcp_options_on_udp(net: Net, rec: Recorder) -> None:
    for family in (V4, V6):
        s = net.socket(family, DGRAM)
        rec.call(s.getsockopt, S.IPPROTO_TCP, S.TCP_NODELAY, label=f"{family} get nodelay")
        rec.call(s.setsockopt, S.IPPROTO_TCP, S.TCP_NODELAY, 1, label=f"{family} set nodelay")


@scenario
def unknown_options(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.getsockopt, SOL, 9999, label="get sol 9999")
    rec.call(s.setsockopt, SOL, 9999, 1, label="set sol 9999")
    rec.call(s.getsockopt, S.IPPROTO_IP, 9999, label="get ip 9999")
    rec.call(s.setsockopt, S.IPPROTO_IP, 9999, 1, label="set ip 9999")
    rec.call(s.getsockopt, 12345, 1, label="get level 12345")
    rec.call(s.setsockopt, 12345, 1, 1, label="set level 12345")


@scenario
def getsockopt_with_buflen(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.setsockopt(S.IPPROTO_IP, S.IP_TTL, 64)  # not the host's ip_default_ttl, which may be tuned
    for buflen in (4, 8, 2, 1):
        rec.call(s.getsockopt, SOL, S.SO_TYPE, buflen, label=f"so_type {buflen}")
        rec.call(s.getsockopt, S.IPPROTO_IP, S.IP_TTL, buflen, label=f"ip_ttl {buflen}")
    rec.call(s.getsockopt, SOL, S.SO_TYPE, 0, label="buflen 0")
    rec.call(s.getsockopt, SOL, S.SO_TYPE, 2000, label="buflen 2000")


@scenario
def setsockopt_value_forms(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, (33).to_bytes(4, "little"), label="bytes")
    rec("ttl", s.getsockopt(S.IPPROTO_IP, S.IP_TTL))
    rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, b"\x07", label="one byte")
    rec("ttl after one byte", s.getsockopt(S.IPPROTO_IP, S.IP_TTL))
    rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, None, 4, label="none with optlen")
    rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, "9", label="str")
    rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, 2**40, label="huge")


@scenario
def linger_and_timeouts_on_udp(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.getsockopt, SOL, S.SO_LINGER, label="linger")
    rec.call(s.getsockopt, SOL, S.SO_RCVTIMEO, label="rcvtimeo")
    rec.call(s.getsockopt, SOL, S.SO_SNDTIMEO, label="sndtimeo")
    rec.call(s.getsockopt, SOL, S.SO_RCVLOWAT, label="rcvlowat")
    rec.call(s.getsockopt, SOL, S.SO_SNDLOWAT, label="sndlowat")


@scenario
def options_on_closed_socket(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.close()
    rec.call(s.getsockopt, S.IPPROTO_IP, S.IP_TTL, label="get")
    rec.call(s.setsockopt, S.IPPROTO_IP, S.IP_TTL, 5, label="set")


@pytest.mark.parametrize("entry", list(scenarios), ids=scenarios.ids())
def test_options(entry: Entry) -> None:
    run(entry)
