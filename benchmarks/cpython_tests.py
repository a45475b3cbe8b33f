"""CPython's own networking tests, on the kernel and on loopstack.

Each module of the interpreter's installed ``test`` package runs twice,
in a fresh interpreter each time:

    kernel:     python -m test -u network -v MODULE
    loopstack:  python -m loopstack.cli.main run -m test -u network -v MODULE

and the counts unittest reports (passed, failed = failures + errors,
skipped) are printed side by side, with the tests that fail under loopstack
only and the last line of their tracebacks. A run that outlives its timeout
is killed and reported as a hang; a run that ended without unittest's
summary (OK or FAILED after "Ran N tests"), or with an exit status that
summary does not account for (a crash, a signal, an error of regrtest's
own), is reported as aborted. Hangs, aborted runs and loopstack-only
failures are the differences; the exit status is 1 when any is
unexplained. Full outputs go to --out. A few modules
get one more local resource (RESOURCES); tests that would reach the
Internet are left out with -i (IGNORE); modules an install lacks are
written out (SHIMS).

    .venv/bin/python benchmarks/cpython_tests.py [-j 2] [--timeout 300] [--heavy] [MODULE ...]

Not part of `make test`: it takes minutes, and the kernel's results depend
on the host.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# Every module of the stdlib's test suite whose tests touch loopback sockets
# (threaded servers on 127.0.0.1/::1, asyncio transports, TLS, name lookups,
# descriptors of sockets handed to os, signal or select). Left out, each for
# its reason:
# - Internet only: test_urllib2net, test_urllibnet, test_smtpnet,
#   test_xmlrpc_net; with `-u network` they would reach remote hosts, so they
#   must not run. (The Internet tests inside listed modules are ignored, see
#   IGNORE: test_nntplib's Networked* classes, test_site's license URL.)
# - AF_UNIX or socketpair only, which stay real sockets under loopstack:
#   test_stat, test_pathlib (a bound AF_UNIX socket's st_mode), test_mailbox,
#   test_pty (socketpair).
# - Other platforms: test_kqueue (BSD and macOS), test_asyncio.test_proactor_events
#   and test_asyncio.test_windows_events (mocks of Windows' proactor), test_mmap
#   (its socket test is Windows only), test_import (a UNC path from gethostname,
#   Windows only).
# - No socket made: test_exception_hierarchy (socket.error is OSError),
#   test___all__ (imports), test_multiprocessing_main_handling (pipes only).
MODULES = [
    "test_socketserver", "test_httpservers", "test_urllib2_localnet", "test_xmlrpc",
    "test_docxmlrpc", "test_ftplib", "test_smtplib", "test_poplib", "test_imaplib",
    "test_selectors", "test_asyncio.test_streams", "test_asyncio.test_sock_lowlevel",
    "test_socket", "test_telnetlib", "test_wsgiref", "test_robotparser", "test_httplib",
    "test_asyncore", "test_asynchat", "test_timeout", "test_epoll",
    "test_asyncio.test_server", "test_asyncio.test_sendfile", "test_asyncio.test_base_events",
    "test_asyncio.test_sslproto",
    # asyncio's loops on mocked or real TCP sockets (sendfile over AF_INET)
    "test_asyncio.test_buffered_proto", "test_asyncio.test_selector_events",
    "test_asyncio.test_unix_events",
    # servers on loopback: smtpd (asyncore), pydoc's HTTP server, nntplib's
    # local server, the test helpers (bind_port, find_unused_port)
    "test_smtpd", "test_pydoc", "test_nntplib", "test_support",
    # names (gethostbyname('localhost'), gethostname, getfqdn through
    # email.utils.make_msgid) and unconnected sockets
    "test_urllib", "test_urllib2", "test_urllib_response", "test_site", "test_email",
    # a socket's descriptor given to the OS: os.sendfile, set_wakeup_fd,
    # audit events of socket.__new__/bind, EINTR in accept/recv/send
    "test_os", "test_signal", "test_audit", "test_eintr",
]
# Run with --heavy: minutes rather than seconds each (TLS handshakes by the
# hundred, every logging handler, every event-loop API, a 2.5 GB
# socket.sendfile, multiprocessing's Listener/Client and managers on
# 127.0.0.1 under each start method), and test_asyncio.test_ssl, whose
# threaded TLS servers (start_tls, unwrap on a wrapped loopstack socket) hang
# under loopstack today until the timeout; give them --timeout 1800. (The
# test_multiprocessing_* tests of multiprocessing.connection over AF_INET,
# TestTimeouts, RemoteManager, ManagerRestart, TestListenerClient and
# PicklingConnections, run as on the kernel: a Connection reads and writes
# the descriptor detach() gave, which carries the connection's data.)
HEAVY = ["test_ssl", "test_logging", "test_asyncio.test_events", "test_asyncio.test_ssl",
         "test_largefile", "test_multiprocessing_fork", "test_multiprocessing_forkserver",
         "test_multiprocessing_spawn"]

# Tests that hang on some hosts for reasons unrelated to loopback (a VM's
# vsock transport), and tests that reach the Internet under `-u network`:
# left out on both sides.
IGNORE = {
    "test_socket": ["*VSOCK*"],
    "test_nntplib": ["*NetworkedNNTP*"],  # news.trigofacile.com, nntp.aioe.org
    "test_site": ["test_license_exists_at_url"],  # www.python.org
    "test_ssl": ["*NetworkedTests*"],  # self-signed.pythontest.net, ipv6.google.com
}

# Modules run a second time under loopstack with these `loopstack run`
# options, which change what the program can observe: test_asyncore's
# handle_expt tests with exact urgent readiness (readiness.py; the default
# descriptor also shows a lone urgent byte as readable, which asyncore's
# dispatcher tolerates).
VARIANTS = {"test_asyncore": ["--exact-urgent"]}

# Tests failing under loopstack only for a reason of principle, each with it
# (docs/differences.md has the whole argument), printed as explained:
# {module: {test name part: reason}}. None today.
EXPLAINED: dict[str, dict[str, str]] = {}

# Resources besides `network` that a module's socket tests need (none of them
# reaches beyond the host): test_eintr runs all of _test_eintr (accept, recv,
# send, select interrupted by signals) only with `walltime`, test_largefile's
# socket.sendfile of a 2.5 GB file needs `cpu`.
RESOURCES = {"test_eintr": ["walltime"], "test_largefile": ["cpu"]}

# Modules some installs leave out of the test package: 3.11.7's `make
# install` forgets the test_multiprocessing_<method> packages (a few lines
# each over _test_multiprocessing, which is installed). When missing, one
# module with all of a method's tests (its processes, threads, manager and
# misc submodules together) is written as test_shim_multiprocessing_<method>
# to a directory given with --testdir (regrtest takes the real names for
# packages of its own).
_MP_SHIM = """import sys
import unittest
import test._test_multiprocessing
from test import support

if support.PGO:
    raise unittest.SkipTest("test is not helpful for PGO")
if sys.platform == "win32" and {method!r} != "spawn":
    raise unittest.SkipTest("{method} is not available on Windows")
if sys.platform == "darwin" and {method!r} == "fork":
    raise unittest.SkipTest("test may crash on macOS (bpo-33725)")

test._test_multiprocessing.install_tests_in_module_dict(globals(), {method!r})

if __name__ == "__main__":
    unittest.main()
"""
SHIMS = {f"test_multiprocessing_{m}": _MP_SHIM.format(method=m)
         for m in ("fork", "forkserver", "spawn")}

_RAN = re.compile(r"^Ran (\d+) tests? in ", re.M)
# regrtest's exit status after unittest's summary: 0 when every run said OK,
# EXITCODE_BAD_TEST (libregrtest/results.py) when one said FAILED.
_STATUS = {"OK": 0, "FAILED": 2}
_LINE = re.compile(r"^(\w+) \(([\w.]+)\)(?:\n[^\n]*?)? \.\.\. (.*)$", re.M)
_SUMMARY = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$", re.M)
_HEADER = re.compile(r"^(FAIL|ERROR): (\S+) \(([^)]*)\)", re.M)


@dataclass
class Result:
    module: str
    side: str
    seconds: float = 0.0
    rc: int | None = None
    hung: bool = False
    ran: int = 0
    failed: int = 0
    skipped: int = 0
    other: int = 0  # expected failures, unexpected successes
    failures: dict[str, str] = field(default_factory=dict)  # test id -> last traceback line
    output: str = ""
    running: str = ""  # the test a hung run was in
    summaries: list[str] = field(default_factory=list)  # OK or FAILED, one per "Ran" line
    missing: int = 0  # "Ran" lines with no summary after them

    @property
    def counted(self) -> bool:
        return self.ran > 0

    def count_lines(self) -> None:
        """A run killed before unittest's summary: count the verbose lines
        that have an outcome, and note the test that was running."""
        for m in _LINE.finditer(self.output):
            outcome = m.group(3)
            self.ran += 1
            if outcome.endswith(("FAIL", "ERROR")):
                self.failed += 1
            elif outcome.startswith("skipped"):
                self.skipped += 1
            elif not outcome.endswith("ok"):
                self.other += 1
        started = re.findall(r"^\w+ \(([\w.]+)\)", self.output, re.M)
        self.running = started[-1] if started else ""

    @property
    def aborted(self) -> str:
        """Why the run is not a complete result ("" if it is): no summary
        (it died before unittest's end, or regrtest never ran the tests),
        or an exit status the summaries do not explain. A hang is its own
        case."""
        if self.hung:
            return ""
        if not self.summaries or self.missing:
            return f"exit {self.rc}, no summary"
        want = max(_STATUS[s] for s in self.summaries)
        if self.rc != want:
            return f"exit {self.rc} after {'/'.join(self.summaries)}"
        return ""

    @property
    def passed(self) -> int:
        return self.ran - self.failed - self.skipped - self.other

    def cell(self) -> str:
        if self.hung:
            # regrtest may have finished and the interpreter then waited
            # for threads that a failed test left blocked.
            done = f" after {self.passed}/{self.failed}/{self.skipped}" if self.counted else ""
            return f"HANG{done}"
        if not self.counted:
            return f"no result (exit {self.rc})"
        counts = f"{self.passed}/{self.failed}/{self.skipped}"
        why = self.aborted
        return f"ABORTED ({why}) after {counts}" if why else counts


def parse(res: Result) -> None:
    out = res.output
    rans = list(_RAN.finditer(out))
    res.ran = sum(int(m.group(1)) for m in rans)
    # The summary of each run: the first OK or FAILED line after its "Ran"
    # line (and before the next run's).
    details: list[str] = []
    for i, m in enumerate(rans):
        end = rans[i + 1].start() if i + 1 < len(rans) else len(out)
        found = _SUMMARY.search(out, m.end(), end)
        if found is None:
            res.missing += 1
            continue
        res.summaries.append(found.group(1))
        details.append(found.group(2) or "")
    if not res.ran:
        res.count_lines()
        for m in _LINE.finditer(out):
            if m.group(3).endswith(("FAIL", "ERROR")):
                res.failures[f"{m.group(2)}"] = m.group(3)
        return
    for detail in details:
        for part in detail.split(","):
            if "=" not in part:
                continue
            key, value = part.strip().split("=")
            if key in ("failures", "errors"):
                res.failed += int(value)
            elif key == "skipped":
                res.skipped += int(value)
            else:
                res.other += int(value)
    for m in _HEADER.finditer(out):
        test_id = m.group(3) if "." in m.group(3) else f"{m.group(3)}.{m.group(2)}"
        block = out[m.end():].split("\n" + "=" * 70, 1)[0].split("\n" + "-" * 70 + "\nRan", 1)[0]
        lines = [ln for ln in block.strip().splitlines() if ln.strip() and not ln.startswith("-")]
        res.failures[test_id] = lines[-1].strip()[:160] if lines else "?"


def _installed(module: str) -> bool:
    import test

    base = os.path.join(os.path.dirname(test.__file__), *module.split("."))
    return os.path.exists(base + ".py") or os.path.isdir(base)


def _shim_name(module: str) -> str:
    return module.replace("test_", "test_shim_", 1)


def command(module: str, side: str, testdir: str | None = None) -> list[str]:
    resources = ",".join(["network", *RESOURCES.get(module, [])])
    name = module if testdir is None else _shim_name(module)
    test = ["-m", "test", "-u", resources, "-v", name]
    if testdir is not None:
        test += ["--testdir", testdir]
    for pattern in IGNORE.get(module, []):
        test += ["-i", pattern]
    if side == "kernel":
        return [sys.executable, *test]
    options = side.split(" ")[1:]  # "loopstack --exact-urgent": a VARIANTS run
    return [sys.executable, "-m", "loopstack.cli.main", "run", *options, "-m", "test", *test[2:]]


def run_one(module: str, side: str, timeout: float, out_dir: str) -> Result:
    res = Result(module, side)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cpython-tests-") as cwd:
        testdir = None
        if module in SHIMS and not _installed(module):
            testdir = os.path.join(cwd, "shims")
            os.mkdir(testdir)
            with open(os.path.join(testdir, f"{_shim_name(module)}.py"), "w") as f:
                f.write(SHIMS[module])
        proc = subprocess.Popen(command(module, side, testdir), cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                errors="replace", start_new_session=True,
                                env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        try:
            res.output, _ = proc.communicate(timeout=timeout)
            res.rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            res.output, _ = proc.communicate()
            res.hung = True
    res.seconds = time.monotonic() - start
    parse(res)
    with open(os.path.join(out_dir, f"{module}.{_side_file(side)}.txt"), "w") as f:
        f.write(res.output)
    return res


def _side_file(side: str) -> str:
    return side.replace(" --", "+").replace(" ", "+")


def explanation(module: str, test_id: str) -> str | None:
    for name, why in EXPLAINED.get(module, {}).items():
        if name in test_id:
            return why
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", default=MODULES)
    ap.add_argument("--heavy", action="store_true",
                    help="also run the slow modules: " + ", ".join(HEAVY))
    ap.add_argument("-j", "--jobs", type=int, default=2, help="runs at once (default 2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run (300)")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "cpython-tests"),
                    help="directory for the full outputs")
    args = ap.parse_args(argv)
    if args.heavy:
        args.modules = [*args.modules, *(m for m in HEAVY if m not in args.modules)]
    os.makedirs(args.out, exist_ok=True)
    jobs = [(m, side) for m in args.modules for side in ("kernel", "loopstack")]
    jobs += [(m, " ".join(["loopstack", *VARIANTS[m]])) for m in args.modules if m in VARIANTS]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {job: pool.submit(run_one, *job, args.timeout, args.out) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}

    width = max(len(m) for m in args.modules)
    print(f"\nCPython {sys.version.split()[0]} test modules: passed/failed/skipped "
          f"(outputs in {args.out})\n")
    print(f"{'module':<{width}}  {'kernel':>24}  {'loopstack':>24}  {'time k/l (s)':>13}")
    total = {"kernel": [0, 0, 0], "loopstack": [0, 0, 0]}
    for m in args.modules:
        k, lo = results[(m, "kernel")], results[(m, "loopstack")]
        for r in (k, lo):
            if r.counted:
                t = total[r.side]
                t[0] += r.passed
                t[1] += r.failed
                t[2] += r.skipped
        print(f"{m:<{width}}  {k.cell():>24}  {lo.cell():>24}  "
              f"{k.seconds:>6.1f}/{lo.seconds:<6.1f}")
        if m in VARIANTS:
            v = results[(m, " ".join(["loopstack", *VARIANTS[m]]))]
            print(f"{'  ' + ' '.join(VARIANTS[m]):<{width}}  {'':>24}  {v.cell():>24}  "
                  f"{'':>6} {v.seconds:<6.1f}")
    print(f"{'total':<{width}}  {'/'.join(map(str, total['kernel'])):>24}  "
          f"{'/'.join(map(str, total['loopstack'])):>24}")

    print("\nHangs, and tests failing under loopstack only (last line of each traceback;"
          " those failing for a reason of principle marked explained):")
    unexplained = 0
    for m in args.modules:
        k = results[(m, "kernel")]
        sides = ["loopstack"] + ([" ".join(["loopstack", *VARIANTS[m]])] if m in VARIANTS else [])
        for side in sides:
            lo = results[(m, side)]
            only = {t: why for t, why in lo.failures.items() if t not in k.failures}
            for r in (k, lo) if side == "loopstack" else (lo,):
                if r.hung or not r.counted or r.aborted:
                    # Not a result to compare: whatever it counted so far
                    # must not pass for equal to the other side's.
                    print(f"  {m} ({r.side}): {r.cell()}; running: {r.running or '?'}")
                    unexplained += 1
            for t, why in sorted(only.items()):
                reason = explanation(m, t) if side == "loopstack" else None
                mark = f"  [explained: {reason}]" if reason else ""
                unexplained += reason is None
                print(f"  {t} ({side}): {why}{mark}")
    print(f"\n{unexplained} unexplained difference(s)")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
