"""A known exchange on a loopstack stack, recorded for a report: a client
sends ``size`` bytes to a server (MSS 1448, as on an Ethernet path), which
answers with a short reply, both close. Virtual time and a seed make it the
same every run.

``python -m tests.report.exchange OUT.png`` renders the README's picture
(a transfer under ``loss 3% delay 5ms``) with headless chromium."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import loopstack

MSS = 1448


@dataclass
class Run:
    page: Path
    pcap: Path
    stats: dict[str, dict[str, int]]
    dropped: int  # by netem, from its own counter
    received: int


def transfer(out: Path, size: int, netem: str | None = "loss 3% delay 5ms", seed: int = 7,
             reply: bytes = b"thanks") -> Run:
    with loopstack.Stack(clock="virtual", seed=seed) as stack:
        if netem:
            stack.lo.netem(netem)
        recorder = stack.report(str(out))
        server = stack.socket()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
        server.bind(("127.0.0.1", 5001))
        server.listen()
        client = stack.socket()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
        client.connect(("127.0.0.1", 5001))
        conn, _ = server.accept()
        received = 0

        def serve() -> None:
            nonlocal received
            while data := conn.recv(65536):
                received += len(data)
            conn.sendall(reply)
            conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        client.sendall(bytes(size))
        client.shutdown(socket.SHUT_WR)
        while client.recv(100):
            pass
        thread.join()
        client.close()
        server.close()
        stack.advance(0.5)  # the last ACKs
        recorder.stop()
        page = recorder.write()
        qdisc = stack.lo.qdisc
        return Run(Path(page), Path(recorder.pcap), stack.stats(),
                   qdisc.stats.dropped if qdisc is not None else 0, received)


def screenshot(chromium: str, page: Path, png: Path, width: int = 1000, height: int = 1400,
               ) -> None:
    """Render ``page`` in headless chromium to ``png``."""
    profile = png.parent / f".chromium-{png.stem}"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                    f"--user-data-dir={profile}", f"--window-size={width},{height}",
                    f"--screenshot={png}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=180)


def main() -> None:
    """The README's picture: the connection part of the page (the summary
    left out, so the graphs and the first arrows fit)."""
    import re
    import shutil
    import tempfile

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/report.png")
    with tempfile.TemporaryDirectory() as tmp:
        run = transfer(Path(tmp) / "r", 120_000)
        html = run.page.read_text()
        html = re.sub(r'<section id="summary">.*?</section>', "", html, flags=re.S)
        run.page.write_text(html)
        screenshot(shutil.which("chromium") or "/usr/bin/chromium", run.page,
                   Path(tmp) / "shot.png", 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 1900)
        shutil.copy(Path(tmp) / "shot.png", target)
    print(target)


if __name__ == "__main__":
    main()
