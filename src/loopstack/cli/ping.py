"""`loopstack ping`: iputils ping's output, through a fresh loopstack stack."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from ..ip.addr import AF_INET, AF_INET6, family_of, to_text
from ..ping import PingReply, PingResult, max_payload
from ..stack import Stack
from .errors import CliError


def format_time(rtt: float) -> str:
    """iputils prints 3 significant decimals below 1 ms, fewer above."""
    ms = rtt * 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def header_line(host: str, address: str, family: int, size: int) -> str:
    """iputils: `PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.`, and for
    IPv6 `PING ::1(::1) 56 data bytes` or `PING localhost(localhost (::1)) ...`."""
    if family == AF_INET6:
        who = address if host == address else f"{host} ({address})"
        return f"PING {host}({who}) {size} data bytes"
    return f"PING {host} ({address}) {size}({size + 28}) bytes of data."


def reply_line(host: str, address: str, reply: PingReply, timed: bool = True) -> str:
    who = reply.address if host == address else f"{host} ({reply.address})"
    dup = " (DUP!)" if reply.duplicate else ""
    time = f" time={format_time(reply.rtt)} ms" if timed else ""
    return f"{reply.size} bytes from {who}: icmp_seq={reply.seq} ttl={reply.ttl}{time}{dup}"


def summary_lines(result: PingResult) -> list[str]:
    loss = result.loss * 100
    stats = f"{result.transmitted} packets transmitted, {result.received} received"
    if result.duplicates:
        stats += f", +{result.duplicates} duplicates"
    stats += f", {loss:g}% packet loss, time {result.elapsed * 1000:.0f}ms"
    lines = ["", f"--- {result.host} ping statistics ---", stats]
    if result.rtts:
        lines.append(
            "rtt min/avg/max/mdev = "
            f"{result.rtt_min * 1000:.3f}/{result.rtt_avg * 1000:.3f}/"
            f"{result.rtt_max * 1000:.3f}/{result.rtt_mdev * 1000:.3f} ms"
        )
    return lines


def ping_and_print(
    stack: Stack, host: str, *, count: int, interval: float, size: int, timeout: float,
    ttl: int, family: int, out: TextIO, interruptible: bool = False,
) -> PingResult:
    """Ping through ``stack`` and print what iputils ping prints."""
    from ..ping import run_ping

    address = stack.resolve(host, family)[0]
    fam = family_of(address)
    limit = max_payload(fam)
    if not 0 <= size <= limit:
        raise CliError(f"-s {size} is out of range: give 0 to {limit} data bytes over "
                       f"{'IPv6' if fam == AF_INET6 else 'IPv4'}")
    with stack.lock:  # fail before the header, as iputils' connect() does
        (stack.ipv6 if fam == AF_INET6 else stack.ipv4).route_output(address)
    text = to_text(address)
    print(header_line(host, text, fam, size), file=out, flush=True)
    timed = size >= 16

    def show(reply: PingReply) -> None:
        print(reply_line(host, text, reply, timed), file=out, flush=True)

    result = run_ping(stack, host, count=count, interval=interval, size=size, timeout=timeout,
                      ttl=ttl, family=fam, on_reply=show, interruptible=interruptible)
    for line in summary_lines(result):
        print(line, file=out)
    return result


def _checked(kind: type[int] | type[float], low: float, high: float | None, what: str
             ) -> Any:
    """An argparse type that rejects a bad value at once, as iputils does."""
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number: give {what}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {what}")
        return value
    return convert


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ping", help="ping an address through a fresh loopstack stack",
                       description="Send ICMP echo requests through a fresh loopstack stack "
                       "(never through the host), printing what iputils ping prints.")
    p.add_argument("-c", dest="count", type=_checked(int, 1, None, "a count of 1 or more"),
                   default=0, metavar="COUNT",
                   help="stop after COUNT replies (default: until interrupted)")
    p.add_argument("-i", dest="interval", type=_checked(float, 0, None, "0 or more seconds"),
                   default=1.0, metavar="INTERVAL",
                   help="seconds between requests (default 1; 0 sends at once)")
    p.add_argument("-s", dest="size", type=_checked(int, 0, 65527, "0 to 65507 data bytes "
                   "(65527 over IPv6)"), default=56, metavar="SIZE",
                   help="data bytes per request (default 56)")
    p.add_argument("-W", dest="timeout", type=_checked(float, 1e-6, None, "a positive number "
                   "of seconds"), default=1.0, metavar="TIMEOUT",
                   help="seconds to wait for the last reply (default 1)")
    p.add_argument("-t", dest="ttl", type=_checked(int, 1, 255, "a TTL from 1 to 255"),
                   default=64, metavar="TTL",
                   help="IP time to live (default 64)")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=AF_INET, default=0,
                     help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=AF_INET6,
                     help="IPv6 only")
    p.add_argument("--netem", metavar="SPEC",
                   help='impair lo like tc netem, e.g. "delay 100ms loss 5%%"')
    p.add_argument("--seed", type=int, help="seed every random choice (netem included)")
    p.add_argument("--pcap", metavar="FILE", help="write the packets to FILE (pcap, or "
                   "pcapng when it ends in .pcapng)")
    p.add_argument("host", metavar="HOST", help="an address or a name in the stack's hosts "
                   "table (localhost, ip6-localhost)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CliError(f"-c {args.count} is negative: give a count of 1 or more")
    if args.interval < 0:
        raise CliError(f"-i {args.interval} is negative: give 0 or more seconds")
    if args.timeout <= 0:
        raise CliError(f"-W {args.timeout} must be positive: give the seconds to wait")
    if not 1 <= args.ttl <= 255:
        raise CliError(f"-t {args.ttl} is out of range: give a TTL from 1 to 255")
    if args.size < 0:
        raise CliError(f"-s {args.size} is negative: give 0 or more data bytes")
    stack = Stack(seed=args.seed)
    try:
        if args.netem:
            try:
                stack.lo.netem(args.netem)
            except ValueError as e:
                raise CliError(f"--netem: {e}") from None
        capture = stack.capture(args.pcap) if args.pcap else None
        try:
            result = ping_and_print(
                stack, args.host, count=args.count, interval=args.interval, size=args.size,
                timeout=args.timeout, ttl=args.ttl, family=args.family, out=sys.stdout,
                interruptible=True,
            )
        finally:
            if capture is not None:
                capture.stop()
        return 0 if result.received else 1
    finally:
        stack.close()
