"""Reports of a known loopstack exchange: what the page states equals what
the capture and the stack counted; the SVG is XML; the page fetches nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.utils import rdpcap

from .exchange import transfer
from .pages import arrows, by_class, card, connections, remote_fetches, svgs


def tcp_packets(pcap: Path) -> list[TCP]:
    return [p[TCP] for p in rdpcap(str(pcap)) if TCP in p]


def test_a_lossy_transfer_counts_every_packet_drop_and_retransmission(tmp_path: Path) -> None:
    run = transfer(tmp_path / "r", 60_000)
    assert run.received == 60_000
    # The seed is chosen so that netem drops something and TCP repairs it.
    assert run.dropped >= 1
    retrans = run.stats["Tcp"]["RetransSegs"]
    assert retrans >= 1
    html = run.page.read_text()
    packets = tcp_packets(run.pcap)
    syns = [p for p in packets if p.flags.S and not p.flags.A]
    conns = connections(html)
    assert len(conns) == len(syns) == 1
    c = conns[0]
    # Every captured packet, and every packet netem dropped, is an arrow.
    assert c["packets"] == len(packets) + run.dropped
    assert c["drawn"] == c["packets"]  # small enough not to fold
    ladder = by_class(html, "ladder")[0]
    drawn = arrows(ladder)
    assert len(drawn) == c["packets"]
    dropped = [g for g in drawn if "t-drop" in g.get("class", "")]
    assert len(dropped) == run.dropped == c["dropped"]
    assert all(g.get("data-n") == "0" for g in dropped)  # not in the file
    in_file = sorted(int(g.get("data-n", "0")) for g in drawn if g not in dropped)
    assert in_file == list(range(1, len(packets) + 1))
    # Retransmissions: as many as the stack sent.
    assert c["retrans"] == retrans
    assert len([g for g in drawn if "t-re" in g.get("class", "").split()]) == retrans
    assert card(html, "retransmissions") == str(retrans)
    assert card(html, "dropped by netem") == str(run.dropped)
    assert card(html, "TCP connections") == "1"
    assert card(html, "packets") == str(len(packets))


def test_the_page_is_xml_clean_self_contained_and_complete(tmp_path: Path) -> None:
    run = transfer(tmp_path / "r", 60_000)
    html = run.page.read_text()
    figures = svgs(html)  # each parses as XML
    kinds = [s.get("class") for s in figures]
    assert kinds.count("ladder") == 1
    assert kinds.count("tsg") == 2  # data both ways: the transfer and the reply
    assert kinds.count("cc") == 2  # cwnd/ssthresh/RTT, sampled by the stack
    assert remote_fetches(html) == []
    assert "<script" not in html
    assert run.pcap.name in html
    assert "lo: netem" in html and "loss 3%" in html
    assert "TcpRetransSegs" in html  # the counters that moved
    assert "Sockets at the end" in html
    cc = by_class(html, "cc")[0]
    lines = {e.get("class") for e in cc.iter() if e.tag.endswith("polyline")}
    assert {"cwnd", "ssth", "rtt"} <= lines  # loss set ssthresh
    tsg = by_class(html, "tsg")[0]
    paths = {e.get("class") for e in tsg.iter() if e.tag.endswith(("path", "polyline"))}
    assert {"seg", "seg-re", "seg-drop", "ackl", "win", "sack"} <= paths


def test_a_long_connection_is_folded_and_counted(tmp_path: Path) -> None:
    run = transfer(tmp_path / "r", 600_000, netem="delay 1ms")
    html = run.page.read_text()
    packets = tcp_packets(run.pcap)
    (c,) = connections(html)
    assert c["packets"] == len(packets) > c["drawn"]
    ladder = by_class(html, "ladder")[0]
    assert len(arrows(ladder)) == c["drawn"]
    folds = [g for g in ladder.iter() if g.get("class") == "fold"]
    assert len(folds) == 1
    assert int(folds[0].get("data-folded", "0")) == c["packets"] - c["drawn"]
    # The first and the last packets are the ones drawn.
    numbers = [int(g.get("data-n", "0")) for g in arrows(ladder)]
    assert numbers[0] == 1 and numbers[-1] == len(packets)
    assert len(html) < 400_000


@pytest.mark.parametrize("reply", [b"", b"x" * 3000])
def test_only_directions_that_carried_data_get_a_graph(tmp_path: Path, reply: bytes) -> None:
    run = transfer(tmp_path / "r", 20_000, netem=None, reply=reply)
    html = run.page.read_text()
    assert len(by_class(html, "tsg")) == (2 if reply else 1)
    assert "0 retransmissions" in html
