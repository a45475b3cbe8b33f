"""`loopstack serve`: a stack on a TUN device with small services until
Ctrl-C, reached by the kernel's own clients in the test's namespace."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from loopstack.wire.pcap import read_capture

from .conftest import KERNEL4, KERNEL6, LS4, LS6, TUN, Kernel, Process

CLI = [sys.executable, "-m", "loopstack"]


def serve(kernel: Kernel, *extra: str) -> tuple[Process, list[str]]:
    """Start serve on the test's namespace; the lines it prints up to 'Ctrl-C to stop.'."""
    argv = CLI + ["serve", "--tun", TUN, "--address", f"{LS4}/24", "--address", f"{LS6}/64",
                  "--peer", f"{KERNEL4}/24", "--peer", f"{KERNEL6}/64", "--netns", kernel.ns,
                  *extra]
    p = kernel.start(argv=argv)
    lines = []
    while not lines or lines[-1] != "Ctrl-C to stop.":
        lines.append(p.text(timeout=30).rstrip("\n"))
    return p, lines


def stop(p: Process) -> tuple[int, str]:
    p.popen.send_signal(signal.SIGINT)  # Ctrl-C, to the process this test started
    code = p.popen.wait(20)
    rest = []
    while (line := p.lines.get(timeout=5)) is not None:
        rest.append(line)
    return code, "".join(rest)


def test_serve_until_ctrl_c(kernel: Kernel, tmp_path: Path) -> None:
    pcap = tmp_path / "serve.pcap"
    p, banner = serve(kernel, "--echo", "7", "--discard", "9", "--http", "80",
                      "--pcap", str(pcap), "--netem", "delay 1ms")
    assert banner[0] == (f"loopstack serve: {TUN} mtu 1500 in network namespace {kernel.ns}: "
                         f"loopstack {LS4}/24, {LS6}/64, kernel side {KERNEL4}/24, {KERNEL6}/64")
    assert "  echo     0.0.0.0:7  [::]:7  udp 0.0.0.0:7  udp [::]:7" in banner
    assert "  discard  0.0.0.0:9  [::]:9  udp 0.0.0.0:9  udp [::]:9" in banner
    assert "  http     0.0.0.0:80  [::]:80" in banner
    assert "  netem    limit 1000 delay 1ms" in banner

    assert kernel.run("ping", LS4, "56", "2")["replies"][1]["intact"]
    assert kernel.run("connect", LS4, "7") == {"result": "connected", "reply": "hello\n"}
    assert kernel.run("connect", LS6, "7") == {"result": "connected", "reply": "hello\n"}
    assert kernel.run("udp", LS4, "7", "5") == {"reply": "datagram"}
    assert kernel.run("udp", LS6, "9", "0.3") == {"reply": None}  # discarded
    page = kernel.run("http", f"http://{LS4}/")
    assert page["status"] == 200
    assert page["text"] == f"loopstack serving on {LS4}:80; you are {KERNEL4}:" + \
        page["text"].rsplit(":", 1)[1]
    assert kernel.run("http", f"http://[{LS6}]/bytes/300000")["length"] == 300000
    if shutil.which("curl"):
        got = kernel.sh("curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w",
                        "%{http_code} %{size_download}", f"http://{LS4}/bytes/5000")
        assert got.stdout == "200 5000"

    code, rest = stop(p)
    assert code == 0, rest
    lines = rest.splitlines()
    device = next(line for line in lines if line.startswith(f"{TUN}: RX "))
    assert " 0 errors " in device
    tcp = next(line for line in lines if line.startswith("Tcp: "))
    assert "PassiveOpens 0" not in tcp
    assert any(line.startswith("services: ") for line in lines)
    with open(pcap, "rb") as f:
        assert len(read_capture(f)) > 20
    assert kernel.sh("ip", "link", "show", TUN, check=False).returncode != 0


def test_serve_errors_are_one_sentence(kernel: Kernel) -> None:
    done = subprocess.run(CLI + ["serve", "--tun", TUN, "--address", f"{LS4}/24", "--netns",
                                 "lstk-no-such-namespace"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == ("loopstack serve: there is no network namespace "
                           "'lstk-no-such-namespace': create it with `ip netns add "
                           "lstk-no-such-namespace`, or leave netns out\n")
    done = subprocess.run(CLI + ["serve", "--address", f"{LS4}/24"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "--tun" in done.stderr
    done = subprocess.run(CLI + ["serve", "--tun", TUN, "--address", f"{LS4}/24", "--netns",
                                 kernel.ns, "--netem", "delay lots"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("loopstack serve: --netem: ")
    assert kernel.sh("ip", "link", "show", TUN, check=False).returncode != 0
