"""A program's socket.setdefaulttimeout() is the program's: the attach
machinery's own connections (host/channel.py) stay blocking, so a forked
child's call that waits longer than the program's default timeout is a
wait, not "the owner has gone" (CPython's test_multiprocessing TestTimeouts
sets setdefaulttimeout(0.1))."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent('''
    import os, socket, time
    socket.setdefaulttimeout(0.1)
    srv = socket.socket()
    srv.settimeout(None)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    pid = os.fork()
    if pid == 0:
        c, _ = srv.accept()  # waits 0.5 s in a call to the owner
        c.settimeout(None)
        print("child got", c.recv(10).decode(), flush=True)
        os._exit(0)
    time.sleep(0.5)
    s = socket.socket()
    s.settimeout(None)
    s.connect(srv.getsockname())
    s.sendall(b"hi")
    _, status = os.waitpid(pid, 0)
    print("status", status, flush=True)
''')


def test_forked_child_waits_past_the_default_timeout(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    done = subprocess.run([sys.executable, "-m", "loopstack", "run", str(prog)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["child got hi", "status 0"], done.stderr
