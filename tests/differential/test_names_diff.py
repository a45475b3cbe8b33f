"""Name resolution: glibc behind the stdlib against loopstack's hosts table.

Only inputs that glibc answers without asking DNS are used: numeric forms,
'localhost' (in the host's /etc/hosts), and anything else under
AI_NUMERICHOST. A query that would reach the host's resolver is never made.

What depends on the host's /etc/hosts: whether localhost has a ::1 line
(localhost_has_ipv6_too declares both kinds of host), and the names on the
first line for 127.0.0.1, which must be 'localhost' alone (Debian, Ubuntu,
Docker images, this host). On Fedora/RHEL, whose line adds aliases
(localhost.localdomain, localhost4...), canonical_names, gethostbyaddr_loopback,
gethostbyname_ex_forms and getnameinfo_forms would differ: not declared here,
since no such host was at hand to record them.
"""

from __future__ import annotations

import socket as S

import pytest

from .harness import Entry, Net, Recorder, Scenarios, run

V4, V6, DGRAM, STREAM, RAW = S.AF_INET, S.AF_INET6, S.SOCK_DGRAM, S.SOCK_STREAM, S.SOCK_RAW
NUMERIC = S.AI_NUMERICHOST
scenarios = Scenarios()
scenario = scenarios.add


def gai(net: Net, rec: Recorder, label: str, host: object, port: object, family: int = 0,
        type: int = 0, proto: int = 0, flags: int = 0) -> None:
    rec.call(net.getaddrinfo, host, port, family, type, proto, flags, label=label)


@scenario
def numeric_ipv4_forms(net: Net, rec: Recorder) -> None:
    for host in ("127.1", "0x7f.1", "2130706433", "0177.0.0.1", "0x7f000001", "127.0.0.1",
                 "127.65535", "127.1.2"):
        gai(net, rec, host, host, 80, V4, DGRAM)


@scenario
def malformed_ipv4_forms(net: Net, rec: Recorder) -> None:
    # AI_NUMERICHOST keeps glibc from asking DNS about what is not a literal.
    for host in ("127.0.0.256", "127.65536", "4294967296", "1.2.3.4.5", "09.0.0.1", "0x",
                 "127.0.0.1 ", "127.0.0.1.", " 127.0.0.1", "127.0.0.1x", "+127.0.0.1"):
        gai(net, rec, repr(host), host, 80, V4, DGRAM, 0, NUMERIC)


@scenario
def numeric_ipv6_forms(net: Net, rec: Recorder) -> None:
    for host in ("::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::",
                 "::1%1", "::1%99", "::1%lo", "::1%", ":::1", "::1::"):
        gai(net, rec, host, host, 80, 0, DGRAM, 0, NUMERIC)


@scenario
def ports_as_int_str_and_service(net: Net, rec: Recorder) -> None:
    for port in (80, "80", b"80", "domain", "echo", 0, "0", "", None, "*", 65535, 65536,
                 65537, "65537", 2**32 + 5, "+80", " 80", "0x50", "DOMAIN", "-1", -1):
        gai(net, rec, repr(port), "127.0.0.1", port, V4, DGRAM)


@scenario
def port_argument_types(net: Net, rec: Recorder) -> None:
    for port in (True, 1.5, 2**70, [80]):
        gai(net, rec, repr(port), "127.0.0.1", port, V4, DGRAM)
    gai(net, rec, "host-int", 127, 80)
    gai(net, rec, "host-bytes", b"127.0.0.1", 80, V4, DGRAM)


@scenario
def service_names_pick_protocols(net: Net, rec: Recorder) -> None:
    for port in ("http", "domain", "echo", "discard", "nosuchservice"):
        gai(net, rec, f"{port} any", "127.0.0.1", port, V4)
        gai(net, rec, f"{port} dgram", "127.0.0.1", port, V4, DGRAM)


@scenario
def type_and_proto_filters(net: Net, rec: Recorder) -> None:
    for type_, proto in ((0, 0), (STREAM, 0), (DGRAM, 0), (RAW, 0), (0, S.IPPROTO_TCP),
                         (0, S.IPPROTO_UDP), (0, 255), (0, 1), (0, 132), (0, 136),
                         (S.SOCK_SEQPACKET, 0), (STREAM, 132), (DGRAM, S.IPPROTO_TCP),
                         (RAW, 17), (99, 0), (6, 0)):
        gai(net, rec, f"none {type_}/{proto}", "127.0.0.1", None, V4, type_, proto)
        gai(net, rec, f"80 {type_}/{proto}", "127.0.0.1", 80, V4, type_, proto)


@scenario
def raw_with_a_port(net: Net, rec: Recorder) -> None:
    for port in (80, 0, "0", "domain", "*", None):
        gai(net, rec, repr(port), "127.0.0.1", port, 0, RAW)


@scenario
def no_host_passive_and_loopback(net: Net, rec: Recorder) -> None:
    for family in (0, V4, V6):
        gai(net, rec, f"passive {family}", None, 80, family, DGRAM, 0, S.AI_PASSIVE)
        gai(net, rec, f"active {family}", None, 80, family, DGRAM)
    gai(net, rec, "nothing", None, None)
    gai(net, rec, "empty host", "", 80)


@scenario
def numeric_flags(net: Net, rec: Recorder) -> None:
    gai(net, rec, "numerichost name", "localhost", 80, 0, 0, 0, NUMERIC)
    gai(net, rec, "numericserv http", "127.0.0.1", "http", 0, 0, 0, S.AI_NUMERICSERV)
    gai(net, rec, "numericserv 80", "127.0.0.1", "80", V4, DGRAM, 0, S.AI_NUMERICSERV)
    gai(net, rec, "numericserv -1", "127.0.0.1", "-1", V4, DGRAM, 0, S.AI_NUMERICSERV)
    gai(net, rec, "bad flags", "127.0.0.1", 80, 0, 0, 0, 0x800)
    gai(net, rec, "canonname no host", None, 80, 0, 0, 0, S.AI_CANONNAME)


@scenario
def family_mismatch(net: Net, rec: Recorder) -> None:
    gai(net, rec, "v6 wants v4 literal", "127.0.0.1", 80, V6)
    gai(net, rec, "v4 wants v6 literal", "::1", 80, V4)
    gai(net, rec, "v4mapped", "127.0.0.1", 80, V6, DGRAM, 0, S.AI_V4MAPPED)
    gai(net, rec, "v4mapped all", "127.0.0.1", 80, V6, DGRAM, 0, S.AI_V4MAPPED | S.AI_ALL)
    gai(net, rec, "bad family", "127.0.0.1", 80, 12345)
    gai(net, rec, "unix family", "127.0.0.1", 80, S.AF_UNIX)


@scenario
def canonical_names(net: Net, rec: Recorder) -> None:
    for host in ("127.0.0.1", "127.1", "::1"):
        gai(net, rec, host, host, 80, 0, DGRAM, 0, S.AI_CANONNAME)
    gai(net, rec, "localhost", "localhost", 80, V4, DGRAM, 0, S.AI_CANONNAME)
    gai(net, rec, "LOCALHOST", "LOCALHOST", 80, V4, DGRAM, 0, S.AI_CANONNAME)


@scenario
def localhost_v4(net: Net, rec: Recorder) -> None:
    gai(net, rec, "v4", "localhost", 80, V4, DGRAM)
    gai(net, rec, "upper", "LocalHost", 80, V4, DGRAM)


@scenario(
    varies="/etc/hosts: most distributions (Debian, Ubuntu, Docker images) map localhost "
           "to ::1 too, as loopstack's hosts table does; this host's has 127.0.0.1 only",
    variants={
        "any family": [
            [(V6, DGRAM, 17, "", ("::1", 80, 0, 0)), (V4, DGRAM, 17, "", ("127.0.0.1", 80))],
            [(V4, DGRAM, 17, "", ("127.0.0.1", 80))],
        ],
        # CPython resolves the name first (getaddrinfo's first answer), then asks for its names.
        "gethostbyaddr": [("localhost", ["ip6-localhost", "ip6-loopback"], ["::1"]),
                          ("localhost", [], ["127.0.0.1"])],
    })
def localhost_has_ipv6_too(net: Net, rec: Recorder) -> None:
    # Only AF_UNSPEC: asking the host for localhost over AF_INET6 would go
    # on to DNS, since its /etc/hosts has no ::1 line for it.
    gai(net, rec, "any family", "localhost", 80, 0, DGRAM)
    gai(net, rec, "v4 only", "localhost", 80, V4, DGRAM)
    rec.call(net.gethostbyaddr, "localhost", label="gethostbyaddr")
    rec.call(net.gethostbyname_ex, "localhost", label="gethostbyname_ex")


@scenario
def bind_and_connect_by_name(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.bind, ("localhost", 0))
    rec.call(s.getsockname)
    t = net.socket(V4, DGRAM)
    rec.call(t.connect, ("localhost", s.getsockname()[1]), label="connect")
    rec.call(t.getpeername)
    u = net.socket(V4, DGRAM)
    rec.call(u.bind, ("127.1", 0), label="bind 127.1")
    rec.call(u.getsockname, label="name 127.1")
    v = net.socket(V4, DGRAM)
    rec.call(v.bind, ("<broadcast>", 0), label="bind <broadcast>")
    w = net.socket(V6, DGRAM)
    rec.call(w.bind, ("<broadcast>", 0), label="v6 bind <broadcast>")


@scenario
def gethostbyname_forms(net: Net, rec: Recorder) -> None:
    for name in ("127.0.0.1", "127.1", "0x7f.1", "2130706433", "localhost", "LOCALHOST", "",
                 "<broadcast>", "255.255.255.255", "::1"):
        rec.call(net.gethostbyname, name, label=repr(name))


@scenario
def gethostbyname_ex_forms(net: Net, rec: Recorder) -> None:
    # Not '0x7f.1': glibc's gethostbyname_r would look that up by name (DNS).
    for name in ("127.0.0.1", "127.1", "2130706433", "localhost", "LOCALHOST", "::1"):
        rec.call(net.gethostbyname_ex, name, label=repr(name))


@scenario
def gethostbyaddr_loopback(net: Net, rec: Recorder) -> None:
    for address in ("127.0.0.1", "127.1", "2130706433"):
        rec.call(net.gethostbyaddr, address, label=address)


@scenario
def getnameinfo_forms(net: Net, rec: Recorder) -> None:
    ni = S.NI_NUMERICHOST | S.NI_NUMERICSERV
    for flags in (ni, 0, S.NI_NUMERICHOST, S.NI_NUMERICHOST | S.NI_DGRAM, S.NI_NAMEREQD,
                  S.NI_NUMERICSERV):
        rec.call(net.getnameinfo, ("127.0.0.1", 53), flags, label=f"flags {flags}")
    rec.call(net.getnameinfo, ("127.0.0.1", 80), S.NI_DGRAM | S.NI_NUMERICHOST, label="dgram")
    rec.call(net.getnameinfo, ("::1", 80, 0, 0), S.NI_NUMERICHOST, label="v6")
    rec.call(net.getnameinfo, ("::1", 7, 0, 5), ni, label="v6 scope")
    rec.call(net.getnameinfo, ("127.1", 80), ni, label="127.1")
    rec.call(net.getnameinfo, ("127.0.0.1", 70000), ni, label="port wraps")
    rec.call(net.getnameinfo, ("127.0.0.1", "80"), ni, label="port str")
    rec.call(net.getnameinfo, "127.0.0.1", ni, label="not a tuple")
    rec.call(net.getnameinfo, ("127.0.0.1", 80, 0), ni, label="v4 3-tuple")
    rec.call(net.getnameinfo, ("localhost", 80), ni, label="name")


@pytest.mark.parametrize("entry", list(scenarios), ids=scenarios.ids())
def test_names(entry: Entry) -> None:
    run(entry)
