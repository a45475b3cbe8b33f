"""`loopstack report` on what it may be given: captures in every link
layer it reads, captures it reads only in part, and files that are not
captures at all (one sentence, exit status 2, no traceback)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from loopstack.cli.main import main
from loopstack.wire.pcap import PcapngWriter, PcapWriter

from .pages import arrows, by_class, card, connections, remote_fetches
from .synth import tcp_frame, write_connections

A, B = bytes((127, 0, 0, 1)), bytes((127, 0, 0, 1))


def exchange() -> list[bytes]:
    """A short TCP exchange as IPv4 packets: handshake, 100 bytes, close."""
    pkts = [(40000, 80, 100, 0, 0x02), (80, 40000, 900, 101, 0x12), (40000, 80, 101, 901, 0x10),
            (40000, 80, 101, 901, 0x18, 100), (80, 40000, 901, 201, 0x10),
            (40000, 80, 201, 901, 0x11), (80, 40000, 901, 202, 0x11), (40000, 80, 202, 902, 0x10)]
    return [tcp_frame(A, B, p[0], p[1], p[2], p[3], p[4], payload=p[5] if len(p) > 5 else 0,
                      ipid=i)[14:] for i, p in enumerate(pkts)]


def report(capsys: pytest.CaptureFixture[str], path: Path, out: Path) -> tuple[int, str, str]:
    code = main(["report", str(path), "-o", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def page_of(out: Path) -> str:
    return (out / "index.html").read_text()


@pytest.mark.parametrize("linktype", [1, 101, 113, 276, 228])
def test_every_link_layer_it_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   linktype: int) -> None:
    path = tmp_path / "c.pcap"
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype)
        for i, ip in enumerate(exchange()):
            if linktype == 1:
                frame = bytes(12) + b"\x08\x00" + ip
            elif linktype == 113:  # SLL: lo shows each packet going out, then coming in
                head = struct.pack("!HHH8sH", 4, 772, 0, b"", 0x0800)
                w.write(i * 1000, head + ip)
                frame = struct.pack("!HHH8sH", 0, 772, 0, b"", 0x0800) + ip
            elif linktype == 276:
                frame = struct.pack("!HHIHBB8s", 0x0800, 0, 1, 772, 0, 0, b"") + ip
            else:
                frame = ip
            w.write(i * 1000 + 500, frame)
    code, out, err = report(capsys, path, tmp_path / "r")
    assert (code, err) == (0, "")
    assert out.strip() == str(tmp_path / "r" / "index.html")
    html = page_of(tmp_path / "r")
    (c,) = connections(html)
    assert c["packets"] == 8
    assert len(arrows(by_class(html, "ladder")[0])) == 8
    assert len(by_class(html, "tsg")) == 1
    assert "closed" in html
    assert remote_fetches(html) == []


def test_pcapng_and_other_protocols_and_unreadable_packets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        eth = w.add_interface("lo", 1)
        wifi = w.add_interface("wlan0", 105)  # 802.11: not read
        for i, ip in enumerate(exchange()):
            w.write(eth, i * 1000, bytes(12) + b"\x08\x00" + ip)
        w.write(wifi, 9000, bytes(30))
        w.write(eth, 9100, bytes(12) + b"\x08\x06" + bytes(28))  # ARP
        w.write(eth, 9200, bytes(12) + b"\x08\x00" + b"\x45\x00\x00")  # IPv4 cut short
        udp = struct.pack("!BBHHHBBH4s4sHHHH", 0x45, 0, 32, 0, 0, 64, 17, 0, A, B, 5353, 53, 12,
                          0) + b"abcd"
        w.write(eth, 9300, bytes(12) + b"\x08\x00" + udp)
    code, _, err = report(capsys, path, tmp_path / "r")
    assert (code, err) == (0, "")
    html = page_of(tmp_path / "r")
    assert card(html, "packets") == "12"
    assert card(html, "packets not drawn") == "3"
    assert card(html, "UDP flows") == "1"
    assert "link type 105 (IEEE 802.11) is not read" in html
    assert "not IP (EtherType 0x0806)" in html
    assert "IPv4 header cut short" in html


def test_a_cut_off_capture_draws_what_it_has(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full.pcap"
    with open(full, "wb") as f:
        write_connections(f, 3, 4)
    data = full.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])
    code, _, err = report(capsys, cut, tmp_path / "r")
    assert (code, err) == (0, "")
    html = page_of(tmp_path / "r")
    assert [c["packets"] for c in connections(html)] == [14, 14, 13]
    assert "reading stopped: the file ends inside a record" in html


def test_a_large_capture_is_folded_into_a_small_page(tmp_path: Path) -> None:
    # 40 connections of 2 506 packets: the busiest are drawn, each folded.
    path = tmp_path / "big.pcap"
    with open(path, "wb") as f:
        total = write_connections(f, 40, 1250, mss=100)
    out = tmp_path / "r"
    assert main(["report", str(path), "-o", str(out)]) == 0
    html = page_of(out)
    conns = connections(html)
    assert len(conns) == 24  # MAX_DRAWN
    assert card(html, "packets") == f"{total:,}"
    assert all(c["packets"] == 2506 and c["drawn"] < 200 for c in conns)
    assert len(html) < 4_000_000


@pytest.mark.parametrize("content, words", [
    (b"", "is not a capture file: it is only 0 bytes long"),
    (b"GET / HTTP/1.1\r\n\r\n", "is not a pcap or pcapng file"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)[:10],
     "cut off inside its 24-byte header"),
    (b"\x0a\x0d\x0d\x0a" + bytes(20), "byte-order magic is wrong"),
])
def test_a_file_that_is_not_a_capture_is_one_sentence(tmp_path: Path, content: bytes,
                                                      words: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "loopstack", "report", str(path), "-o",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and words in proc.stderr
    assert proc.stderr.startswith("loopstack report: ")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = report(capsys, tmp_path / "nothing.pcap", tmp_path / "r")
    assert code == 2 and "no such file" in err and err.count("\n") == 1
    code, _, err = report(capsys, tmp_path, tmp_path / "r")
    assert code == 2 and "is a directory" in err


def test_damaged_captures_never_raise(tmp_path: Path) -> None:
    """A real capture with bytes changed and cut short at random: what can
    be read is drawn, nothing raises but 'not a capture'."""
    import random

    from loopstack.report import NotACapture, write_report
    from loopstack.wire.pcap import read_capture

    shipped = Path(__file__).parent / "data" / "kernel-lo.pcap"
    with open(shipped, "rb") as f:
        records = read_capture(f)
    rng = random.Random(12)
    pages = 0
    for i in range(60):
        path = tmp_path / f"d{i}.pcapng"
        with open(path, "wb") as f:
            w = PcapngWriter(f)
            iface = w.add_interface("lo", rng.choice([1, 1, 1, 113]))
            for r in records:
                frame = bytearray(r.frame)
                for _ in range(rng.randrange(3)):
                    frame[rng.randrange(14, len(frame))] = rng.randrange(256)
                w.write(iface, r.ts_ns, bytes(frame[: rng.randrange(1, len(frame) + 1)]))
        data = bytearray(path.read_bytes())
        for _ in range(rng.randrange(4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data[: rng.randrange(len(data) // 2, len(data) + 1)]))
        try:
            page = write_report(str(path), str(tmp_path / f"r{i}"))
        except NotACapture:
            continue
        pages += 1
        html = Path(page).read_text()
        assert remote_fetches(html) == []
        for figure in by_class(html, "ladder"):
            assert arrows(figure)
    assert pages > 30
