"""Name resolution from the stack's own hosts table, with glibc's
getaddrinfo rules (numeric forms, services, flags, RFC 6724 ordering).

No query ever leaves the process: a name the table does not know fails as
an unknown name (EAI_NONAME), exactly as a DNS miss would.
"""

from __future__ import annotations

import operator
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

from .ip.addr import AF_INET, AF_INET6, V4_LOOPBACK, V6_LOOPBACK, family_of, to_text

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]

_SCTP, _DCCP, _UDPLITE = 132, 33, 136
_SOCK_DCCP = 6


@dataclass(frozen=True, slots=True)
class _TypeProto:
    """One row of glibc's gaih_inet_typeproto table (sysdeps/posix/getaddrinfo.c)."""

    socktype: int
    protocol: int
    name: str  # the /etc/services protocol column
    default: bool  # returned when neither type nor protocol is asked for
    any_proto: bool = False  # GAI_PROTO_PROTOANY: takes the protocol asked for
    no_service: bool = False  # GAI_PROTO_NOSERVICE: a port makes no sense


_TYPEPROTO = (
    _TypeProto(socket.SOCK_STREAM, socket.IPPROTO_TCP, "tcp", True),
    _TypeProto(socket.SOCK_DGRAM, socket.IPPROTO_UDP, "udp", True),
    _TypeProto(_SOCK_DCCP, _DCCP, "dccp", False),
    _TypeProto(socket.SOCK_DGRAM, _UDPLITE, "udplite", False),
    _TypeProto(socket.SOCK_STREAM, _SCTP, "sctp", False),
    _TypeProto(socket.SOCK_SEQPACKET, _SCTP, "sctp", False),
    _TypeProto(socket.SOCK_RAW, 0, "raw", True, any_proto=True, no_service=True),
)
# glibc getaddrinfo() rejects any other bit with EAI_BADFLAGS.
_KNOWN_FLAGS = int(socket.AI_PASSIVE | socket.AI_CANONNAME | socket.AI_NUMERICHOST
                | socket.AI_V4MAPPED | socket.AI_ALL | socket.AI_ADDRCONFIG | 0x40 | 0x80 | 0x300
                | socket.AI_NUMERICSERV)
_ULONG_MAX = (1 << 64) - 1
_STRTOUL = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_ATON_PART = re.compile(r"0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*)")
_ATON_MAX = (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)


def _gai(code: int, text: str) -> socket.gaierror:
    return socket.gaierror(code, text)


def noname() -> socket.gaierror:
    return _gai(socket.EAI_NONAME, "Name or service not known")


def _unknown_host() -> socket.herror:
    return socket.herror(1, "Unknown host")  # HOST_NOT_FOUND, as CPython's set_herror words it


def _aton_exact(text: str) -> bytes | None:
    """glibc __inet_aton_exact(): one to four C numbers (0x hex, 0 octal)
    separated by dots, the last filling the bytes left; nothing may follow
    (unlike inet_aton, which stops at white space)."""
    parts = text.split(".")
    if len(parts) > 4:
        return None
    values = []
    for part in parts:
        m = _ATON_PART.fullmatch(part)
        if m is None:
            return None
        hexa, octal, dec = m.groups()
        values.append(int(hexa, 16) if hexa else int(octal, 8) if octal else int(dec))
    *head, last = values
    if any(v > 0xFF for v in head) or last > _ATON_MAX[len(head)]:
        return None
    value = last
    for i, v in enumerate(head):
        value |= v << (24 - 8 * i)
    return value.to_bytes(4, "big")


def numeric_host(host: str, interfaces: dict[str, int] | None = None) -> bytes | None:
    """An address literal as packed bytes: IPv6 text, or any IPv4 form
    glibc's getaddrinfo takes ('127.1', '0x7f.1', '2130706433'). An IPv6
    literal may carry a scope ('::1%1', 'fe80::1%lo'); see :func:`scope_id`."""
    if ":" in host:
        addr, _, scope = host.partition("%")
        try:
            packed = socket.inet_pton(AF_INET6, addr)
        except OSError:
            return None
        if "%" in host and scope_id(packed, scope, interfaces) is None:
            return None
        return packed
    return _aton_exact(host)


OWN_NAME_ADDRESS = b"\x7f\x00\x01\x01"  # 127.0.1.1


def _own_name() -> str:
    """The machine's name, as gethostname() gives it (uname's nodename), read
    without socket.gethostname(): that would raise an audit event the
    program's lookup does not raise on a kernel (glibc asks uname itself)."""
    try:
        return os.uname().nodename
    except OSError:
        return ""


# /etc/services, read as glibc's files backend reads it (getaddrinfo and
# getnameinfo look services up there themselves; socket.getservbyname would
# raise an audit event of its own): (name and aliases, port, protocol) rows.
SERVICES = "/etc/services"
_services: tuple[tuple[int, int], list[tuple[tuple[str, ...], int, str]]] | None = None


def _service_rows() -> list[tuple[tuple[str, ...], int, str]]:
    global _services
    try:
        st = os.stat(SERVICES)
    except OSError:
        return []
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _services
    if cached is not None and cached[0] == stamp:
        return cached[1]
    rows = []
    try:
        with open(SERVICES, encoding="latin-1") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2:
                    continue
                port, _, proto = fields[1].partition("/")
                if not port.isdigit() or not proto:
                    continue
                rows.append(((fields[0], *fields[2:]), int(port) & 0xFFFF, proto))
    except OSError:
        return []
    _services = (stamp, rows)
    return rows


def service_port(name: str, proto: str) -> int | None:
    """getservbyname(name, proto)'s port, or None."""
    for names, port, p in _service_rows():
        if p == proto and name in names:
            return port
    return None


def service_name(port: int, proto: str) -> str | None:
    """getservbyport(port, proto)'s name, or None."""
    for names, number, p in _service_rows():
        if number == port and p == proto:
            return names[0]
    return None


# The interfaces a scope may name: every stack has lo, index 1.
LOOPBACK_INTERFACES = {"lo": 1}


def needs_scope(addr: bytes) -> bool:
    """glibc's and Linux's test for an IPv6 address that means nothing
    without an interface: link-local unicast (fe80::/10), interface- and
    link-local multicast (ff01::/16, ff02::/16)."""
    return (addr[0] == 0xFE and addr[1] & 0xC0 == 0x80) or (
        addr[0] == 0xFF and addr[1] & 0x0F in (1, 2))


def scope_id(addr: bytes, scope: str, interfaces: dict[str, int] | None = None) -> int | None:
    """glibc __inet6_scopeid_pton: an interface name, for an address that
    needs a scope (``interfaces``: name -> index, lo's by default); else a
    decimal number up to 2**32 - 1. None: not a scope (EAI_NONAME)."""
    if needs_scope(addr):
        index = (LOOPBACK_INTERFACES if interfaces is None else interfaces).get(scope)
        if index:
            return index
    if not scope[:1].isdigit() or not scope.isascii() or not scope.isdigit():
        return None
    value = int(scope)
    return value if value <= 0xFFFFFFFF else None


def _precedence(addr: bytes) -> int:
    """RFC 6724 2.1 default policy table precedence (the rows that matter here)."""
    if len(addr) == 4:
        return 35  # ::ffff:0:0/96
    if addr == V6_LOOPBACK:
        return 50
    if addr[:2] == b"\x20\x02":
        return 30
    return 40


def _service_text(port: Any) -> str | None:
    """What CPython's getaddrinfo hands glibc as the service string."""
    if port is None:
        return None
    if type(port) is int:  # PyLong_CheckExact: bool is rejected below
        if not -(1 << 63) <= port < (1 << 63):
            raise OverflowError("Python int too large to convert to C long")
        return str(port)
    if isinstance(port, str):
        port.encode("utf-8")  # PyUnicode_AsUTF8: a lone surrogate is UnicodeEncodeError
        return port
    if isinstance(port, bytes):
        return port.decode("latin-1")
    raise OSError("Int or String expected")


def _service_number(service: str, flags: int) -> int | None:
    """glibc getaddrinfo(): strtoul(service, 10) into an int; a port if the
    whole string was a number that fits (htons keeps the low 16 bits),
    None when it must be looked up as a name."""
    m = _STRTOUL.match(service)
    if m is None:
        rest = service
        value = 0
    else:
        rest = service[m.end():]
        value = int(m.group(2))
        if value > _ULONG_MAX:
            value = _ULONG_MAX  # ERANGE
        elif m.group(1) == "-":
            value = -value & _ULONG_MAX
    if rest:
        if flags & socket.AI_NUMERICSERV:
            raise noname()
        return None
    num = value & 0xFFFFFFFF  # gaih_service.num is an int
    if num >= 1 << 31:
        return None  # negative: glibc treats it as a service name
    return num & 0xFFFF


class Resolver:
    def __init__(self, hosts: dict[str, list[str]]) -> None:
        self.hosts = hosts
        # The interfaces scope ids name ('fe80::1%lo'): name -> index.
        self.interfaces: dict[str, int] = dict(LOOPBACK_INTERFACES)

    def _scope(self, host: str) -> int:
        """The scope id of a numeric IPv6 host ('::1%1' -> 1), 0 without one."""
        if "%" not in host:
            return 0
        addr, _, scope = host.partition("%")
        return scope_id(socket.inet_pton(AF_INET6, addr), scope, self.interfaces) or 0

    def _entry(self, name: str) -> tuple[str, list[bytes]]:
        """The hosts-table entry for ``name``: its canonical name and addresses.
        The machine's own name, unless the table says otherwise, is
        127.0.1.1, as Debian's /etc/hosts has it."""
        key = name.lower().rstrip(".") if name not in self.hosts else name
        entries = self.hosts.get(key)
        if not entries:
            own = _own_name()
            if own and key == own.lower():
                return own, [OWN_NAME_ADDRESS]
            raise noname()
        out = []
        for e in entries:
            a = numeric_host(e)
            if a is None:
                raise ValueError(f"hosts entry {name!r} -> {e!r} is not an address")
            out.append(a)
        return key, out

    def lookup(self, name: str) -> list[bytes]:
        return self._entry(name)[1]

    def _typeprotos(self, type: int, proto: int, service: str | None,
                    flags: int) -> list[tuple[int, int, int]]:
        """(socktype, protocol, port) triples, as glibc's gaih_inet chooses them."""
        tp: _TypeProto | None = None
        if type or proto:
            for row in _TYPEPROTO:
                if (type and type != row.socktype) or (
                        proto and not row.any_proto and proto != row.protocol):
                    continue
                tp = row
                break
            else:
                if type:
                    raise _gai(socket.EAI_SOCKTYPE, "ai_socktype not supported")
                raise _gai(socket.EAI_SERVICE, "Servname not supported for ai_socktype")
        port = 0
        if service is not None:
            if tp is not None and tp.no_service:
                raise _gai(socket.EAI_SERVICE, "Servname not supported for ai_socktype")
            number = _service_number(service, flags)
            if number is None:
                rows = [tp] if tp is not None else [
                    r for r in _TYPEPROTO if not r.no_service]
                out = []
                for r in rows:
                    p = service_port(service, r.name)  # /etc/services: a local file
                    if p is not None:
                        out.append((r.socktype, r.protocol, p))
                if not out:
                    raise _gai(socket.EAI_SERVICE, "Servname not supported for ai_socktype")
                return out
            port = number
        if tp is not None:
            return [(tp.socktype, proto if tp.any_proto else tp.protocol, port)]
        return [(r.socktype, r.protocol, port) for r in _TYPEPROTO if r.default]

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[AddrInfo]:
        """As glibc's getaddrinfo behind CPython's socket.getaddrinfo, with
        the stack's hosts table in place of NSS."""
        if isinstance(host, bytes):
            host = host.decode("idna")
        elif isinstance(host, str):
            host = host.encode("idna").decode("ascii")  # CPython: "et" with idna
        elif host is not None:
            raise TypeError("getaddrinfo() argument 1 must be string or None")
        service = _service_text(port)
        if service == "*":
            service = None  # glibc: "*" means no service
        if host is None and service is None:
            raise noname()
        if flags & ~_KNOWN_FLAGS or (flags & socket.AI_CANONNAME and host is None):
            raise _gai(socket.EAI_BADFLAGS, "Bad value for ai_flags")
        if family not in (0, AF_INET, AF_INET6):
            raise _gai(socket.EAI_FAMILY, "ai_family not supported")
        kinds = self._typeprotos(type, proto, service, flags)
        canon = ""
        scope = 0
        if host is None:
            if flags & socket.AI_PASSIVE:
                addrs = [bytes(4), bytes(16)]
            else:
                addrs = [V6_LOOPBACK, V4_LOOPBACK]
        else:
            literal = numeric_host(host, self.interfaces)
            if literal is not None:
                addrs = [literal]
                canon = host  # glibc names a literal by itself
                scope = self._scope(host)
            elif flags & socket.AI_NUMERICHOST or host == "":
                raise noname()
            else:
                canon, found = self._entry(host)
                addrs = sorted(found, key=lambda a: -_precedence(a))
            if family == AF_INET6 and all(len(a) == 4 for a in addrs):
                if flags & socket.AI_V4MAPPED:
                    addrs = [bytes(10) + b"\xff\xff" + a for a in addrs]
                elif literal is not None:
                    raise _gai(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
                else:
                    raise noname()
        if family:
            addrs = [a for a in addrs if family_of(a) == family]
            if not addrs:
                if host is not None and numeric_host(host, self.interfaces) is None:
                    raise noname()
                raise _gai(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
        out: list[AddrInfo] = []
        for a in addrs:
            fam = socket.AddressFamily(family_of(a))
            text = to_text(a)
            for kind, p, portnum in kinds:
                sockaddr: tuple[Any, ...] = (
                    (text, portnum) if fam == AF_INET else (text, portnum, 0, scope))
                name = canon if (flags & socket.AI_CANONNAME and not out) else ""
                out.append((fam, _kind(kind), p, name, sockaddr))
        return out

    def _setipaddr(self, name: str, family: int) -> bytes:
        """CPython's setipaddr(), which every by-name call starts with: ''
        is the wildcard, '<broadcast>' the limited broadcast, dotted quads
        and IPv6 text are taken as they are, anything else goes through
        getaddrinfo (raising its gaierror)."""
        if name == "":
            return bytes(4)
        if name == "<broadcast>":
            if family not in (0, AF_INET):
                raise _gai(socket.EAI_FAMILY, "ai_family not supported")
            return b"\xff\xff\xff\xff"
        for fam in (AF_INET, AF_INET6):
            if family in (0, fam) and not (fam == AF_INET6 and "%" in name):
                try:
                    return socket.inet_pton(fam, name)
                except OSError:
                    pass
        info = self.getaddrinfo(name, None, family)[0]
        return numeric_host(info[4][0]) or b""

    def gethostbyname(self, name: str) -> str:
        return to_text(self._setipaddr(name, AF_INET))

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        """As CPython: setipaddr (gaierror for an unknown name), then
        gethostbyname_r, whose failures are herror."""
        self._setipaddr(name, AF_INET)
        if name[:1].isdigit() and all(c in "0123456789." for c in name):
            # glibc __nss_hostname_digits_dots: digits and dots are an
            # address or nothing, never a name to look up.
            addr = _aton_exact(name) if not name.endswith(".") else None
            if addr is None:
                raise _unknown_host()
            return name, [], [to_text(addr)]
        try:
            canon, found = self._entry(name)
        except socket.gaierror:
            raise _unknown_host() from None
        v4 = [to_text(a) for a in found if len(a) == 4]
        if not v4:
            raise _unknown_host()
        return canon, [], v4

    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]:
        literal = self._setipaddr(address, 0)
        names = [n for n, addrs in self.hosts.items() if any(
            numeric_host(a) == literal for a in addrs)]
        own = _own_name()
        if literal == OWN_NAME_ADDRESS and own and own.lower() not in self.hosts:
            names.append(own)
        if not names:
            raise _unknown_host()
        return names[0], names[1:], [to_text(literal)]

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        """As CPython's socket.getnameinfo: the sockaddr is parsed, resolved
        numerically (so the port wraps as getaddrinfo's does), then named
        from the hosts table."""
        if not isinstance(sockaddr, tuple):
            raise TypeError("getnameinfo() argument 1 must be a tuple")
        if not 2 <= len(sockaddr) <= 4 or not isinstance(sockaddr[0], str):
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        host = sockaddr[0]
        port = operator.index(sockaddr[1])
        scope = operator.index(sockaddr[3]) if len(sockaddr) == 4 else 0
        if len(sockaddr) >= 3 and not 0 <= operator.index(sockaddr[2]) <= 0xFFFFF:
            raise OverflowError("getnameinfo(): flowinfo must be 0-1048575.")
        infos = self.getaddrinfo(host, str(port), 0, socket.SOCK_DGRAM, 0,
                                 socket.AI_NUMERICHOST)
        if len(infos) > 1:
            raise OSError("sockaddr resolved to multiple addresses")
        family, _, _, _, resolved = infos[0]
        if family == AF_INET and len(sockaddr) != 2:
            raise OSError("IPv4 sockaddr must be 2 tuple")
        literal = numeric_host(resolved[0]) or b""
        port = resolved[1]
        name = to_text(literal)
        if family == AF_INET6 and scope:
            # glibc getnameinfo: an interface's name where the address needs
            # a scope and the index is an interface's, else the number.
            names = [n for n, i in self.interfaces.items() if i == scope]
            name += f"%{names[0]}" if names and needs_scope(literal) else f"%{scope}"
        if not flags & socket.NI_NUMERICHOST:
            try:
                name = self.gethostbyaddr(to_text(literal))[0]
            except socket.herror:
                if flags & socket.NI_NAMEREQD:
                    raise noname() from None
        service = str(port)
        if not flags & socket.NI_NUMERICSERV:
            service = service_name(port, "udp" if flags & socket.NI_DGRAM else "tcp") or service
        return name, service


def _kind(kind: int) -> socket.SocketKind:
    """A SocketKind where the stdlib has one (SOCK_DCCP has none): as
    CPython's getaddrinfo returns it."""
    try:
        return socket.SocketKind(kind)
    except ValueError:
        return kind  # type: ignore[return-value]
