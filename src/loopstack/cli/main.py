"""`loopstack`: the command line. Errors are one sentence and exit status 2,
never a traceback."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Sequence

from .. import __version__
from . import ping
from .errors import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopstack",
        description="loopstack: the loopback network, written in Python.",
    )
    parser.add_argument("--version", action="version", version=f"loopstack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ping.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    host = getattr(args, "host", "")
    try:
        code: int = args.func(args)
        return code
    except CliError as e:
        print(f"loopstack {args.command}: {e}", file=sys.stderr)
    except socket.gaierror:
        print(f"loopstack {args.command}: {host}: Name or service not known (use an address, "
              "or a name in the stack's hosts table such as localhost)", file=sys.stderr)
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
