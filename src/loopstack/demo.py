"""`make demo`: what happens on a loopback, end to end, on a fresh loopstack stack.

An unmodified stdlib HTTP server listens on the virtual 127.0.0.1:8080; an
unmodified urllib client fetches a page from it. Then the same virtual
server is exposed on the host's real loopback and a real client in another
process (curl, or a fresh Python without loopstack) fetches it across the
boundary; ping crosses 127.0.0.1 and ::1. Then the packets of the urllib
exchange in order (handshake, request, response, teardown) as tcpdump prints
them, the socket table, the counters, the capture file, which Wireshark
opens, and the report page that draws the exchange.
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.request

from .cli.flow import FlowPrinter
from .cli.ping import ping_and_print
from .cli.tables import counter_lines, socket_table
from .host.bridge import endpoint
from .patch import patch
from .stack import Stack

PAGE = b"<!doctype html><title>loopstack</title><p>Hello from the virtual loopback.</p>\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        print(f"  server: {self.address_string()} \"{self.requestline}\" {args[1]}")


# The real client when curl is missing: a fresh interpreter, no loopstack in it.
_URLLIB_FETCH = (
    "import sys, urllib.request\n"
    "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "with opener.open(sys.argv[1], timeout=10) as r:\n"
    "    sys.stdout.write(r.read().decode() + '\\n' + str(r.status))\n"
)


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def _phase(line: str, seen_data: dict[str, bool]) -> str:
    if "Flags [S" in line:
        return "handshake"
    if "Flags [F" in line or "Flags [R" in line:
        return "teardown"
    if "length 0" not in line:
        seen_data["any"] = True
        return "request" if ".8080:" in line else "response"
    return "teardown" if seen_data.get("fin") else ("handshake" if not seen_data.get("any")
                                                    else "ack")


def across_the_boundary(stack: Stack) -> None:
    """Expose the virtual server on the host's loopback (a free port) and
    let a real client in another process fetch the page through it."""
    with stack.expose(8080, host_port=0) as exposure:
        url = exposure.url + "index.html"
        print(f"  bridge: real {endpoint(*exposure.host_address)} (the host's kernel) -> "
              "virtual 127.0.0.1:8080 (loopstack, in this process)")
        curl = shutil.which("curl")
        if curl:
            who = "curl (not Python, outside loopstack)"
            argv = [curl, "-s", "--noproxy", "*", "-w", "\n%{http_code}", url]
        else:
            who = "python -I with urllib (a fresh interpreter, outside loopstack)"
            argv = [sys.executable, "-I", "-c", _URLLIB_FETCH, url]
        env = {"PATH": os.environ.get("PATH", os.defpath)}  # no proxies, no loopstack
        with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env) as child:
            print(f"  real client: {who}, pid {child.pid}: GET {url}")
            print("  (the server line below is the virtual server answering through the bridge)")
            try:
                out, _ = child.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                out, _ = child.communicate()
        body, _, status = out.decode(errors="replace").rpartition("\n")
        if child.returncode == 0 and status == "200":
            print(f"  real client got: HTTP {status}, {len(body)} bytes: "
                  f"{body.strip()[:60]}...")
        else:
            print(f"  real client failed (exit status {child.returncode}): {out[:200]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopstack.demo")
    parser.add_argument("--pcap", default="loopstack-demo.pcap", help="capture file to write")
    parser.add_argument("--report", default="loopstack-demo-report",
                        help="directory for the report page of the HTTP exchange")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between pings")
    args = parser.parse_args(argv)

    with Stack(seed=2026) as stack:
        section("a fresh stack: one loopback interface, 127.0.0.1/8 and ::1/128 (ip -s addr)")
        for info in stack.interfaces():
            print(info.show())
        section("its routes (ip route show table all)")
        for route_line in stack.routes():
            print(route_line)

        http_packets: list[bytes] = []
        with stack.capture(args.pcap) as cap, patch(stack):
            section("HTTP: stdlib http.server on 127.0.0.1:8080, fetched with urllib")
            server = http.server.HTTPServer(("127.0.0.1", 8080), _Handler)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            tap = stack.lo.tap(lambda p, d: http_packets.append(p))
            recorder = stack.report(args.report)  # the pictures of this exchange
            with urllib.request.urlopen("http://127.0.0.1:8080/index.html") as response:
                body = response.read()
                print(f"  client: HTTP {response.status}, {len(body)} bytes: "
                      f"{body.decode().strip()[:60]}...")
            tap.remove()
            recorder.stop()
            page = recorder.write(title="make demo: an HTTP exchange on the virtual loopback")
            table = socket_table(stack)
            section("across the boundary: the same virtual server, a real client outside")
            across_the_boundary(stack)
            server.shutdown()
            server.server_close()
            for host in ("127.0.0.1", "::1"):
                section(f"ping -c 3 {host}")
                ping_and_print(stack, host, count=3, interval=args.interval, size=56,
                               timeout=1.0, ttl=64, family=0, out=sys.stdout)

        section("the HTTP exchange, packet by packet (tcpdump -i lo -n)")
        printer = FlowPrinter()
        state: dict[str, bool] = {}
        last = None
        for pkt in http_packets:
            line = printer.line(pkt)
            if "Flags [F" in line:
                state["fin"] = True
            phase = _phase(line, state)
            if phase != last and phase != "ack":
                print(f"  -- {phase}")
                last = phase
            print(f"  {line}")
        section("sockets just before the server closed (ss -tan)")
        for row in table:
            print(f"  {row}")
        section("lo's counters (ip -s link): every packet counted once out, once in")
        for info in stack.interfaces():
            print(info.show())
        section("protocol counters that moved (nstat)")
        for counter in counter_lines(stack):
            print(f"  {counter}")
        section("capture")
        print(f"  {cap.packets} packets in {os.path.abspath(args.pcap)} ({cap.format}, "
              "Ethernet framing with zero MACs as tcpdump -i lo writes)")
        print("  open it with Wireshark, `tshark -r`, or scapy's rdpcap.")
        section("the HTTP exchange, drawn (ladder diagram, time-sequence graphs)")
        print(f"  {os.path.abspath(page)}")
        print("  one self-contained page: open it in a browser (it fetches nothing).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
