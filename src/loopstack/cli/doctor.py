"""`loopstack doctor [--json]`: check this machine's real loopback and
list who listens where. Exit 0 when every check holds, 1 when one fails."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from ..host.doctor import Report, run_checks


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="check this machine's real loopback and audit listening sockets",
        description="Check the host's own loopback: lo up with 127.0.0.1/8 and ::1, what "
        "localhost resolves to, ICMP echo, TCP and UDP round trips over 127.0.0.1 and ::1; "
        "then list every listening socket with its process and whether only this machine "
        "(loopback) or the network (all, external) can reach it. Exit status 0 when every "
        "check holds, 1 when one fails.")
    p.add_argument("--json", action="store_true",
                   help='print {"checks": [...], "listening": [...]} as JSON')
    p.set_defaults(func=run)


def print_report(report: Report, out: TextIO) -> None:
    width = max(len(c.name) for c in report.checks)
    print(f"{'CHECK':<{width}}  RESULT  DETAIL", file=out)
    for c in report.checks:
        print(f"{c.name:<{width}}  {'ok' if c.ok else 'FAIL':<6}  {c.detail}", file=out)
    print("", file=out)
    rows = [("PROTO", "ADDRESS", "PORT", "PID", "PROCESS", "SCOPE")] + [
        (e.proto, e.address, str(e.port), "-" if e.pid is None else str(e.pid),
         e.process or "-", e.scope) for e in report.listening]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip(), file=out)
    exposed = sum(1 for e in report.listening if e.scope != "loopback")
    print(f"\n{len(report.listening)} listening, {exposed} reachable from outside this "
          "machine (scope all or external).", file=out)


def run(args: argparse.Namespace) -> int:
    report = run_checks()
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        print()
    else:
        print_report(report, sys.stdout)
    return 0 if report.ok else 1
