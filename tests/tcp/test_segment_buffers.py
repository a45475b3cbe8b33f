"""Gather buffers (bufq.py, SegmentBuffer): a segment that straddles two
queued chunks is gathered into a buffer of the stack's pool, reused only
once nothing refers to it any more, and kept by reference by the queue
that receives it."""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any

import loopstack
from loopstack.socket import implementation
from loopstack.transport.tcp.bufq import POOL_MAX, POOLED_MIN, ByteQueue, SegmentBuffer

K = 65536


def _queue(*parts: bytes) -> ByteQueue:
    q = ByteQueue()
    for p in parts:
        q.append(p)
    return q


def test_a_straddling_segment_is_gathered_into_the_pool() -> None:
    a, b = os.urandom(K), os.urandom(K)
    q = _queue(a, b)
    pool: deque[SegmentBuffer] = deque()
    n = 65483
    v = q.view(K - 100, n, pool)
    assert isinstance(v, memoryview) and isinstance(v.obj, SegmentBuffer)
    assert bytes(v) == (a + b)[K - 100 : K - 100 + n]
    assert len(pool) == 1
    # inside one chunk: a view of the caller's bytes, no buffer
    w = q.view(10, 1000, pool)
    assert isinstance(w, memoryview) and w.obj is a and len(pool) == 1
    # without a pool, or small: plain bytes
    assert type(q.view(K - 100, n)) is bytes
    assert type(q.view(K - 10, POOLED_MIN - 1, pool)) is bytes


def test_a_buffer_is_reused_only_once_nothing_refers_to_it() -> None:
    a, b, c = os.urandom(K), os.urandom(K), os.urandom(K)
    q = _queue(a, b, c)
    whole = a + b + c
    pool: deque[SegmentBuffer] = deque()
    first = q.view(K - 50, 60000, pool)
    kept = bytes(first)
    second = q.view(2 * K - 70, 60000, pool)  # the first is still held: a new buffer
    assert len(pool) == 2 and first.obj is not second.obj
    assert bytes(first) == kept == whole[K - 50 : K - 50 + 60000]
    assert bytes(second) == whole[2 * K - 70 : 2 * K - 70 + 60000]
    held = second.obj
    freed = id(first.obj)
    del first
    third = q.view(K - 30, 60000, pool)  # the oldest is free again: reused
    assert len(pool) == 2 and third.obj is not held and id(third.obj) == freed
    assert bytes(third) == whole[K - 30 : K - 30 + 60000]
    assert bytes(second) == whole[2 * K - 70 : 2 * K - 70 + 60000]  # untouched


def test_a_receiving_queue_keeps_a_buffer_by_reference() -> None:
    q = _queue(os.urandom(K), os.urandom(K))
    pool: deque[SegmentBuffer] = deque()
    v = q.view(K - 100, 60000, pool)
    rcvq = ByteQueue()
    rcvq.append(v)
    assert rcvq._chunks[-1].obj is v.obj  # no copy
    del v
    # the queue's view still holds it: the next straddle takes a new buffer
    q.view(K - 200, 60000, pool)
    assert len(pool) == 2
    out = bytearray(60000)
    rcvq.read_into(memoryview(out))  # read and dropped: free again
    q.view(K - 300, 60000, pool)
    assert len(pool) == 2


def test_the_pool_is_bounded() -> None:
    q = _queue(*(os.urandom(K) for _ in range(POOL_MAX + 3)))
    pool: deque[SegmentBuffer] = deque()
    held: list[Any] = [q.view(i * K + K - 10, 20000, pool) for i in range(POOL_MAX + 2)]
    assert len(pool) == POOL_MAX
    assert type(held[-1]) is bytes  # beyond the bound: plain bytes


def test_a_default_bulk_transfer_arrives_whole_through_reused_buffers() -> None:
    """Nagle on (the default): each 64 KiB write's tail joins the next
    write's data, so nearly every segment straddles two writes. Random data
    in writes of varying size, the receiver in its own thread."""
    stack = loopstack.Stack()
    try:
        lst = stack.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        c = stack.socket()
        c.connect(lst.getsockname())
        s, _ = lst.accept()
        chunks = [os.urandom(K + (i * 7919) % 4096) for i in range(300)]
        total = sum(map(len, chunks))
        got = bytearray()

        def receive() -> None:
            buf = bytearray(1 << 20)
            while len(got) < total:
                n = s.recv_into(buf)
                assert n
                got.extend(buf[:n])

        t = threading.Thread(target=receive)
        t.start()
        for ch in chunks:
            c.sendall(ch)
        t.join(60)
        assert not t.is_alive()
        assert bytes(got) == b"".join(chunks)
        pool = stack.tcp.segment_buffers
        sent = stack.stats()["Tcp"]["OutSegs"]
        assert 0 < len(pool) <= POOL_MAX
        assert len(pool) < sent / 4  # reused, not one a segment
        assert not implementation(c)._tcb.nodelay
        for x in (c, s, lst):
            x.close()
    finally:
        stack.close()
