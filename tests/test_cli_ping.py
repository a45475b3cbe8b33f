"""`loopstack ping`: iputils' output, exit statuses, errors as one sentence."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import rdpcap

from loopstack.cli.main import main

REPLY = re.compile(
    r"^(?P<size>\d+) bytes from (?P<who>\S+|\S+ \(\S+\)): icmp_seq=(?P<seq>\d+) "
    r"ttl=(?P<ttl>\d+) time=(?P<time>\d+(\.\d+)?) ms$"
)
STATS = re.compile(
    r"^(?P<tx>\d+) packets transmitted, (?P<rx>\d+) received, (?P<loss>[\d.]+)% packet loss, "
    r"time \d+ms$"
)
RTT = re.compile(r"^rtt min/avg/max/mdev = (\d+\.\d{3})/(\d+\.\d{3})/(\d+\.\d{3})/(\d+\.\d{3}) ms$")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["ping", *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def received(out: str) -> int:
    for line in out.splitlines():
        if m := STATS.match(line):
            return int(m["rx"])
    raise AssertionError(f"no statistics line in:\n{out}")


@pytest.mark.parametrize(
    ("host", "header", "who"),
    [
        ("127.0.0.1", r"PING 127\.0\.0\.1 \(127\.0\.0\.1\) 56\(84\) bytes of data\.",
         r"127\.0\.0\.1"),
        ("127.200.3.4", r"PING 127\.200\.3\.4 \(127\.200\.3\.4\) 56\(84\) bytes of data\.",
         r"127\.200\.3\.4"),
        # localhost is 127.0.0.1 or ::1, whichever the resolver puts first (glibc: ::1).
        ("localhost", r"PING localhost( \(127\.0\.0\.1\) 56\(84\) bytes of data\."
         r"|\((localhost \()?::1\)?\) 56 data bytes)", r"localhost \((127\.0\.0\.1|::1)\)"),
        ("::1", r"PING ::1(\(::1\))? 56 data bytes", "::1"),
    ],
)
def test_ping_output_has_the_iputils_shape(capsys: pytest.CaptureFixture[str], host: str,
                                           header: str, who: str) -> None:
    code, out, err = run(capsys, "-c", "3", "-i", "0", host)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert re.fullmatch(header, lines[0]), lines[0]
    replies = [REPLY.match(line) for line in lines[1:4]]
    assert all(replies), lines[1:4]
    assert [m["seq"] for m in replies] == ["1", "2", "3"]  # type: ignore[index]
    assert {(m["size"], m["ttl"]) for m in replies} == {("64", "64")}  # type: ignore[index]
    assert all(re.fullmatch(who, m["who"]) for m in replies)  # type: ignore[index]
    assert lines[4] == ""
    assert lines[5] == f"--- {host} ping statistics ---"
    stats = STATS.match(lines[6])
    assert stats and (stats["tx"], stats["rx"], stats["loss"]) == ("3", "3", "0")
    rtt = RTT.match(lines[7])
    assert rtt, lines[7]
    lo, avg, hi, mdev = (float(x) for x in rtt.groups())
    times = [float(m["time"]) for m in replies]  # type: ignore[index]
    assert lo <= avg <= hi and mdev >= 0
    assert lo <= min(times) + 0.001 and max(times) <= hi + 0.001
    assert len(lines) == 8


def test_ipv6_header_line_is_iputils(capsys: pytest.CaptureFixture[str]) -> None:
    # iputils ping6_run(): printf("PING %s(%s) ", hostname, address) -- always both.
    code, out, _ = run(capsys, "-c", "1", "-i", "0", "::1")
    assert code == 0
    assert out.splitlines()[0] == "PING ::1(::1) 56 data bytes"


def test_no_route_is_exit_2_with_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-c", "3", "-i", "0", "10.1.2.3")
    assert code == 2
    assert out == ""  # the header is not printed (iputils fails at connect())
    assert len(err.splitlines()) == 1
    assert "10.1.2.3" in err and "Network is unreachable" in err
    assert "Traceback" not in err


def test_unknown_name_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-c", "1", "no-such-host.invalid")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert "no-such-host.invalid" in err and "Traceback" not in err


def test_family_mismatch_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # iputils: `ping -6 127.0.0.1` -> "127.0.0.1: Address family for hostname not supported".
    code, out, err = run(capsys, "-6", "-c", "1", "127.0.0.1")
    assert code == 2 and len(err.splitlines()) == 1
    assert "Address family for hostname not supported" in err


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["-s", "70000"], "-s"),
        (["-s", "-1"], "-s"),
        (["-t", "0"], "-t"),
        (["-t", "256"], "-t"),
        (["-c", "-2"], "-c"),
        (["-W", "0"], "-W"),
        (["-W", "-1"], "-W"),
        (["-i", "-1"], "-i"),
        (["--netem", "bogus 5"], "--netem"),
        (["--netem", "loss 150%"], "--netem"),
        (["--netem", "delay"], "--netem"),
        (["--netem", "reorder 25%"], "--netem"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                             args: list[str], names: str) -> None:
    code, out, err = run(capsys, *args, "-c", "1", "127.0.0.1")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert names in err
    assert "Traceback" not in err


def test_non_numeric_count_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-c", "many", "127.0.0.1")
    assert code == 2 and out == ""
    assert "-c" in err.splitlines()[-1] and "Traceback" not in err


def test_largest_ipv6_size_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    # 65527 data bytes fit an IPv6 datagram (65535 payload); the stack's own
    # ping accepts it, and so must the command for an IPv6 host without -6.
    code, out, err = run(capsys, "-c", "1", "-i", "0", "-s", "65527", "::1")
    assert (code, err) == (0, "")
    assert out.splitlines()[1].startswith("65535 bytes from ::1: icmp_seq=1 ttl=64 time=")


def test_largest_sizes_with_family_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-6", "-c", "1", "-i", "0", "-s", "65527", "::1")
    assert code == 0 and "65535 bytes from ::1" in out
    code, out, _ = run(capsys, "-c", "1", "-i", "0", "-s", "65507", "127.0.0.1")
    assert code == 0 and "65515 bytes from 127.0.0.1" in out
    assert out.splitlines()[0] == "PING 127.0.0.1 (127.0.0.1) 65507(65535) bytes of data."
    code, _, err = run(capsys, "-c", "1", "-s", "65508", "127.0.0.1")
    assert code == 2 and "-s" in err


def test_small_packets_are_not_timed(capsys: pytest.CaptureFixture[str]) -> None:
    # iputils times a reply only when the data holds a timeval (16 bytes):
    # with -s 0 the reply line has no time= and there is no rtt line.
    code, out, _ = run(capsys, "-c", "1", "-i", "0", "-s", "0", "127.0.0.1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "PING 127.0.0.1 (127.0.0.1) 0(28) bytes of data."
    assert lines[1] == "8 bytes from 127.0.0.1: icmp_seq=1 ttl=64"
    assert not any(line.startswith("rtt ") for line in lines)


def test_no_reply_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--netem", "loss 100%", "-c", "2", "-i", "0", "-W", "0.05",
                         "127.0.0.1")
    assert code == 1 and err == ""
    assert "2 packets transmitted, 0 received, 100% packet loss" in out
    assert not any(line.startswith("rtt ") for line in out.splitlines())
    assert not any(REPLY.match(line) for line in out.splitlines())


# -- netem through the command ---------------------------------------------------------


def test_loss_50_percent_loses_three_quarters(capsys: pytest.CaptureFixture[str]) -> None:
    # Request and reply each cross lo: 1 - 0.5**2 = 75% of round trips lost.
    code, out, _ = run(capsys, "--netem", "loss 50%", "--seed", "7", "-c", "200", "-i", "0",
                       "-W", "0.05", "127.0.0.1")
    assert code == 0
    assert 25 <= received(out) <= 78  # expected 50, sd 6.1


def test_loss_29_3_percent_loses_half(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--netem", "loss 29.3%", "--seed", "7", "-c", "200", "-i", "0",
                       "-W", "0.05", "127.0.0.1")
    assert code == 0
    assert 70 <= received(out) <= 130  # expected 100, sd 7.1


def test_same_seed_same_losses(capsys: pytest.CaptureFixture[str]) -> None:
    def seqs(seed: str) -> list[str]:
        _, out, _ = run(capsys, "--netem", "loss 40%", "--seed", seed, "-c", "60", "-i", "0",
                        "-W", "0.05", "127.0.0.1")
        return [m["seq"] for line in out.splitlines() if (m := REPLY.match(line))]

    first, second, other = seqs("11"), seqs("11"), seqs("12")
    assert first == second
    assert 0 < len(first) < 60
    assert other != first  # the seed is what decides


def test_delay_100ms_shows_200ms_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--netem", "delay 100ms", "-c", "2", "-i", "0", "127.0.0.1")
    assert code == 0
    times = [float(m["time"]) for line in out.splitlines() if (m := REPLY.match(line))]
    assert len(times) == 2
    assert all(t >= 200.0 for t in times)
    rtt = next(m for line in out.splitlines() if (m := RTT.match(line)))
    assert float(rtt.group(1)) >= 200.0


# -- --pcap -------------------------------------------------------------------------------


def _assert_valid_capture(packets: list[Packet], tools: SimpleNamespace, count: int) -> None:
    assert len(packets) == count
    for p in packets:
        assert p[Ether].src == p[Ether].dst == "00:00:00:00:00:00"
        assert tools.checksums_ok(bytes(p[Ether].payload))
        rebuilt = p.copy()
        layer = rebuilt
        while layer:
            for name in ("chksum", "cksum"):
                if name in layer.fields:
                    delattr(layer, name)
            layer = layer.payload
        assert bytes(rebuilt) == bytes(p)  # scapy computes the same checksums


def test_pcap_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                   tools: SimpleNamespace) -> None:
    path = tmp_path / "ping.pcap"
    code, _, _ = run(capsys, "-c", "3", "-i", "0", "--pcap", str(path), "127.0.0.1")
    assert code == 0
    assert path.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                                     b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    _assert_valid_capture(list(rdpcap(str(path))), tools, 6)


def test_pcapng_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                     tools: SimpleNamespace) -> None:
    path = tmp_path / "ping.pcapng"
    code, _, _ = run(capsys, "-c", "2", "-i", "0", "--pcap", str(path), "::1")
    assert code == 0
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    _assert_valid_capture(list(rdpcap(str(path))), tools, 4)
