"""`loopstack run --clock virtual`: a program's waits cost no wall time.

Each program runs in a subprocess (the CLI changes the asyncio policy and
patches the process); the program itself reports what it saw: virtual
time from ``loop.time()`` or the stack, and whether a wait that is long in
virtual time took little wall time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loopstack.cli.main import main

THREADED = textwrap.dedent('''
    """20 exchanges through a threaded server over a 200 ms delay each way,
    and a client read timeout of 30 s that expires."""
    import socket, threading, time
    from loopstack.patch import current

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        for _ in range(20):
            c, _ = srv.accept()
            with c:
                c.sendall(c.recv(10))

    threading.Thread(target=serve, daemon=True).start()
    stack = current()[0]
    v0, t0 = stack.now(), time.monotonic()
    for i in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"x")
            assert c.recv(10) == b"x"
    silent = socket.create_server(("127.0.0.1", 0))
    with socket.create_connection(silent.getsockname(), timeout=30) as c:
        try:
            c.recv(1)
            print("no timeout")
        except TimeoutError:
            pass
    print(f"virtual={stack.now() - v0:.3f} wall={time.monotonic() - t0:.3f}")
''')

ASYNC = textwrap.dedent('''
    """An asyncio server that answers after asyncio.sleep(30)."""
    import asyncio, time

    async def main():
        loop = asyncio.get_running_loop()
        v0, t0 = loop.time(), time.monotonic()

        async def handle(r, w):
            data = await r.read(100)
            await asyncio.sleep(30)
            w.write(data)
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hi")
        await w.drain()
        reply = await r.read(100)
        print(f"reply={reply.decode()} loop={type(loop).__name__} "
              f"virtual={loop.time() - v0:.3f} wall={time.monotonic() - t0:.3f}")
        w.close()
        srv.close()

    asyncio.run(main())
''')


def _run(tmp_path: Path, source: str, *options: str) -> dict[str, str]:
    prog = tmp_path / "prog.py"
    prog.write_text(source)
    done = subprocess.run([sys.executable, "-m", "loopstack", "run", *options, str(prog)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    return dict(part.split("=", 1) for part in last.split())


def test_threaded_program_on_virtual_time(tmp_path: Path) -> None:
    seen = _run(tmp_path, THREADED, "--clock", "virtual", "--netem", "delay 200ms")
    # 20 connections of 2 round trips at 400 ms each, then a 30 s timeout.
    assert float(seen["virtual"]) >= 20 * 2 * 0.4 + 30
    assert float(seen["wall"]) < float(seen["virtual"]) / 4


def test_asyncio_program_gets_a_virtual_time_loop(tmp_path: Path) -> None:
    seen = _run(tmp_path, ASYNC, "--clock", "virtual", "--seed", "3", "--netem", "delay 10ms")
    assert seen["reply"] == "hi"
    assert seen["loop"] == "VirtualTimeEventLoop"
    assert float(seen["virtual"]) >= 30.04
    assert float(seen["wall"]) < 10


def test_same_seed_same_virtual_time(tmp_path: Path) -> None:
    runs = [_run(tmp_path, ASYNC, "--clock", "virtual", "--seed", "9", "--netem",
                 "delay 10ms 5ms")["virtual"] for _ in range(2)]
    assert runs[0] == runs[1]


def test_real_clock_keeps_the_default_loop(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text("import asyncio\nasync def m():\n"
                    "    print(type(asyncio.get_running_loop()).__name__)\n"
                    "asyncio.run(m())\n")
    done = subprocess.run([sys.executable, "-m", "loopstack", "run", str(prog)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "_UnixSelectorEventLoop"


@pytest.mark.parametrize("option", [["--expose", "8080"], ["--forward", "5432:127.0.0.1:5432"],
                                    ["--passthrough"]])
def test_real_socket_options_are_refused_on_virtual_time(
        option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--clock", "virtual", *option, "-c", "pass"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert option[0] in err and "--clock real" in err


def test_unknown_clock_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--clock", "fast", "-c", "pass"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and err.count("\n") == 1


URGENT = textwrap.dedent('''
    import select, socket
    s = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(s.getsockname())
    a, _ = s.accept()
    fd = a.fileno()
    c.send(b"!", socket.MSG_OOB)
    r, _, x = select.select([fd], [], [fd], 0)
    print(f"readable={bool(r)} exceptional={bool(x)}")
''')


@pytest.mark.parametrize("option,readable", [([], "True"), (["--exact-urgent"], "False")])
def test_exact_urgent_option(tmp_path: Path, option: list[str], readable: str) -> None:
    """A lone urgent byte: exceptional either way; readable too only with the
    default AF_UNIX descriptor (readiness.py, docs/differences.md)."""
    seen = _run(tmp_path, URGENT, *option)
    assert seen == {"readable": readable, "exceptional": "True"}
