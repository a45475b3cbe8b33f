"""A bulk transfer with default options (Nagle on): nearly every segment
straddles two writes and is gathered from two of the send queue's chunks;
the bytes must arrive whole and in order."""

from __future__ import annotations

import os
import threading

import loopstack
from loopstack.socket import implementation

K = 65536


def test_a_default_options_bulk_transfer_arrives_whole() -> None:
    """Nagle on (the default): each 64 KiB write's tail waits and joins the
    next write's data, so nearly every segment straddles two of the send
    queue's chunks and is gathered (bufq.py). Random data in writes of
    varying size, the receiver in its own thread; the segments are full
    ones, as Linux's would be."""
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
        t_c = implementation(c)._tcb
        assert not t_c.nodelay
        # Writes merged into full segments: ~310 segments of data here
        # (~335 with the few partial ones and ACKs seen); a write's tail
        # sent alone each time would make ~600.
        assert t_c.segs_out <= total // t_c.mss + len(chunks) // 2 + 10
        for x in (c, s, lst):
            x.close()
    finally:
        stack.close()
