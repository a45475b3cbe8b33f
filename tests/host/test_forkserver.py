"""A process forked for the stack's owner gets a working link whatever
socket.setdefaulttimeout() a program set.

Each thread of an attached process asks for its call connection with a
byte on its liveness connection and reads the owner's answer there
(remote.py Link._open); a failure there is taken for the owner gone, for
good. That connection is one end of a socket pair the owner makes before
the fork, and a socket pair takes the program's default timeout: with
socket.setdefaulttimeout(0.1) set in the owner (CPython's
test_multiprocessing TestTimeouts), a forked child read its answer with a
0.1 s deadline, and the child of a forkserver (an attached process that
asks the owner for its child's holder) got a descriptor whose open file
was O_NONBLOCK: its first socket failed with ENETDOWN "owner exited"
unless the owner had answered within microseconds.

The owner here keeps the interpreter busy (a long switch interval and a
loop that holds the GIL) so that its answers come late, as on a loaded
machine; each child thread's first call is a new call connection.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Two threads: each one's first call opens a call connection (the first
# already met the late answer; the second shows it is each, not once). The
# owner's answers are that late on purpose, so each thread costs ~10 s.
THREADS = 2

PROGRAM = textwrap.dedent('''
    import multiprocessing as mp
    import os
    import socket
    import sys
    import threading

    def use_sockets(addr):
        out = []
        def one():
            try:
                with socket.create_connection(addr, timeout=30) as s:
                    s.sendall(b"x")
                out.append("ok")
            except OSError as e:
                out.append(f"{type(e).__name__}: {e}")
        for _ in range(%(threads)d):  # a new thread: a new call connection
            t = threading.Thread(target=one)
            t.start()
            t.join()
        return out

    def child(conn, addr, default):
        if default is None:
            conn.send(use_sockets(addr))
            return
        # An attached process with a default timeout of its own forks.
        socket.setdefaulttimeout(default)
        pid = os.fork()
        if pid == 0:
            try:
                conn.send(use_sockets(addr))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    def main():
        method, where, default = sys.argv[1], sys.argv[2], float(sys.argv[3])
        ctx = mp.get_context(method)
        if where == "owner":
            socket.setdefaulttimeout(default)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(32)  # never accepted: the handshakes complete in the backlog
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=child,
                        args=(w, srv.getsockname(), default if where == "child" else None))
        p.start()
        w.close()
        sys.setswitchinterval(0.05)
        while not r.poll(0) and p.is_alive():
            for _ in range(100000):  # holds the GIL: the owner answers late
                pass
        sys.setswitchinterval(0.005)
        try:
            for line in r.recv():
                print(line, flush=True)
        except EOFError:
            print("no result", flush=True)
        p.join(30)
        srv.close()
        print("exit", p.exitcode, flush=True)

    if __name__ == "__main__":
        main()
''') % {"threads": THREADS}


def _run(prog: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``loopstack run`` the program in a session of its own, so that a
    run that hangs takes its forkserver and children with it."""
    proc = subprocess.Popen([sys.executable, "-m", "loopstack", "run", str(prog), *args],
                            cwd=prog.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung: {out}\n{err}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the session is left
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(("method", "where", "default"), [
    # CPython's TestTimeouts under "forkserver": the owner's default timeout
    # made the descriptor the forkserver's child got O_NONBLOCK.
    ("forkserver", "owner", "5"),
    # A child forked from the owner: its liveness connection had the
    # owner's default timeout as a deadline.
    ("fork", "owner", "0.001"),
    # An attached process with a default timeout forks: the child's object
    # for the descriptor it got took that default.
    ("spawn", "child", "0.001"),
])
def test_child_sockets_work_whatever_the_default_timeout(
        tmp_path: Path, method: str, where: str, default: str) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    done = _run(prog, method, where, default)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ok"] * THREADS + ["exit 0"], done.stderr
