"""`loopstack run`: run a Python program or module in this process with the
standard library patched to a fresh loopstack stack.

It ends as ``python PROGRAM.py`` would: an uncaught exception is printed
through ``sys.excepthook`` (exit status 1), the threads the program left
running (not daemon threads) are waited for before the stack goes away, and
the exit status is the program's."""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import threading
from types import TracebackType
from typing import Any

from ..host.bridge import Bridge, endpoint, parse_expose, parse_forward
from ..patch import patch
from ..stack import Stack
from .errors import CliError
from .report import print_stats


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a Python program on a virtual loopback",
        description="Run PROGRAM.py (or -m MODULE) in this process with socket, asyncio, "
        "ssl and name lookups routed to a fresh loopstack stack. The exit status is the "
        "program's.")
    p.add_argument("--netem", metavar="SPEC", help='impair lo like tc netem, e.g. "delay 20ms"')
    p.add_argument("--seed", type=int, help="seed every random choice of the stack")
    p.add_argument("--pcap", metavar="FILE", help="capture every packet to FILE")
    p.add_argument("--stats", action="store_true",
                   help="print the socket table and the counters when the program ends")
    p.add_argument("--passthrough", action="store_true",
                   help="let names and addresses the stack does not know reach the real "
                   "network (the real resolver; real sockets for unroutable destinations)")
    p.add_argument("--expose", action="append", default=[], metavar="VPORT[:HOSTPORT]",
                   help="make virtual 127.0.0.1:VPORT reachable at the host's 127.0.0.1:HOSTPORT "
                   "(default: the same port; 0: a free one; VPORT:HOST:HOSTPORT names the "
                   "host address too, e.g. 8080:[::1]:8080); repeatable")
    p.add_argument("--forward", action="append", default=[], metavar="VPORT:HOST:PORT",
                   help="relay virtual 127.0.0.1:VPORT to a real service at HOST:PORT on the "
                   "host, e.g. a database; repeatable")
    p.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="PROGRAM.py ARGS",
                   help="the program and its arguments (after --, or after the options)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rest = list(args.args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.module is None:
        if not rest:
            raise CliError("no program given: say `loopstack run -- PROGRAM.py ARGS` "
                           "or `loopstack run -m MODULE ARGS`")
        program = rest[0]
        if not os.path.exists(program):
            raise CliError(f"{program}: no such file: give the path of a Python program")
    exposes, forwards = _bridge_specs(args)
    stack = Stack(seed=args.seed)
    if args.netem:
        try:
            stack.lo.netem(args.netem)
        except ValueError as e:
            stack.close()
            raise CliError(f"--netem: {e}") from None
    bridges = _open_bridges(stack, exposes, forwards)
    capture = stack.capture(args.pcap) if args.pcap else None
    saved_argv = sys.argv[:]
    saved_path = sys.path[:]
    code = 0
    try:
        with patch(stack, passthrough=args.passthrough, children=True):
            try:
                if args.module is not None:
                    sys.argv = [args.module, *rest]
                    sys.path.insert(0, os.getcwd())  # as `python -m` does
                    runpy.run_module(args.module, run_name="__main__", alter_sys=True)
                else:
                    sys.argv = rest
                    sys.path.insert(0, os.path.dirname(os.path.abspath(rest[0])))
                    runpy.run_path(rest[0], run_name="__main__")
            except SystemExit as e:
                code = _exit_code(e.code)
            except BaseException as e:  # what the interpreter would print
                e.__traceback__ = _program_frames(e.__traceback__)
                sys.excepthook(type(e), e, e.__traceback__)
                code = 130 if isinstance(e, KeyboardInterrupt) else 1
            _join_threads()
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        if capture is not None:
            capture.stop()
        if args.stats:
            print_stats(stack, sys.stderr)
        for bridge in bridges:
            bridge.close()
        stack.close()
    return code


def _bridge_specs(args: argparse.Namespace
                  ) -> tuple[list[tuple[str, int, str, int]], list[tuple[str, int, str, int]]]:
    """--expose and --forward as (spec, virtual port, host, port), checked
    before anything is made."""
    out: tuple[list[tuple[str, int, str, int]], list[tuple[str, int, str, int]]] = ([], [])
    for option, specs, parse, found in (("--expose", args.expose, parse_expose, out[0]),
                                        ("--forward", args.forward, parse_forward, out[1])):
        for spec in specs:
            try:
                found.append((spec, *parse(spec)))
            except ValueError as e:
                raise CliError(f"{option} {spec}: {e}") from None
    return out


def _open_bridges(stack: Stack, exposes: list[tuple[str, int, str, int]],
                  forwards: list[tuple[str, int, str, int]]) -> list[Bridge]:
    """Make the bridges, one line on stderr each; on a failure close what
    was made (the stack too) and say why."""
    bridges: list[Bridge] = []
    doing = ""
    try:
        for spec, vport, host, host_port in exposes:
            doing = f"--expose {spec}"
            exposure = stack.expose(vport, host=host, host_port=host_port)
            bridges.append(exposure)
            print(f"loopstack: exposed virtual {endpoint(exposure.address, vport)} at "
                  f"{exposure.url}", file=sys.stderr, flush=True)
        for spec, vport, host, port in forwards:
            doing = f"--forward {spec}"
            forward = stack.forward(vport, to=(host, port))
            bridges.append(forward)
            print(f"loopstack: forwarding virtual {endpoint(forward.address, vport)} to "
                  f"{endpoint(*forward.target[:2])}", file=sys.stderr, flush=True)
    except (OSError, ValueError) as e:
        for bridge in bridges:
            bridge.close()
        stack.close()
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CliError(f"{doing}: {reason}") from None
    return bridges


def _program_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the program's first frame on (not runpy's, not ours)."""
    while tb is not None and tb.tb_next is not None and \
            tb.tb_frame.f_globals.get("__name__") in (__name__, "runpy"):
        tb = tb.tb_next
    return tb


def _join_threads() -> None:
    """Wait for the program's non-daemon threads, as interpreter shutdown
    does: they may still be using the stack."""
    me = threading.current_thread()
    while True:
        left = [t for t in threading.enumerate() if t is not me and not t.daemon
                and t.is_alive()]
        if not left:
            return
        for t in left:
            t.join()


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1
