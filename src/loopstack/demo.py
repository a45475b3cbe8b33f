"""`make demo`: what happens on a loopback, shown on a fresh loopstack stack.

Pings 127.0.0.1, 127.9.8.7, ::1 and localhost through the virtual lo,
captures every packet to a pcap file, then prints the interfaces, the
routes and the counters that moved.
"""

from __future__ import annotations

import argparse
import os
import sys

from .cli.ping import ping_and_print
from .stack import Stack
from .wire.pcap import read_capture


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 66 - len(title)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopstack.demo")
    parser.add_argument("--pcap", default="loopstack-demo.pcap", help="capture file to write")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between pings")
    args = parser.parse_args(argv)

    with Stack() as stack:
        section("a fresh stack: one loopback interface, 127.0.0.1/8 and ::1/128")
        for info in stack.interfaces():
            print(info.show())
        section("its routes (ip route show table all)")
        for line in stack.routes():
            print(line)
        with stack.capture(args.pcap) as cap:
            for host in ("127.0.0.1", "127.9.8.7", "::1", "localhost"):
                section(f"ping -c 3 {host}")
                ping_and_print(stack, host, count=3, interval=args.interval, size=56,
                               timeout=1.0, ttl=64, family=0, out=sys.stdout)
        section("lo after the pings (ip -s link): every packet counted once out, once in")
        for info in stack.interfaces():
            print(info.show())
        section("counters that moved (/proc/net/snmp and snmp6 names)")
        for group, counters in stack.stats().items():
            moved = {k: v for k, v in counters.items() if v and k not in ("Forwarding",
                                                                          "DefaultTTL")}
            if moved:
                print(f"{group}: " + " ".join(f"{k}={v}" for k, v in moved.items()))
        section("capture")
        with open(args.pcap, "rb") as f:
            records = read_capture(f)
        print(f"{len(records)} packets written to {os.path.abspath(args.pcap)} "
              f"({cap.format}, Ethernet framing with zero MACs as tcpdump -i lo writes);")
        print("open it with Wireshark, tshark -r, or scapy's rdpcap.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
