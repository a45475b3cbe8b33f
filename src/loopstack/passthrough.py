"""Sockets for ``loopstack.patch(passthrough=True)``: they live on the
stack until they connect or send to an address the stack has no route for;
then they become real kernel sockets (the options and timeout set so far
carried over), so such a test can reach the real network on purpose."""

from __future__ import annotations

from typing import Any

from .stack import Stack


class PassthroughSocket:
    """A loopstack socket that turns real for destinations outside the stack.
    The program holds it through a front (socket.py's ``front``), an object
    of ``socket.socket`` itself, as for every socket the patch makes;
    ``loopstack.socket.implementation(s)`` is this object."""

    def __init__(self, stack: Stack, family: int, type: int, proto: int) -> None:
        self._stack = stack
        self._args = (family, type, proto)
        self._inner: Any = stack.socket(family, type, proto)
        self._real = False
        self._options: list[tuple[int, int, Any]] = []

    def _routable(self, address: Any) -> bool:
        if not isinstance(address, tuple) or not address:
            return True
        try:
            infos = self._stack.getaddrinfo(address[0], None, self._args[0])
        except OSError:
            return False  # a name only the real resolver knows
        import socket as s

        for info in infos:
            packed = s.inet_pton(info[0], info[4][0])
            if packed[:12] == bytes(10) + b"\xff\xff":
                packed = packed[12:]
            if packed in (bytes(4), bytes(16)) or self._stack.route_table.lookup(packed):
                return True
        return False

    def _go_real(self) -> None:
        from .patch import _REAL_NEW, _SOCKET

        family, type, proto = self._args
        real = _REAL_NEW(_SOCKET, family, type, proto)  # type: ignore[call-arg]
        _SOCKET.__init__(real, family, type, proto)
        real.settimeout(self._inner.gettimeout())
        for level, name, value in self._options:
            real.setsockopt(level, name, value)
        self._inner.close()
        self._inner = real
        self._real = True

    def setsockopt(self, level: int, name: int, value: Any, *rest: Any) -> None:
        self._inner.setsockopt(level, name, value, *rest)
        if not rest:
            self._options.append((level, name, value))

    def connect(self, address: Any) -> None:
        if not self._real and not self._routable(address):
            self._go_real()
        self._inner.connect(address)

    def connect_ex(self, address: Any) -> int:
        if not self._real and not self._routable(address):
            self._go_real()
        return int(self._inner.connect_ex(address))

    def sendto(self, data: Any, *args: Any) -> int:
        address = args[-1]
        if not self._real and not self._routable(address):
            self._go_real()
        return int(self._inner.sendto(data, *args))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __getstate__(self) -> Any:
        raise TypeError("cannot pickle 'socket' object")

    def __enter__(self) -> PassthroughSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()

    def __repr__(self) -> str:
        return f"<loopstack.PassthroughSocket {'real' if self._real else 'virtual'} " \
               f"{self._inner!r}>"


__all__ = ["PassthroughSocket"]
