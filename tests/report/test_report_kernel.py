"""`loopstack report` on the kernel's own loopback traffic: a real
127.0.0.1 exchange captured with an AF_PACKET socket on lo (as tcpdump
-i lo captures it), drawn with the same kinds of pictures as a loopstack
run. A capture made that way ships in tests/report/data/ for machines
where the test cannot take one (not root)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.utils import rdpcap

from loopstack.cli.main import main
from loopstack.wire.pcap import LINKTYPE_ETHERNET, PcapWriter

from .pages import arrows, by_class, card, connections, remote_fetches

SHIPPED = Path(__file__).parent / "data" / "kernel-lo.pcap"
ETH_P_ALL = 3
PACKET_OUTGOING = 4


def record_kernel_exchange(path: Path, size: int = 60_000) -> int:
    """Capture a real TCP exchange over the kernel's 127.0.0.1 (root: an
    AF_PACKET socket on lo) to ``path``; returns the packets written. Other
    traffic on lo is left out by port."""
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniffer.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE: lose nothing
    sniffer.bind(("lo", 0))
    sniffer.settimeout(0.2)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    frames: list[tuple[int, bytes]] = []
    done = threading.Event()

    def sniff() -> None:
        while not done.is_set():
            try:
                frame, addr = sniffer.recvfrom(262144)
            except TimeoutError:
                continue
            if addr[2] == PACKET_OUTGOING:  # lo shows each packet twice; libpcap keeps one
                continue
            if len(frame) >= 38 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
                ihl = (frame[14] & 15) * 4
                ports = frame[14 + ihl : 14 + ihl + 4]
                if port in (int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:], "big")):
                    frames.append((time.time_ns(), frame))

    thread = threading.Thread(target=sniff)
    thread.start()
    try:
        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                while conn.recv(65536):
                    pass
                conn.sendall(b"received")

        peer = threading.Thread(target=serve)
        peer.start()
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(size // 3000):
                client.sendall(bytes(3000))
            client.shutdown(socket.SHUT_WR)
            assert client.recv(100) == b"received"
        peer.join()
        time.sleep(0.3)  # the last FIN and ACK
    finally:
        done.set()
        thread.join()
        sniffer.close()
        server.close()
    with open(path, "wb") as f:
        writer = PcapWriter(f, LINKTYPE_ETHERNET)
        for ts, frame in frames:
            writer.write(ts, frame)
        writer.close()
    return len(frames)


def count_retransmissions(pcap: Path) -> int:
    """Segments whose sequence space was all sent before in their direction,
    counted from the capture with scapy, independently of the report (lo
    has one path: nothing arrives out of order)."""
    highest: dict[tuple[int, int], int] = {}
    count = 0
    for p in rdpcap(str(pcap)):
        if TCP not in p:
            continue
        t = p[TCP]
        flags = int(t.flags)
        span = len(bytes(t.payload)) + (1 if flags & 0x02 else 0) + (1 if flags & 0x01 else 0)
        if not span:
            continue
        d = (t.sport, t.dport)
        top = highest.get(d)
        if top is None:
            highest[d] = t.seq + span
            continue
        start = top + ((t.seq - top + (1 << 31)) % (1 << 32)) - (1 << 31)  # unwrapped near top
        if start + span <= top:
            count += 1
        highest[d] = max(top, start + span)
    return count


def check_report(pcap: Path, out: Path, retransmissions: int = 0) -> str:
    assert main(["report", str(pcap), "-o", str(out)]) == 0
    html = (out / "index.html").read_text()
    packets = [p[TCP] for p in rdpcap(str(pcap)) if TCP in p]
    (c,) = connections(html)
    assert c["packets"] == len(packets)
    ladder = by_class(html, "ladder")[0]
    assert len(arrows(ladder)) == c["drawn"]
    assert c["drawn"] == min(c["packets"], 140)
    assert len(by_class(html, "tsg")) == 2  # the data, and the short reply
    assert by_class(html, "cc") == []  # a capture file has no cwnd
    assert "a capture file does not carry them" in html
    assert card(html, "retransmissions") == str(retransmissions)
    assert "closed" in html
    assert "ph-hs" in html and "ph-td" in html  # handshake and teardown shaded
    assert remote_fetches(html) == []
    return html


def test_count_retransmissions_finds_a_resent_segment(tmp_path: Path) -> None:
    from scapy.layers.inet import IP
    from scapy.utils import wrpcap

    def seg(seq: int, n: int, sport: int = 40000, dport: int = 80) -> object:
        return IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=sport, dport=dport, seq=seq,
                                                          flags="PA") / (b"x" * n)

    pcap = tmp_path / "r.pcap"
    # two new segments, the first again, an ACK, the other direction's data,
    # and a segment that straddles the wrap of the sequence space
    wrpcap(str(pcap), [seg(1000, 10), seg(1010, 10), seg(1000, 10), seg(1020, 0),
                       seg(5, 10, 80, 40000), seg(2**32 - 5, 10, 41000), seg(5, 10, 41000),
                       seg(2**32 - 5, 10, 41000)])
    assert count_retransmissions(pcap) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="an AF_PACKET capture on lo needs root")
def test_a_live_kernel_exchange(tmp_path: Path) -> None:
    pcap = tmp_path / "lo.pcap"
    assert record_kernel_exchange(pcap) > 10
    # Under load the kernel may send a tail loss probe (a delayed ACK on a
    # busy machine): the report must count what the capture holds.
    check_report(pcap, tmp_path / "r", count_retransmissions(pcap))


def test_the_shipped_kernel_capture(tmp_path: Path) -> None:
    assert count_retransmissions(SHIPPED) == 0
    html = check_report(SHIPPED, tmp_path / "r")
    assert "mss 65495" in html  # the kernel's lo MSS (MTU 65536), from its SYN


if __name__ == "__main__":  # make the shipped file again (root)
    SHIPPED.parent.mkdir(exist_ok=True)
    print(record_kernel_exchange(SHIPPED), "packets in", SHIPPED)
