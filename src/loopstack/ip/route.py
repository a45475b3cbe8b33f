"""Routing tables `local` and `main`, longest-prefix match, and the routes
the kernel installs for each interface address (fib_add_ifaddr in Linux's
net/ipv4/fib_frontend.c; addrconf for IPv6).

Lookup follows Linux's default policy rules: table local first, then main.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from ..link.interface import Interface
from .addr import AF_INET, InterfaceAddress, family_of, network_of, to_text

LOCAL = "local"  # delivered to this host
UNICAST = "unicast"  # sent out of an interface
BROADCAST = "broadcast"  # delivered here, and sent out, as a broadcast
UNREACHABLE = "unreachable"
BLACKHOLE = "blackhole"

TABLE_LOCAL = "local"
TABLE_MAIN = "main"


def unreachable_error() -> OSError:
    return OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))


@dataclass(slots=True)
class Route:
    dst: bytes  # network address
    prefixlen: int
    kind: str
    iface: Interface | None
    table: str = TABLE_MAIN
    prefsrc: bytes | None = None
    gateway: bytes | None = None
    scope: str = "link"
    proto: str = "kernel"
    metric: int = 0

    @property
    def family(self) -> int:
        return family_of(self.dst)

    def show(self) -> str:
        """One line as `ip route show table all` prints it."""
        dst = to_text(self.dst)
        if self.prefixlen == 0:
            dst = "default"
        elif self.prefixlen != len(self.dst) * 8:
            dst = f"{dst}/{self.prefixlen}"
        parts = [] if self.kind == UNICAST else [self.kind]
        parts.append(dst)
        if self.gateway is not None:
            parts += ["via", to_text(self.gateway)]
        if self.iface is not None:
            parts += ["dev", self.iface.name]
        if self.table != TABLE_MAIN:
            parts += ["table", self.table]
        if self.proto != "boot":  # `ip route` hides the default protocol
            parts += ["proto", self.proto]
        if self.family == AF_INET:
            if self.scope != "global" and not (self.proto == "boot" and self.gateway):
                parts += ["scope", self.scope]
            if self.prefsrc is not None:
                parts += ["src", to_text(self.prefsrc)]
            if self.metric:
                parts += ["metric", str(self.metric)]
        else:
            parts += ["metric", str(self.metric), "pref", "medium"]
        return " ".join(parts)


class RoutingTable:
    """Both families, both tables; lookups cached until the routes change."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        # (table, family) -> prefixlen -> network -> routes (lowest metric first)
        self._index: dict[tuple[str, int], dict[int, dict[bytes, list[Route]]]] = {}
        self._plens: dict[tuple[str, int], list[int]] = {}
        self._cache: dict[bytes, Route | None] = {}
        self.generation = 0  # bumps on every change: callers may cache routes by it

    def add(self, route: Route) -> None:
        route.dst = network_of(route.dst, route.prefixlen)
        for r in self._routes:
            if (r.table, r.dst, r.prefixlen, r.metric, r.kind) == (
                route.table, route.dst, route.prefixlen, route.metric, route.kind
            ) and r.iface is route.iface:
                raise FileExistsError(errno.EEXIST, "File exists")
        self._routes.append(route)
        self._reindex()

    def remove(self, route: Route) -> None:
        self._routes.remove(route)
        self._reindex()

    def remove_where(self, iface: Interface, prefsrc: bytes | None = None) -> None:
        self._routes = [
            r for r in self._routes
            if not (r.iface is iface and (prefsrc is None or r.prefsrc == prefsrc))
        ]
        self._reindex()

    def _reindex(self) -> None:
        self.generation += 1
        self._index.clear()
        self._cache.clear()
        for r in self._routes:
            by_len = self._index.setdefault((r.table, r.family), {})
            by_len.setdefault(r.prefixlen, {}).setdefault(r.dst, []).append(r)
        for by_len in self._index.values():
            for nets in by_len.values():
                for rs in nets.values():
                    rs.sort(key=lambda r: r.metric)
        self._plens = {k: sorted(v, reverse=True) for k, v in self._index.items()}

    def lookup(self, dst: bytes) -> Route | None:
        """The route for ``dst``: longest prefix in `local`, then in `main`."""
        cache = self._cache
        if dst in cache:
            return cache[dst]
        fam = family_of(dst)
        found: Route | None = None
        for table in (TABLE_LOCAL, TABLE_MAIN):
            by_len = self._index.get((table, fam))
            if not by_len:
                continue
            for plen in self._plens[(table, fam)]:
                rs = by_len[plen].get(network_of(dst, plen))
                if rs:
                    found = rs[0]
                    break
            if found is not None:
                break
        if len(cache) > 4096:
            cache.clear()
        cache[dst] = found
        return found

    def routes(self) -> list[Route]:
        """Every route, ordered as `ip route show table all`: IPv4 main,
        IPv4 local, then IPv6 main and local."""
        def key(r: Route) -> tuple[int, int, int, int, int]:
            return (
                0 if r.family == AF_INET else 1,
                0 if r.table == TABLE_MAIN else 1,
                int.from_bytes(r.dst, "big"),
                r.prefixlen,
                r.metric,
            )
        return sorted(self._routes, key=key)

    def show(self) -> list[str]:
        return [r.show() for r in self.routes()]

    def add_connected(self, ifa: InterfaceAddress, iface: Interface) -> None:
        """The routes Linux adds with an address (fib_add_ifaddr / addrconf)."""
        addr, plen = ifa.address, ifa.prefixlen
        if ifa.family == AF_INET:
            width = 32
            self.add(Route(addr, 32, LOCAL, iface, TABLE_LOCAL, addr, scope="host"))
            if plen < width:
                # On lo the whole prefix is local (RTN_LOCAL for IFF_LOOPBACK).
                if iface.is_loopback:
                    self.add(Route(addr, plen, LOCAL, iface, TABLE_LOCAL, addr, scope="host"))
                else:
                    self.add(Route(addr, plen, UNICAST, iface, TABLE_MAIN, addr, scope="link"))
                if plen < 31:
                    bcast = int.from_bytes(addr, "big") | ((1 << (width - plen)) - 1)
                    self.add(
                        Route(bcast.to_bytes(4, "big"), 32, BROADCAST, iface, TABLE_LOCAL, addr)
                    )
        else:
            self.add(Route(addr, 128, LOCAL, iface, TABLE_LOCAL, metric=0))
            self.add(Route(addr, plen, UNICAST, iface, TABLE_MAIN, metric=256))
