"""UDP sockets, the kernel's loopback against loopstack's, scenario by scenario."""

from __future__ import annotations

import select
import socket as S
import struct
from typing import Any

import pytest

from loopstack.transport import udp

from .harness import Entry, LoopNet, Net, Recorder, Scenarios, run

V4, V6, DGRAM = S.AF_INET, S.AF_INET6, S.SOCK_DGRAM
NOWAIT = S.MSG_DONTWAIT
scenarios = Scenarios()
scenario = scenarios.add


def receiver(net: Net, family: int = V4, host: str = "127.0.0.1") -> tuple[Any, tuple[Any, ...]]:
    """A socket bound to a port the scenario chose; and its address."""
    r = net.socket(family, DGRAM)
    addr = (host, net.port())
    r.bind(addr)
    return r, addr


def recv(net: Net, rec: Recorder, sock: Any, n: int = 65535, flags: int = 0,
         label: str = "recvfrom", expect: bool = True) -> Any:
    """Wait for delivery (kernel), then one non-blocking recvfrom."""
    net.wait(sock, expect)
    return rec.call(sock.recvfrom, n, flags | NOWAIT, label=label)


# -- datagrams ---------------------------------------------------------------------

@scenario
def boundaries_kept(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    for chunk in (b"a", b"b" * 100, b"hello"):
        rec.call(s.sendto, chunk, addr)
    for i in range(3):
        recv(net, rec, r, 1000, label=f"recv{i}")
    recv(net, rec, r, 1000, label="empty", expect=False)


@scenario
def truncated_recv_discards_rest(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.sendto(b"abcdefgh", addr)
    s.sendto(b"next", addr)
    net.wait(r)
    rec.call(r.recv, 3, NOWAIT, label="small")
    rec.call(r.recv, 100, NOWAIT, label="following")


@scenario
def recv_into_msg_trunc_real_length(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.sendto(b"0123456789", addr)
    s.sendto(b"abcdef", addr)
    buf = bytearray(4)
    net.wait(r)
    rec.call(r.recv_into, buf, 0, S.MSG_TRUNC | NOWAIT, label="trunc")
    rec("buffer", bytes(buf))
    buf2 = bytearray(4)
    rec.call(r.recvfrom_into, buf2, 0, NOWAIT, label="plain")
    rec("buffer2", bytes(buf2))


@scenario
def recvmsg_flags_trunc(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.sendto(b"0123456789", addr)
    s.sendto(b"xyz", addr)
    net.wait(r)
    rec.call(r.recvmsg, 4, 0, NOWAIT, label="short")
    rec.call(r.recvmsg, 100, 0, NOWAIT, label="whole")


@scenario
def recvmsg_into_scatter(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    rec.call(s.sendmsg, [b"ab", b"cdef", b"", b"gh"], [], 0, addr, label="sendmsg")
    a, b = bytearray(3), bytearray(3)
    net.wait(r)
    rec.call(r.recvmsg_into, [a, b], 0, NOWAIT, label="recvmsg_into")
    rec("bufs", (bytes(a), bytes(b)))


@scenario
def zero_length_datagram(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    rec.call(s.sendto, b"", addr)
    recv(net, rec, r, 10, label="zero")
    recv(net, rec, r, 10, label="then", expect=False)


@scenario
def max_payload_v4(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    rec.call(s.sendto, b"x" * 65507, addr, label="65507")
    rec.call(s.sendto, b"x" * 65508, addr, label="65508")
    got = recv(net, rec, r, 70000)
    rec("len", len(got[0]) if got else None)


@scenario
def max_payload_v6(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net, V6, "::1")
    s = net.socket(V6, DGRAM)
    rec.call(s.sendto, b"y" * 65527, addr, label="65527")
    rec.call(s.sendto, b"y" * 65528, addr, label="65528")
    got = recv(net, rec, r, 70000)
    rec("len", len(got[0]) if got else None)


@scenario
def max_payload_v4_mapped_on_v6_socket(net: Net, rec: Recorder) -> None:
    # An AF_INET6 socket sending to ::ffff:127.0.0.1 sends IPv4: IPv4's limit.
    r, (_, p) = receiver(net)
    s = net.socket(V6, DGRAM)
    rec.call(s.sendto, b"z" * 65508, ("::ffff:127.0.0.1", p), label="65508")
    rec.call(s.sendto, b"z" * 65507, ("::ffff:127.0.0.1", p), label="65507")
    got = recv(net, rec, r, 70000)
    rec("len", len(got[0]) if got else None)


@scenario
def peek_then_recv(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.sendto(b"peekaboo", addr)
    net.wait(r)
    rec.call(r.recvfrom, 4, S.MSG_PEEK | NOWAIT, label="peek-short")
    rec.call(r.recvfrom, 100, S.MSG_PEEK | NOWAIT, label="peek-again")
    rec.call(r.recvfrom, 100, NOWAIT, label="recv")
    rec.call(r.recvfrom, 100, NOWAIT, label="empty")


@scenario
def dontwait_on_empty(net: Net, rec: Recorder) -> None:
    r, _ = receiver(net)
    rec.call(r.recv, 10, NOWAIT, label="recv")
    rec.call(r.recvfrom, 10, NOWAIT, label="recvfrom")
    rec.call(r.recvmsg, 10, 0, NOWAIT, label="recvmsg")
    rec("blocking", r.getblocking())


@scenario
def nonblocking_socket(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    r.setblocking(False)
    rec("timeout", r.gettimeout())
    rec("blocking", r.getblocking())
    rec.call(r.recv, 10, label="empty")
    net.socket(V4, DGRAM).sendto(b"hi", addr)
    net.wait(r)
    rec.call(r.recvfrom, 10, label="data")
    rec.call(r.recv_into, bytearray(4), label="empty_into")


@scenario
def timeout_recv(net: Net, rec: Recorder) -> None:
    r, _ = receiver(net)
    r.settimeout(0.05)
    rec("timeout", r.gettimeout())
    rec.call(r.recv, 10, label="recv")
    rec.call(r.recvfrom, 10, label="recvfrom")
    rec.call(r.settimeout, -1, label="negative")


@scenario
def sendmsg_gathers_one_datagram(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.connect(addr)
    rec.call(s.sendmsg, [b"one", memoryview(b"two"), bytearray(b"three")], label="sendmsg")
    recv(net, rec, r)


@scenario
def select_readable_after_send(net: Net, rec: Recorder) -> None:
    import select
    r, addr = receiver(net)
    rec("before", select.select([r], [], [], 0)[0] == [r])
    net.socket(V4, DGRAM).sendto(b"x", addr)
    net.wait(r)
    rec("after", select.select([r], [], [], 0)[0] == [r])
    r.recv(10)
    rec("drained", select.select([r], [], [], 0)[0] == [r])
    rec("writable", select.select([], [r], [], 0)[1] == [r])


# -- connected UDP -----------------------------------------------------------------

@scenario
def connected_receives_only_from_peer(net: Net, rec: Recorder) -> None:
    a, a_addr = receiver(net)
    b, b_addr = receiver(net)
    c, _ = receiver(net)
    a.connect(b_addr)
    rec("peer", a.getpeername())
    rec.call(c.sendto, b"from c", a_addr, label="c-send")
    recv(net, rec, a, label="from-c", expect=False)
    recv(net, rec, c, label="c-after", expect=False)
    rec.call(b.sendto, b"from b", a_addr, label="b-send")
    recv(net, rec, a, label="from-b")


@scenario
def connected_send_uses_peer(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    rec.call(s.send, b"x", label="unconnected-send")
    s.connect(addr)
    rec.call(s.send, b"hello")
    rec("sockname", s.getsockname())
    got = recv(net, rec, r)
    rec("source-is-sockname", got is not None and got[1] == s.getsockname())
    # sendto with an address still works on a connected UDP socket.
    other, other_addr = receiver(net)
    rec.call(s.sendto, b"elsewhere", other_addr, label="sendto-other")
    recv(net, rec, other, label="other")


@scenario
def connect_refused_then_recv(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.connect(("127.0.0.1", net.port()))
    rec.call(s.send, b"anyone?")
    net.wait(s)
    rec.call(s.recv, 10, NOWAIT, label="recv1")
    rec.call(s.recv, 10, NOWAIT, label="recv2")


@scenario
def connect_refused_then_send(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.connect(("127.0.0.1", net.port()))
    rec.call(s.send, b"anyone?", label="send1")
    net.wait(s)
    rec.call(s.send, b"again", label="send2")  # reports the error, sends nothing
    net.wait(s, expect=False)
    rec.call(s.send, b"again", label="send3")


@scenario
def connect_refused_v6(net: Net, rec: Recorder) -> None:
    s = net.socket(V6, DGRAM)
    s.connect(("::1", net.port()))
    rec.call(s.send, b"anyone?")
    net.wait(s)
    rec.call(s.recvfrom, 10, NOWAIT, label="recv1")
    rec.call(s.recvfrom, 10, NOWAIT, label="recv2")


@scenario
def send_with_pending_error_transmits_nothing(net: Net, rec: Recorder) -> None:
    p = net.port()
    s = net.socket(V4, DGRAM)
    s.connect(("127.0.0.1", p))
    rec.call(s.send, b"first", label="send1")
    net.wait(s)
    r = net.socket(V4, DGRAM)
    r.bind(("127.0.0.1", p))  # now someone listens
    rec.call(s.send, b"second", label="send2")
    recv(net, rec, r, label="after-send2", expect=False)
    rec.call(s.send, b"third", label="send3")
    recv(net, rec, r, label="after-send3")


@scenario
def so_error_reports_and_clears(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec("initial", s.getsockopt(S.SOL_SOCKET, S.SO_ERROR))
    s.connect(("127.0.0.1", net.port()))
    s.send(b"x")
    net.wait(s)
    rec.call(s.getsockopt, S.SOL_SOCKET, S.SO_ERROR, label="error")
    rec.call(s.getsockopt, S.SOL_SOCKET, S.SO_ERROR, label="cleared")
    rec.call(s.recv, 10, NOWAIT, label="recv")
    rec.call(s.send, b"y", label="send")


@scenario
def unconnected_hears_no_icmp(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.sendto, b"x", ("127.0.0.1", net.port()))
    net.wait(s, expect=False)
    rec.call(s.recv, 10, NOWAIT, label="recv")
    rec.call(s.getsockopt, S.SOL_SOCKET, S.SO_ERROR, label="so_error")


@scenario
def connect_port_zero_leaves_unconnected(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.connect, ("127.0.0.1", 0))
    rec.call(s.getpeername)
    rec.call(s.getsockname)
    rec.call(s.send, b"x")
    r, addr = receiver(net)
    s.connect(addr)
    rec.call(s.connect, ("127.0.0.1", 0), label="disconnect")
    rec.call(s.getpeername, label="peer-after")
    rec.call(s.send, b"x", label="send-after")


@scenario
def connect_alias_gets_source_127_0_0_1(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.connect, ("127.0.0.5", net.port()))
    rec.call(s.getsockname)
    rec.call(s.getpeername)


@scenario
def connect_zero_address_means_loopback(net: Net, rec: Recorder) -> None:
    s4 = net.socket(V4, DGRAM)
    rec.call(s4.connect, ("0.0.0.0", net.port()), label="connect4")
    rec.call(s4.getsockname, label="name4")
    rec.call(s4.getpeername, label="peer4")
    s6 = net.socket(V6, DGRAM)
    rec.call(s6.connect, ("::", net.port()), label="connect6")
    rec.call(s6.getsockname, label="name6")
    rec.call(s6.getpeername, label="peer6")


@scenario
def reconnect_to_another_peer(net: Net, rec: Recorder) -> None:
    a, a_addr = receiver(net)
    b, b_addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.connect(a_addr)
    s.connect(b_addr)
    rec.call(s.getpeername)
    rec.call(s.send, b"to b")
    recv(net, rec, b, label="b")
    recv(net, rec, a, label="a", expect=False)


# -- local addresses -------------------------------------------------------------------

@scenario
def unbound_names(net: Net, rec: Recorder) -> None:
    rec.call(net.socket(V4, DGRAM).getsockname, label="v4")
    rec.call(net.socket(V6, DGRAM).getsockname, label="v6")
    rec.call(net.socket(V4, DGRAM).getpeername, label="peer")


@scenario
def unbound_sendto_autobinds_wildcard(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.sendto(b"x", addr)
    rec.call(s.getsockname)
    got = recv(net, rec, r)
    rec("same-port", got is not None and got[1][1] == s.getsockname()[1])
    rec.call(s.bind, ("127.0.0.1", 0), label="bind-after")


@scenario
def bind_twice_einval(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.bind(("127.0.0.1", 0))
    rec.call(s.bind, ("127.0.0.1", 0))


@scenario
def bind_alias_127_0_0_2(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net, V4, "127.0.0.2")
    rec.call(r.getsockname)
    s = net.socket(V4, DGRAM)
    s.sendto(b"to .2", addr)
    recv(net, rec, r)
    rec.call(s.getsockname, label="sender")


@scenario
def bind_special_v4(net: Net, rec: Recorder) -> None:
    for host in ("127.255.255.255", "127.0.0.0", "0.0.0.0", "", "127.77.0.1"):
        s = net.socket(V4, DGRAM)
        rec.call(s.bind, (host, 0), label=f"bind {host!r}")
        rec.call(s.getsockname, label=f"name {host!r}")


@scenario
def bind_special_v6(net: Net, rec: Recorder) -> None:
    for host in ("::1", "::", "::ffff:127.0.0.1", "::ffff:127.0.0.2", "::ffff:0.0.0.0"):
        s = net.socket(V6, DGRAM)
        rec.call(s.bind, (host, 0), label=f"bind {host}")
        rec.call(s.getsockname, label=f"name {host}")


@scenario
def bind_nonlocal_eaddrnotavail(net: Net, rec: Recorder) -> None:
    rec.call(net.socket(V4, DGRAM).bind, ("192.0.2.1", 0), label="v4")
    rec.call(net.socket(V6, DGRAM).bind, ("2001:db8::1", 0), label="v6")
    rec.call(net.socket(V6, DGRAM).bind, ("::2", 0), label="::2")
    rec.call(net.socket(V6, DGRAM).bind, ("::ffff:192.0.2.1", 0), label="mapped")


@scenario
def v4_mapped_bound_socket_sends_ipv4(net: Net, rec: Recorder) -> None:
    r, (_, p) = receiver(net)
    s = net.socket(V6, DGRAM)
    s.bind(("::ffff:127.0.0.1", 0))
    rec.call(s.sendto, b"x", ("::ffff:127.0.0.1", p), label="to-mapped")
    recv(net, rec, r)
    rec.call(s.sendto, b"x", ("::1", p), label="to-v6")


# -- bind conflicts ------------------------------------------------------------------

def _bind_pair(net: Net, rec: Recorder, first: tuple[int, str], second: tuple[int, str],
               opts: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
               v6only: tuple[bool, bool] = (False, False)) -> None:
    p = net.port()
    for i, ((family, host), (reuseaddr, reuseport), only) in enumerate(
            zip((first, second), opts, v6only, strict=True)):
        s = net.socket(family, DGRAM)
        if reuseaddr:
            s.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(S.SOL_SOCKET, S.SO_REUSEPORT, 1)
        if only:
            s.setsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY, 1)
        rec.call(s.bind, (host, p), label=f"bind{i} {host}")


@scenario
def inuse_same_address(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.1"))


@scenario
def inuse_wildcard_then_specific(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "0.0.0.0"), (V4, "127.0.0.1"))


@scenario
def inuse_specific_then_wildcard(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "0.0.0.0"))


@scenario
def different_aliases_share_port(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.2"))


@scenario
def reuseaddr_both(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.1"), ((1, 0), (1, 0)))


@scenario
def reuseaddr_wildcard_and_specific(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "0.0.0.0"), (V4, "127.0.0.1"), ((1, 0), (1, 0)))


@scenario
def reuseaddr_first_only(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.1"), ((1, 0), (0, 0)))


@scenario
def reuseaddr_second_only(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.1"), ((0, 0), (1, 0)))


@scenario
def reuseport_both(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.1"), ((0, 1), (0, 1)))


@scenario
def reuseport_second_only(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.1"), ((0, 0), (0, 1)))


@scenario
def reuseport_first_only(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V4, "127.0.0.1"), ((0, 1), (0, 0)))


@scenario
def reuseport_v6(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V6, "::1"), (V6, "::1"), ((0, 1), (0, 1)))


@scenario
def inuse_v4_wildcard_then_dual_stack(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "0.0.0.0"), (V6, "::"))


@scenario
def inuse_dual_stack_then_v4_wildcard(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V6, "::"), (V4, "0.0.0.0"))


@scenario
def inuse_dual_stack_then_v4_specific(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V6, "::"), (V4, "127.0.0.1"))


@scenario
def v6only_shares_with_v4_wildcard(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "0.0.0.0"), (V6, "::"), v6only=(False, True))


@scenario
def v6only_first_then_v4_wildcard(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V6, "::"), (V4, "0.0.0.0"), v6only=(True, False))


@scenario
def v6_loopback_and_v4_share_port(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V6, "::1"), (V4, "127.0.0.1"))


@scenario
def mapped_conflicts_with_v4(net: Net, rec: Recorder) -> None:
    _bind_pair(net, rec, (V4, "127.0.0.1"), (V6, "::ffff:127.0.0.1"))


@scenario
def rebind_after_close(net: Net, rec: Recorder) -> None:
    p = net.port()
    a = net.socket(V4, DGRAM)
    a.bind(("127.0.0.1", p))
    a.close()
    rec.call(net.socket(V4, DGRAM).bind, ("127.0.0.1", p))


# -- dual stack ----------------------------------------------------------------------

@scenario
def dual_stack_receives_v4_as_mapped(net: Net, rec: Recorder) -> None:
    r = net.socket(V6, DGRAM)
    p = net.port()
    r.bind(("::", p))
    rec.call(r.getsockopt, S.IPPROTO_IPV6, S.IPV6_V6ONLY, label="v6only")
    s = net.socket(V4, DGRAM)
    s.sendto(b"over v4", ("127.0.0.1", p))
    recv(net, rec, r, label="v4-sender")
    s6 = net.socket(V6, DGRAM)
    s6.sendto(b"over v6", ("::1", p))
    recv(net, rec, r, label="v6-sender")


@scenario
def mapped_send_from_v6_socket(net: Net, rec: Recorder) -> None:
    r, (_, p) = receiver(net)
    s = net.socket(V6, DGRAM)
    rec.call(s.sendto, b"mapped", ("::ffff:127.0.0.1", p))
    recv(net, rec, r)
    rec.call(s.getsockname, label="sender-name")


@scenario
def mapped_connect_from_v6_socket(net: Net, rec: Recorder) -> None:
    r, (_, p) = receiver(net)
    s = net.socket(V6, DGRAM)
    rec.call(s.connect, ("::ffff:127.0.0.9", p))
    rec.call(s.getsockname)
    rec.call(s.getpeername)
    s.sendto(b"hi", ("::ffff:127.0.0.1", p))
    recv(net, rec, r)


@scenario
def v6only_blocks_v4(net: Net, rec: Recorder) -> None:
    r = net.socket(V6, DGRAM)
    r.setsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY, 1)
    p = net.port()
    r.bind(("::", p))
    s = net.socket(V4, DGRAM)
    rec.call(s.sendto, b"v4", ("127.0.0.1", p))
    recv(net, rec, r, label="receiver", expect=False)
    rec.call(r.sendto, b"x", ("::ffff:127.0.0.1", p), label="v6only-to-mapped")
    rec.call(r.bind, ("::ffff:127.0.0.1", 0), label="rebind")
    t = net.socket(V6, DGRAM)
    t.setsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY, 1)
    rec.call(t.bind, ("::ffff:127.0.0.1", 0), label="v6only-bind-mapped")


@scenario
def v6_socket_bound_v6_cannot_send_v4(net: Net, rec: Recorder) -> None:
    s = net.socket(V6, DGRAM)
    s.bind(("::1", 0))
    rec.call(s.sendto, b"x", ("::ffff:127.0.0.1", net.port()))
    rec.call(s.connect, ("::ffff:127.0.0.1", net.port()), label="connect")


# -- broadcast -----------------------------------------------------------------------

@scenario
def broadcast_needs_so_broadcast(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    p = net.port()
    rec.call(s.sendto, b"x", ("127.255.255.255", p), label="sendto")
    rec.call(s.connect, ("127.255.255.255", p), label="connect")
    rec.call(s.getsockopt, S.SOL_SOCKET, S.SO_BROADCAST, label="option")


@scenario
def broadcast_reaches_wildcard_bound(net: Net, rec: Recorder) -> None:
    r = net.socket(V4, DGRAM)
    p = net.port()
    r.bind(("0.0.0.0", p))
    s = net.socket(V4, DGRAM)
    s.setsockopt(S.SOL_SOCKET, S.SO_BROADCAST, 1)
    rec.call(s.sendto, b"all", ("127.255.255.255", p))
    recv(net, rec, r)


@scenario
def broadcast_skips_unicast_bound(net: Net, rec: Recorder) -> None:
    r, (_, p) = receiver(net)
    s = net.socket(V4, DGRAM)
    s.setsockopt(S.SOL_SOCKET, S.SO_BROADCAST, 1)
    rec.call(s.sendto, b"all", ("127.255.255.255", p))
    recv(net, rec, r, expect=False)
    recv(net, rec, s, label="sender", expect=False)


@scenario
def broadcast_reaches_broadcast_bound_and_wildcard(net: Net, rec: Recorder) -> None:
    p = net.port()
    socks = []
    for host in ("127.255.255.255", "0.0.0.0", "127.0.0.1"):
        x = net.socket(V4, DGRAM)
        x.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
        rec.call(x.bind, (host, p), label=f"bind {host}")
        socks.append(x)
    s = net.socket(V4, DGRAM)
    s.setsockopt(S.SOL_SOCKET, S.SO_BROADCAST, 1)
    s.connect(("127.255.255.255", p))
    rec.call(s.send, b"bcast")
    for host, x in zip(("127.255.255.255", "0.0.0.0", "127.0.0.1"), socks, strict=True):
        recv(net, rec, x, label=f"at {host}", expect=host != "127.0.0.1")


# -- shutdown, close, creation ---------------------------------------------------------

@scenario
def shutdown_unconnected_enotconn(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.bind(("127.0.0.1", 0))
    for how in (S.SHUT_RD, S.SHUT_WR, S.SHUT_RDWR):
        rec.call(s.shutdown, how, label=f"shutdown {how}")
    rec.call(s.shutdown, 7, label="bad how")


@scenario
def shutdown_connected(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    s.connect(addr)
    rec.call(s.shutdown, S.SHUT_WR, label="shut_wr")
    rec.call(s.send, b"x", label="send")
    rec.call(s.shutdown, S.SHUT_RD, label="shut_rd")
    rec.call(s.recv, 10, label="recv")
    rec.call(s.recv, 10, label="recv-again")


@scenario
def closed_socket_ebadf(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.bind(("127.0.0.1", 0))
    s.close()
    rec("fileno", s.fileno())
    rec("repr", s)
    rec.call(s.close, label="close-again")
    rec.call(s.getsockname)
    rec.call(s.getpeername)
    rec.call(s.sendto, b"x", ("127.0.0.1", 9))
    rec.call(s.recv, 10)
    rec.call(s.bind, ("127.0.0.1", 0))
    rec.call(s.connect, ("127.0.0.1", 9))
    rec.call(s.getsockopt, S.SOL_SOCKET, S.SO_TYPE)
    rec.call(s.setsockopt, S.SOL_SOCKET, S.SO_REUSEADDR, 1)
    rec.call(s.shutdown, S.SHUT_RDWR)


@scenario
def socket_repr_and_identity(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec("repr-unbound", s)
    s.bind(("127.0.0.1", net.port()))
    rec("repr-bound", s)
    rec("family", s.family)
    rec("type", s.type)
    rec("proto", s.proto)
    t = net.socket(V6, DGRAM | S.SOCK_NONBLOCK)
    rec("v6-type", t.type)
    rec("v6-timeout", t.gettimeout())


@scenario(varies="ping sockets need the caller's group in net.ipv4.ping_group_range: "
                  "'1 0' (the kernel's default, loopstack's) admits no one, systemd's "
                  "'0 2147483647' everyone",
          variants={"ping": [("PermissionError", 13), "created"]})
def socket_bad_arguments(net: Net, rec: Recorder) -> None:
    rec.call(net.socket, 12345, DGRAM, label="family")
    rec.call(net.socket, V4, 12345, label="type")
    rec.call(net.socket, V4, S.SOCK_SEQPACKET, label="seqpacket")
    rec.call(net.socket, V4, DGRAM, S.IPPROTO_TCP, label="proto")
    rec.call(net.socket, V6, DGRAM, 99, label="proto6")
    rec.call(_ping_socket, net, label="ping")


def _ping_socket(net: Net) -> str:
    net.socket(V4, DGRAM, S.IPPROTO_ICMP).close()
    return "created"


@scenario
def address_type_errors(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    rec.call(s.bind, ("127.0.0.1", 70000), label="port-high")
    rec.call(s.bind, ("127.0.0.1", -1), label="port-negative")
    rec.call(s.bind, ("127.0.0.1", "80"), label="port-str")
    rec.call(s.bind, "127.0.0.1", label="not-tuple")
    rec.call(s.bind, ("127.0.0.1",), label="short-tuple")
    rec.call(s.bind, (127, 0), label="host-int")
    rec.call(s.sendto, b"x", ("127.0.0.1", 65536), label="sendto-high")
    rec.call(s.sendto, b"x", ("127.0.0.1", 0), label="sendto-port0")
    rec.call(s.sendto, "text", ("127.0.0.1", 9), label="sendto-str")
    rec.call(s.connect, ("127.0.0.1", 1 << 40), label="connect-huge")
    t = net.socket(V6, DGRAM)
    rec.call(t.bind, ("::1", 70000), label="v6-port-high")
    rec.call(t.bind, ("127.0.0.1", 0), label="v6-bind-v4-literal")
    rec.call(t.bind, ("::1", 0, 0, 0, 0), label="v6-long-tuple")


@scenario
def connect_port_zero_filters_by_address(net: Net, rec: Recorder) -> None:
    # Connected to 127.0.0.5:0, the socket takes datagrams from 127.0.0.5 (any
    # port) and no others: Linux compute_score checks the peer address but
    # skips a peer port of 0.
    s = net.socket(V4, DGRAM)
    s.connect(("127.0.0.5", 0))
    here = s.getsockname()
    five = net.socket(V4, DGRAM)
    five.bind(("127.0.0.5", 0))
    one = net.socket(V4, DGRAM)
    rec.call(one.sendto, b"from .1", here, label="from .1")
    rec.call(five.sendto, b"from .5", here, label="from .5")
    recv(net, rec, s, label="first")
    recv(net, rec, s, label="second", expect=False)


@scenario
def connect_keeps_pending_error(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.connect(("127.0.0.1", net.port()))
    s.send(b"x")
    net.wait(s)
    r, addr = receiver(net)
    rec.call(s.connect, addr, label="reconnect")
    rec.call(s.send, b"y", label="send")
    recv(net, rec, r, label="receiver", expect=False)
    rec.call(s.send, b"z", label="send again")
    recv(net, rec, r, label="receiver again")


@scenario
def mapped_bound_socket_and_ipv6_peers(net: Net, rec: Recorder) -> None:
    r, (_, p) = receiver(net)
    s = net.socket(V6, DGRAM)
    s.bind(("::ffff:127.0.0.1", 0))
    rec.call(s.sendto, b"to ::", ("::", p), label="sendto ::")
    recv(net, rec, r, label="arrives over IPv4")
    rec.call(s.connect, ("::1", p), label="connect ::1")
    rec.call(s.connect, ("::", p), label="connect ::")
    rec.call(s.getpeername, label="peer")
    t = net.socket(V6, DGRAM)
    t.connect(("::ffff:127.0.0.1", p))
    rec.call(t.getsockname, label="mapped-connected name")
    rec.call(t.sendto, b"x", ("::1", p), label="then sendto ::1")
    rec.call(t.connect, ("::1", p), label="then connect ::1")


@scenario
def bind_zero_uses_both_parities(net: Net, rec: Recorder) -> None:
    # Linux's udp_lib_get_port has no parity preference (TCP's bind has).
    ports = []
    for _ in range(40):
        s = net.socket(V4, DGRAM)
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
    rec("both parities", {p % 2 for p in ports} == {0, 1})
    low, high = net.ephemeral_range()  # net.ipv4.ip_local_port_range, each side's own
    rec("all ephemeral", all(low <= p <= high for p in ports))


@scenario
def reuseaddr_last_bound_receives(net: Net, rec: Recorder) -> None:
    p = net.port()
    socks = []
    for _ in range(2):
        x = net.socket(V4, DGRAM)
        x.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
        x.bind(("127.0.0.1", p))
        socks.append(x)
    s = net.socket(V4, DGRAM)
    for i in range(3):
        s.sendto(b"%d" % i, ("127.0.0.1", p))
    net.wait(socks[1])
    net.settle()
    for i, x in enumerate(socks):
        rec(f"sock{i}", drain(x))


@scenario
def reuseaddr_specific_beats_wildcard(net: Net, rec: Recorder) -> None:
    p = net.port()
    socks = {}
    for host in ("127.0.0.1", "0.0.0.0"):
        x = net.socket(V4, DGRAM)
        x.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
        x.bind((host, p))
        socks[host] = x
    s = net.socket(V4, DGRAM)
    s.sendto(b"to .1", ("127.0.0.1", p))
    s.sendto(b"to .2", ("127.0.0.2", p))
    net.wait(socks["0.0.0.0"])
    net.settle()
    for host, x in socks.items():
        rec(host, drain(x))


def drain(sock: Any) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(70000, NOWAIT))
        except BlockingIOError:
            return out


def _rx_charged(net: Net, sock: Any) -> int:
    """The kernel's sk_rmem_alloc for ``sock``: /proc/net/udp's rx_queue."""
    port = sock.getsockname()[1]
    with open("/proc/net/udp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    raise RuntimeError("receiver not in /proc/net/udp")


@scenario(varies="'udp: refine __udp_enqueue_schedule_skb() test' (Linux 6.18) drops a "
                 "datagram that does not fit in SO_RCVBUF unless the queue is empty; "
                 "before it one more was taken while the queue was not yet over",
          variants={"300 x 1 held beyond what fits": [0, 1],
                    "6 x 60000 held beyond what fits": [0, 1]})
def receive_buffer_fills(net: Net, rec: Recorder) -> None:
    # What a full receive buffer holds: Linux charges each datagram its skb's
    # truesize against SO_RCVBUF (net.core.rmem_default, 212992 stock). The
    # truesize depends on the kernel build (sizeof sk_buff and
    # skb_shared_info, kmalloc rounding: 832, 2304 and 60832 bytes for 1, 1400
    # and 60000 bytes on 6.18), so each side's own charge is read (the
    # kernel's from /proc/net/udp, loopstack's truesize(), fitted to 6.18)
    # and what the queue held is checked against it.
    for size, count in ((1, 300), (60000, 6)):
        r, addr = receiver(net)
        s = net.socket(V4, DGRAM)
        for _ in range(count):
            s.sendto(b"x" * size, addr)
        net.wait(r)
        net.settle()
        charged = None if isinstance(net, LoopNet) else _rx_charged(net, r)
        held = len(drain(r))
        charge = udp.truesize(size) if charged is None else charged // max(held, 1)
        rec(f"{count} x {size} some dropped", 0 < held < count)
        rec(f"{count} x {size} held beyond what fits",
            held - r.getsockopt(S.SOL_SOCKET, S.SO_RCVBUF) // charge)


@scenario
def oob_and_bad_sizes(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    rec.call(s.sendto, b"x", S.MSG_OOB, addr, label="send oob")
    s.sendto(b"data", addr)
    net.wait(r)
    rec.call(r.recvfrom, 10, S.MSG_OOB | NOWAIT, label="recv oob")
    rec.call(r.recv, -1, label="recv negative")
    rec.call(r.recvfrom, -1, label="recvfrom negative")
    rec.call(r.recv_into, bytearray(2), 5, label="recv_into too long")
    rec.call(r.recvmsg, -1, label="recvmsg negative")


@scenario
def sendto_argument_forms(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    rec.call(s.sendto, b"flags", 0, addr, label="with flags")
    rec.call(s.sendto, b"dontwait", NOWAIT, addr, label="with dontwait")
    rec.call(s.sendto, bytearray(b"ba"), addr, label="bytearray")
    rec.call(s.sendto, memoryview(b"mv"), addr, label="memoryview")
    rec.call(s.sendto, b"x", label="no address")
    rec.call(s.sendto, b"x", None, label="none address")
    rec.call(s.sendto, b"x", ("::1", addr[1]), label="v6 literal on v4")
    rec.call(s.sendto, b"x", ("127.0.0.1", addr[1], 0, 0), label="4-tuple on v4")
    got = []
    for i in range(4):
        got.append(recv(net, rec, r, label=f"recv{i}"))


@scenario
def shutdown_unconnected_still_applies(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    s = net.socket(V4, DGRAM)
    rec.call(s.shutdown, S.SHUT_WR, label="shut_wr")
    rec.call(s.sendto, b"x", addr, label="sendto")
    recv(net, rec, r, label="receiver", expect=False)
    rec.call(r.shutdown, S.SHUT_RD, label="shut_rd")
    rec.call(r.recv, 10, label="recv after shut_rd")


@scenario
def shutdown_unconnected_recv_still_waits_for_data(net: Net, rec: Recorder) -> None:
    """Linux inet_shutdown on an unconnected datagram socket: ENOTCONN, yet
    sk_shutdown is set. SHUT_RD: poll says readable, a recv that may wait
    (a timeout, or non-blocking) finds nothing and waits for data as usual;
    data that comes is received; only a blocking recv on an empty queue
    ends at once, with b''. SHUT_WR: sends are EPIPE."""
    r, addr = receiver(net)
    # A safety net: a blocking recv that waited would end after 1 s (EAGAIN).
    r.setsockopt(S.SOL_SOCKET, S.SO_RCVTIMEO, struct.pack("qq", 1, 0))
    rec.call(r.shutdown, S.SHUT_RD, label="shut_rd")
    rec("poll", tuple(bool(x) for x in select.select([r], [r], [], 0)[:2]))
    rec.call(r.recv, 10, NOWAIT, label="non-blocking recv")
    r.settimeout(0.05)
    rec.call(r.recv, 10, label="recv with a timeout")
    s = net.socket(V4, DGRAM)
    s.sendto(b"after", addr)
    net.wait(r)
    r.settimeout(1.0)
    rec.call(r.recv, 10, label="data still comes")
    r.settimeout(None)
    rec.call(r.recv, 10, label="blocking recv, nothing queued")
    rec.call(r.shutdown, S.SHUT_RDWR, label="shut_rdwr")
    w = net.socket(V4, DGRAM)
    rec.call(w.shutdown, S.SHUT_WR, label="shut_wr")
    rec("poll after shut_wr", tuple(bool(x) for x in select.select([w], [w], [], 0)[:2]))
    rec.call(w.sendto, b"x", addr, label="send after shut_wr")
    c = net.socket(V4, DGRAM)
    c.setsockopt(S.SOL_SOCKET, S.SO_RCVTIMEO, struct.pack("qq", 1, 0))
    c.connect(addr)
    rec.call(c.shutdown, S.SHUT_RD, label="connected shut_rd")
    rec.call(c.recv, 10, label="connected blocking recv")


# -- ancillary data (recvmsg / sendmsg control messages) -------------------------------
IP_PKTINFO, IP_RECVTTL = 8, 12
IPV6_RECVPKTINFO, IPV6_HOPLIMIT, IPV6_RECVHOPLIMIT = 49, 52, 51


@scenario
def recvmsg_ip_pktinfo_and_ttl(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net)
    rec.call(r.setsockopt, S.IPPROTO_IP, IP_RECVTTL, 1, label="IP_RECVTTL")
    rec.call(r.setsockopt, S.IPPROTO_IP, IP_PKTINFO, 1, label="IP_PKTINFO")
    rec.call(r.getsockopt, S.IPPROTO_IP, IP_RECVTTL, label="get IP_RECVTTL")
    s = net.socket(V4, DGRAM)
    ttl = (7).to_bytes(4, "little")
    rec.call(s.sendmsg, [b"abc"], [(S.IPPROTO_IP, S.IP_TTL, ttl)], 0, addr, label="ttl 7")
    net.wait(r)
    rec.call(r.recvmsg, 10, 256, NOWAIT, label="with room")
    s.sendto(b"x", addr)
    net.wait(r)
    rec.call(r.recvmsg, 10, 16, NOWAIT, label="control truncated")
    rec.call(s.sendmsg, [b"x"], [(S.IPPROTO_IP, S.IP_TTL, (0).to_bytes(4, "little"))], 0,
             addr, label="ttl 0 is invalid")


@scenario
def recvmsg_ipv6_pktinfo_and_hoplimit(net: Net, rec: Recorder) -> None:
    r, addr = receiver(net, V6, "::1")
    rec.call(r.setsockopt, S.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1, label="RECVHOPLIMIT")
    rec.call(r.setsockopt, S.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1, label="RECVPKTINFO")
    s = net.socket(V6, DGRAM)
    hops = (9).to_bytes(4, "little")
    rec.call(s.sendmsg, [b"abc"], [(S.IPPROTO_IPV6, IPV6_HOPLIMIT, hops)], 0, addr,
             label="hop limit 9")
    net.wait(r)
    rec.call(r.recvmsg, 10, 256, NOWAIT, label="with room")
    s.sendto(b"y", addr)
    net.wait(r)
    rec.call(r.recvmsg, 10, 0, NOWAIT, label="no room")


@pytest.mark.parametrize("entry", list(scenarios), ids=scenarios.ids())
def test_udp(entry: Entry) -> None:
    run(entry)
