"""`loopstack report CAPTURE -o DIR`: draw a pcap or pcapng file as a
self-contained HTML page (summary, ladder diagrams, time-sequence graphs)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..report import NotACapture, write_report
from .errors import CliError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="draw a capture as an HTML page: ladder diagrams, time-sequence graphs",
        description="Read CAPTURE (pcap or pcapng: Ethernet, raw IP or Linux cooked) and "
        "write DIR/index.html: one self-contained page (it fetches nothing) with a summary "
        "of hosts, connections and flows, and per TCP connection a ladder diagram and "
        "time-sequence graphs. Packets that cannot be read are counted on the page. "
        "`loopstack run --report DIR` draws a run, with what a capture cannot know.")
    p.add_argument("capture", metavar="CAPTURE", help="a .pcap or .pcapng file")
    p.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="where to write index.html (default: CAPTURE's name without its "
                   "extension, plus -report); a name ending in .html is the page itself")
    p.add_argument("--title", help="the page's heading")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    capture: str = args.capture
    out = args.output or os.path.splitext(capture)[0] + "-report"
    if not os.path.exists(capture):
        raise CliError(f"{capture}: no such file: give a pcap or pcapng capture")
    try:
        page = write_report(capture, out, title=args.title)
    except NotACapture as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write the report to {out}: {e.strerror or e}") from None
    print(page, file=sys.stdout)
    return 0
