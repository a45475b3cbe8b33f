"""UDP datagrams and ICMP echoes on the direct path (crossing lo as their
records when nothing observes lo) against the byte path (forced by a tap):
the same exchange on two stacks with the same seed and a virtual clock must
leave the same counters, the same results and, byte for byte, the same
packets (the record path's packets made from its records). Also: what a
thread-to-thread blast delivers and drops still adds up to what was sent."""

from __future__ import annotations

import socket
import threading
from typing import Any

import loopstack
from loopstack.ip.packet import Record

IP_RECVTTL = 12
IP_PKTINFO = 8


def _exchange(stack: loopstack.Stack) -> list[Any]:
    seen: list[Any] = []
    rx = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    rx.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    rx.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    port = rx.getsockname()[1]
    tx = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(("127.0.0.1", port))
    # connected sends of every size, a bytearray and a memoryview among them
    for data in (b"", b"x", bytes(range(256)) * 5, bytearray(b"mutable"),
                 memoryview(b"view!"), bytes(65507)):
        seen.append(tx.send(data))
    seen.append(rx.recvfrom(10))  # the empty one
    seen.append(rx.recvmsg(100, 1024))  # ancillary data: TTL and PKTINFO
    seen.append(rx.recv(3, socket.MSG_PEEK))
    buf = bytearray(100)
    seen.append((rx.recv_into(buf), bytes(buf)))  # truncated
    seen.append(rx.recvfrom(100))
    seen.append(rx.recvfrom(100))
    seen.append(len(rx.recv(70000)))
    stack.advance(0.001)
    # unconnected sendto and sendmsg with a TTL, to 127.0.0.1 and another 127/8 address
    other = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    seen.append(other.sendto(b"to rx", ("127.0.0.1", port)))
    seen.append(other.sendmsg([b"ttl ", b"7"], [(socket.IPPROTO_IP, socket.IP_TTL,
                                                   (7).to_bytes(4, "little"))],
                              0, ("127.0.0.1", port)))
    seen.append(rx.recvmsg(100, 1024))
    seen.append(rx.recvmsg(100, 1024))
    # a dual-stack socket hears IPv4 (v4-mapped addresses)
    dual = stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    dual.bind(("::", 0))
    dual.settimeout(5)
    seen.append(tx.sendto(b"to dual", ("127.0.0.1", dual.getsockname()[1])))
    seen.append(dual.recvfrom(100))
    seen.append(dual.sendto(b"from dual", ("::ffff:127.0.0.1", port)))
    seen.append(rx.recvfrom(100))
    # IPv6 (the byte path on both stacks)
    six = stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    six.bind(("::1", 0))
    six.settimeout(5)
    seen.append(dual.sendto(b"over v6", six.getsockname()))
    seen.append(six.recvfrom(100)[0])
    # a full buffer drops (RcvbufErrors), as the bytes would
    small = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    small.bind(("127.0.0.1", 0))
    for _ in range(20):
        tx.sendto(bytes(1400), small.getsockname())
    small.setblocking(False)
    got = 0
    while True:
        try:
            small.recv(2000)
        except BlockingIOError:
            break
        got += 1
    seen.append(got)
    # no socket: NoPorts, port unreachable from the bytes, ECONNREFUSED
    gone = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    dead = gone.getsockname()
    gone.close()
    lonely = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lonely.connect(dead)
    lonely.send(b"anyone?")
    try:
        lonely.send(b"again")
        seen.append("sent")
    except OSError as e:
        seen.append(e.errno)
    other.sendto(b"unconnected", dead)  # no error for an unconnected sender
    stack.advance(0.001)
    # UDP-Lite (never offloaded: bytes on both)
    lite = stack.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
    lite.bind(("127.0.0.1", 0))
    lite.settimeout(5)
    lite.sendto(b"lite", lite.getsockname())
    seen.append(lite.recv(10))
    # ICMP echo: ping of several sizes and TTLs, to two addresses and ::1
    for host, size, ttl in (("127.0.0.1", 56, 64), ("127.0.0.3", 0, 1), ("127.0.0.1", 1400, 9),
                            ("::1", 56, 64)):
        r = stack.ping(host, count=3, interval=0.01, size=size, ttl=ttl, timeout=0.5)
        seen.append((r.transmitted, r.received, r.duplicates, r.rtts,
                     [(p.seq, p.address, p.ttl, p.size) for p in r.replies]))
    for s in (rx, tx, other, dual, six, small, lonely, lite):
        s.close()
    seen.append(stack.sockets())
    return seen


def _run(observe: bool) -> tuple[list[Any], dict[str, dict[str, int]], dict[str, int],
                                 list[bytes], int]:
    stack = loopstack.Stack(clock="virtual", seed=4321)
    packets: list[bytes] = []
    records = 0
    if observe:
        stack.lo.tap(lambda pkt, _direction: packets.append(bytes(pkt)))
    else:
        ip = stack.ipv4
        take = ip.input_record

        def witness(rec: Record) -> None:
            nonlocal records
            records += 1
            packets.append(rec.packet())
            take(rec)

        ip.input_record = witness  # type: ignore[method-assign]
    try:
        seen = _exchange(stack)
        return seen, stack.stats(), stack.lo.stats.as_dict(), packets, records
    finally:
        stack.close()


def test_record_path_is_the_byte_path() -> None:
    seen_b, stats_b, lo_b, packets_b, _ = _run(observe=True)
    seen_r, stats_r, lo_r, packets_r, records = _run(observe=False)
    assert records > 30  # the record path was taken
    assert seen_r == seen_b
    assert stats_r == stats_b
    assert lo_r == lo_b
    # Each record is the packet the byte path sent at that point.
    assert len(packets_r) == records
    assert set(packets_r) <= set(packets_b)
    order = {p: i for i, p in enumerate(packets_b)}
    indexes = [order[p] for p in packets_r]
    assert indexes == sorted(indexes)


def test_capture_writes_checksums_of_what_would_have_been_records(tmp_path: Any) -> None:
    """With a capture on, UDP and ICMP go as bytes, and the file carries
    correct checksums (filled in, as lo offloads them)."""
    from loopstack.wire.checksum import ones_sum
    from loopstack.wire.pcap import read_capture

    path = tmp_path / "lo.pcap"
    with loopstack.Stack() as stack:
        rx = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        with stack.capture(str(path)):
            assert not stack.lo.carries_records()
            tx = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.connect(rx.getsockname())
            tx.send(b"captured")
            assert stack.ping("127.0.0.1", count=1, interval=0).received == 1
        assert stack.lo.carries_records()
        assert rx.recv(100) == b"captured"
        rx.close()
        tx.close()
    with path.open("rb") as f:
        frames = [r.frame[14:] if r.linktype == 1 else r.frame for r in read_capture(f)]
    protos = []
    for ip in frames:
        proto, ihl = ip[9], (ip[0] & 0x0F) * 4
        body = ip[ihl:]
        protos.append(proto)
        if proto == 17:
            pseudo = int.from_bytes(ip[12:16], "big") + int.from_bytes(ip[16:20], "big") \
                + 17 + len(body)
            assert ones_sum(body, pseudo) == 0xFFFF
        elif proto == 1:
            assert ones_sum(body) == 0xFFFF
    assert protos == [17, 1, 1]


def test_a_blast_delivers_and_drops_what_the_counters_say() -> None:
    """An unthrottled sender thread against a reader blocked in recv (the
    hand-over case): every datagram sent is either read or counted as a
    receive-buffer drop, in order, none twice."""
    n = 3000
    with loopstack.Stack() as stack:
        rx = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        tx = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(rx.getsockname())
        got: list[int] = []

        def reader() -> None:
            while True:
                data = rx.recv(2000)
                if data == b"end":
                    return
                got.append(int.from_bytes(data[:4], "big"))

        t = threading.Thread(target=reader)
        t.start()
        before = dict(stack.stats()["Udp"])
        for i in range(n):
            tx.send(i.to_bytes(4, "big") + bytes(1396))
        while t.is_alive():
            tx.send(b"end")
            t.join(0.05)
        after = stack.stats()["Udp"]
        rx.close()
        tx.close()
    ends = after["OutDatagrams"] - before["OutDatagrams"] - n
    dropped = after["RcvbufErrors"] - before["RcvbufErrors"]
    assert got == sorted(set(got))
    assert after["InDatagrams"] - before["InDatagrams"] == len(got) + 1  # and one end
    assert len(got) + dropped == n + ends - 1
