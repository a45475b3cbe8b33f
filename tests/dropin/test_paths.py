"""Impairments and partitions between particular hosts: nodes on 127.0.0.2,
127.0.0.3 and 127.0.0.4 of one stack, talking through the patched socket
module; time is measured on the virtual clock, so every figure is exact."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import loopstack

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
PORT = 9000


@pytest.fixture
def stack() -> Iterator[loopstack.Stack]:
    with loopstack.Stack(clock="virtual", seed=11) as st, loopstack.patch(st):
        yield st


@pytest.fixture
def nodes(stack: loopstack.Stack) -> Iterator[dict[str, socket.socket]]:
    """A UDP socket on each node, port 9000, with a 2 s timeout."""
    socks = {}
    for addr in (A, B, C):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, PORT))
        s.settimeout(2)
        socks[addr] = s
    yield socks
    for s in socks.values():
        s.close()


def one_way(stack: loopstack.Stack, nodes: dict[str, socket.socket], src: str, dst: str
            ) -> float | None:
    """Seconds a datagram from src takes to reach dst; None if it never does."""
    start = stack.now()
    nodes[src].sendto(f"{src}>{dst}".encode(), (dst, PORT))
    try:
        data, peer = nodes[dst].recvfrom(100)
    except TimeoutError:
        return None
    assert data == f"{src}>{dst}".encode() and peer == (src, PORT)
    return round(stack.now() - start, 9)


def tcp_connect(stack: loopstack.Stack, src: str, dst: str, listeners: dict[str, socket.socket]
                ) -> float | None:
    """Seconds connect() from src to dst takes (SYN out, SYN-ACK back); None
    if it times out (3 s). Then the server accepts and data goes through."""
    start = stack.now()
    with socket.socket() as c:
        c.bind((src, 0))
        c.settimeout(3)
        try:
            c.connect((dst, PORT))
        except TimeoutError:
            return None
        took = round(stack.now() - start, 9)
        conn, peer = listeners[dst].accept()
        with conn:
            assert peer[0] == src
            c.sendall(b"hello")
            assert conn.recv(5) == b"hello"
    return took


def test_impairment_delays_only_its_path(stack: loopstack.Stack,
                                         nodes: dict[str, socket.socket]) -> None:
    rules = stack.impair(A, B, "delay 100ms")
    assert one_way(stack, nodes, A, B) == 0.1
    assert one_way(stack, nodes, B, A) == 0.0  # not symmetric: the way back is clear
    assert one_way(stack, nodes, A, C) == 0.0
    assert one_way(stack, nodes, C, B) == 0.0
    stack.unimpair(rules)
    assert one_way(stack, nodes, A, B) == 0.0

    stack.impair(A, B, "delay 30ms", symmetric=True)
    stack.impair(C, "127.0.0.0/8", "delay 5ms")  # a prefix: everything C sends
    assert one_way(stack, nodes, A, B) == 0.03
    assert one_way(stack, nodes, B, A) == 0.03
    assert one_way(stack, nodes, C, A) == 0.005
    assert one_way(stack, nodes, A, C) == 0.0


def test_impairment_on_tcp_round_trips(stack: loopstack.Stack) -> None:
    listeners = {addr: socket.create_server((addr, PORT)) for addr in (B, C)}
    stack.impair(A, B, "delay 50ms", symmetric=True)
    assert tcp_connect(stack, A, B, listeners) == 0.1  # SYN and SYN-ACK, 50 ms each
    assert tcp_connect(stack, A, C, listeners) == 0.0
    for s in listeners.values():
        s.close()


def test_partition_cuts_only_that_pair_and_heal_restores_it(
        stack: loopstack.Stack, nodes: dict[str, socket.socket]) -> None:
    stack.partition(A, B)
    assert one_way(stack, nodes, A, B) is None
    assert one_way(stack, nodes, B, A) is None
    assert one_way(stack, nodes, A, C) == 0.0
    assert one_way(stack, nodes, C, B) == 0.0
    assert one_way(stack, nodes, B, C) == 0.0

    listeners = {addr: socket.create_server((addr, PORT)) for addr in (B, C)}
    assert tcp_connect(stack, A, B, listeners) is None
    assert stack.stats()["Tcp"]["RetransSegs"] >= 1  # the SYN was sent again, in vain
    assert tcp_connect(stack, A, C, listeners) == 0.0

    stack.partition(A, C)
    stack.heal(A, B)  # heals that pair only
    assert one_way(stack, nodes, A, B) == 0.0
    assert one_way(stack, nodes, A, C) is None
    stack.heal()
    assert one_way(stack, nodes, A, C) == 0.0
    assert tcp_connect(stack, A, B, listeners) == 0.0
    for s in listeners.values():
        s.close()


def test_heal_leaves_impairments_alone(stack: loopstack.Stack,
                                       nodes: dict[str, socket.socket]) -> None:
    stack.impair(A, B, "delay 20ms")
    stack.partition(B, C)
    stack.heal()
    assert one_way(stack, nodes, B, C) == 0.0
    assert one_way(stack, nodes, A, B) == 0.02
