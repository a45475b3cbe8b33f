"""Name resolution from the stack's own hosts table, with glibc's
getaddrinfo rules (numeric forms, services, flags, RFC 6724 ordering).

No query ever leaves the process: a name the table does not know fails as
an unknown name (EAI_NONAME), exactly as a DNS miss would.
"""

from __future__ import annotations

import socket
from typing import Any

from .ip.addr import AF_INET, AF_INET6, V4_LOOPBACK, V6_LOOPBACK, family_of, to_text

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]

_KINDS = (
    (socket.SOCK_STREAM, socket.IPPROTO_TCP),
    (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
    (socket.SOCK_RAW, 0),
)


def _gai(code: int, text: str) -> socket.gaierror:
    return socket.gaierror(code, text)


def noname() -> socket.gaierror:
    return _gai(socket.EAI_NONAME, "Name or service not known")


def numeric_host(host: str) -> bytes | None:
    """An address literal as packed bytes: IPv6 text, or any IPv4 form
    inet_aton takes ('127.1', '0x7f.1', '2130706433'), as glibc does."""
    if ":" in host:
        try:
            return socket.inet_pton(AF_INET6, host.split("%", 1)[0])
        except OSError:
            return None
    try:
        return socket.inet_aton(host)
    except OSError:
        return None


def _precedence(addr: bytes) -> int:
    """RFC 6724 2.1 default policy table precedence (the rows that matter here)."""
    if len(addr) == 4:
        return 35  # ::ffff:0:0/96
    if addr == V6_LOOPBACK:
        return 50
    if addr[:2] == b"\x20\x02":
        return 30
    return 40


class Resolver:
    def __init__(self, hosts: dict[str, list[str]]) -> None:
        self.hosts = hosts

    def lookup(self, name: str) -> list[bytes]:
        key = name.lower().rstrip(".") if name not in self.hosts else name
        entries = self.hosts.get(key)
        if not entries:
            raise noname()
        out = []
        for e in entries:
            a = numeric_host(e)
            if a is None:
                raise ValueError(f"hosts entry {name!r} -> {e!r} is not an address")
            out.append(a)
        return out

    def _port(self, port: Any, type: int, flags: int) -> int | None:
        if port is None:
            return None
        if isinstance(port, int):
            return port % 65536
        if isinstance(port, bytes):
            port = port.decode()
        if not isinstance(port, str):
            raise TypeError("getaddrinfo() argument 2 must be integer or string")
        if port.isdigit():
            return int(port) % 65536
        if flags & socket.AI_NUMERICSERV:
            raise noname()
        by_kind: dict[int, tuple[str, ...]] = {
            socket.SOCK_STREAM: ("tcp",), socket.SOCK_DGRAM: ("udp",)}
        protos = by_kind.get(type, ("tcp", "udp"))
        for p in protos:
            try:
                return socket.getservbyname(port, p)  # /etc/services: a local file
            except OSError:
                continue
        raise _gai(socket.EAI_SERVICE, "Servname not supported for ai_socktype")

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[AddrInfo]:
        if isinstance(host, bytes):
            host = host.decode("idna")
        if host is not None and not isinstance(host, str):
            raise TypeError("getaddrinfo() argument 1 must be string or None")
        if family not in (0, AF_INET, AF_INET6):
            raise _gai(socket.EAI_FAMILY, "ai_family not supported")
        if host is None and port is None:
            raise noname()
        portnum = self._port(port, type, flags)
        if type == socket.SOCK_RAW and portnum:
            raise _gai(socket.EAI_SERVICE, "Servname not supported for ai_socktype")
        canon = ""
        if host is None:
            if flags & socket.AI_PASSIVE:
                addrs = [bytes(4), bytes(16)]
            else:
                addrs = [V6_LOOPBACK, V4_LOOPBACK]
        else:
            literal = numeric_host(host)
            if literal is not None:
                addrs = [literal]
            elif flags & socket.AI_NUMERICHOST or host == "":
                raise noname()
            else:
                addrs = sorted(self.lookup(host), key=lambda a: -_precedence(a))
                canon = host
            if family == AF_INET6 and all(len(a) == 4 for a in addrs):
                if flags & socket.AI_V4MAPPED:
                    addrs = [bytes(10) + b"\xff\xff" + a for a in addrs]
                else:
                    raise _gai(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
        if family:
            addrs = [a for a in addrs if family_of(a) == family]
            if not addrs:
                raise _gai(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
        out: list[AddrInfo] = []
        for a in addrs:
            fam = socket.AddressFamily(family_of(a))
            text = to_text(a)
            sockaddr: tuple[Any, ...] = (
                (text, portnum or 0) if fam == AF_INET else (text, portnum or 0, 0, 0)
            )
            for kind, p in _KINDS:
                if type and kind != type:
                    continue
                if proto and p and proto != p:
                    continue
                if proto and not p and kind == socket.SOCK_RAW:
                    p = proto
                name = canon if (flags & socket.AI_CANONNAME and not out) else ""
                out.append((fam, socket.SocketKind(kind), p, name, sockaddr))
        if not out:
            raise _gai(socket.EAI_SOCKTYPE, "ai_socktype not supported")
        return out

    def gethostbyname(self, name: str) -> str:
        return self.gethostbyname_ex(name)[2][0]

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        literal = numeric_host(name)
        if literal is not None:
            if len(literal) != 4:
                raise _gai(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
            return name, [], [to_text(literal)]
        v4 = [to_text(a) for a in self.lookup(name) if len(a) == 4]
        if not v4:
            raise _gai(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
        return name, [], v4

    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]:
        literal = numeric_host(address)
        if literal is None:
            literal = self.lookup(address)[0]
        names = [n for n, addrs in self.hosts.items() if any(
            numeric_host(a) == literal for a in addrs)]
        if not names:
            raise socket.herror(1, "Unknown host")
        return names[0], names[1:], [to_text(literal)]

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        host, port = sockaddr[0], sockaddr[1]
        literal = numeric_host(host)
        if literal is None:
            raise _gai(socket.EAI_NONAME, "Name or service not known")
        name = to_text(literal)
        if not flags & socket.NI_NUMERICHOST:
            try:
                name = self.gethostbyaddr(name)[0]
            except socket.herror:
                if flags & socket.NI_NAMEREQD:
                    raise noname() from None
        service = str(port)
        if not flags & socket.NI_NUMERICSERV:
            try:
                service = socket.getservbyport(port, "udp" if flags & socket.NI_DGRAM else "tcp")
            except OSError:
                pass
        return name, service
