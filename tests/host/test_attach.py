"""Processes share one stack: forked, spawned and exec'd Python children of
the stack's owner use its sockets (issue 8).

Each program runs under `loopstack run` (or `loopstack.patch()`) in a fresh
interpreter and prints what it saw; the test reads those lines. Every
program also binds its virtual port with the C-level ``_socket.socket``
(which no patch reaches) while the virtual service listens: that succeeds
only because the port never existed on the real kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def pick_port() -> int:
    """A port the kernel says is free on 127.0.0.1 now (and the next few)."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 60000:
            return port

TIMEOUT = 60  # seconds for one program; each normally takes well under two

# Prepended to every program: kernel_free(port) says whether the real kernel
# lets a socket bind the port now (True: nothing of ours is there).
PRELUDE = textwrap.dedent('''
    import _socket

    def kernel_free(port, host="127.0.0.1"):
        fam = _socket.AF_INET6 if ":" in host else _socket.AF_INET
        s = _socket.socket(fam, _socket.SOCK_STREAM)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
        finally:
            s.close()
''')


def run(tmp_path: Path, body: str, *args: str, patch_only: bool = False,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    prog = tmp_path / "prog.py"
    prog.write_text(PRELUDE + textwrap.dedent(body))
    if patch_only:
        cmd = [sys.executable, str(prog), *args]
    else:
        cmd = [sys.executable, "-m", "loopstack", "run", str(prog), *args]
    env = {k: v for k, v in os.environ.items() if k != "LOOPSTACK_ATTACH"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def lines(proc: subprocess.CompletedProcess[str], prefix: str) -> list[str]:
    return [ln[len(prefix):].strip() for ln in proc.stdout.splitlines() if ln.startswith(prefix)]


def test_forking_tcp_server_serves_three_clients_from_three_children(tmp_path: Path) -> None:
    proc = run(tmp_path, '''
        import os, socket, socketserver, sys, threading
        port = int(sys.argv[1])

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline()
                self.wfile.write(b"%d %s" % (os.getpid(), line))

        with socketserver.ForkingTCPServer(("127.0.0.1", port), Handler) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            print("kernel_free", kernel_free(port))
            for i in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"hello %d\\n" % i)
                    print("reply", c.makefile("rb").readline().decode().strip())
            print("owner", os.getpid())
            server.shutdown()
    ''', str(pick_port()))
    replies = lines(proc, "reply")
    assert [r.split(" ", 1)[1] for r in replies] == ["hello 0", "hello 1", "hello 2"]
    pids = {r.split()[0] for r in replies}
    assert len(pids) == 3 and lines(proc, "owner")[0] not in pids
    assert lines(proc, "kernel_free") == ["True"]


MP_SERVER = '''
    import multiprocessing as mp, os, socket, sys

    def server(queue, port):
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen()
        queue.put((port, os.getpid()))
        conn, _ = s.accept()
        conn.sendall(b"child %d heard " % os.getpid() + conn.recv(16))
        conn.close()
        s.close()

    if __name__ == "__main__":
        method, port = sys.argv[1], int(sys.argv[2])
        ctx = mp.get_context(method)
        queue = ctx.Queue()
        p = ctx.Process(target=server, args=(queue, port))
        p.start()
        _, child = queue.get(timeout=30)
        print("kernel_free", kernel_free(port))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"ping")
            print("reply", c.recv(100).decode())
        p.join(20)
        print("child", child, "exit", p.exitcode)
'''


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_server_reached_by_parent(tmp_path: Path, method: str) -> None:
    proc = run(tmp_path, MP_SERVER, method, str(pick_port()))
    child = lines(proc, "child")[0].split()
    assert lines(proc, "reply") == [f"child {child[0]} heard ping"]
    assert child[-1] == "0"
    assert lines(proc, "kernel_free") == ["True"]


def test_python_subprocess_server_reached_by_parent(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(PRELUDE + textwrap.dedent('''
        import socket, sys
        s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
        print("listening", flush=True)
        conn, _ = s.accept()
        conn.sendall(conn.recv(100).upper())
        conn.close()
    '''))
    proc = run(tmp_path, '''
        import socket, subprocess, sys
        port = int(sys.argv[1])
        server = subprocess.Popen([sys.executable, "server.py", str(port)],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "listening"
        print("kernel_free", kernel_free(port))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"from the parent")
            print("reply", c.recv(100).decode())
        print("exit", server.wait(20))
    ''', str(pick_port()))
    assert lines(proc, "reply") == ["FROM THE PARENT"]
    assert lines(proc, "exit") == ["0"]
    assert lines(proc, "kernel_free") == ["True"]


def test_fork_under_patch(tmp_path: Path) -> None:
    """The same fork case with ``loopstack.patch()`` in the program itself."""
    proc = run(tmp_path, '''
        import os, socket, sys
        import loopstack
        port = int(sys.argv[1])
        with loopstack.patch() as stack:
            listener = socket.create_server(("127.0.0.1", port))
            pid = os.fork()
            if pid == 0:
                conn, _ = listener.accept()
                conn.sendall(b"forked child " + conn.recv(10))
                conn.close()
                os._exit(0)
            listener.close()  # the child still holds it: it keeps listening
            print("kernel_free", kernel_free(port))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"hi")
                print("reply", c.recv(100).decode())
            print("status", os.waitpid(pid, 0)[1])
            print("socket", type(loopstack.socket.implementation(c)).__module__)
    ''', str(pick_port()), patch_only=True)
    assert lines(proc, "reply") == ["forked child hi"]
    assert lines(proc, "status") == ["0"]
    assert lines(proc, "kernel_free") == ["True"]
    assert lines(proc, "socket") == ["loopstack.stream"]


def test_twenty_forked_handlers_at_once(tmp_path: Path) -> None:
    proc = run(tmp_path, '''
        import os, socket, socketserver, sys, threading
        port = int(sys.argv[1])
        N = 20
        arrived = threading.Barrier(N + 1, timeout=30)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                # Every handler waits until all 20 clients have been sent a
                # greeting: 20 children hold their connections at once.
                self.request.sendall(b"%d\\n" % os.getpid())
                self.request.recv(10)
                self.request.sendall(b"bye\\n")

        class Server(socketserver.ForkingTCPServer):
            request_queue_size = 64
            max_children = 64

        def client(i, out):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                f = c.makefile("rb")
                pid = f.readline().strip()
                arrived.wait()
                c.sendall(b"go")
                out[i] = (pid, f.readline().strip())

        with Server(("127.0.0.1", port), Handler) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            out = {}
            threads = [threading.Thread(target=client, args=(i, out)) for i in range(N)]
            for t in threads:
                t.start()
            arrived.wait()
            print("concurrent", len(server.active_children or ()))
            for t in threads:
                t.join(30)
            print("pids", len({pid for pid, _ in out.values()}))
            print("byes", sum(1 for _, b in out.values() if b == b"bye"))
            server.shutdown()
    ''', str(pick_port()))
    assert lines(proc, "pids") == ["20"]
    assert lines(proc, "byes") == ["20"]
    assert lines(proc, "concurrent") == ["20"]


def test_child_killed_mid_transfer_resets_its_peer(tmp_path: Path) -> None:
    proc = run(tmp_path, '''
        import os, signal, socket, sys, time
        port = int(sys.argv[1])
        listener = socket.create_server(("127.0.0.1", port))
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            conn, _ = listener.accept()
            conn.recv(1000)          # reads a little of the transfer, then stalls
            os.write(ready_w, b"x")
            time.sleep(60)
            os._exit(0)
        listener.close()
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"a" * 200_000)
        os.read(ready_r, 1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        try:
            while c.recv(65536):
                pass
            print("peer saw", "EOF")
        except ConnectionResetError:
            print("peer saw", "reset")
        # the stack keeps serving, on the same port too
        again = socket.create_server(("127.0.0.1", port + 1))
        with socket.create_connection(("127.0.0.1", port + 1), timeout=10) as d:
            conn, _ = again.accept()
            d.sendall(b"still here")
            print("after", conn.recv(100).decode())
    ''', str(pick_port()))
    assert lines(proc, "peer saw") == ["reset"]
    assert lines(proc, "after") == ["still here"]


def test_child_exit_closes_with_fin_when_nothing_was_left_unread(tmp_path: Path) -> None:
    proc = run(tmp_path, '''
        import os, socket, sys
        port = int(sys.argv[1])
        listener = socket.create_server(("127.0.0.1", port))
        pid = os.fork()
        if pid == 0:
            conn, _ = listener.accept()
            conn.sendall(b"last words")
            os._exit(0)              # never closes: the exit does
        listener.close()
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        os.waitpid(pid, 0)
        got = b""
        while data := c.recv(100):
            got += data
        print("got", got.decode(), "then EOF")
    ''', str(pick_port()))
    assert lines(proc, "got") == ["last words then EOF"]


OWNER_LEAVES = '''
    import os, socket, sys, time
    import loopstack
    how = sys.argv[1]
    stack = loopstack.Stack()
    with loopstack.patch(stack):
        listener = socket.create_server(("127.0.0.1", 8080))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            listener.settimeout(None)
            try:
                listener.accept()           # blocks in the owner when it goes
                print("child accepted?!", flush=True)
            except OSError as e:
                print("child", e.errno, e.strerror, flush=True)
            try:
                socket.socket()
            except OSError as e:
                print("new socket", e.errno, flush=True)
            os.write(w, b"done")
            os._exit(0)
        os.close(w)
        time.sleep(0.3)
        if how == "kill":
            print("owner killed", flush=True)
            os.kill(os.getpid(), 9)
        stack.close()
        print("owner closed", flush=True)
        print("child", os.read(r, 10).decode(), os.waitpid(pid, 0)[1], flush=True)
'''


@pytest.mark.parametrize("how", ["close", "kill"])
def test_owner_leaving_gives_attached_child_a_clear_error(tmp_path: Path, how: str) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(OWNER_LEAVES))
    # The child outlives a killed owner: read its output through a pipe that
    # closes only when the child exits.
    proc = subprocess.run([sys.executable, str(prog), how], capture_output=True, text=True,
                          timeout=TIMEOUT)
    child = [ln for ln in proc.stdout.splitlines() if ln.startswith("child ")]
    assert child[0].startswith("child 100 ") and "has exited" in child[0], proc.stdout
    assert "new socket 100" in proc.stdout
    if how == "close":
        assert "child done 0" in proc.stdout


def test_inherited_socket_closes_when_its_last_holder_closes(tmp_path: Path) -> None:
    """One socket in both processes: the parent's close sends nothing; the
    child can still use it; the FIN comes with the child's close."""
    proc = run(tmp_path, '''
        import os, select, socket, sys
        port = int(sys.argv[1])
        listener = socket.create_server(("127.0.0.1", port))
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn, _ = listener.accept()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(go_r, 1)
            conn.sendall(b"from the child")
            conn.close()
            os._exit(0)
        conn.sendall(b"from the parent;")
        conn.close()                 # the child still holds it: no FIN
        print("eof after parent close", bool(select.select([client], [], [], 0.2)[0])
              and client.recv(100, socket.MSG_PEEK) == b"")
        os.write(go_w, b"x")
        got = b""
        while data := client.recv(100):
            got += data
        print("got", got.decode())
        os.waitpid(pid, 0)
    ''', str(pick_port()))
    assert lines(proc, "eof after parent close") == ["False"]
    assert lines(proc, "got") == ["from the parent;from the child"]


def test_blocking_timeouts_select_poll_epoll_and_asyncio_in_children(tmp_path: Path) -> None:
    body = '''
        import asyncio, os, select, selectors, socket, sys, threading, time

        def exercise(tag, port):
            out = []
            server = socket.create_server(("127.0.0.1", port))
            server.settimeout(0.2)
            t0 = time.monotonic()
            try:
                server.accept()
            except TimeoutError:
                out.append("timeout %s" % (time.monotonic() - t0 >= 0.19))
            server.settimeout(None)
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            s, _ = server.accept()
            out.append("select-empty %s" % (select.select([s], [], [], 0.05)[0] == []))
            c.sendall(b"x")
            out.append("select %s" % (select.select([s], [], [], 5)[0] == [s]))
            p = select.poll(); p.register(s, select.POLLIN)
            out.append("poll %s" % bool(p.poll(5000)))
            e = select.epoll(); e.register(s.fileno(), select.EPOLLIN)
            out.append("epoll %s" % bool(e.poll(5)))
            sel = selectors.DefaultSelector(); sel.register(s, selectors.EVENT_READ)
            out.append("selectors %s" % bool(sel.select(5)))
            out.append("recv %s" % s.recv(10).decode())
            # one thread blocked in recv does not stop another thread's send
            blocked = threading.Thread(target=lambda: out.append("late %s" % s.recv(10)))
            blocked.start()
            time.sleep(0.1)
            s.sendall(b"y")
            out.append("sent-while-blocked %s" % c.recv(10).decode())
            c.sendall(b"z")
            blocked.join(10)

            async def echo():
                srv = await asyncio.start_server(lambda r, w: w.write(b"async ok"),
                                                 "127.0.0.1", port + 1)
                reader, writer = await asyncio.open_connection("127.0.0.1", port + 1)
                data = await asyncio.wait_for(reader.read(100), 10)
                writer.close()
                srv.close()
                return data.decode()
            out.append("asyncio %s" % asyncio.run(echo()))
            print(tag, "|".join(out), flush=True)

        if __name__ == "__main__":
            port = int(sys.argv[1])
            if len(sys.argv) > 2:       # the spawned program
                exercise("exec", port)
                sys.exit(0)
            pid = os.fork()
            if pid == 0:
                exercise("fork", port)
                os._exit(0)
            os.waitpid(pid, 0)
            import subprocess
            subprocess.run([sys.executable, sys.argv[0], str(port + 10), "exec"], check=True,
                           timeout=60)
    '''
    proc = run(tmp_path, body, str(pick_port()))
    expected = ("timeout True|select-empty True|select True|poll True|epoll True|selectors True"
                "|recv x|sent-while-blocked y|late b'z'|asyncio async ok")
    assert lines(proc, "fork") == [expected]
    assert lines(proc, "exec") == [expected]


def test_grandchildren_share_the_stack(tmp_path: Path) -> None:
    """A fork of a fork, and a subprocess of a subprocess, all on one stack."""
    proc = run(tmp_path, '''
        import os, socket, subprocess, sys
        port = int(sys.argv[1])
        if len(sys.argv) > 2:            # run as a subprocess
            depth = int(sys.argv[2])
            if depth < 2:
                subprocess.run([sys.executable, sys.argv[0], str(port), str(depth + 1)],
                               check=True, timeout=60)
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"exec grandchild")
            sys.exit(0)
        listener = socket.create_server(("127.0.0.1", port))
        pid = os.fork()
        if pid == 0:
            inner = os.fork()
            if inner == 0:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"fork grandchild")
                os._exit(0)
            os._exit(os.waitpid(inner, 0)[1])
        got = []
        conn, _ = listener.accept()
        got.append(conn.recv(100).decode())
        os.waitpid(pid, 0)
        child = subprocess.Popen([sys.executable, sys.argv[0], str(port), "1"])
        conn, _ = listener.accept()
        got.append(conn.recv(100).decode())
        child.wait(30)
        print("got", ",".join(got))
    ''', str(pick_port()))
    assert lines(proc, "got") == ["fork grandchild,exec grandchild"]


def test_patch_children_attaches_subprocesses(tmp_path: Path) -> None:
    proc = run(tmp_path, '''
        import socket, subprocess, sys
        import loopstack
        with loopstack.patch(children=True) as stack:
            listener = socket.create_server(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            child = subprocess.Popen([sys.executable, "-c",
                "import socket,sys; c=socket.create_connection(('127.0.0.1', %d), timeout=10);"
                "c.sendall(b'attached'); c.close()" % port])
            conn, _ = listener.accept()
            print("got", conn.recv(100).decode(), child.wait(30))
            print("kernel_free", kernel_free(port))
        # outside the patch, children are on their own again
        out = subprocess.run([sys.executable, "-c",
                              "import os; print(os.environ.get('LOOPSTACK_ATTACH'))"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        print("after", out)
    ''', patch_only=True)
    assert lines(proc, "got") == ["attached 0"]
    assert lines(proc, "kernel_free") == ["True"]
    assert lines(proc, "after") == ["None"]


def test_unreachable_owner_fails_closed(tmp_path: Path) -> None:
    """A process told to attach to an owner that is gone gets clear errors
    from its sockets, never the real network."""
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent('''
        import socket
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=5)
            print("connected")
        except OSError as e:
            print("error", e.errno)
    '''))
    import loopstack.host.attach as attach

    env = dict(os.environ)
    env["LOOPSTACK_ATTACH"] = f"{tmp_path}/gone.sock|{'00' * 32}|1"
    env["LOOPSTACK_ATTACHED_PID"] = str(os.getpid())  # this process: as if attached
    env["PYTHONPATH"] = os.pathsep.join([attach.HOOK_DIR, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)
    assert proc.stdout.strip() == "error 100"
    assert "could not attach" in proc.stderr


def test_user_sitecustomize_still_runs(tmp_path: Path) -> None:
    (tmp_path / "site_dir").mkdir()
    (tmp_path / "site_dir" / "sitecustomize.py").write_text("import builtins\n"
                                                            "builtins.USER_HOOK = 'ran'\n")
    proc = run(tmp_path, '''
        import os, subprocess, sys
        env = dict(os.environ)
        env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + os.path.abspath("site_dir")
        out = subprocess.run([sys.executable, "-c",
            "import builtins, socket, loopstack.socket as L; "
            "print(builtins.USER_HOOK, type(L.implementation(socket.socket())).__name__)"],
            capture_output=True, text=True, env=env, timeout=30)
        print("child", out.stdout.strip(), out.stderr.strip())
    ''')
    assert lines(proc, "child") == ["ran RemoteSocket"]


def test_pytest_plugin_shares_the_test_stack_with_subprocesses(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner='''
        import socket, subprocess, sys

        def test_server_in_a_subprocess():
            listener = socket.create_server(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            child = subprocess.Popen([sys.executable, "-c",
                "import socket; c = socket.create_connection(('127.0.0.1', %d), timeout=10);"
                "c.sendall(b'from a subprocess'); c.close()" % port])
            conn, _ = listener.accept()
            assert conn.recv(100) == b"from a subprocess"
            assert child.wait(30) == 0

        def test_fixture_too(loopstack_patch):
            listener = socket.create_server(("127.0.0.1", 0))
            child = subprocess.run([sys.executable, "-c",
                "import socket, sys, loopstack.socket as L; "
                "print(type(L.implementation(socket.socket())).__name__)"],
                capture_output=True, text=True, timeout=30)
            assert child.stdout.strip() == "RemoteSocket"
    ''')
    result = pytester.runpytest("--loopstack", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
