"""Many threads on one stack: a UDP echo server thread and 8 client threads
exchanging 10 000 datagrams each over an unimpaired lo. Nothing is lost,
nothing is reordered, nothing is corrupted.

Each client keeps at most WINDOW datagrams outstanding, so the server's queue
never holds more than CLIENTS * WINDOW small datagrams (well inside the
default 212992-byte buffer) and a client's own queue never more than WINDOW:
a drop would then be a bug, not the correct behaviour of a full buffer, and
the counters must show none. Every blocking call has a timeout, so a lost
datagram fails the test with TimeoutError rather than hanging it.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

import pytest

import loopstack
from loopstack.socket import Socket

CLIENTS = 8
WINDOW = 16
TIMEOUT = 10.0  # seconds any single blocking call may wait
HEADER = struct.Struct("!II")  # client id, sequence number
STOP = b"stop"


def payload(cid: int, seq: int) -> bytes:
    # Varying length and content so a mixed-up or truncated echo is noticed.
    return HEADER.pack(cid, seq) + bytes([(cid + seq) & 0xFF]) * (seq % 23)


def echo_server(sock: Socket, errors: list[BaseException]) -> None:
    try:
        while True:
            data, addr = sock.recvfrom(65535)
            if data == STOP:
                return
            sock.sendto(data, addr)
    except BaseException as e:  # reported by the main thread
        errors.append(e)


def client(stack: loopstack.Stack, family: int, host: str, server: tuple[object, ...],
           cid: int, count: int, errors: list[BaseException]) -> None:
    try:
        with stack.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(TIMEOUT)
            s.bind((host, 0))
            sent = 0
            for expected in range(count):
                while sent < count and sent - expected < WINDOW:
                    s.sendto(payload(cid, sent), server)
                    sent += 1
                data, addr = s.recvfrom(65535)
                assert addr[:2] == server[:2], f"client {cid}: echo from {addr}, not {server}"
                got_cid, got_seq = HEADER.unpack_from(data)
                assert (got_cid, got_seq) == (cid, expected), (
                    f"client {cid}: expected echo #{expected}, got client {got_cid} #{got_seq}")
                assert data == payload(cid, expected), f"client {cid}: echo #{expected} altered"
            # Nothing more may arrive: no duplicates.
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recvfrom(65535)
    except BaseException as e:
        errors.append(e)


def run_echo(family: int, host: str, count: int) -> dict[str, int]:
    """Run the server and CLIENTS clients; return the UDP counters afterwards."""
    group = "Udp" if family == socket.AF_INET else "Udp6"
    with loopstack.Stack() as stack:
        srv = stack.socket(family, socket.SOCK_DGRAM)
        srv.settimeout(TIMEOUT)
        srv.bind((host, 0))
        address = srv.getsockname()
        errors: list[BaseException] = []
        threads: list[threading.Thread] = [
            threading.Thread(target=echo_server, args=(srv, errors), name="echo-server")]
        threads += [
            threading.Thread(target=client, name=f"client-{cid}",
                             args=(stack, family, host, address, cid, count, errors))
            for cid in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join(timeout=120)
        with stack.socket(family, socket.SOCK_DGRAM) as stopper:
            stopper.sendto(STOP, address)
        threads[0].join(timeout=TIMEOUT + 5)
        assert not any(t.is_alive() for t in threads), "a thread is stuck"
        srv.close()
        if errors:
            raise errors[0]
        return stack.stats()[group]


def check_counters(udp: dict[str, int], count: int) -> None:
    exchanged = 2 * CLIENTS * count  # every datagram and its echo
    assert udp["RcvbufErrors"] == 0
    assert udp["InErrors"] == 0
    assert udp["NoPorts"] == 0
    assert udp["OutDatagrams"] == exchanged + 1  # and the stop datagram
    assert udp["InDatagrams"] == exchanged + 1


def test_ipv4_eight_clients_ten_thousand_each() -> None:
    count = 10_000
    check_counters(run_echo(socket.AF_INET, "127.0.0.1", count), count)


def test_ipv6_eight_clients() -> None:
    count = 5_000
    check_counters(run_echo(socket.AF_INET6, "::1", count), count)


def test_window_keeps_queues_within_the_default_buffer() -> None:
    """The premise of the tests above: CLIENTS * WINDOW datagrams of the largest
    payload used fit in the server's default receive buffer."""
    with loopstack.Stack() as stack, stack.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv, \
            stack.socket(socket.AF_INET, socket.SOCK_DGRAM) as cli:
        srv.bind(("127.0.0.1", 0))
        largest = max((payload(0, seq) for seq in range(23)), key=len)
        for _ in range(CLIENTS * WINDOW):
            cli.sendto(largest, srv.getsockname())
        assert stack.stats()["Udp"]["RcvbufErrors"] == 0


def _spawn(target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target)
    t.start()
    return t


def test_blocked_receiver_is_woken_by_another_thread() -> None:
    """A thread blocked in recvfrom wakes when another thread's sendto delivers."""
    with loopstack.Stack() as stack, stack.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            stack.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.settimeout(TIMEOUT)
        rx.bind(("127.0.0.1", 0))
        got: list[bytes] = []
        t = _spawn(lambda: got.append(rx.recv(100)))
        t.join(0.05)  # give it a chance to block; correctness does not depend on it
        tx.sendto(b"wake", rx.getsockname())
        t.join(TIMEOUT)
        assert got == [b"wake"]

