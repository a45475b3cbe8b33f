"""Synthetic captures for the report tests: TCP connections (handshake,
data one way, ACKs, teardown) written straight with the pcap writer,
without a stack, so a capture of any size is quick to make."""

from __future__ import annotations

import struct
from typing import BinaryIO

from loopstack.wire.pcap import LINKTYPE_ETHERNET, PcapWriter

_ETH = bytes(12) + b"\x08\x00"
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


def tcp_frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: int = 0, win: int = 512, ipid: int = 0) -> bytes:
    """An Ethernet frame with an IPv4/TCP packet carrying ``payload`` zero bytes."""
    tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, win, 0, 0)
    ip = _IP.pack(0x45, 0, 20 + len(tcp) + payload, ipid & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    return _ETH + ip + tcp + bytes(payload)


def write_connections(f: BinaryIO, connections: int, data_segments: int, *,
                      mss: int = 1000, start_ns: int = 1_700_000_000 * 10**9) -> int:
    """``connections`` connections one after another, each: SYN, SYN-ACK,
    ACK, ``data_segments`` data segments each ACKed, FIN, FIN, ACK.
    Returns the number of packets written."""
    w = PcapWriter(f, LINKTYPE_ETHERNET)
    a, b = bytes((127, 0, 0, 1)), bytes((127, 0, 0, 2))
    t = start_ns
    n = 0
    for c in range(connections):
        sport = 10000 + c % 50000
        cs, ss = 1000 + c, 5000 + c
        packets = [(a, b, sport, 80, cs, 0, 0x02), (b, a, 80, sport, ss, cs + 1, 0x12),
                   (a, b, sport, 80, cs + 1, ss + 1, 0x10)]
        seq = cs + 1
        for _ in range(data_segments):
            packets.append((a, b, sport, 80, seq, ss + 1, 0x18, mss))
            seq += mss
            packets.append((b, a, 80, sport, ss + 1, seq, 0x10))
        packets += [(a, b, sport, 80, seq, ss + 1, 0x11), (b, a, 80, sport, ss + 1, seq + 1, 0x11),
                    (a, b, sport, 80, seq + 1, ss + 2, 0x10)]
        for p in packets:
            t += 20_000
            n += 1
            w.write(t, tcp_frame(*p[:7], payload=p[7] if len(p) > 7 else 0, ipid=n))
    w.close()
    return n
