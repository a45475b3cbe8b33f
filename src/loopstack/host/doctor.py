"""`loopstack doctor`: the machine's own loopback, checked as the loopback
is described (lo up with 127.0.0.1/8 and ::1, localhost naming both,
ping, TCP and UDP working over both), and an audit of listening sockets:
which services only the machine can reach and which the network can.

Everything here uses the kernel's sockets (made from ``_socket`` and
wrapped by descriptor, so ``loopstack.patch`` leaves them alone). The one
name looked up through the system's resolver is "localhost"; nothing else
is resolved. psutil is imported here only, and only when needed.
"""

from __future__ import annotations

import _socket
import errno
import ipaddress
import os
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..wire.checksum import checksum

HOSTS = "/etc/hosts"
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
TIMEOUT = 2.0  # seconds any one probe waits
ROUND_TRIPS = 10  # TCP and UDP round trips timed per address
_ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
_ICMP_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found; for a failure, also what to do


@dataclass(slots=True)
class Listener:
    proto: str  # tcp, tcp6, udp, udp6
    address: str
    port: int
    pid: int | None
    process: str | None
    scope: str  # "loopback", "all" (a wildcard address) or "external"


@dataclass(slots=True)
class Report:
    checks: list[Check]
    listening: list[Listener]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks],
                "listening": [asdict(entry) for entry in self.listening]}


def _real_socket(family: int, kind: int, proto: int = 0) -> socket.socket:
    raw = _socket.socket(family, kind, proto)
    return socket.socket(family, kind, proto, fileno=raw.detach())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


# -- lo ---------------------------------------------------------------------------------
def check_lo() -> Check:
    """lo exists, is up, and has 127.0.0.1/8 and ::1/128."""
    try:
        import psutil
    except ImportError:
        return Check("lo", False, "cannot inspect lo: psutil is missing "
                     "(pip install 'loopstack[host]')")
    stats = psutil.net_if_stats().get("lo")
    if stats is None:
        return Check("lo", False, "there is no interface lo: this network namespace has no "
                     "loopback (is /sys mounted?)")
    found = []
    for a in psutil.net_if_addrs().get("lo", []):
        if a.family in (socket.AF_INET, socket.AF_INET6) and a.netmask:
            ip = a.address.split("%")[0]
            plen = bin(int(ipaddress.ip_address(a.netmask))).count("1")
            found.append(f"{ip}/{plen}")
    missing = [p for p in ("127.0.0.1/8", "::1/128") if p not in found]
    have = ", ".join(found) or "no addresses"
    if not stats.isup:
        return Check("lo", False, f"lo is down ({have}): bring it up with `ip link set lo up`")
    if "127.0.0.1/8" in missing:
        return Check("lo", False, f"lo is up but has {have}, not 127.0.0.1/8: add it with "
                     "`ip addr add 127.0.0.1/8 dev lo`")
    if "::1/128" in missing:
        return Check("lo", False, f"lo is up but has {have}, not ::1: IPv6 is off for lo; turn "
                     "it on with `sysctl -w net.ipv6.conf.lo.disable_ipv6=0`")
    return Check("lo", True, f"up, {have}")


# -- localhost -------------------------------------------------------------------------------
def hosts_has_ipv6_localhost(path: str = HOSTS) -> bool:
    """True when ``path`` has a line mapping ::1 to localhost."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or "localhost" not in fields[1:]:
            continue
        try:
            if ipaddress.ip_address(fields[0]) == ipaddress.IPv6Address("::1"):
                return True
        except ValueError:
            continue
    return False


def check_localhost(hosts: str = HOSTS) -> list[Check]:
    """What "localhost" resolves to through the system's resolver (the only
    name doctor ever looks up), and whether ::1 is among it."""
    try:
        infos = _socket.getaddrinfo("localhost", None, 0, _socket.SOCK_STREAM)
    except _socket.gaierror as e:
        return [Check("localhost", False, f"localhost does not resolve ({e.strerror}): add "
                      f"'127.0.0.1 localhost' and '::1 localhost' to {hosts}")]
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%")[0]
        if text not in addresses:
            addresses.append(text)
    shown = ", ".join(addresses)
    strange = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
    checks = []
    if strange:
        checks.append(Check("localhost", False, f"localhost resolves to {shown}; "
                            f"{', '.join(strange)} is not a loopback address, so local traffic "
                            f"leaves the machine: make {hosts} map localhost to 127.0.0.1 and "
                            "::1 only"))
    else:
        checks.append(Check("localhost", True, f"resolves to {shown}"))
    in_hosts = hosts_has_ipv6_localhost(hosts)
    if "::1" in addresses:
        note = "" if in_hosts else f" (from the resolver; {hosts} has no '::1 localhost' line)"
        checks.append(Check("localhost ::1", True, f"localhost includes ::1{note}"))
    elif not in_hosts:
        checks.append(Check("localhost ::1", False, f"{hosts} has no '::1 localhost' line, so "
                            "localhost means 127.0.0.1 only and clients or servers using "
                            "localhost never reach ::1: add '::1 localhost ip6-localhost "
                            f"ip6-loopback' to {hosts}"))
    else:
        checks.append(Check("localhost ::1", False, f"{hosts} maps ::1 to localhost but the "
                            "resolver does not return it (IPv6 off, or nsswitch.conf skips "
                            "files): check `getent ahosts localhost`"))
    return checks


# -- ICMP echo ----------------------------------------------------------------------------------
def _ping_groups() -> tuple[int, int] | None:
    try:
        with open(PING_GROUP_RANGE) as f:
            low, high = f.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def _icmp_socket(family: int) -> tuple[socket.socket | None, str]:
    """A raw ICMP socket when allowed, else an ICMP datagram ("ping")
    socket, else None and why not."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        return _real_socket(family, socket.SOCK_RAW, proto), "raw socket"
    except PermissionError:
        pass
    try:
        return _real_socket(family, socket.SOCK_DGRAM, proto), "ICMP datagram socket"
    except PermissionError:
        pass
    groups = _ping_groups()
    span = f"{groups[0]} {groups[1]}" if groups else "unknown"
    return None, (f"skipped: raw sockets need root (CAP_NET_RAW), and "
                  f"net.ipv4.ping_group_range ({span}) excludes group {os.getgid()}: run as "
                  f"root, or `sysctl -w net.ipv4.ping_group_range='0 {2**31 - 1}'`")


def check_icmp(address: str) -> Check:
    """One ICMP echo to ``address``, timed."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    name = f"icmp {address}"
    sock, how = _icmp_socket(family)
    if sock is None:
        return Check(name, True, how)
    with sock:
        ident = os.getpid() & 0xFFFF
        payload = os.urandom(16)
        message = bytearray(_ICMP_HEADER.pack(_ECHO_REQUEST[family], 0, 0, ident, 1) + payload)
        if family == socket.AF_INET and sock.type == socket.SOCK_RAW:
            message[2:4] = checksum(message).to_bytes(2, "big")  # ICMPv6's the kernel fills
        sock.settimeout(TIMEOUT)
        start = time.perf_counter()
        try:
            sock.sendto(bytes(message), (address, 0))
            deadline = start + TIMEOUT
            while True:
                sock.settimeout(max(deadline - time.perf_counter(), 1e-3))
                data = sock.recv(65535)
                elapsed = time.perf_counter() - start
                if family == socket.AF_INET and sock.type == socket.SOCK_RAW:
                    data = data[(data[0] & 0x0F) * 4:]  # a raw IPv4 socket gets the IP header
                if len(data) < 8 or data[0] != _ECHO_REPLY[family] or data[8:] != payload:
                    continue  # our own request (raw sockets see it), or someone else's
                return Check(name, True, f"reply in {_ms(elapsed)} ({how})")
        except TimeoutError:
            return Check(name, False, f"no echo reply from {address} in {TIMEOUT:g} s ({how}): "
                         "a firewall rule may drop ICMP on lo (`nft list ruleset`), or "
                         "net.ipv4.icmp_echo_ignore_all is 1")
        except OSError as e:
            return Check(name, False, f"ping {address} failed: {e.strerror or e} ({how}): "
                         f"check that lo has {address}")


# -- TCP and UDP round trips ----------------------------------------------------------------------
def _serve_once(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True, name="loopstack doctor server")
    thread.start()
    return thread


def check_tcp(address: str) -> Check:
    """A TCP connection to a listener on ``address``, and round trips of a
    byte on it, timed."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    name = f"tcp {address}"
    try:
        with _real_socket(family, socket.SOCK_STREAM) as listener:
            listener.bind((address, 0))
            listener.listen(1)
            listener.settimeout(TIMEOUT)
            port = listener.getsockname()[1]

            def echo() -> None:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.settimeout(TIMEOUT)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    try:
                        while data := conn.recv(64):
                            conn.sendall(data)
                    except OSError:
                        return

            server = _serve_once(echo)
            with _real_socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(TIMEOUT)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                start = time.perf_counter()
                client.connect((address, port))
                connect = time.perf_counter() - start
                rtts = []
                for _ in range(ROUND_TRIPS):
                    start = time.perf_counter()
                    client.sendall(b"x")
                    if client.recv(64) != b"x":
                        raise ConnectionResetError(errno.ECONNRESET, "the echo went wrong")
                    rtts.append(time.perf_counter() - start)
            server.join(TIMEOUT)
    except OSError as e:
        return Check(name, False, _socket_failure("TCP", address, e))
    return Check(name, True, f"connect {_ms(connect)}, round trip {_ms(statistics.median(rtts))} "
                 f"(median of {ROUND_TRIPS})")


def check_udp(address: str) -> Check:
    """Datagrams to an echoing socket on ``address`` and back, timed."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    name = f"udp {address}"
    try:
        with _real_socket(family, socket.SOCK_DGRAM) as server_sock, \
                _real_socket(family, socket.SOCK_DGRAM) as client:
            server_sock.bind((address, 0))
            server_sock.settimeout(TIMEOUT)
            port = server_sock.getsockname()[1]

            def echo() -> None:
                for _ in range(ROUND_TRIPS):
                    try:
                        data, peer = server_sock.recvfrom(64)
                        server_sock.sendto(data, peer)
                    except OSError:
                        return

            server = _serve_once(echo)
            client.settimeout(TIMEOUT)
            client.connect((address, port))
            rtts = []
            for i in range(ROUND_TRIPS):
                message = i.to_bytes(2, "big")
                start = time.perf_counter()
                client.send(message)
                if client.recv(64) != message:
                    raise ConnectionResetError(errno.ECONNRESET, "the echo went wrong")
                rtts.append(time.perf_counter() - start)
            server.join(TIMEOUT)
    except OSError as e:
        return Check(name, False, _socket_failure("UDP", address, e))
    return Check(name, True, f"round trip {_ms(statistics.median(rtts))} "
                 f"(median of {ROUND_TRIPS})")


def _socket_failure(proto: str, address: str, e: OSError) -> str:
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{address} is not on this machine: lo lacks it (see the lo check)"
    if e.errno == errno.EAFNOSUPPORT:
        return "IPv6 is off on this machine: boot without ipv6.disable=1 to have ::1"
    if isinstance(e, TimeoutError):
        return (f"{proto} to {address} got no answer in {TIMEOUT:g} s: a firewall rule may drop "
                "it on lo (`nft list ruleset`, `iptables -S`)")
    return (f"{proto} to {address} failed ({e.strerror or e}): a firewall rule may refuse it on "
            "lo (`nft list ruleset`, `iptables -S`)")


# -- the listening sockets ------------------------------------------------------------------------
def scope_of(address: str) -> str:
    """"loopback", "all" (a wildcard) or "external" (a specific address
    the network can reach)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "all"
    return "loopback" if ip.is_loopback else "external"


def listening_sockets() -> list[Listener]:
    """Every TCP socket listening and every UDP socket bound and not
    connected, with the process that holds it (needs psutil; root sees
    every process)."""
    import psutil

    names: dict[int, str | None] = {}

    def process_name(pid: int | None) -> str | None:
        if pid is None:
            return None
        if pid not in names:
            try:
                names[pid] = psutil.Process(pid).name()
            except psutil.Error:
                names[pid] = None
        return names[pid]

    seen = set()
    out = []
    for c in psutil.net_connections(kind="inet"):
        tcp = c.type == socket.SOCK_STREAM
        if (tcp and c.status != psutil.CONN_LISTEN) or (not tcp and c.raddr) or not c.laddr:
            continue
        proto = ("tcp" if tcp else "udp") + ("6" if c.family == socket.AF_INET6 else "")
        key = (proto, c.laddr.ip, c.laddr.port, c.pid)
        if key in seen:
            continue
        seen.add(key)
        out.append(Listener(proto, c.laddr.ip, c.laddr.port, c.pid, process_name(c.pid),
                            scope_of(c.laddr.ip)))
    out.sort(key=lambda entry: (entry.proto, entry.port, entry.address, entry.pid or 0))
    return out


def run_checks(hosts: str = HOSTS) -> Report:
    """Every check, and the audit (taken first, so doctor's own probe
    sockets are not in it)."""
    checks: list[Check] = []
    try:
        listening = listening_sockets()
    except ImportError:
        listening = []
        checks.append(Check("listening", False, "cannot list listening sockets: psutil is "
                            "missing (pip install 'loopstack[host]')"))
    checks.insert(0, check_lo())
    checks[1:1] = check_localhost(hosts)
    for address in ("127.0.0.1", "::1"):
        checks += [check_icmp(address), check_tcp(address), check_udp(address)]
    return Report(checks, listening)
