"""`loopstack`: the command line. Errors are one sentence and exit status 2,
never a traceback."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from . import doctor, ping, report, run, serve
from .errors import CliError


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one sentence (CliError), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


# Options that take a value: a negative number after them is that value, not
# an option (argparse would guess otherwise, because -4 and -6 exist).
_VALUE_OPTIONS = {"-c", "-i", "-s", "-W", "-t", "--seed"}


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in _VALUE_OPTIONS:
            nxt = next(it, None)
            if nxt is None:
                out.append(arg)
            elif nxt.startswith("-") and nxt[1:].replace(".", "", 1).isdigit():
                out.append(f"{arg}={nxt}" if arg.startswith("--") else f"{arg}{nxt}")
            else:
                out += [arg, nxt]
        else:
            out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loopstack",
        description="loopstack: the loopback network, written in Python.",
    )
    parser.add_argument("--version", action="version", version=f"loopstack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ping.add_parser(sub)
    run.add_parser(sub)
    serve.add_parser(sub)
    doctor.add_parser(sub)
    report.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(_join_negative_values(raw) if raw[:1] == ["ping"] else raw)
    except CliError as e:
        sub = raw[0] if raw and not raw[0].startswith("-") else ""
        print(f"loopstack{' ' + sub if sub else ''}: {e}", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    host = getattr(args, "host", "")
    try:
        code: int = args.func(args)
        return code
    except CliError as e:
        print(f"loopstack {args.command}: {e}", file=sys.stderr)
    except socket.gaierror as e:
        hint = (" (use an address, or a name in the stack's hosts table such as localhost)"
                if e.errno == socket.EAI_NONAME else "")
        print(f"loopstack {args.command}: {host}: {e.strerror}{hint}", file=sys.stderr)
    except OSError as e:
        if e.errno == errno.ENETUNREACH:
            print(f"loopstack {args.command}: {host}: Network is unreachable (a fresh stack "
                  "routes only 127.0.0.0/8 and ::1)", file=sys.stderr)
        else:
            print(f"loopstack {args.command}: {e.strerror or e}", file=sys.stderr)
    except ValueError as e:
        print(f"loopstack {args.command}: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
