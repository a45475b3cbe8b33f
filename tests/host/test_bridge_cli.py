"""Bridges from the front ends: `loopstack run --expose/--forward` with real
clients outside the process (curl, a kernel socket, a headless Chromium),
its one-sentence errors, and the pytest plugin's --loopstack-forward.

Every process started here is ours, ended by its own handle; every wait is
bounded."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loopstack.cli.main import main

pytest_plugins = ["pytester"]

WAIT = 30.0  # seconds: the bound on each wait for a process or a line
LOOPSTACK = str(Path(sys.executable).parent / "loopstack")
MARKER = "Hello from the virtual side of loopstack"
PAGE = (f'<!doctype html><title>bridge</title><body style="margin:0;background:#fff">'
        f'<div style="background:#1a73e8;width:400px;height:300px"></div>'
        f'<h1 style="color:#c00">{MARKER}</h1></body>\n')

SERVER = textwrap.dedent('''
    """A page, a 2 MiB file (http.server on virtual 127.0.0.1:8080) and a
    digest service (virtual 127.0.0.1:9000: reads to EOF, answers "LENGTH
    SHA256"); runs until its standard input closes."""
    import functools, hashlib, http.server, socket, sys, threading
    from loopstack.socket import implementation

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    web = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 8080), functools.partial(Quiet, directory=sys.argv[1]))
    threading.Thread(target=web.serve_forever, daemon=True).start()
    digest = socket.create_server(("127.0.0.1", 9000))

    def answer(conn):
        with conn:
            data = bytearray()
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())

    def serve_digests():
        while True:
            try:
                conn, _ = digest.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve_digests, daemon=True).start()
    print("server: ready", type(implementation(digest)).__module__, file=sys.stderr, flush=True)
    sys.stdin.read()
    web.shutdown()
    web.server_close()
    digest.close()
''')

CLIENT = textwrap.dedent('''
    """Through virtual 127.0.0.1:7000 (a --forward) to a real echo service."""
    import hashlib, socket, sys, threading
    from loopstack.socket import implementation

    payload = bytes(range(256)) * 4096
    with socket.create_connection(("127.0.0.1", 7000), timeout=30) as c:
        c.sendall(b"hello")
        first = c.recv(5)
        threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR))).start()
        back = bytearray()
        while data := c.recv(65536):
            back += data
    print(first.decode(), hashlib.sha256(back).hexdigest() == hashlib.sha256(payload).hexdigest(),
          type(implementation(c)).__module__)
''')


def pick_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_port_free(port: int) -> None:
    """Nothing listens on the host's 127.0.0.1:port, and a server may take
    it again (SO_REUSEADDR, as servers do: the relays' TIME-WAITs remain)."""
    with pytest.raises(ConnectionRefusedError), socket.socket() as probe:
        probe.settimeout(WAIT)
        probe.connect(("127.0.0.1", port))
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


class Run:
    """`loopstack run ...` as a child process, its stderr read line by line."""

    def __init__(self, *argv: str, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.proc = subprocess.Popen([LOOPSTACK, "run", *argv], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,),
                                        daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def line(self, predicate: Callable[[str], bool]) -> str:
        """The next stderr line that satisfies ``predicate`` (bounded)."""
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no such line on stderr; saw {self.seen}") from None
            self.seen.append(line)
            if predicate(line):
                return line

    def finish(self) -> int:
        """Close its stdin (the program's cue to end); its exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # ours, by its handle
            self.proc.wait(WAIT)
            raise
        self._reader.join(WAIT)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


class Served:
    def __init__(self, run: Run, root: Path, web_port: int, digest_port: int) -> None:
        self.run, self.root = run, root
        self.web_port, self.digest_port = web_port, digest_port
        self.url = f"http://127.0.0.1:{web_port}/"


def start_server(tmp: Path) -> Served:
    root = tmp / "www"
    root.mkdir()
    (root / "index.html").write_text(PAGE)
    (root / "big.bin").write_bytes(os.urandom(2 << 20))
    (tmp / "server.py").write_text(SERVER)
    web = pick_port()
    run = Run("--expose", f"8080:{web}", "--expose", "9000:0", "--", "server.py", str(root),
              cwd=tmp)
    exposed = re.compile(r"loopstack: exposed virtual 127\.0\.0\.1:(\d+) at "
                         r"http://127\.0\.0\.1:(\d+)/$")
    ports: dict[int, int] = {}
    for _ in range(2):
        m = exposed.match(run.line(lambda s: s.startswith("loopstack: exposed")))
        assert m is not None, run.seen
        ports[int(m[1])] = int(m[2])
    assert run.line(lambda s: s.startswith("server: ready")) == "server: ready loopstack.stream"
    assert ports[8080] == web and ports[9000] not in (0, 9000)
    return Served(run, root, web, ports[9000])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `loopstack run --expose` serving for this module's clients."""
    s = start_server(tmp_path_factory.mktemp("served"))
    try:
        yield s
    finally:
        if s.run.proc.poll() is None:
            s.run.finish()


def fetch_with_curl(url: str, out: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    subprocess.run([curl, "-sSf", "--noproxy", "*", "--max-time", str(int(WAIT)), "-o",
                    str(out), url], check=True, timeout=WAIT + 5)


# -- loopstack run --expose ------------------------------------------------------------------
def test_curl_gets_the_page_and_two_mebibytes(served: Served, tmp_path: Path) -> None:
    fetch_with_curl(served.url, tmp_path / "index.html")
    assert MARKER in (tmp_path / "index.html").read_text()
    fetch_with_curl(served.url + "big.bin", tmp_path / "big.bin")
    want = hashlib.sha256((served.root / "big.bin").read_bytes()).hexdigest()
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == want


def test_real_client_half_closes_and_gets_the_answer(served: Served) -> None:
    payload = os.urandom(1_000_000)
    with socket.create_connection(("127.0.0.1", served.digest_port), timeout=WAIT) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        answer = b""
        while data := c.recv(65536):
            answer += data
    assert answer.decode() == f"1000000 {hashlib.sha256(payload).hexdigest()}"


def test_run_ends_and_frees_the_host_port(tmp_path: Path) -> None:
    s = start_server(tmp_path)
    fetch_with_curl(s.url, tmp_path / "index.html")
    assert s.run.finish() == 0
    assert not any("Traceback" in line for line in s.run.seen), s.run.seen
    assert_port_free(s.web_port)
    assert_port_free(s.digest_port)


# -- a real browser ---------------------------------------------------------------------------
def chromium_argv(chromium: str, profile: Path) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-proxy-server",
            # names resolve to nothing: the browser reaches only the loopback
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}"]


def png_colours(path: Path) -> set[bytes]:
    """The distinct pixel values of an 8-bit, non-interlaced PNG (RGB or
    RGBA), decoded with zlib and struct (RFC 2083's five filters)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and colour in (2, 6), (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        if y % 4 == 0:  # every fourth row is plenty to see what is drawn
            colours.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp * 4))
        prev = line
    return colours


def test_headless_chromium_shows_the_exposed_page(served: Served, chromium: str,
                                                  tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(tmp_path)
    dom = subprocess.run([*chromium_argv(chromium, tmp_path / "profile1"), "--dump-dom",
                          served.url], capture_output=True, text=True, timeout=120, env=env)
    assert MARKER in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    done = subprocess.run([*chromium_argv(chromium, tmp_path / "profile2"),
                           f"--screenshot={shot}", "--window-size=800,600", served.url],
                          capture_output=True, text=True, timeout=120, env=env)
    assert shot.exists(), done.stderr[-2000:]
    colours = png_colours(shot)
    assert len(colours) >= 3, colours  # white, the blue box, the red heading at least
    assert any(px[2] > 200 and px[0] < 60 for px in colours), "the blue box is not drawn"


# -- loopstack run --forward ------------------------------------------------------------------
def test_run_forward_reaches_a_real_echo(tmp_path: Path, real_echo: Any) -> None:
    (tmp_path / "client.py").write_text(CLIENT)
    host, port = real_echo.address
    done = subprocess.run([LOOPSTACK, "run", "--forward", f"7000:{host}:{port}", "--",
                           "client.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"loopstack: forwarding virtual 127.0.0.1:7000 to {host}:{port}\n"
    assert done.stdout == "hello True loopstack.stream\n"
    assert real_echo.accepted == 2  # forward()'s check, then the program's connection


# -- errors: one sentence, exit status 2 ------------------------------------------------------
@pytest.fixture
def prog(tmp_path: Path) -> str:
    path = tmp_path / "never_runs.py"
    path.write_text("raise SystemExit('the program should not have run')\n")
    return str(path)


def test_expose_on_an_ipv6_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("the host has no ::1")
    quick = tmp_path / "quick.py"
    quick.write_text("pass\n")
    assert main(["run", "--expose", "8080:[::1]:0", "--", str(quick)]) == 0
    err = capsys.readouterr().err
    assert re.fullmatch(r"loopstack: exposed virtual \[::1\]:8080 at http://\[::1\]:\d+/\n",
                        err), err


@pytest.mark.parametrize("option,spec,says", [
    ("--expose", "web", "virtual port 'web' is not a port"),
    ("--expose", "8080:99999", "host port '99999' is not a port"),
    ("--expose", "8080:[::1", "'[::1' has no ']:' after its IPv6 address: write VPORT, "
                              "VPORT:HOSTPORT or VPORT:HOST:HOSTPORT"),
    ("--forward", "5432", "the host is missing"),
    ("--forward", "5432:127.0.0.1:0", "port '0' is not a port from 1 to 65535"),
])
def test_malformed_specs(option: str, spec: str, says: str, prog: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", option, spec, "--", prog]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"loopstack run: {option} {spec}: ") and says in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_taken_host_port(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["run", "--expose", f"8080:{port}", "--", prog]) == 2
    err = capsys.readouterr().err
    assert err == (f"loopstack run: --expose 8080:{port}: 127.0.0.1:{port} on the host is "
                   "already in use: choose another host port (0 picks a free one)\n")


def test_unreachable_target_closes_what_was_opened(prog: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    web, dead = pick_port(), pick_port()
    assert main(["run", "--expose", f"8080:{web}", "--forward", f"5432:127.0.0.1:{dead}",
                 "--", prog]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"loopstack: exposed virtual 127.0.0.1:8080 at http://127.0.0.1:{web}/",
        f"loopstack run: --forward 5432:127.0.0.1:{dead}: cannot reach 127.0.0.1:{dead} on "
        "the host (Connection refused): start the service there, or forward to where it "
        "listens"]
    assert_port_free(web)  # the exposure made before the failure was closed


# -- the pytest plugin ------------------------------------------------------------------------
INNER = '''
import socket
from loopstack.socket import implementation


def test_database_on_the_host():
    with socket.create_connection(("127.0.0.1", 7000), timeout=10) as c:
        assert type(implementation(c)).__module__ == "loopstack.stream"
        c.sendall(b"select 1")
        assert c.recv(100) == b"select 1"


def test_again_on_a_fresh_stack(loopstack_stack):
    with loopstack_stack.create_connection(("127.0.0.1", 7000), timeout=10) as c:
        c.sendall(b"again")
        assert c.recv(100) == b"again"
'''


def test_plugin_forward(pytester: pytest.Pytester, real_echo: Any) -> None:
    pytester.makepyfile(test_inner=INNER)
    host, port = real_echo.address
    result = pytester.runpytest("--loopstack", "--loopstack-forward", f"7000:{host}:{port}",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_plugin_forward_bad_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("--loopstack-forward", "7000", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--loopstack-forward '7000': the host is missing" in result.stderr.str()
