"""Processes sharing one stack, pushed harder: what a demanding program does
with sockets in forked, spawned and exec'd children (UDP servers, TLS,
asyncio, makefile, signals, threads that fork, thousands of calls), and
what the owner must not leak or get wrong meanwhile.

Each case is a small program run in a fresh interpreter (under
`loopstack run`, or with its own `loopstack.patch()`), with a timeout; it
prints what it saw and the test reads those lines. Waits inside the
programs are bounded; nothing measures time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TIMEOUT = 60  # seconds for one program; each normally takes one or two

# Prepended to every program.
PRELUDE = textwrap.dedent('''
    import os, sys, time

    def nfd():
        """Descriptors this process has open."""
        return len(os.listdir("/proc/self/fd"))

    def until(check, seconds=10):
        """Poll check() until it is true or the time is up; its last value."""
        end = time.monotonic() + seconds
        while True:
            value = check()
            if value or time.monotonic() > end:
                return value
            time.sleep(0.02)

    def say(*parts):
        """A line on stdout in one write(2): lines that processes print at
        once never mix."""
        os.write(1, (" ".join(str(p) for p in parts) + "\\n").encode())

    def owner_stack():
        import loopstack.patch
        return sys.modules["loopstack.patch"].current()[0]
''')


def run(tmp_path: Path, body: str, *args: str, patch_only: bool = False
        ) -> subprocess.CompletedProcess[str]:
    prog = tmp_path / "prog.py"
    prog.write_text(PRELUDE + textwrap.dedent(body))
    cmd = [sys.executable, str(prog), *args] if patch_only else \
        [sys.executable, "-m", "loopstack", "run", str(prog), *args]
    env = {k: v for k, v in os.environ.items() if k != "LOOPSTACK_ATTACH"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def said(proc: subprocess.CompletedProcess[str], prefix: str) -> list[str]:
    """What the program printed after ``prefix`` (a line's first words)."""
    return [ln[len(prefix):].strip() for ln in proc.stdout.splitlines()
            if ln.startswith(prefix + " ")]


def expect(proc: subprocess.CompletedProcess[str], prefix: str, wanted: list[str]) -> None:
    got = said(proc, prefix)
    assert got == wanted, f"{prefix!r}: {got} != {wanted}\n{proc.stdout}\n{proc.stderr}"


def test_a_childs_timeout_is_its_own(tmp_path: Path) -> None:
    """A timeout belongs to each process's socket object: a child's
    settimeout() on an inherited listener must not change the owner's."""
    proc = run(tmp_path, '''
        import socket, threading
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            listener.settimeout(0.05)
            try:
                listener.accept()
            except TimeoutError:
                say("child timed out")
            os._exit(0)
        os.waitpid(pid, 0)
        say("owner timeout", listener.gettimeout())
        # the owner's accept is still a blocking one
        threading.Thread(target=lambda: (time.sleep(0.3), socket.create_connection(
            ("127.0.0.1", port), timeout=10))).start()
        try:
            conn, _ = listener.accept()
            say("owner accepted", conn.gettimeout())
        except TimeoutError:
            say("owner accepted timed out")
    ''')
    expect(proc, "child", ["timed out"])
    expect(proc, "owner timeout", ["None"])
    expect(proc, "owner accepted", ["None"])


def test_an_interrupted_recv_in_a_child_takes_nothing(tmp_path: Path) -> None:
    """SIGINT reaches a child blocked in recv: KeyboardInterrupt, and the
    bytes that arrive afterwards go to its next recv (Linux: an interrupted
    recv() takes nothing), not to the abandoned call waiting in the owner."""
    proc = run(tmp_path, '''
        import signal, socket
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname(), timeout=10)
        conn, _ = listener.accept()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            conn.settimeout(None)
            os.write(ready_w, b"b")
            try:
                conn.recv(100)
                say("interrupt missed")
            except KeyboardInterrupt:
                say("interrupt caught")
            os.write(ready_w, b"i")
            conn.settimeout(10)
            say("child then got", conn.recv(100).decode())
            conn.sendall(b"and can still send")
            os._exit(0)
        os.read(ready_r, 1)
        time.sleep(0.2)               # let the child's recv start waiting
        os.kill(pid, signal.SIGINT)
        os.read(ready_r, 1)
        client.sendall(b"sent after the interrupt")
        say("owner got", client.recv(100).decode())
        say("status", os.waitpid(pid, 0)[1])
    ''')
    expect(proc, "interrupt", ["caught"])
    expect(proc, "child then got", ["sent after the interrupt"])
    expect(proc, "owner got", ["and can still send"])
    expect(proc, "status", ["0"])


def test_the_owner_closing_its_copy_does_not_break_a_waiting_child(tmp_path: Path) -> None:
    """The owner closes a socket while a forked child waits in select() and
    recv, or in a sendall bigger than the buffers: as on Linux the child's
    calls go on (the socket lives while the child holds it); every byte
    arrives once."""
    proc = run(tmp_path, '''
        import hashlib, select, socket
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        data = os.urandom(12 << 20)
        a = socket.create_connection(("127.0.0.1", port), timeout=20)
        conn_a, _ = listener.accept()
        b = socket.create_connection(("127.0.0.1", port), timeout=20)
        conn_b, _ = listener.accept()
        ready_r, ready_w = os.pipe()
        number = conn_a.fileno()
        pid = os.fork()
        if pid == 0:
            conn_a.settimeout(10)
            conn_b.settimeout(None)
            os.write(ready_w, b"go")
            try:
                # select() first, on the number the owner had: the inherited
                # readiness descriptor, before any call
                readable = select.select([number], [], [], 10)[0] == [number]
                say("child select", readable, conn_a.fileno() == number,
                    conn_a.recv(100).decode())
                os.write(ready_w, b"rv")
                say("child recv", conn_a.recv(100).decode())
                conn_b.sendall(data)
                say("child sendall done")
            except OSError as e:
                say("child failed", e)
            os._exit(0)
        os.read(ready_r, 2)
        a.sendall(b"first")
        os.read(ready_r, 2)
        time.sleep(0.2)               # the child's recv waits in the owner now
        conn_a.close()
        a.sendall(b"after the owner closed")
        time.sleep(0.2)               # the child's sendall fills the buffers and waits
        conn_b.close()
        got = bytearray()
        while chunk := b.recv(1 << 20):
            got += chunk
        say("received", len(got) == len(data) and
              hashlib.sha256(got).digest() == hashlib.sha256(data).digest())
        os.waitpid(pid, 0)
    ''')
    expect(proc, "child select", ["True True first"])
    expect(proc, "child recv", ["after the owner closed"])
    expect(proc, "child sendall", ["done"])
    expect(proc, "received", ["True"])


def test_two_hundred_forked_handlers_leave_nothing_behind(tmp_path: Path) -> None:
    """ForkingTCPServer: 200 short-lived handlers. The owner ends with the
    descriptors, threads and bookkeeping it started with, and its socket
    table shows only the listener once the children are gone."""
    proc = run(tmp_path, '''
        import socket, socketserver, threading

        class Upper(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(self.rfile.readline().upper())

        def clients(n):
            for i in range(n):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"line %d\\n" % i)
                    assert c.makefile("rb").readline() == b"LINE %d\\n" % i

        stack = owner_stack()
        with socketserver.ForkingTCPServer(("127.0.0.1", 0), Upper) as server:
            port = server.server_address[1]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            clients(3)                 # the attach server and its threads exist now
            until(lambda: not server.active_children)
            attach = stack.attach_server
            until(lambda: not attach._holders)
            fds, threads = nfd(), threading.active_count()
            clients(200)
            until(lambda: not server.active_children)
            until(lambda: not attach._holders and nfd() <= fds and
                  threading.active_count() <= threads)
            say("fd growth", nfd() - fds)
            say("thread growth", threading.active_count() - threads)
            say("holders", len(attach._holders), "shared", len(attach._shared),
                  "channels", len(attach._channels))
            until(lambda: len(stack.sockets()) == 1)
            say("table", [(r["proto"], r["state"]) for r in stack.sockets()])
            server.shutdown()
    ''')
    assert int(said(proc, "fd growth")[0]) <= 2
    assert int(said(proc, "thread growth")[0]) <= 1
    expect(proc, "holders", ["0 shared 0 channels 0"])
    expect(proc, "table", ["[('tcp', 'LISTEN')]"])


def test_udp_in_children(tmp_path: Path) -> None:
    """ForkingUDPServer replying with the inherited socket's sendto;
    recvmsg with IP_PKTINFO, recvmsg_into and recvfrom_into with MSG_TRUNC
    in a forked child; a connected UDP socket in a spawned child; a datagram
    too large for any channel frame is EMSGSIZE, as Linux says for any
    datagram over 65535 bytes."""
    proc = run(tmp_path, '''
        import socket, socketserver, struct, subprocess, threading
        IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)

        class Echo(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                sock.sendto(data.upper(), self.client_address)

        with socketserver.ForkingUDPServer(("127.0.0.1", 0), Echo) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.settimeout(10)
            for i in range(3):
                c.sendto(b"ping %d" % i, server.server_address)
                say("echo", c.recvfrom(100)[0].decode())
            server.shutdown()

        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        pid = os.fork()
        if pid == 0:
            u.settimeout(10)
            u.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            data, anc, flags, addr = u.recvmsg(3, socket.CMSG_SPACE(12))
            (level, kind, raw), = anc
            ifindex, spec, dst = struct.unpack("i4s4s", raw)
            say("recvmsg", data.decode(), level == socket.IPPROTO_IP, kind == IP_PKTINFO,
                  socket.inet_ntoa(dst), flags & socket.MSG_TRUNC != 0, addr[0])
            bufs = [bytearray(2), bytearray(3)]
            n, anc, flags, addr = u.recvmsg_into(bufs, socket.CMSG_SPACE(12))
            say("recvmsg_into", n, bytes(bufs[0] + bufs[1]).decode(), len(anc),
                  flags & socket.MSG_TRUNC != 0)
            buf = bytearray(4)
            n, addr = u.recvfrom_into(buf, 2, socket.MSG_TRUNC)
            say("recvfrom_into", n, bytes(buf[:2]).decode())
            for size in (70_000, 70 << 20):
                try:
                    u.sendto(bytes(size), ("127.0.0.1", 9))
                except OSError as e:
                    say("oversized", e.errno == __import__("errno").EMSGSIZE)
            u.sendto(b"fine", addr)
            os._exit(0)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(10)
        for d in (b"abcdef", b"ghijkl", b"mnopqr"):
            s.sendto(d, u.getsockname())
        say("after", s.recv(100).decode())
        os.waitpid(pid, 0)

        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("127.0.0.1", 0))
        srv.settimeout(10)
        child = subprocess.Popen([sys.executable, "-c", """if 1:
            import socket, sys
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.connect(("127.0.0.1", int(sys.argv[1])))
            c.settimeout(10)
            c.send(b"connected")
            print(c.recv(100).decode(), c.getpeername()[1] == int(sys.argv[1]))
        """, str(srv.getsockname()[1])], stdout=subprocess.PIPE, text=True)
        data, addr = srv.recvfrom(100)
        srv.sendto(data.upper(), addr)
        say("spawned", child.communicate(timeout=30)[0].strip())
    ''')
    expect(proc, "echo", ["PING 0", "PING 1", "PING 2"])
    expect(proc, "recvmsg", ["abc True True 127.0.0.1 True 127.0.0.1"])
    expect(proc, "recvmsg_into", ["5 ghijk 1 True"])
    expect(proc, "recvfrom_into", ["6 mn"])
    expect(proc, "oversized", ["True", "True"])
    expect(proc, "after", ["fine"])
    expect(proc, "spawned", ["CONNECTED True"])


def test_tls_http_and_urllib_in_children(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem"))
    proc = run(tmp_path, '''
        import http.server, socket, ssl, subprocess, threading, urllib.request
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain("server.pem")
        client_ctx = ssl.create_default_context(cafile="ca.pem")
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        pid = os.fork()                 # TLS server in a forked child
        if pid == 0:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"child heard " + tls.recv(100))
            os._exit(0)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"hello")
            say("tls", tls.recv(100).decode(), tls.version() is not None)
        os.waitpid(pid, 0)

        pid = os.fork()                 # TLS client in a forked child
        if pid == 0:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"from the child")
                say("tls-client", tls.recv(100).decode())
            os._exit(0)
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"owner heard " + tls.recv(100))
        os.waitpid(pid, 0)

        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"owner page " + self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        owner_http = http.server.HTTPServer(("127.0.0.1", 0), Hello)
        threading.Thread(target=owner_http.handle_request, daemon=True).start()
        child = subprocess.Popen([sys.executable, "-c", """if 1:
            import http.server, sys, urllib.request
            class Hello(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = b"child page " + self.path.encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            srv = http.server.HTTPServer(("127.0.0.1", 0), Hello)
            print(srv.server_address[1], flush=True)
            srv.handle_request()
            srv.handle_request()
            url = "http://127.0.0.1:%s/back" % sys.argv[1]
            print(urllib.request.urlopen(url, timeout=10).read().decode(), flush=True)
        """, str(owner_http.server_address[1])], stdout=subprocess.PIPE, text=True)
        child_port = int(child.stdout.readline())
        for path in ("/a", "/b"):
            url = "http://127.0.0.1:%d%s" % (child_port, path)
            say("urllib", urllib.request.urlopen(url, timeout=10).read().decode())
        say("child urllib", child.stdout.readline().strip(), child.wait(30))
    ''')
    expect(proc, "tls", ["child heard hello True"])
    expect(proc, "tls-client", ["owner heard from the child"])
    expect(proc, "urllib", ["child page /a", "child page /b"])
    expect(proc, "child urllib", ["owner page /back 0"])


def test_asyncio_in_a_child_with_fifty_clients_and_a_refused_connect(tmp_path: Path) -> None:
    proc = run(tmp_path, '''
        import asyncio, select, socket
        port_r, port_w = os.pipe()
        server = os.fork()
        if server == 0:
            async def serve():
                async def upper(reader, writer):
                    writer.write((await reader.readline()).upper())
                    await writer.drain()
                    writer.close()
                srv = await asyncio.start_server(upper, "127.0.0.1", 0)
                os.write(port_w, b"%d\\n" % srv.sockets[0].getsockname()[1])
                await asyncio.sleep(30)
            try:
                asyncio.run(asyncio.wait_for(serve(), 30))
            finally:
                os._exit(0)
        port = int(os.read(port_r, 100))

        async def client(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"client %d\\n" % i)
            line = await reader.readline()
            writer.close()
            return line == b"CLIENT %d\\n" % i

        async def fifty():
            return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(50))), 30)
        say("fifty", all(asyncio.run(fifty())))

        pid = os.fork()
        if pid == 0:
            async def refused():
                try:
                    await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 1), 10)
                    say("refused no")
                except ConnectionRefusedError as e:
                    say("refused", e.errno)
            asyncio.run(refused())
            s = socket.socket()
            s.setblocking(False)
            say("connect_ex", s.connect_ex(("127.0.0.1", 1)))
            select.select([], [s], [], 10)
            say("SO_ERROR", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR),
                  s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            os._exit(0)
        os.waitpid(pid, 0)
        os.kill(server, 9)
        os.waitpid(server, 0)
    ''')
    expect(proc, "fifty", ["True"])
    expect(proc, "refused", ["111"])
    expect(proc, "connect_ex", ["115"])
    expect(proc, "SO_ERROR", ["111 0"])


def test_the_socket_api_in_a_child(tmp_path: Path) -> None:
    """makefile (close with a file still open), dup, create_server and
    create_connection, getaddrinfo's enum types, options given as bytes and
    read with a buffer length, tcp_info; and no descriptor grows with
    fileno() called often or sockets made and closed in a loop."""
    proc = run(tmp_path, '''
        import socket, struct
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            infos = socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
            say("gai", sorted({(type(f).__name__, type(k).__name__) for f, k, *_ in infos}),
                  all(isinstance(a, tuple) for *_, a in infos))
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            say("kinds", repr(c.family), repr(c.type))
            f = c.makefile("rwb")
            f.write(b"one\\n")
            f.flush()
            first = f.readline()
            c.close()                    # the file still uses it
            f.write(b"two\\n")
            f.flush()
            say("makefile", first, f.readline(), c.fileno())
            twin = c.dup()               # another object of the socket: it stays open
            f.close()
            say("closed", c.fileno(), twin.gettimeout())
            twin.sendall(b"three\\n")
            say("dup", twin.recv(100))
            twin.close()
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            say("options", struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET,
                                                              socket.SO_LINGER, 8)),
                  s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0"),
                  s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            s.connect(("127.0.0.1", port))
            say("tcp_info", len(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)),
                  s.tcp_info()["state"] if isinstance(s.tcp_info(), dict) else None)
            s.close()
            before = nfd()
            s = socket.socket()
            for i in range(200):
                s.fileno()
            s.close()
            for i in range(100):
                d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                d.fileno()
                d.close()
                with socket.create_connection(("127.0.0.1", port), timeout=10) as y:
                    y.fileno()
            server = socket.create_server(("127.0.0.1", 0))
            server.close()
            say("fd growth", nfd() - before)
            os._exit(0)
        conn, _ = listener.accept()
        f = conn.makefile("rwb")
        for _ in range(3):
            f.write(f.readline().upper())
            f.flush()
        say("eof after both closed", f.read() == b"")
        for _ in range(101):
            listener.accept()[0].close()
        os.waitpid(pid, 0)
    ''')
    expect(proc, "gai", ["[('AddressFamily', 'SocketKind')] True"])
    expect(proc, "kinds", ["<AddressFamily.AF_INET: 2> <SocketKind.SOCK_STREAM: 1>"])
    assert said(proc, "makefile")[0].startswith("b'ONE\\n' b'TWO\\n' ")
    expect(proc, "closed", ["-1 10.0"])
    expect(proc, "dup", ["b'THREE\\n'"])
    expect(proc, "eof after both closed", ["True"])
    expect(proc, "options", ["(1, 5) b'reno' 1"])
    assert said(proc, "tcp_info")[0].startswith("104 ")
    expect(proc, "fd growth", ["0"])


def test_a_call_from_a_signal_handler_while_a_call_waits(tmp_path: Path) -> None:
    """A signal handler that sends while the same thread waits in recv gets
    a connection of its own (one connection carries one call at a time); a
    blocking send larger than a channel frame queues all of it."""
    proc = run(tmp_path, '''
        import signal, socket
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname(), timeout=20)
        conn, _ = listener.accept()
        pid = os.fork()
        if pid == 0:
            conn.settimeout(10)
            signal.signal(signal.SIGALRM, lambda *a: conn.sendall(b"from the handler;"))
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            say("child recv", conn.recv(100).decode())
            conn.settimeout(None)
            big = bytes(9 << 20)
            say("child send", conn.send(big) == len(big))
            os._exit(0)
        say("owner got", client.recv(100).decode())
        client.sendall(b"answer")
        got = 0
        while got < 9 << 20:
            got += len(client.recv(1 << 20))
        say("owner received", got)
        os.waitpid(pid, 0)
    ''')
    expect(proc, "owner got", ["from the handler;"])
    expect(proc, "child recv", ["answer"])
    expect(proc, "child send", ["True"])
    expect(proc, "owner received", [str(9 << 20)])


def test_what_the_owner_sees_of_childrens_sockets(tmp_path: Path) -> None:
    """The owner's socket table lists what its children hold, and forgets
    it once they exit, including the ones whose threads were still blocked
    in accept() and recv() when the process ended; short-lived threads
    leave no worker behind in the owner."""
    proc = run(tmp_path, '''
        import socket, threading
        stack = owner_stack()
        rows = lambda: sorted((r["proto"], r["state"]) for r in stack.sockets())
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        alone = threading.active_count()  # the fork adds two: accepting and reaping
        pid = os.fork()
        if pid == 0:
            listener = socket.create_server(("127.0.0.1", 0))
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            for i in range(20):        # threads that make a call and end
                t = threading.Thread(target=lambda: socket.socket().close())
                t.start()
                t.join(10)
            threading.Thread(target=listener.accept, daemon=True).start()
            threading.Thread(target=udp.recv, args=(10,), daemon=True).start()
            os.write(ready_w, b"r")
            os.read(go_r, 1)
            os._exit(0)                 # with two threads blocked in the owner
        os.read(ready_r, 1)
        say("while held", rows())
        os.write(go_w, b"g")
        os.waitpid(pid, 0)
        until(lambda: not rows())
        say("after exit", rows())
        until(lambda: threading.active_count() <= alone + 2)
        say("owner threads left", threading.active_count() - alone)
    ''')
    expect(proc, "while held", ["[('tcp', 'LISTEN'), ('udp', 'UNCONN')]"])
    expect(proc, "after exit", ["[]"])
    assert int(said(proc, "owner threads left")[0]) <= 2


def test_pool_of_spawned_workers_connecting_to_the_parent(tmp_path: Path) -> None:
    proc = run(tmp_path, '''
        import multiprocessing as mp, socket, threading

        def work(args):
            port, i = args
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"worker %d\\n" % i)
                return c.makefile("rb").readline().decode().strip()

        def serve(listener):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(conn.makefile("rb").readline().upper())

        if __name__ == "__main__":
            listener = socket.create_server(("127.0.0.1", 0))
            threading.Thread(target=serve, args=(listener,), daemon=True).start()
            port = listener.getsockname()[1]
            with mp.get_context("spawn").Pool(3) as pool:
                got = pool.map(work, [(port, i) for i in range(12)], chunksize=1)
            say("pool", got == ["WORKER %d" % i for i in range(12)])
    ''')
    expect(proc, "pool", ["True"])


def test_forks_while_calls_wait(tmp_path: Path) -> None:
    """The owner forks over and over while a child's accept waits in it; a
    child with a thread blocked in recv forks; a forked child runs a Python
    subprocess, which attaches too."""
    proc = run(tmp_path, '''
        import socket, subprocess, threading
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        waiting = os.fork()
        if waiting == 0:
            conn, _ = listener.accept()
            conn.sendall(b"the waiting child")
            os._exit(0)
        time.sleep(0.2)                 # its accept waits in the owner now
        before = nfd()
        statuses = []
        for i in range(20):
            pid = os.fork()
            if pid == 0:
                a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                a.bind(("127.0.0.1", 0))
                got = []
                t = threading.Thread(target=lambda: got.append(a.recv(10)), daemon=True)
                t.start()
                time.sleep(0.01)
                inner = os.fork()      # while the thread's recv waits in the owner
                if inner == 0:
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                        b"x", a.getsockname())
                    os._exit(0)
                os.waitpid(inner, 0)
                t.join(10)
                os._exit(0 if got == [b"x"] else 3)
            statuses.append(os.waitpid(pid, 0)[1])
        say("statuses", set(statuses))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            say("first", c.recv(100).decode())
        os.waitpid(waiting, 0)
        pid = os.fork()
        if pid == 0:
            out = subprocess.run([sys.executable, "-c",
                "import socket, loopstack.socket as L; "
                "c = socket.create_connection(('127.0.0.1', %d), timeout=10);"
                "print(type(L.implementation(c)).__name__, c.recv(100).decode())" % port],
                capture_output=True, text=True, timeout=30)
            say("grandchild", out.stdout.strip())
            os._exit(0)
        conn, _ = listener.accept()
        conn.sendall(b"hello")
        conn.close()
        os.waitpid(pid, 0)
        say("fds settle", bool(until(lambda: nfd() <= before + 2)))
    ''')
    expect(proc, "statuses", ["{0}"])
    expect(proc, "first", ["the waiting child"])
    expect(proc, "grandchild", ["RemoteSocket hello"])
    expect(proc, "fds settle", ["True"])


def test_channel_abuse_is_contained(tmp_path: Path) -> None:
    """A peer that knows the token still cannot: use another holder's
    socket, send descriptors by the hundred, or run an unlisted method; and
    a recv_into with a huge buffer does not make the owner allocate it."""
    proc = run(tmp_path, '''
        import errno, pickle, socket, struct, array
        from loopstack import Stack
        from loopstack.host.channel import HELLO, MAGIC, Channel, encode
        from loopstack.host.remote import Link, RemoteStack

        stack = Stack()
        server = stack.serve_children()
        alice = RemoteStack(Link.join(server.address), server.pid)
        mallory = RemoteStack(Link.join(server.address), server.pid)
        secret = alice.socket(socket.AF_INET, socket.SOCK_DGRAM)
        secret.bind(("127.0.0.1", 0))
        try:
            mallory._link.call("getsockname", secret._handle, None, ())
            say("other holder's handle: allowed")
        except OSError as e:
            say("other holder's handle", errno.errorcode[e.errno])

        def call_connection(remote):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(server.path)
            s.sendall(HELLO.pack(MAGIC, server.token, b"C", remote._link.hid,
                                 remote._link.key))
            Channel(s).recv()
            return s

        def dropped(s):
            """The owner hung up (EOF, or a reset for what it left unread)."""
            try:
                return s.recv(100) == b""
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False

        # descriptors with every byte of a frame that never ends
        before = nfd()
        s = call_connection(mallory)
        null = os.open(os.devnull, os.O_RDONLY)
        fds = array.array("i", [null] * 4)
        s.sendall(struct.pack("<I", 1 << 20))
        try:
            for i in range(300):
                s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError:
            pass
        say("fd flood dropped", dropped(s), nfd() - before <= 4)
        s.close()
        os.close(null)

        for name in ("_hand_over", "settimeout", "__class__", "_detach_remote", "makefile"):
            s = call_connection(mallory)
            s.sendall(encode((name, secret._handle, None, ())))
            say("unlisted", name, dropped(s))
            s.close()

        import mmap, resource
        big = mallory.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big.bind(("127.0.0.1", 0))
        big.setblocking(False)
        buf = mmap.mmap(-1, 1 << 30)   # untouched pages: costs nothing until written
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            big.recv_into(buf)
        except BlockingIOError:
            say("huge recv_into", "EAGAIN")
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
        say("owner allocated a gigabyte", grew > 512 * 1024)
        say("alice still served", secret.getsockname()[0])
        stack.close()
    ''', patch_only=True)
    expect(proc, "other holder's handle", ["EBADF"])
    expect(proc, "fd flood dropped", ["True True"])
    assert said(proc, "unlisted") == [f"{n} True" for n in
                                      ("_hand_over", "settimeout", "__class__", "_detach_remote",
                                       "makefile")]
    expect(proc, "huge recv_into", ["EAGAIN"])
    expect(proc, "owner allocated a gigabyte", ["False"])
    expect(proc, "alice still served", ["127.0.0.1"])
