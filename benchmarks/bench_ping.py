"""ICMP echo round trip: loopstack's lo against the kernel's 127.0.0.1.

Kernel: a raw ICMP socket (needs root) sends an echo request to 127.0.0.1
and reads until its reply comes back. loopstack: the same exchange through
an echo endpoint of a fresh Stack, and through Stack.ping. Both unpinned and
pinned to one CPU; the ratio is what matters.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import per_op, pinned, report  # noqa: E402

import loopstack  # noqa: E402
from loopstack.wire.checksum import checksum  # noqa: E402

N = 5000


def kernel_rtt(n: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    data = bytes(56)
    try:
        for seq in range(n):
            head = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
            csum = checksum(head + data)
            s.sendto(head[:2] + csum.to_bytes(2, "big") + head[4:] + data, ("127.0.0.1", 0))
            while True:  # the raw socket also sees our own request on lo
                pkt = s.recv(2048)
                ihl = (pkt[0] & 0x0F) * 4
                if pkt[ihl] == 0 and pkt[ihl + 4 : ihl + 6] == ident.to_bytes(2, "big"):
                    break
    finally:
        s.close()


def loopstack_rtt(n: int) -> None:
    with loopstack.Stack() as stack:
        with stack.lock:
            ep = stack.icmp4.open_endpoint()
        dst = socket.inet_aton("127.0.0.1")
        data = bytes(56)
        replies = ep.replies
        for seq in range(n):
            with stack.lock:
                ep.send_echo(dst, seq & 0xFFFF, data)
                replies.popleft()  # run to completion: the reply is already queued


def loopstack_ping(n: int) -> None:
    with loopstack.Stack() as stack:
        r = stack.ping("127.0.0.1", count=n, interval=0)
        assert r.received == n, r


def main() -> None:
    rows = []
    for label, cpu in (("unpinned", None), ("pinned to CPU 0", 0)):
        with pinned(cpu):
            k = per_op(kernel_rtt, N)
            ls = per_op(loopstack_rtt, N)
            lp = per_op(loopstack_ping, N)
        rows.append((f"echo endpoint, {label}", k, ls))
        rows.append((f"Stack.ping(interval=0), {label}", k, lp))
    report("ICMP echo round trip, 56 data bytes, 127.0.0.1 (per echo)", rows)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench_ping.py needs root for the kernel's raw ICMP socket: run it as root")
    main()
