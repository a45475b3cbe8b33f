"""urllib3's socket-level and local-server tests, on the kernel and on loopstack.

The urllib3 source distribution (PyPI's sdist, which ships ``test/`` and
``dummyserver/``) is downloaded, unpacked into a work dir and given a venv of
its own holding loopstack (editable, from this checkout), urllib3 and the
test dependencies the chosen test files import. The chosen tests then run
twice, each in a fresh ``python -m pytest``:

    kernel:     pytest TESTS -p _http_suite_guard -q -rfE --timeout 60 -m "not requires_network"
    loopstack:  the same with --loopstack

and the counts pytest reports (passed, failed, errors, skipped, xfailed) are
printed side by side, with the tests that fail under loopstack only and the
last line of their errors. A run that outlives --timeout is killed (by its
PID) and reported as a hang. Full outputs go to the work dir.

Nothing leaves the machine: both runs load a guard plugin, written into the
work dir, whose audit hook refuses (ENETUNREACH) any ``socket.connect`` or
``socket.sendto`` to an IPv4/IPv6 address outside 127.0.0.0/8 and ::1 (the
unspecified address, which Linux routes to the host itself, is allowed) and
any ``socket.getaddrinfo`` of a name other than localhost or an IP literal
(EAI_NONAME), so no DNS query is sent either; tests marked ``requires_network``
are deselected.

    .venv/bin/python benchmarks/http_suite.py [--version 2.8.0] [--workdir DIR]
        [--timeout 900] [--parallel] [--tests test/with_dummyserver/test_socketlevel.py ...]

Not part of `make test`: it downloads from PyPI, takes minutes, and the
kernel's results depend on the host.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DEFAULT_TESTS = [
    "test/with_dummyserver/test_socketlevel.py",
    "test/with_dummyserver/test_connectionpool.py",
    "test/with_dummyserver/test_chunked_transfer.py",
]
# test_connection.py, test_poolmanager.py, test_https.py and the proxy tests also run
# (--tests): their servers are hypercorn on trio, which test_connectionpool.py's
# HypercornDummyServerTestCase classes already cover.

# Distribution names of the sdist's "test" dependency group (and trustme, from
# its "dev" group) by the top-level module a test file, test/conftest.py or
# dummyserver/ imports. pytest and pytest-timeout are always installed;
# pytest-socket is not (the suite never imports it).
IMPORTS = {
    "trustme": ["trustme"],
    "trio": ["trio"],
    "anyio": ["anyio"],
    "h2": ["h2"],
    "httpx": ["httpx"],
    "hypercorn": ["hypercorn"],
    "quart": ["quart"],
    "quart_trio": ["quart-trio"],
    "socks": ["pysocks"],
}
ALWAYS = ["pytest", "pytest-timeout"]

GUARD = '''"""Refuse any socket traffic that would leave the machine (http_suite.py)."""
import errno
import ipaddress
import socket
import sys

_LOCAL_NAMES = {"localhost", "localhost.", "ip6-localhost", "ip6-loopback"}


def _local_ip(host):
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _local_name(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = host.lower()
    if host in _LOCAL_NAMES or host.rstrip(".").endswith(".localhost"):
        return True
    return _local_ip(host)


try:
    # Under loopstack, its sockets and lookups raise the same events as the
    # kernel's; they never leave the stack (passthrough sockets that turn
    # real raise the kernel's own).
    from loopstack.socket import loopstack_event
except ImportError:
    def loopstack_event():
        return False


def _hook(event, args):
    if loopstack_event():
        return
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
            return  # AF_UNIX, netlink...: never leaves the host
        if not isinstance(address, tuple) or not address:
            return
        host = address[0]
        if isinstance(host, (str, bytes)) and _local_name(host):
            return
        raise OSError(errno.ENETUNREACH, f"http_suite guard: {address!r} is not loopback")
    if event == "socket.getaddrinfo":
        host = args[0]
        if host is None or host in ("", b"") or _local_name(host) is not None:
            return  # a literal (any: connect checks it) or localhost
        raise socket.gaierror(socket.EAI_NONAME, f"http_suite guard: no DNS for {host!r}")


sys.addaudithook(_hook)
'''

_SUMMARY = re.compile(r"^=*\s*(.*?\d+ \w+.*?) in [\d.]+s", re.M)
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
_SECTION = re.compile(r"^_+ (.+?) _+$", re.M)
_FAIL = re.compile(r"^(FAILED|ERROR) (.+?)(?: - (.*))?$", re.M)


@dataclass
class Result:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    rc: int | None = None
    hung: bool = False
    seconds: float = 0.0


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """Download and unpack the sdist, make the venv; return (source dir, venv python)."""
    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"urllib3-{args.version}.tar.gz"
    if not sdist.exists():
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"urllib3=={args.version}",
                "-d",
                str(cache),
            ]
        )
    src = work / f"urllib3-{args.version}"
    if not src.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
    venv = work / "venv"
    python = venv / "bin" / "python"
    marker = venv / f".ready-{args.version}-{'-'.join(sorted(args.tests))}".replace("/", "_")
    if not marker.exists():
        if not python.exists():
            run([sys.executable, "-m", "venv", str(venv)])
        run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(REPO), str(src)]
            + test_requirements(src, args.tests)
        )
        marker.touch()
    (work / "_http_suite_guard.py").write_text(GUARD)
    return src, python


def test_requirements(src: Path, tests: list[str]) -> list[str]:
    """The requirements of the sdist's test group that the chosen tests import."""
    project = tomllib.loads((src / "pyproject.toml").read_text())
    groups = project.get("dependency-groups", {})
    pinned = {}
    for req in groups.get("test", []) + groups.get("dev", []):
        if isinstance(req, str):
            name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower()
            pinned.setdefault(name, req)
    files = [src / t for t in tests] + [src / "test" / "conftest.py", src / "test" / "__init__.py"]
    files += sorted((src / "dummyserver").glob("*.py"))
    imported = set()
    for f in files:
        if f.is_file():
            text = f.read_text()
            imported |= set(re.findall(r"^\s*(?:from|import) ([A-Za-z_]\w*)", text, re.M))
    names = list(ALWAYS)
    for module, dists in IMPORTS.items():
        if module in imported:
            names += dists
    return [pinned.get(n, n) for n in names]  # anyio's entry is "anyio[trio]>=..."


def last_errors(text: str) -> dict[str, str]:
    """The last error line of each FAILURES/ERRORS section, by its title (Class.test[id])."""
    out = {}
    parts = _SECTION.split(text)
    for title, body in zip(parts[1::2], parts[2::2], strict=False):
        title = re.sub(r"^ERROR at (setup|teardown) of ", "", title)
        lines = [m.strip() for m in re.findall(r"^E {2,}(.*)$", body, re.M)]
        lines = lines or re.findall(r"^[\s|+]*([\w.]+(?:Error|Exception|Failed)\b.*)$", body, re.M)
        if lines:
            out.setdefault(title, lines[-1])
    return out


def pytest_run(name: str, cmd: list[str], src: Path, work: Path, timeout: float) -> Result:
    res = Result(name)
    out = work / f"{name}.out"
    # The work dir (the guard plugin) first; a PYTHONPATH given to this script
    # after it (to measure another tree: PYTHONPATH=/tmp/other/src).
    path = os.pathsep.join(p for p in (str(work), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
    print(f"[{name}] {' '.join(cmd)}  > {out}", flush=True)
    start = time.monotonic()
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=src, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            res.rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            res.hung = True
            proc.kill()  # only the pytest we started, by its PID
            proc.wait()
    res.seconds = time.monotonic() - start
    text = out.read_text(errors="replace")
    summaries = _SUMMARY.findall(text)
    if summaries:
        for n, what in _COUNT.findall(summaries[-1]):
            what = "errors" if what.startswith("error") else what
            res.counts[what] = res.counts.get(what, 0) + int(n)
    last = last_errors(text)
    for kind, test, msg in _FAIL.findall(text):
        title = test.split("::", 1)[-1].replace("::", ".")
        res.failures[test] = f"{kind}: {(msg or '').strip() or last.get(title, '?')}"
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="2.8.0", help="urllib3 version (default 2.8.0)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "loopstack-http"))
    ap.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    ap.add_argument("--test-timeout", type=float, default=60, help="pytest-timeout, per test")
    ap.add_argument("--parallel", action="store_true", help="run kernel and loopstack at once")
    ap.add_argument("--tests", nargs="+", default=DEFAULT_TESTS)
    args = ap.parse_args()

    work = Path(args.workdir).resolve()
    src, python = prepare(args, work)
    base = [
        str(python),
        "-m",
        "pytest",
        *args.tests,
        "-p",
        "_http_suite_guard",
        "-q",
        "-rfE",
        "--timeout",
        str(args.test_timeout),
        "-m",
        "not requires_network",
        "-p",
        "no:cacheprovider",
    ]
    runs = [("kernel", base), ("loopstack", base + ["--loopstack"])]
    with ThreadPoolExecutor(2 if args.parallel else 1) as pool:
        kernel, loop = pool.map(lambda r: pytest_run(*r, src, work, args.timeout), runs)

    keys = ["passed", "failed", "errors", "skipped", "xfailed", "xpassed", "deselected"]
    print(f"\nurllib3 {args.version}: {' '.join(args.tests)}")
    print(f"{'':12}{'kernel':>10}{'loopstack':>11}")
    for k in keys:
        if kernel.counts.get(k) or loop.counts.get(k):
            print(f"{k:12}{kernel.counts.get(k, 0):>10}{loop.counts.get(k, 0):>11}")
    print(f"{'seconds':12}{kernel.seconds:>10.0f}{loop.seconds:>11.0f}")
    for r in (kernel, loop):
        if r.hung:
            print(f"{r.name}: HUNG, killed after {args.timeout:.0f} s")
        elif not r.counts:
            print(f"{r.name}: no pytest summary (exit {r.rc}); see {work / (r.name + '.out')}")
    only = sorted(set(loop.failures) - set(kernel.failures))
    print(f"\nfailing under loopstack only: {len(only)}")
    for t in only:
        print(f"  {t}\n      {loop.failures[t][:300]}")
    only_kernel = sorted(set(kernel.failures) - set(loop.failures))
    if only_kernel:
        print(f"\nfailing on the kernel only: {len(only_kernel)}")
        for t in only_kernel:
            print(f"  {t}\n      {kernel.failures[t][:300]}")
    print(f"\nfull outputs: {work}/kernel.out, {work}/loopstack.out")
    return 0 if not only and not loop.hung else 1


if __name__ == "__main__":
    sys.exit(main())
