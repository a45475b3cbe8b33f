"""`loopstack run`: an unmodified program (or module) on a fresh stack."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.utils import rdpcap

from loopstack.cli.main import main

from .conftest import KernelLog

ECHO = textwrap.dedent('''
    """Echo over TCP: a server thread and a client; exits with argv[2]."""
    import socket, sys, threading, time
    from loopstack.socket import implementation  # the loopstack socket behind the object

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    threading.Thread(target=serve).start()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(sys.argv[1].encode())
        c.shutdown(socket.SHUT_WR)
        reply = b""
        while data := c.recv(1024):
            reply += data
    print(f"echo={reply.decode()} port={port} elapsed={time.monotonic() - start:.3f}")
    print(f"socket={type(implementation(c)).__module__}.{type(implementation(c)).__name__}")
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
''')


@pytest.fixture
def prog(tmp_path: Path) -> Path:
    path = tmp_path / "echo_prog.py"
    path.write_text(ECHO)
    return path


def parse(out: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def test_program_with_stats_and_exit_code(prog: Path, capsys: pytest.CaptureFixture[str],
                                          kernel: KernelLog) -> None:
    code = main(["run", "--stats", "--", str(prog), "hello", "3"])
    out, err = capsys.readouterr()
    assert code == 3
    got = parse(out)
    assert got["echo"] == "hello"
    assert got["socket"] == "loopstack.stream.StreamSocket"
    assert "-- sockets (ss -tuan) --" in err
    assert "LISTEN" in err and f"127.0.0.1:{got['port']}" in err
    assert "TcpActiveOpens                   1" in err
    assert "TcpPassiveOpens                  1" in err


def test_module_form_pcap_and_netem(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, kernel: KernelLog) -> None:
    (tmp_path / "echo_mod.py").write_text(ECHO)
    monkeypatch.chdir(tmp_path)  # `-m` finds modules in the current directory, as python -m
    pcap = tmp_path / "run.pcap"
    code = main(["run", "--pcap", str(pcap), "--netem", "delay 20ms", "--seed", "4",
                 "-m", "echo_mod", "via-module"])
    out, _ = capsys.readouterr()
    assert code == 0
    got = parse(out)
    assert got["echo"] == "via-module"
    # SYN, SYN-ACK, then the data and its echo: four one-way trips of 20 ms at least.
    assert float(got["elapsed"]) >= 0.08
    packets = rdpcap(str(pcap))
    port = int(got["port"])
    syns = [p for p in packets if TCP in p and p[TCP].flags == "S" and p[TCP].dport == port]
    assert len(syns) == 1
    assert any(TCP in p and bytes(p[TCP].payload) == b"via-module" for p in packets)


def test_uncaught_exception_is_printed_and_exits_1(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\n"
                   "def go():\n"
                   "    raise ValueError('the program failed')\n"
                   "go()\n")
    assert main(["run", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err
    assert 'bad.py", line 4' in err and "ValueError: the program failed" in err
    assert "runpy" not in err and "loopstack" not in err


def test_threads_left_running_are_waited_for(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The main thread ends at once; the echo happens in threads it started.
    The stack must outlive them, as the interpreter waits for them."""
    prog = tmp_path / "threads.py"
    prog.write_text(textwrap.dedent('''
        import socket, threading, time
        from loopstack.socket import implementation
        server = socket.create_server(("127.0.0.1", 0))
        def serve():
            conn, _ = server.accept()
            conn.sendall(conn.recv(100).upper())
            conn.close()
        def client():
            time.sleep(0.1)
            with socket.create_connection(server.getsockname()) as c:
                c.sendall(b"late")
                print("reply", c.recv(100).decode(), type(implementation(c)).__module__)
        threading.Thread(target=serve).start()
        threading.Thread(target=client).start()
    '''))
    assert main(["run", str(prog)]) == 0
    assert capsys.readouterr().out.split() == ["reply", "LATE", "loopstack.stream"]


def test_missing_program_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--", "/nonexistent/prog.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loopstack run: /nonexistent/prog.py: no such file")
    assert "Traceback" not in err


def test_console_script(prog: Path) -> None:
    script = Path(sys.executable).parent / "loopstack"
    assert script.exists(), "the loopstack console script is not installed next to python"
    done = subprocess.run([str(script), "run", "--stats", "--", str(prog), "sub", "5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 5, done.stderr
    got = parse(done.stdout)
    assert got["echo"] == "sub" and got["socket"] == "loopstack.stream.StreamSocket"
    assert "TcpActiveOpens" in done.stderr


# -- the program's arguments are the program's, as python passes them ------------------
ARGV = textwrap.dedent('''
    import json, socket, sys
    from loopstack.socket import implementation
    s = socket.socket()
    print(json.dumps({"argv": sys.argv, "name": __name__,
                      "loopstack": type(implementation(s)).__module__.startswith("loopstack")}))
    s.close()
''')


def _ran(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_module_arguments_are_the_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`-m MODULE ARGS`: every argument after the module is the module's,
    loopstack's own option names and `--` included (python -m's rule)."""
    (tmp_path / "argv_mod.py").write_text(ARGV)
    monkeypatch.chdir(tmp_path)
    got = _ran(capsys, ["run", "--seed", "2", "-m", "argv_mod", "--stats", "-m", "x",
                        "--", "-c", "--version"])
    assert got["argv"] == [str(tmp_path / "argv_mod.py"), "--stats", "-m", "x", "--", "-c",
                           "--version"]
    assert got["name"] == "__main__" and got["loopstack"] is True
    # -mMODULE, as python accepts it, and -m after loopstack's `--`.
    assert _ran(capsys, ["run", "-margv_mod", "-v"])["argv"][1:] == ["-v"]  # type: ignore[index]
    assert _ran(capsys, ["run", "--stats", "--", "-m", "argv_mod", "-x"]
                )["argv"][1:] == ["-x"]  # type: ignore[index]


def test_program_arguments_are_the_programs(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "argv_prog.py"
    prog.write_text(ARGV)
    got = _ran(capsys, ["run", "--passthrough", str(prog), "--pcap", "x", "-c", "1", "--"])
    assert got["argv"] == [str(prog), "--pcap", "x", "-c", "1", "--"]
    got = _ran(capsys, ["run", "--", str(prog), "--", "-m"])
    assert got["argv"] == [str(prog), "--", "-m"]


def test_code_form_is_python_c(capsys: pytest.CaptureFixture[str]) -> None:
    """`-c CODE ARGS` as `python -c`: sys.argv[0] is "-c", the code runs as
    __main__, its exit status is the command's."""
    code = ("import sys, socket; from loopstack.socket import implementation; "
            "print(sys.argv, __name__, type(implementation(socket.socket())).__module__)")
    assert main(["run", "-c", code + "; sys.exit(4)", "a", "--stats", "-m"]) == 4
    out = capsys.readouterr().out
    assert out.split("]")[0] + "]" == "['-c', 'a', '--stats', '-m']"
    assert out.split()[-2:] == ["__main__", "loopstack.stream"]


def test_a_missing_module_name_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--stats", "-m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loopstack run: argument -m: expected one argument")
    assert main(["run", "--stats"]) == 2
    assert "no program given" in capsys.readouterr().err


def test_console_script_passes_module_options() -> None:
    """The reported failure: `loopstack run -m pytest --version` said
    "unrecognized arguments"."""
    script = Path(sys.executable).parent / "loopstack"
    done = subprocess.run([str(script), "run", "-m", "pytest", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pytest" in done.stdout + done.stderr
