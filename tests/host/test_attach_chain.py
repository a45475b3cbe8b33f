"""Which processes attach to a stack (issue 9: test_eintr): a process
started with exec attaches only if it descends from the owner through
attached processes, or through programs that are not Python (``sh -c``).
A Python process that did not attach (``python -E`` ignores PYTHONPATH, so
the start-up hook never ran in it) is on the kernel, and so are the
processes it starts, as on Linux, where all of them are: its server and
its child's client must meet on the same network.

Also: the owner's threads serving attached processes are not the
program's (threading.enumerate(), threading._dangling).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

TIMEOUT = 120

# Run by the last process of each chain: where its sockets go, and what runs
# just above it.
PROBE = '''
import json, os, socket, sys
s = socket.socket()
try:
    from loopstack.socket import implementation
    kind = type(implementation(s)).__name__
except ImportError:
    kind = type(s).__name__
s.close()
parent = os.path.basename(os.readlink(f"/proc/{os.getppid()}/exe"))
print(json.dumps({"socket": kind, "parent": parent}))
'''

# Starts PROBE: the middle of a chain.
MIDDLE = '''
import subprocess, sys
out = subprocess.run([sys.executable, {probe!r}], capture_output=True, text=True,
                     timeout=60)
sys.stdout.write(out.stdout)
sys.stderr.write(out.stderr)
'''

OWNER = '''
import json, subprocess, sys
import loopstack

with loopstack.patch(children=True):
    out = subprocess.run({command}, capture_output=True, text=True, timeout=60,
                         shell={shell})
print(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "")
sys.stderr.write(out.stderr)
'''


def _owner(tmp_path: Path, command: object, shell: bool = False) -> dict[str, str]:
    owner = tmp_path / "owner.py"
    owner.write_text(OWNER.format(command=repr(command), shell=shell))
    proc = subprocess.run([sys.executable, str(owner)], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout.strip())
    return result


def _files(tmp_path: Path) -> tuple[Path, Path]:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    middle = tmp_path / "middle.py"
    middle.write_text(MIDDLE.format(probe=str(probe)))
    return probe, middle


def test_a_child_of_an_unattached_python_uses_the_kernel(tmp_path: Path) -> None:
    _probe, middle = _files(tmp_path)
    got = _owner(tmp_path, [sys.executable, "-E", str(middle)])
    assert got["socket"] == "socket"  # a kernel socket
    assert got["parent"].startswith("python")


def test_a_child_of_an_attached_python_attaches(tmp_path: Path) -> None:
    _probe, middle = _files(tmp_path)
    got = _owner(tmp_path, [sys.executable, str(middle)])
    assert got["socket"] == "RemoteSocket"


def test_a_shell_between_keeps_the_chain(tmp_path: Path) -> None:
    """subprocess.run("python probe.py", shell=True): sh is not Python, so
    the process it starts attaches. ("; true": sh stays the parent rather
    than exec the command.)"""
    probe, _middle = _files(tmp_path)
    got = _owner(tmp_path, f"{sys.executable} {probe}; true", shell=True)
    assert got["socket"] == "RemoteSocket"
    assert not got["parent"].startswith("python")  # the shell was in between


def test_an_unattached_server_and_its_client_meet_on_the_kernel(tmp_path: Path) -> None:
    """test_eintr's shape: a `python -E` process listens (kernel) and its
    child connects to it. The child must not be on the stack."""
    client = tmp_path / "client.py"
    client.write_text(textwrap.dedent('''
        import socket, sys
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as c:
            c.sendall(b"hello")
    '''))
    server = tmp_path / "server.py"
    server.write_text(textwrap.dedent(f'''
        import json, socket, subprocess, sys
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(30)
            child = subprocess.Popen([sys.executable, {str(client)!r},
                                      str(listener.getsockname()[1])])
            try:
                conn, _ = listener.accept()
                with conn:
                    data = conn.recv(100)
            finally:
                child.wait(timeout=30)
        print(json.dumps({{"socket": data.decode(), "parent": ""}}))
    '''))
    got = _owner(tmp_path, [sys.executable, "-E", str(server)])
    assert got["socket"] == "hello"


def test_serving_threads_are_not_the_programs(tmp_path: Path) -> None:
    """A long-lived attached child (a forkserver, a resource tracker) keeps
    its call connection; the owner's thread serving it is not one of the
    program's threads, as a kernel serving a process adds none."""
    owner = tmp_path / "owner.py"
    owner.write_text(textwrap.dedent('''
        import subprocess, sys, threading
        import loopstack

        with loopstack.patch(children=True):
            names = {t.name for t in threading.enumerate()}
            dangling = set(threading._dangling)
            child = subprocess.Popen(
                [sys.executable, "-c",
                 "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
                 "print('ready', flush=True); sys.stdin.read()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                ready = child.stdout.readline().strip()
                now = {t.name for t in threading.enumerate()}
                grew = set(threading._dangling) - dangling
            finally:
                child.stdin.close()
                child.wait(timeout=60)
        print(ready, sorted(now - names), len(grew))
    '''))
    proc = subprocess.run([sys.executable, str(owner)], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ready", "[]", "0"]
