"""`loopstack serve`: a stack on a TUN device with small services, until
Ctrl-C, so the kernel's own tools (ping, curl, nc, a Python client) can
talk to it.

Services (each on TCP and, where the RFC says so, UDP; IPv4 and IPv6):
echo (RFC 862), discard (RFC 863), and HTTP/1.0 with two pages: ``/``
(a line about the stack) and ``/bytes/N`` (N bytes, for throughput).
Ping is the stack's own ICMP. Each connection has a thread; closing the
services closes every socket, which wakes every thread.
"""

from __future__ import annotations

import argparse
import errno
import http.server
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from ..ip.addr import AF_INET, AF_INET6
from ..link.tun import TunInterface
from ..socket import Socket
from ..stack import Stack
from .errors import CliError

_JOIN = 2.0  # seconds to wait for a service thread after its socket closed
_CHUNK = 65536
_MAX_BYTES = 1 << 30  # the largest /bytes/N page


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Services:
    """Small services on one stack, each a listening socket per address
    family and a thread per connection. ``close()`` stops all of them."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._lock = threading.Lock()
        self._sockets: set[Socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.connections = 0  # TCP connections accepted
        self.bytes_in = 0  # bytes read by the services (TCP and UDP)

    # -- the services ------------------------------------------------------------------
    def echo(self, port: int, hosts: tuple[str, ...] = ("0.0.0.0", "::")) -> list[str]:
        """Echo (RFC 862): what arrives is sent back, over TCP and UDP."""
        return (self._tcp("echo", port, hosts, self._echo_stream)
                + self._udp("echo", port, hosts, reply=True))

    def discard(self, port: int, hosts: tuple[str, ...] = ("0.0.0.0", "::")) -> list[str]:
        """Discard (RFC 863): what arrives is read and dropped, TCP and UDP."""
        return (self._tcp("discard", port, hosts, self._discard_stream)
                + self._udp("discard", port, hosts, reply=False))

    def http(self, port: int, hosts: tuple[str, ...] = ("0.0.0.0", "::")) -> list[str]:
        """HTTP/1.0: ``/`` and ``/bytes/N``."""
        return self._tcp("http", port, hosts, self._http_stream)

    # -- TCP -----------------------------------------------------------------------------
    def _tcp(self, name: str, port: int, hosts: tuple[str, ...],
             handler: Callable[[Socket], None]) -> list[str]:
        out = []
        for host in hosts:
            family = AF_INET6 if ":" in host else AF_INET
            sock = self.stack.socket(family, socket.SOCK_STREAM)
            if family == AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._keep(sock)
            sock.bind((host, port))
            sock.listen(64)
            self._spawn(f"{name} accept {host}", self._accept_loop, sock, handler)
            out.append(_endpoint(host, port))
        return out

    def _accept_loop(self, listener: Socket, handler: Callable[[Socket], None]) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.connections += 1
            self._keep(conn)
            self._spawn("connection", self._serve, conn, handler)

    def _serve(self, conn: Socket, handler: Callable[[Socket], None]) -> None:
        try:
            handler(conn)
        except OSError:
            pass  # reset by the peer, or closed by close()
        finally:
            conn.close()
            self._forget(conn)

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_in += n

    def _echo_stream(self, conn: Socket) -> None:
        while data := conn.recv(_CHUNK):
            self._count(len(data))
            conn.sendall(data)

    def _discard_stream(self, conn: Socket) -> None:
        while data := conn.recv(_CHUNK):
            self._count(len(data))

    def _http_stream(self, conn: Socket) -> None:
        _HttpHandler(conn, conn.getpeername(), self)

    # -- UDP -----------------------------------------------------------------------------
    def _udp(self, name: str, port: int, hosts: tuple[str, ...], *, reply: bool) -> list[str]:
        out = []
        for host in hosts:
            family = AF_INET6 if ":" in host else AF_INET
            sock = self.stack.socket(family, socket.SOCK_DGRAM)
            if family == AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._keep(sock)
            sock.bind((host, port))
            self._spawn(f"{name} udp {host}", self._datagrams, sock, reply)
            out.append("udp " + _endpoint(host, port))
        return out

    def _datagrams(self, sock: Socket, reply: bool) -> None:
        while True:
            try:
                data, peer = sock.recvfrom(_CHUNK)
                self._count(len(data))
                if reply:
                    sock.sendto(data, peer)
            except OSError as e:
                if e.errno in (errno.EBADF, errno.ENOTCONN) or self._closed:
                    return
                # an ICMP error reported on the socket: keep serving

    # -- bookkeeping -------------------------------------------------------------------
    def _keep(self, sock: Socket) -> None:
        with self._lock:
            if self._closed:
                sock.close()
                raise OSError(errno.EBADF, "the services are closed")
            self._sockets.add(sock)

    def _forget(self, sock: Socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name=f"loopstack serve {name}")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def close(self) -> None:
        """Close every listener and connection; wait for the threads."""
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            sock.close()
        for thread in threads:
            thread.join(_JOIN)


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    """``/``: one line about the stack; ``/bytes/N``: N bytes."""

    server_version = "loopstack"
    timeout = 30

    def __init__(self, conn: Socket, peer: Any, services: Services) -> None:
        self.services = services
        super().__init__(conn, peer, None)  # type: ignore[arg-type]

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def do_GET(self) -> None:
        self._respond(body=True)

    def _respond(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            local = self.connection.getsockname()
            text = (f"loopstack serving on {_endpoint(local[0], local[1])}; "
                    f"you are {_endpoint(self.client_address[0], self.client_address[1])}\n")
            self._send(200, text.encode(), body)
        elif path.startswith("/bytes/") and path[7:].isdigit() and int(path[7:]) <= _MAX_BYTES:
            n = int(path[7:])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = bytes(range(256)) * (_CHUNK // 256)
            while body and n > 0:
                self.wfile.write(chunk[:n])
                n -= len(chunk[:n])
        else:
            self._send(404, b"not found: try / or /bytes/N\n", body)

    def _send(self, status: int, data: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # serve prints what it listens on and the counters, not a request log


# -- the command -------------------------------------------------------------------------
def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return int(text)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="a stack on a TUN device with small services, until Ctrl-C",
        description="Create a TUN device, put a loopstack stack on its far side with echo, "
        "discard and HTTP services, and serve until Ctrl-C, so the kernel's ping, curl or nc "
        "can reach it. Needs root (CAP_NET_ADMIN).")
    p.add_argument("--tun", required=True, metavar="NAME", help="the TUN device to create")
    p.add_argument("--address", required=True, action="append", metavar="A/N",
                   help="loopstack's address on the device (repeat for IPv6 too)")
    p.add_argument("--peer", action="append", metavar="P/N",
                   help="the kernel's address on the device (repeat for IPv6 too)")
    p.add_argument("--netns", metavar="NS", help="create the device in this network namespace")
    p.add_argument("--mtu", type=int, default=1500, help="the device's MTU (default 1500)")
    p.add_argument("--echo", type=_port, metavar="PORT", help="echo service (TCP and UDP)")
    p.add_argument("--discard", type=_port, metavar="PORT", help="discard service (TCP and UDP)")
    p.add_argument("--http", type=_port, metavar="PORT", help="HTTP: / and /bytes/N")
    p.add_argument("--pcap", metavar="FILE", help="write the device's packets to FILE")
    p.add_argument("--netem", metavar="SPEC", help='impair what loopstack sends, like tc netem, '
                   'e.g. "delay 5ms loss 1%%"')
    p.set_defaults(func=run)


def _families(addresses: list[str]) -> tuple[str, ...]:
    """The wildcard address of each family loopstack has an address in."""
    hosts = []
    if any(":" not in a for a in addresses):
        hosts.append("0.0.0.0")
    if any(":" in a for a in addresses):
        hosts.append("::")
    return tuple(hosts)


def counter_report(stack: Stack, tun: str, services: Services | None) -> list[str]:
    """The device's counters and the protocol counters that matter here."""
    s = stack.interface(tun).stats
    stats = stack.stats()
    lines = [
        f"{tun}: RX {s.rx_packets} packets {s.rx_bytes} bytes {s.rx_errors} errors "
        f"{s.rx_dropped} dropped; TX {s.tx_packets} packets {s.tx_bytes} bytes "
        f"{s.tx_errors} errors {s.tx_dropped} dropped",
    ]
    wanted = {
        "Tcp": ("ActiveOpens", "PassiveOpens", "InSegs", "OutSegs", "RetransSegs", "InErrs",
                "OutRsts"),
        "Udp": ("InDatagrams", "OutDatagrams", "NoPorts"),
        "Udp6": ("InDatagrams", "OutDatagrams", "NoPorts"),
        "Icmp": ("InEchos", "OutEchoReps", "OutEchos", "InEchoReps"),
        "Icmp6": ("InEchos", "OutEchoReplies", "OutEchos", "InEchoReplies"),
    }
    for group, names in wanted.items():
        row = stats.get(group, {})
        lines.append(f"{group}: " + " ".join(f"{n} {row.get(n, 0)}" for n in names))
    if services is not None:
        lines.append(f"services: {services.connections} connections, "
                     f"{services.bytes_in} bytes received")
    return lines


def _stop_on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    stack = Stack()
    services: Services | None = None
    capture = None
    try:
        try:
            iface = stack.add_tun(args.tun, args.address, peer=args.peer, netns=args.netns,
                                  mtu=args.mtu)
        except ValueError as e:
            raise CliError(str(e)) from None
        assert isinstance(iface, TunInterface)
        if args.netem:
            try:
                iface.netem(args.netem)
            except ValueError as e:
                raise CliError(f"--netem: {e}") from None
        if args.pcap:
            capture = stack.capture(args.pcap, [iface])
        services = Services(stack)
        where = f" in network namespace {args.netns}" if args.netns else ""
        peer = f", kernel side {', '.join(args.peer)}" if args.peer else ""
        print(f"loopstack serve: {args.tun} mtu {args.mtu}{where}: loopstack "
              f"{', '.join(args.address)}{peer}", file=out)
        hosts = _families(args.address)
        for name, port in (("echo", args.echo), ("discard", args.discard), ("http", args.http)):
            if port is not None:
                try:
                    listening = getattr(services, name)(port, hosts)
                except OSError as e:
                    raise CliError(f"--{name} {port}: {e.strerror or e}") from None
                print(f"  {name:<8} {'  '.join(listening)}", file=out)
        print("  ping     answered on every address", file=out)
        if iface.qdisc is not None:
            print(f"  netem    {iface.qdisc.spec}", file=out)
        if args.pcap:
            print(f"  pcap     {args.pcap}", file=out)
        print("Ctrl-C to stop.", file=out, flush=True)
        previous = signal.signal(signal.SIGTERM, _stop_on_term)
        try:
            iface.wait()  # until Ctrl-C, or the device is removed from outside
            if iface.error is not None:
                print(f"loopstack serve: {iface.error.strerror}", file=out)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
        services.close()
        print("", file=out)
        for line in counter_report(stack, args.tun, services):
            print(line, file=out)
        out.flush()
        return 0 if iface.error is None else 1
    finally:
        if services is not None:
            services.close()
        if capture is not None:
            capture.stop()
        stack.close()
