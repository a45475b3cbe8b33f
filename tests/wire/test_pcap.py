"""Capture files: our writers read by scapy and tshark, scapy's files read by
read_capture, and read_capture round trips."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter as ScapyPcapNgWriter
from scapy.utils import rdpcap, wrpcap

from loopstack.wire.checksums import fill_checksums, l4_checksum_ok
from loopstack.wire.errors import MalformedPacket
from loopstack.wire.icmp import PROTO_ICMP, PROTO_ICMPV6, ICMPMessage
from loopstack.wire.ipv4 import IPv4Header
from loopstack.wire.ipv6 import IPv6Header
from loopstack.wire.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    CaptureRecord,
    PcapngWriter,
    PcapWriter,
    ethernet_frame,
    read_capture,
)
from loopstack.wire.tcp import (
    ACK,
    PROTO_TCP,
    SYN,
    MSSOption,
    NopOption,
    SackOption,
    SackPermittedOption,
    TCPHeader,
    TimestampsOption,
    WindowScaleOption,
)
from loopstack.wire.udp import PROTO_UDP, UDPHeader

from .oracle import a4, a6, rebuilt_by_scapy

LO4, LO6 = a4("127.0.0.1"), a6("::1")
T0 = 1_700_000_000_123_456_789  # a timestamp with all nine digits of nanoseconds


def loopback_packets() -> list[bytes]:
    """Packets as the loopback carries them: no checksums anywhere."""
    syn = TCPHeader(
        40000, 8080, 1000, 0, SYN, 65535,
        options=[MSSOption(65495), SackPermittedOption(), TimestampsOption(1, 0), NopOption(),
                 WindowScaleOption(7)],
    ).build(with_checksum=False)
    ack = TCPHeader(
        8080, 40000, 5000, 1001, ACK, 512,
        options=[NopOption(), NopOption(), TimestampsOption(2, 1), NopOption(), NopOption(),
                 SackOption(((1001, 1002),))],
    ).build(b"data", with_checksum=False)
    udp = UDPHeader(40001, 40002).build(b"query", with_checksum=False)  # no dissector
    echo4 = ICMPMessage.echo(7, 1, b"ping").build(with_checksum=False)
    echo6 = ICMPMessage.echo(7, 1, b"ping", v6=True).build(with_checksum=False)
    headers4 = [(PROTO_TCP, syn), (PROTO_TCP, ack), (PROTO_UDP, udp), (PROTO_ICMP, echo4)]
    packets = [IPv4Header(LO4, LO4, proto, ident=i).build(u) for i, (proto, u) in
               enumerate(headers4)]
    packets = [p[:10] + b"\x00\x00" + p[12:] for p in packets]  # header checksum offloaded too
    packets += [IPv6Header(LO6, LO6, PROTO_TCP).build(syn),
                IPv6Header(LO6, LO6, PROTO_UDP).build(udp),
                IPv6Header(LO6, LO6, PROTO_ICMPV6).build(echo6)]
    return packets


PACKETS = [fill_checksums(p) for p in loopback_packets()]


def test_packets_need_and_get_checksums() -> None:
    assert not any(l4_checksum_ok(p) for p in loopback_packets() if p[9:10] != b"\x11")
    assert all(l4_checksum_ok(p) for p in PACKETS)


def test_ethernet_frame_is_what_tcpdump_writes_on_lo() -> None:
    frame = ethernet_frame(PACKETS[0])
    e = Ether(frame)
    assert (e.dst, e.src, e.type) == ("00:00:00:00:00:00", "00:00:00:00:00:00", 0x0800)
    assert Ether(ethernet_frame(PACKETS[-1])).type == 0x86DD
    with pytest.raises(ValueError):
        ethernet_frame(b"\x50" + bytes(19))


def write_pcap(path: Path, linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144) -> None:
    with path.open("wb") as f:
        w = PcapWriter(f, linktype, snaplen)
        for i, packet in enumerate(PACKETS):
            w.write(T0 + i, ethernet_frame(packet) if linktype == LINKTYPE_ETHERNET else packet)
        w.close()


def write_pcapng(path: Path) -> None:
    with path.open("wb") as f:
        w = PcapngWriter(f)
        eth = w.add_interface("lo", LINKTYPE_ETHERNET)
        raw = w.add_interface("raw0", LINKTYPE_RAW, snaplen=65535)
        for i, packet in enumerate(PACKETS):
            direction = ("in", "out", None)[i % 3]
            if i % 2:
                w.write(raw, T0 + i, packet, direction)
            else:
                w.write(eth, T0 + i, ethernet_frame(packet), direction)
        w.close()


def test_pcap_read_by_scapy(tmp_path: Path) -> None:
    path = tmp_path / "lo.pcap"
    write_pcap(path)
    got = rdpcap(str(path))
    assert len(got) == len(PACKETS)
    for i, (pkt, packet) in enumerate(zip(got, PACKETS, strict=True)):
        assert bytes(pkt) == ethernet_frame(packet)
        assert int(pkt.time * 10**9) == T0 + i
        assert rebuilt_by_scapy(pkt) == bytes(pkt)
    assert got[0][TCP].options[0] == ("MSS", 65495)


def test_raw_pcap_read_by_scapy(tmp_path: Path) -> None:
    path = tmp_path / "raw.pcap"
    write_pcap(path, LINKTYPE_RAW)
    got = rdpcap(str(path))
    assert [bytes(p) for p in got] == PACKETS
    assert all(rebuilt_by_scapy(p) == bytes(p) for p in got)


def test_pcapng_read_by_scapy(tmp_path: Path) -> None:
    path = tmp_path / "lo.pcapng"
    write_pcapng(path)
    got = rdpcap(str(path))
    assert len(got) == len(PACKETS)
    for i, (pkt, packet) in enumerate(zip(got, PACKETS, strict=True)):
        assert bytes(pkt) == (packet if i % 2 else ethernet_frame(packet))
        assert int(pkt.time * 10**9) == T0 + i
        assert pkt.sniffed_on == ("raw0" if i % 2 else "lo")
        assert pkt.direction == (1, 2, None)[i % 3]
        assert rebuilt_by_scapy(pkt) == bytes(pkt)


def test_read_capture_round_trips(tmp_path: Path) -> None:
    write_pcap(tmp_path / "a.pcap")
    write_pcapng(tmp_path / "a.pcapng")
    with (tmp_path / "a.pcap").open("rb") as f:
        records = read_capture(f)
    assert records == [
        CaptureRecord(T0 + i, LINKTYPE_ETHERNET, ethernet_frame(p)) for i, p in enumerate(PACKETS)
    ]
    with (tmp_path / "a.pcapng").open("rb") as f:
        records = read_capture(f)
    assert records == [
        CaptureRecord(
            T0 + i,
            LINKTYPE_RAW if i % 2 else LINKTYPE_ETHERNET,
            p if i % 2 else ethernet_frame(p),
            "raw0" if i % 2 else "lo",
            ("in", "out", None)[i % 3],
        )
        for i, p in enumerate(PACKETS)
    ]


def test_snaplen_cuts_frames(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    write_pcap(path, LINKTYPE_RAW, snaplen=40)
    with path.open("rb") as f:
        assert [r.frame for r in read_capture(f)] == [p[:40] for p in PACKETS]
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.write(w.add_interface("lo", LINKTYPE_RAW, snaplen=20), 0, PACKETS[0])
    assert read_capture(io.BytesIO(buf.getvalue()))[0].frame == PACKETS[0][:20]
    pkt = rdpcap(io.BytesIO(buf.getvalue()))[0]
    assert (len(bytes(pkt)), pkt.wirelen) == (20, len(PACKETS[0]))


def test_writer_errors() -> None:
    w = PcapngWriter(io.BytesIO())
    with pytest.raises(ValueError):
        w.write(0, 0, b"")
    iface = w.add_interface("lo", LINKTYPE_RAW)
    with pytest.raises(ValueError):
        w.write(iface, 0, b"", "sideways")


def test_scapy_files_read_by_read_capture(tmp_path: Path) -> None:
    pkts = [IP(p) for p in PACKETS[:4]]
    for i, pkt in enumerate(pkts):
        pkt.time = 1_700_000_000 + i / 4
    usec, nsec, ng = tmp_path / "us.pcap", tmp_path / "ns.pcap", tmp_path / "s.pcapng"
    wrpcap(str(usec), pkts)
    wrpcap(str(nsec), pkts, nano=True)
    with ScapyPcapNgWriter(str(ng)) as w:
        for pkt in pkts:
            w.write(pkt)
    for path in (usec, nsec, ng):
        with path.open("rb") as f:
            records = read_capture(f)
        assert [r.frame for r in records] == PACKETS[:4], path.name
        assert [r.ts_ns for r in records] == [1_700_000_000_000_000_000 + i * 250_000_000
                                              for i in range(4)], path.name
        assert {r.linktype for r in records} == {228}, path.name  # scapy: LINKTYPE_IPV4


def test_big_endian_pcap_and_usec_resolution() -> None:
    head = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    rec = struct.pack(">IIII", 10, 500, 3, 3) + b"\x45\x00\x00"
    assert read_capture(io.BytesIO(head + rec)) == [
        CaptureRecord(10_000_500_000, LINKTYPE_RAW, b"\x45\x00\x00")
    ]


def pcap_bytes() -> bytes:
    buf = io.BytesIO()
    PcapWriter(buf, LINKTYPE_RAW).write(T0, PACKETS[0])
    return buf.getvalue()


def pcapng_bytes() -> bytes:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.write(w.add_interface("lo", LINKTYPE_RAW), T0, PACKETS[0], "in")
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xd4\xc3",
        b"not a capture file",
        pcap_bytes()[:20],  # file header cut short
        pcap_bytes()[:30],  # record header cut short
        pcap_bytes()[:-1],  # frame cut short
        pcapng_bytes()[:-4],  # block cut short
        pcapng_bytes()[:8] + b"\x00\x00\x00\x00" + pcapng_bytes()[12:],  # no byte-order magic
        b"\x0a\x0d\x0d\x0a" + bytes(8),  # block length 0
    ],
)
def test_bad_files(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        read_capture(io.BytesIO(data))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed "
                    "(apt-get install tshark) so Wireshark's dissectors cannot be asked")
@pytest.mark.parametrize("name", ["lo.pcap", "lo.pcapng"])
def test_tshark_finds_no_bad_checksum_or_malformed_packet(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    (write_pcap if name.endswith(".pcap") else write_pcapng)(path)
    checks = ["ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE"]
    command = ["tshark", "-n", "-r", str(path), "-V"]
    for pref in checks:
        command += ["-o", pref]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.count("Frame ") >= len(PACKETS)
    assert "Malformed" not in out
    assert "[Checksum Status: Bad]" not in out and "incorrect" not in out
    # IPv4 header, TCP, UDP and ICMP each show a verified checksum.
    assert out.count("[Checksum Status: Good]") >= len(PACKETS)
