"""`loopstack run`: run a Python program, module or command in this process
with the standard library patched to a fresh loopstack stack.

The arguments read as the interpreter's do: loopstack's own options first,
then ``PROGRAM.py ARGS``, ``-m MODULE ARGS`` or ``-c CODE ARGS``, and every
argument after the program, module or code is the program's (``sys.argv``
as ``python PROGRAM.py``, ``python -m`` and ``python -c`` make it). A ``--``
before the program is accepted and dropped.

It ends as ``python PROGRAM.py`` would: an uncaught exception is printed
through ``sys.excepthook`` (exit status 1), the threads the program left
running (not daemon threads) are waited for before the stack goes away, and
the exit status is the program's."""

from __future__ import annotations

import argparse
import asyncio
import os
import runpy
import sys
import threading
import types
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from .. import readiness
from ..host.bridge import Bridge, endpoint, parse_expose, parse_forward
from ..patch import patch
from ..report import Recorder
from ..stack import Stack
from .errors import CliError
from .tables import print_stats


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="run a Python program on a virtual loopback", allow_abbrev=False,
        usage="loopstack run [OPTIONS] [--] (PROGRAM.py | -m MODULE | -c CODE) [ARGS ...]",
        description="Run PROGRAM.py (or -m MODULE, or -c CODE) in this process with socket, "
        "asyncio, ssl and name lookups routed to a fresh loopstack stack. Every argument "
        "after the program, module or code is passed to it, as python does. The exit status "
        "is the program's.")
    p.add_argument("--netem", metavar="SPEC", help='impair lo like tc netem, e.g. "delay 20ms"')
    p.add_argument("--seed", type=int, help="seed every random choice of the stack")
    p.add_argument("--clock", choices=("real", "virtual"), default="real",
                   help="the stack's clock: real (default) or virtual: time moves only when "
                   "every thread is blocked or idle, jumping to the next timer, and asyncio "
                   "loops run on it (a 30 s timeout costs no wall time; with --seed a run "
                   "repeats)")
    p.add_argument("--pcap", metavar="FILE", help="capture every packet to FILE")
    p.add_argument("--report", metavar="DIR",
                   help="write DIR/index.html when the program ends: ladder diagrams and "
                   "time-sequence graphs of its connections, with the packets netem dropped, "
                   "cwnd, ssthresh and RTT over time, the counters and the socket table (the "
                   "capture goes to DIR/capture.pcap, or to --pcap FILE)")
    p.add_argument("--stats", action="store_true",
                   help="print the socket table and the counters when the program ends")
    p.add_argument("--exact-urgent", action="store_true",
                   help="give TCP sockets descriptors whose poll bits for urgent data "
                   "(MSG_OOB) are exactly Linux's: a kernel TCP pair on the host's 127.0.0.1 "
                   "per socket (by default an AF_UNIX pair, which also shows a lone urgent "
                   "byte as readable; docs/differences.md)")
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
    # The target and its arguments are split off before argparse sees the
    # rest (_split): these entries are for --help.
    p.add_argument("-m", dest="module", metavar="MODULE",
                   help="run a library module as a script (the rest are its arguments)")
    p.add_argument("-c", dest="code", metavar="CODE",
                   help="run CODE, as python -c (the rest are its arguments)")
    p.add_argument("args", nargs="*", metavar="PROGRAM.py ARGS",
                   help="the program and its arguments")
    p.set_defaults(func=run)
    parse_own = p.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        own, target = _split(p, list(sys.argv[1:] if args is None else args))
        ns, extra = parse_own(own, namespace)
        if target is not None:
            kind, name, rest = target
            ns.module = name if kind == "-m" else None
            ns.code = name if kind == "-c" else None
            ns.args = [name, *rest] if kind == "program" else rest
        return ns, extra

    # argparse's sub-command action calls the sub-parser's parse_known_args.
    setattr(p, "parse_known_args", parse_known_args)  # noqa: B010


def _split(p: argparse.ArgumentParser, argv: list[str]
           ) -> tuple[list[str], tuple[str, str, list[str]] | None]:
    """(loopstack's options, (kind, name, the target's arguments)): the
    target is the first argument that is not an option or an option's
    value, or -m/-c with theirs, as python reads its own command line."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest = argv[i + 1 :]
            if rest and rest[0] != "-" and rest[0][:2] in ("-m", "-c"):
                _own, target = _split(p, rest)  # -- -m MODULE ...: still python's options
                return argv[:i], target
            return argv[:i], ("program", rest[0], rest[1:]) if rest else None
        if arg in ("-m", "-c"):
            if i + 1 == len(argv):
                return argv, None  # argparse says the value is missing
            return argv[:i], (arg, argv[i + 1], argv[i + 2 :])
        if arg[:2] in ("-m", "-c"):
            return argv[:i], (arg[:2], arg[2:], argv[i + 1 :])  # -mMODULE, as python allows
        if arg.startswith("-") and arg != "-":
            action = p._option_string_actions.get(arg.split("=", 1)[0])
            i += 2 if action is not None and action.nargs != 0 and "=" not in arg else 1
            continue
        return argv[:i], ("program", arg, argv[i + 1 :])
    return argv, None


def run(args: argparse.Namespace) -> int:
    rest = list(args.args)
    code_text: str | None = getattr(args, "code", None)
    if args.module is None and code_text is None:
        if not rest:
            raise CliError("no program given: say `loopstack run PROGRAM.py ARGS`, "
                           "`loopstack run -m MODULE ARGS` or `loopstack run -c CODE ARGS`")
        program = rest[0]
        if not os.path.exists(program):
            raise CliError(f"{program}: no such file: give the path of a Python program")
    exposes, forwards = _bridge_specs(args)
    virtual = getattr(args, "clock", "real") == "virtual"
    if virtual:
        _refuse_real_sockets(args)
    if getattr(args, "exact_urgent", False):
        readiness.set_exact_urgent(True)
        os.environ["LOOPSTACK_EXACT_URGENT"] = "1"  # (for exec'd children, who attach)
    stack = Stack(clock="virtual" if virtual else "real", seed=args.seed)
    if virtual:
        stack.autojump()  # programs that wait in select or a thread-free loop
    if args.netem:
        try:
            stack.lo.netem(args.netem)
        except ValueError as e:
            stack.close()
            raise CliError(f"--netem: {e}") from None
    bridges = _open_bridges(stack, exposes, forwards)
    report_dir: str | None = getattr(args, "report", None)
    recorder = None
    if report_dir:
        try:
            recorder = stack.report(report_dir, pcap=args.pcap)
        except OSError as e:
            for bridge in bridges:
                bridge.close()
            stack.close()
            raise CliError(f"--report {report_dir}: {e.strerror or e}") from None
    capture = stack.capture(args.pcap) if args.pcap and recorder is None else None
    saved_argv = sys.argv[:]
    saved_path = sys.path[:]
    code = 0
    saved_policy = asyncio.get_event_loop_policy() if virtual else None
    try:
        with patch(stack, passthrough=args.passthrough, children=True):
            if virtual:
                asyncio.set_event_loop_policy(_VirtualTimePolicy(stack))
            try:
                if args.module is not None:
                    sys.argv = [args.module, *rest]
                    sys.path.insert(0, os.getcwd())  # as `python -m` does
                    runpy.run_module(args.module, run_name="__main__", alter_sys=True)
                elif code_text is not None:
                    sys.argv = ["-c", *rest]
                    sys.path.insert(0, "")  # as `python -c` does
                    _run_code(code_text)
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
        if saved_policy is not None:
            asyncio.set_event_loop_policy(saved_policy)
        sys.argv = saved_argv
        sys.path[:] = saved_path
        if capture is not None:
            capture.stop()
        if recorder is not None:
            _write_report(recorder)
        if args.stats:
            print_stats(stack, sys.stderr)
        for bridge in bridges:
            bridge.close()
        stack.close()
    return code


def _write_report(recorder: Recorder) -> None:
    """Stop recording and write the page; say where it is on stderr."""
    recorder.stop()
    try:
        page = recorder.write()
    except (OSError, ValueError) as e:
        print(f"loopstack: the report could not be written: {e}", file=sys.stderr)
        return
    print(f"loopstack: report: {page}", file=sys.stderr, flush=True)


class _VirtualTimePolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio.run, asyncio.new_event_loop and the rest make loops on the
    stack's virtual clock (loopstack.aio), so asyncio's timers and the
    stack's share one time."""

    def __init__(self, stack: Stack) -> None:
        super().__init__()
        self._stack = stack

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        from ..aio import VirtualTimeEventLoop  # not imported by a real-time run

        return VirtualTimeEventLoop(self._stack)


def _refuse_real_sockets(args: argparse.Namespace) -> None:
    """Options that put real sockets in the program's path cannot run on
    virtual time: the clock cannot see their waits, so it would jump over
    them."""
    for option, used in (("--expose", args.expose), ("--forward", args.forward),
                         ("--passthrough", args.passthrough)):
        if used:
            raise CliError(f"{option} relays real sockets, whose waits virtual time cannot "
                           "see: use it with --clock real (the default)")


def _run_code(text: str) -> None:
    """As ``python -c``: the code runs as the ``__main__`` module."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(compile(text, "<string>", "exec"), main.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


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
