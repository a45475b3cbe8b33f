"""The socket object itself, the kernel's against loopstack's: what a program
sees of ``socket.socket`` beyond the protocol (isinstance, type and
blocking flags, descriptors: dup, detach, fromfd, inheritable; argument
checks and their words; closed objects; SO_RCVTIMEO/SO_SNDTIMEO; IPv6
traffic class; scope ids; UDP-Lite; collection of an unclosed socket).

The loopstack side runs under ``loopstack.patch(stack)``, so the stdlib's
own functions (``socket.socket(fileno=...)``, ``socket.fromfd``,
``socket.create_connection``) meet loopstack sockets as a program's would.
"""

from __future__ import annotations

import fcntl
import gc
import os
import pickle
import socket as S
import struct
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import loopstack

from .harness import Entry, KernelNet, LoopNet, Net, Recorder, Scenarios, _table, record

V4, V6, DGRAM, STREAM = S.AF_INET, S.AF_INET6, S.SOCK_DGRAM, S.SOCK_STREAM
SOL = S.SOL_SOCKET
NOWAIT = S.MSG_DONTWAIT
LITE = getattr(S, "IPPROTO_UDPLITE", 136)
SEND_CSCOV, RECV_CSCOV = getattr(S, "UDPLITE_SEND_CSCOV", 10), getattr(S, "UDPLITE_RECV_CSCOV", 11)
IPV6_TCLASS = getattr(S, "IPV6_TCLASS", 67)
IPV6_RECVTCLASS = getattr(S, "IPV6_RECVTCLASS", 66)
SO_PROTOCOL = getattr(S, "SO_PROTOCOL", 38)
TIMEVAL = struct.Struct("qq")
INT = struct.Struct("i")
scenarios = Scenarios()
scenario = scenarios.add


def said(fn: Callable[..., Any], *args: Any) -> Any:
    """What calling ``fn`` gives, an exception as its class, errno and words."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - an exception is an outcome here
        return (type(e).__name__, getattr(e, "errno", None), str(e))


def nonblocking_flag(sock: Any) -> bool:
    return bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def tcp_pair(net: Net, family: int = V4) -> tuple[Any, Any, Any]:
    """A listener, a client connected to it and the accepted end."""
    host = "127.0.0.1" if family == V4 else "::1"
    server = net.socket(family, STREAM)
    server.bind((host, 0))
    server.listen()
    client = net.socket(family, STREAM)
    client.connect(server.getsockname())
    conn, _ = server.accept()
    return server, client, conn


def udp_receiver(net: Net, family: int = V4, proto: int = 0) -> tuple[Any, Any]:
    host = "127.0.0.1" if family == V4 else "::1"
    r = net.socket(family, DGRAM, proto)
    r.bind((host, 0))
    r.settimeout(2.0)  # a datagram that should come waits this long at most
    return r, r.getsockname()


# -- what the object is ------------------------------------------------------------------

@scenario
def isinstance_type_and_flags(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, STREAM | S.SOCK_NONBLOCK | S.SOCK_CLOEXEC)
    rec("isinstance socket", isinstance(s, S.socket))
    rec("isinstance SocketType", isinstance(s, S.SocketType))
    rec("type", (s.family, s.type, s.proto))
    rec("timeout", (s.gettimeout(), s.getblocking(), s.timeout))
    rec("O_NONBLOCK", nonblocking_flag(s))
    rec("inheritable", s.get_inheritable())
    for step, value in (("setblocking True", True), ("setblocking False", False)):
        s.setblocking(value)
        rec(step, (s.type, s.gettimeout(), nonblocking_flag(s)))
    for value in (2.5, None, 0):
        s.settimeout(value)
        rec(f"settimeout {value}", (s.type, s.gettimeout(), s.getblocking(),
                                    nonblocking_flag(s)))
    d = net.socket(V4, DGRAM)
    rec("default blocking", (d.gettimeout(), nonblocking_flag(d)))


@scenario
def timeouts_as_cpython_reads_them(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    for value in (1e-10, 0.1, True, 3, -0.0, -1, float("nan"), 1e300, 10**10, "1", None):
        rec(f"settimeout {value!r}", said(s.settimeout, value))
        rec(f"gettimeout after {value!r}", s.gettimeout())
    for flag in (2, -5, 1 << 63, 1.0, None):
        rec(f"setblocking {flag!r}", said(s.setblocking, flag))
        rec(f"after setblocking {flag!r}", s.gettimeout())


@scenario
def argument_checks_and_words(net: Net, rec: Recorder) -> None:
    t = net.socket(V4, STREAM)
    for backlog in (1 << 31, 1 << 63, "x", 1.0):
        rec(f"listen {backlog!r}", said(t.listen, backlog))
    for how in (1 << 31, "x", 1.0, 3, -1):
        rec(f"shutdown {how!r}", said(t.shutdown, how))
    u = net.socket(V4, DGRAM)
    for address in (("127.0.0.1",), ("127.0.0.1", 1, 2), ("127.0.0.1", 1.0), ("127.0.0.1", "1"),
                    ("127.0.0.1", 1 << 40), ("127.0.0.1", -1), (1, 1), "x", None,
                    ["127.0.0.1", 0], ("127.0.0.1\0", 0)):
        rec(f"bind {address!r}", said(u.bind, address))
    v = net.socket(V6, DGRAM)
    for address in (("::1",), ("::1", 0, 1, 2, 3), ("::1", 0, 0x100000), ("::1", 0, -1),
                    ("::1", 0, 1.0), ("::1", 70000), ["::1", 0]):
        rec(f"bind6 {address!r}", said(v.bind, address))
    rec("connect flowinfo", said(v.connect, ("::1", 9, 0x100000)))
    rec("sendto flowinfo", said(v.sendto, b"x", ("::1", 9, 0x100000)))


@scenario
def sendto_words(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    s.bind(("127.0.0.1", 0))
    name = s.getsockname()
    for i, args in enumerate((("\u2620", name), (5j, name), (b"foo", None),
                               ("\u2620", 0, name), (5j, 0, name), (b"foo", 0, None),
                               (b"foo", "bar", name), (b"foo", None, None), (b"foo",),
                               (b"foo", 0, name, 4))):
        rec(f"sendto {i}", said(s.sendto, *args))


@scenario
def closed_object(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, STREAM)
    s.close()
    rec("repr", " [closed] fd=-1, family=2, type=1, proto=0>" in repr(s))
    for name, args in (("settimeout", (1,)), ("setblocking", (1,)), ("gettimeout", ()),
                       ("getblocking", ()), ("fileno", ()), ("getsockname", ()),
                       ("getpeername", ()), ("listen", ()), ("shutdown", (0,)),
                       ("shutdown", (7,)), ("bind", (("127.0.0.1", 0),)),
                       ("setsockopt", (SOL, S.SO_REUSEADDR, 1)),
                       ("getsockopt", (SOL, S.SO_TYPE)), ("detach", ()), ("dup", ()),
                       ("get_inheritable", ()), ("send", (b"x",)), ("recv", (1,)),
                       ("accept", ()), ("connect_ex", (("127.0.0.1", 1),)), ("close", ())):
        rec(f"{name}{args!r}", said(getattr(s, name), *args))
    rec("timeout kept", s.gettimeout())


@scenario
def pickling_is_refused(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, STREAM)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        rec(f"pickle {protocol}", said(pickle.dumps, s, protocol))


# -- descriptors ---------------------------------------------------------------------------

@scenario
def dup_keeps_the_socket_open(net: Net, rec: Recorder) -> None:
    server, client, conn = tcp_pair(net)
    client.settimeout(3.0)
    d = client.dup()
    rec("dup", (isinstance(d, S.socket), d.family, d.type, d.gettimeout(),
                d.get_inheritable(), d.fileno() != client.fileno()))
    client.close()
    rec("send through the dup", said(d.sendall, b"dup"))
    conn.settimeout(2.0)
    rec("received", said(conn.recv, 10))
    d.close()
    rec("end of stream after both closed", said(conn.recv, 10))


@scenario
def fromfd_and_fileno(net: Net, rec: Recorder) -> None:
    server, client, conn = tcp_pair(net)
    f = S.fromfd(conn.fileno(), V4, STREAM)
    rec("fromfd", (isinstance(f, S.socket), f.family, f.type, f.proto,
                   f.fileno() != conn.fileno(), f.getsockname() == conn.getsockname()))
    conn.close()
    client.sendall(b"via fromfd")
    f.settimeout(2.0)
    rec("received", said(f.recv, 20))
    g = S.socket(fileno=f.fileno())
    rec("socket(fileno=) shares the number", (g.fileno() == f.fileno(), g.family, g.type))
    f.detach()
    g.close()
    client.settimeout(2.0)
    rec("closed at last", said(client.recv, 10))


@scenario
def detach_then_socket_from_the_number(net: Net, rec: Recorder) -> None:
    server, client, conn = tcp_pair(net)
    number = conn.fileno()
    fd = conn.detach()
    rec("detach", (fd == number, conn.fileno(), conn._closed, said(conn.recv, 1)))
    rec("detach again", conn.detach())
    conn.close()
    client.sendall(b"still open")
    again = S.socket(V4, STREAM, 0, fd)
    again.settimeout(2.0)
    rec("again", (again.fileno() == fd, again.gettimeout(), said(again.recv, 20)))
    again.close()
    client.settimeout(2.0)
    rec("closed", said(client.recv, 10))


@scenario
def two_objects_on_one_number(net: Net, rec: Recorder) -> None:
    a = net.socket(V4, STREAM)
    a.bind(("127.0.0.1", 0))
    b = S.socket(fileno=a.fileno())
    rec("b", (b.family, b.type, b.proto, b.getsockname() == a.getsockname()))
    b.close()
    rec("setblocking on the closed number", said(a.setblocking, False))
    rec("close of the closed number", said(a.close))


@scenario
def made_from_a_descriptor_shows_what_it_was_told(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, STREAM)
    fd = s.detach()
    with S.socket(family=99, type=77, proto=23, fileno=fd) as odd:
        rec("as told", (odd.family, odd.type, odd.proto))
    t = net.socket(V4, STREAM)
    fd2 = t.detach()
    with S.socket(V4, STREAM | S.SOCK_NONBLOCK, 0, fd2) as nb:
        rec("nonblock", (nb.type, nb.gettimeout(), nonblocking_flag(nb)))


@scenario
def inheritable_flag(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, STREAM)
    rec("default", s.get_inheritable())
    s.set_inheritable(True)
    rec("set", s.get_inheritable())
    s.set_inheritable(False)
    rec("cleared", s.get_inheritable())
    flags = fcntl.fcntl(s.fileno(), fcntl.F_GETFD)
    fcntl.fcntl(s.fileno(), fcntl.F_SETFD, flags & ~fcntl.FD_CLOEXEC)
    rec("by fcntl", s.get_inheritable())


@scenario
def collected_unclosed_socket(net: Net, rec: Recorder) -> None:
    server = net.socket(V4, STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    client: Any = S.create_connection(server.getsockname())  # not kept by net
    conn, _ = server.accept()
    shown = repr(client)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = None
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    rec("warned", [m == f"unclosed {shown}" for m in messages])
    conn.settimeout(2.0)
    rec("the peer sees the close", said(conn.recv, 10))
    conn.close()


# -- SO_RCVTIMEO and SO_SNDTIMEO ---------------------------------------------------------------

@scenario
def timeval_options(net: Net, rec: Recorder) -> None:
    s = net.socket(V4, DGRAM)
    t = net.socket(V4, STREAM)
    rec("default", (s.getsockopt(SOL, S.SO_RCVTIMEO, 16), t.getsockopt(SOL, S.SO_SNDTIMEO, 16)))
    for sock, kind in ((s, "udp"), (t, "tcp")):
        for opt in (S.SO_RCVTIMEO, S.SO_SNDTIMEO):
            # Kept in jiffies: times that are whole ticks at HZ 100, 250, 300 and
            # 1000 alike, and one just below a second that rounds up to it at any.
            for sec, usec in ((0, 20000), (0, 40000), (1, 500000), (0, 999999), (-1, 0),
                              (0, 0), (3000000000, 0)):
                rec(f"{kind} {opt} {sec},{usec}",
                    said(sock.setsockopt, SOL, opt, TIMEVAL.pack(sec, usec)))
                rec(f"{kind} {opt} {sec},{usec} read",
                    (sock.getsockopt(SOL, opt, 16), sock.getsockopt(SOL, opt)))
            for bad in (b"", bytes(8), bytes(15), TIMEVAL.pack(0, 1000000), TIMEVAL.pack(0, -1), 5):
                rec(f"{kind} {opt} {bad!r}", said(sock.setsockopt, SOL, opt, bad))
        rec(f"{kind} short read", (sock.getsockopt(SOL, S.SO_RCVTIMEO, 8),
                                   sock.getsockopt(SOL, S.SO_RCVTIMEO, 40)))


@scenario
def rcvtimeo_ends_a_blocking_wait_with_eagain(net: Net, rec: Recorder) -> None:
    r, addr = udp_receiver(net)
    r.settimeout(None)
    r.setsockopt(SOL, S.SO_RCVTIMEO, TIMEVAL.pack(0, 50000))
    rec("blocking recv", said(r.recv, 10))
    r.settimeout(0.05)
    rec("a timeout is CPython's", said(r.recv, 10))
    r.settimeout(None)
    r.setsockopt(SOL, S.SO_RCVTIMEO, TIMEVAL.pack(-1, 0))
    rec("negative: no wait", said(r.recv, 10))
    server = net.socket(V4, STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setsockopt(SOL, S.SO_RCVTIMEO, TIMEVAL.pack(0, 50000))
    rec("accept", said(server.accept))
    r.setsockopt(SOL, S.SO_RCVTIMEO, TIMEVAL.pack(2, 0))
    s = net.socket(V4, DGRAM)
    s.sendto(b"in time", addr)
    rec("data comes first", said(r.recv, 10))


@scenario
def sndtimeo_ends_a_blocking_send_when_the_buffer_stays_full(net: Net, rec: Recorder) -> None:
    server, client, conn = tcp_pair(net)
    client.setsockopt(SOL, S.SO_SNDTIMEO, TIMEVAL.pack(0, 50000))
    chunk = b"x" * 65536
    sent = 0
    outcome: Any = None
    for _ in range(1000):  # the peer never reads: its window and our buffer fill up
        try:
            sent += client.send(chunk)
        except OSError as e:
            outcome = (type(e).__name__, e.errno)
            break
    rec("send ends", (outcome, sent > 0))


# -- IPv6 traffic class ----------------------------------------------------------------------

@scenario
def traffic_class_option(net: Net, rec: Recorder) -> None:
    for kind in (DGRAM, STREAM):
        s = net.socket(V6, kind)
        rec(f"{kind} default", (s.getsockopt(S.IPPROTO_IPV6, IPV6_TCLASS),
                                s.getsockopt(S.IPPROTO_IPV6, IPV6_RECVTCLASS)))
        for value in (0x28, 0x2B, 255, -1, 256, -2):
            rec(f"{kind} set {value}", said(s.setsockopt, S.IPPROTO_IPV6, IPV6_TCLASS, value))
            rec(f"{kind} get {value}", s.getsockopt(S.IPPROTO_IPV6, IPV6_TCLASS))
        rec(f"{kind} short", said(s.setsockopt, S.IPPROTO_IPV6, IPV6_TCLASS, b"\x01"))
    v4 = net.socket(V4, DGRAM)
    rec("on AF_INET", said(v4.setsockopt, S.IPPROTO_IPV6, IPV6_TCLASS, 4))


@scenario
def traffic_class_received(net: Net, rec: Recorder) -> None:
    r, addr = udp_receiver(net, V6)
    r.setsockopt(S.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
    r.setsockopt(S.IPPROTO_IPV6, S.IPV6_RECVHOPLIMIT, 1)
    s = net.socket(V6, DGRAM)
    space = S.CMSG_SPACE(4) * 2
    s.sendto(b"plain", addr)
    rec("default class", r.recvmsg(100, space))
    s.setsockopt(S.IPPROTO_IPV6, IPV6_TCLASS, 0x48)
    s.sendto(b"socket", addr)
    rec("socket's class", r.recvmsg(100, space))
    s.sendmsg([b"cmsg"], [(S.IPPROTO_IPV6, IPV6_TCLASS, INT.pack(0x10))], 0, addr)
    rec("message's class", r.recvmsg(100, space))
    s.sendmsg([b"minus"], [(S.IPPROTO_IPV6, IPV6_TCLASS, INT.pack(-1))], 0, addr)
    rec("-1: the socket's", r.recvmsg(100, space))
    for data in (INT.pack(256), INT.pack(-2), b"\x01", bytes(8)):
        rec(f"bad {data!r}", said(s.sendmsg, [b"x"], [(S.IPPROTO_IPV6, IPV6_TCLASS, data)], 0,
                                  addr))
    s.sendmsg([b"hop"], [(S.IPPROTO_IPV6, S.IPV6_HOPLIMIT, INT.pack(-1)),
                         (S.IPPROTO_IP, S.IP_TTL, INT.pack(0))], 0, addr)
    rec("hop limit -1 and SOL_IP skipped", r.recvmsg(100, space))
    rec("truncated", r.recvmsg(100, S.CMSG_SPACE(4)) if s.sendto(b"t", addr) else None)


# -- scope ids ----------------------------------------------------------------------------------

@scenario
def scope_ids(net: Net, rec: Recorder) -> None:
    for address in (("::1%1", 0), ("::1%lo", 0), ("::1%nope", 0), ("::1%99", 0),
                    ("fe80::1%lo", 0), ("fe80::1", 0, 0, 1), ("fe80::1", 0), ("fe80::1%1", 0),
                    ("::1", 0, 0, -1), ("::1", 0, 0, 1), ("ff02::1%lo", 0)):
        s = net.socket(V6, DGRAM)
        rec(f"bind {address!r}", said(lambda a=address, s=s: (s.bind(a), s.getsockname()[0])))
        c = net.socket(V6, DGRAM)
        rec(f"connect {address!r}", said(c.connect, address))
    for host in ("::1%1", "fe80::1%lo", "fe80::1%2", "ff02::1%lo", "::1%lo", "fe80::1%x"):
        rec(f"getaddrinfo {host}", said(lambda h=host: [i[4] for i in net.getaddrinfo(
            h, 5, V6, DGRAM)]))
    flags = S.NI_NUMERICHOST | S.NI_NUMERICSERV
    for sockaddr in (("fe80::1", 5, 0, 1), ("::1", 5, 0, 1), ("fe80::1", 5, 0, 42),
                     ("ff02::1de:c0:face:8D", 1234, 0, 1)):
        rec(f"getnameinfo {sockaddr!r}", said(net.getnameinfo, sockaddr, flags))


# -- UDP-Lite -------------------------------------------------------------------------------------

@scenario
def udplite_sockets_and_options(net: Net, rec: Recorder) -> None:
    for family in (V4, V6):
        s = net.socket(family, DGRAM, LITE)
        rec(f"{family} identity", (s.proto, s.getsockopt(SOL, SO_PROTOCOL), s.type))
        for level in (S.IPPROTO_UDP, LITE):
            for opt in (SEND_CSCOV, RECV_CSCOV):
                for value in (0, 3, 20, 70000, -5):
                    rec(f"{family} {level} {opt} {value}", said(s.setsockopt, level, opt, value))
                    rec(f"{family} {level} {opt} {value} read", s.getsockopt(level, opt))
        for opt in (1, 100, 101, 102, 103, 104, 5):
            rec(f"{family} get {opt}", said(s.getsockopt, LITE, opt))
        rec(f"{family} short", said(s.setsockopt, LITE, SEND_CSCOV, b"ab"))
    u = net.socket(V4, DGRAM)
    for opt in (SEND_CSCOV, RECV_CSCOV):
        rec(f"udp get {opt}", said(u.getsockopt, S.IPPROTO_UDP, opt))
        rec(f"udp set {opt}", said(u.setsockopt, S.IPPROTO_UDP, opt, 20))
        rec(f"udp set lite level {opt}", said(u.setsockopt, LITE, opt, 20))
    rec("not a datagram protocol", said(net.socket, V4, STREAM, LITE))


@scenario
def udplite_traffic_and_coverage(net: Net, rec: Recorder) -> None:
    for family in (V4, V6):
        r, addr = udp_receiver(net, family, LITE)
        s = net.socket(family, DGRAM, LITE)
        s.sendto(b"full", addr)
        rec(f"{family} full", said(r.recv, 100))
        s.setsockopt(LITE, SEND_CSCOV, 20)
        s.sendto(b"x" * 100, addr)
        rec(f"{family} partial", said(r.recv, 200))
        r.setsockopt(LITE, RECV_CSCOV, 50)
        s.sendto(b"y" * 100, addr)
        s.setsockopt(LITE, SEND_CSCOV, 0)
        s.sendto(b"z" * 100, addr)
        rec(f"{family} less than asked: dropped", said(r.recv, 200))
        r.setsockopt(LITE, RECV_CSCOV, 0)
        s.setsockopt(LITE, SEND_CSCOV, 30)
        s.sendto(b"w" * 100, addr)
        r.settimeout(0.2)
        rec(f"{family} partial, full asked: dropped", said(r.recv, 200))
    # A port of UDP is not one of UDP-Lite's.
    u, uaddr = udp_receiver(net)
    u.settimeout(0.2)
    lite = net.socket(V4, DGRAM, LITE)
    lite.connect(uaddr)
    lite.send(b"to udp")
    rec("udp port", said(u.recv, 10))
    net.wait(lite)  # the ICMP error: the kernel's comes from softirq
    rec("refused", said(lite.send, b"again"))


# -- create_connection ---------------------------------------------------------------------------

@scenario
def create_connection_timeouts(net: Net, rec: Recorder) -> None:
    server = net.socket(V4, STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    address = server.getsockname()
    with S.create_connection(address, timeout=2.5) as c:
        rec("timeout", (c.gettimeout(), nonblocking_flag(c)))
    with S.create_connection(address) as c:
        rec("default", (c.gettimeout(), nonblocking_flag(c)))
    S.setdefaulttimeout(1.5)
    try:
        with S.create_connection(address) as c:
            rec("default timeout", c.gettimeout())
        conn, _ = server.accept()
        rec("accepted", conn.gettimeout())
        conn.close()
    finally:
        S.setdefaulttimeout(None)
    closed = net.socket(V4, STREAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    rec("refused", said(S.create_connection, ("127.0.0.1", port), 1.0))


def run_patched(entry: Entry) -> None:
    """The scenario on the kernel, then on loopstack with the stdlib patched."""
    kernel = record(entry.fn, KernelNet())
    net = LoopNet()
    with loopstack.patch(net.stack):
        loop = record(entry.fn, net)
    assert kernel == loop, f"{entry.name}: kernel and loopstack differ\n{_table(kernel, loop)}"


@pytest.mark.parametrize("entry", list(scenarios), ids=scenarios.ids())
def test_socket_object(entry: Entry) -> None:
    run_patched(entry)
