"""The direct path on lo (a segment crossing as its parsed record when
nothing observes lo) against the byte path (forced by a tap): the same
exchange on two stacks with the same seed and a virtual clock must leave
the same counters, the same socket results and, byte for byte, the same
packets (the record path's packets made from its records)."""

from __future__ import annotations

import socket
from typing import Any

import loopstack
from loopstack.ip.packet import Record


def _exchange(stack: loopstack.Stack) -> list[Any]:
    """Connect, move data both ways (small, urgent, bulk beyond one MSS, a
    large bytes object and a bytearray), half-close, close; what the
    application saw."""
    seen: list[Any] = []
    srv = stack.create_server(("127.0.0.1", 0))
    cli = stack.create_connection(("127.0.0.1", srv.getsockname()[1]), timeout=30)
    conn, _ = srv.accept()
    conn.settimeout(30)
    cli.sendall(b"hello")
    stack.advance(0.003)  # time moves between steps: timestamps and timers differ
    seen.append(conn.recv(100))
    conn.sendall(b"reply")
    stack.advance(0.002)
    seen.append(cli.recv(100))
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    conn.sendall(b"ab", socket.MSG_OOB)  # the urgent pointer crosses too
    seen.append(cli.recv(10))
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    big = bytes(range(256)) * 1000  # 256 000 bytes: several segments of the lo MSS
    cli.sendall(big)
    cli.sendall(bytearray(b"mutable") * 5000)
    got = bytearray()
    while len(got) < len(big) + 35000:
        got += conn.recv(1 << 16)
        stack.advance(0.001)
    seen.append(bytes(got) == big + b"mutable" * 5000)
    buf = bytearray(10)
    conn.sendall(b"0123456789abc")
    stack.advance(0.05)
    seen.append((cli.recv_into(buf, 4), bytes(buf[:4])))
    seen.append(cli.recv(3, socket.MSG_PEEK))
    seen.append(cli.recv(100))
    cli.shutdown(socket.SHUT_WR)
    seen.append(conn.recv(10))
    conn.close()
    seen.append(cli.recv(10))
    cli.close()
    srv.close()
    stack.advance(120)  # TIME_WAIT ends
    seen.append(stack.sockets())
    return seen


def _run(observe: bool) -> tuple[list[Any], dict[str, dict[str, int]], dict[str, int],
                                 list[bytes], int]:
    stack = loopstack.Stack(clock="virtual", seed=1234)
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
        # Records are made with the bound method of the time: re-bind it.
        orig = ip.output_record

        def output_record(*a: Any) -> bool:
            ip.input_record = witness  # type: ignore[method-assign]
            return orig(*a)

        ip.output_record = output_record  # type: ignore[method-assign]
    try:
        seen = _exchange(stack)
        return seen, stack.stats(), stack.lo.stats.as_dict(), packets, records
    finally:
        stack.close()


def test_record_path_is_the_byte_path() -> None:
    seen_b, stats_b, lo_b, packets_b, _ = _run(observe=True)
    seen_r, stats_r, lo_r, packets_r, records = _run(observe=False)
    assert records > 10  # the record path was taken
    assert seen_r == seen_b
    assert stats_r == stats_b
    assert lo_r == lo_b
    # Each record is the packet the byte path sent at that point.
    assert set(packets_r) <= set(packets_b)
    assert len(packets_r) == records
    order = {p: i for i, p in enumerate(packets_b)}
    indexes = [order[p] for p in packets_r]
    assert indexes == sorted(indexes)


def test_a_tap_turns_the_record_path_off() -> None:
    with loopstack.Stack(clock="virtual", seed=1) as stack:
        assert stack.lo.carries_records()
        handle = stack.lo.tap(lambda pkt, _direction: None)
        assert not stack.lo.carries_records()
        handle.remove()
        assert stack.lo.carries_records()
        stack.lo.netem("delay 1ms")
        assert not stack.lo.carries_records()
        stack.lo.netem(None)
        stack.partition("127.0.0.1", "127.0.0.2")
        assert not stack.lo.carries_records()


def test_header_prediction_is_the_general_path(monkeypatch: Any) -> None:
    """The same exchange with header prediction (input.py _predicted) and
    without it: the same packets on the wire, counters and results."""
    from loopstack.transport.tcp import input as tcp_input

    taken = 0
    predicted = tcp_input._predicted

    def counting(*a: Any) -> bool:
        nonlocal taken
        done = predicted(*a)
        taken += done
        return done

    monkeypatch.setattr(tcp_input, "_predicted", counting)
    with_prediction = _run(observe=True)
    assert taken > 10  # the fast path was taken
    monkeypatch.setattr(tcp_input, "_predicted", lambda *a: False)
    without = _run(observe=True)
    assert with_prediction[:4] == without[:4]
