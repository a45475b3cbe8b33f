"""selector.py: the selector asyncio's loops get under patch() learns
loopstack sockets' readiness in-process and leaves their descriptors quiet
while it watches them; real descriptors go to the real selector."""

from __future__ import annotations

import asyncio
import select
import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import loopstack
from loopstack.selector import RealDefaultSelector, StackSelector
from loopstack.socket import implementation


@pytest.fixture
def patched() -> Iterator[loopstack.Stack]:
    with loopstack.patch() as stack:
        yield stack


def _pair() -> tuple[Any, Any, Any]:
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    return srv, c, a


def _readable_by_kernel(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _loop_selector() -> type:
    loop = asyncio.new_event_loop()
    try:
        return type(loop._selector)  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_asyncio_loops_get_it_only_under_patch() -> None:
    """asyncio's selector loops made under patch() (asyncio.run, new_event_loop)
    get the StackSelector; selectors.DefaultSelector stays the real one."""
    assert _loop_selector() is RealDefaultSelector
    with loopstack.patch():
        assert selectors.DefaultSelector is RealDefaultSelector
        assert _loop_selector() is StackSelector
        mine = selectors.SelectSelector()
        loop = asyncio.SelectorEventLoop(mine)  # a selector given is kept
        assert loop._selector is mine  # type: ignore[attr-defined]
        loop.close()
    assert _loop_selector() is RealDefaultSelector


def test_loopstack_socket_in_process_and_descriptor_quiet(patched: loopstack.Stack) -> None:
    srv, c, a = _pair()
    sel = StackSelector()
    try:
        key = sel.register(a, selectors.EVENT_READ, "data")
        assert sel.select(0) == []
        c.send(b"x")
        assert sel.select(0) == [(key, selectors.EVENT_READ)]
        assert sel.select(0) == [(key, selectors.EVENT_READ)]  # level-triggered
        # While watched here, the descriptor is left as it was (quiet) ...
        assert not _readable_by_kernel(a.fileno())
        sel.unregister(a)
        # ... and brought up to date when the selector lets go.
        assert _readable_by_kernel(a.fileno())
        sel.register(a, selectors.EVENT_READ)
        assert a.recv(1) == b"x"
        assert sel.select(0) == []
        sel.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "both")
        got = sel.select(0)
        assert len(got) == 1 and got[0][1] == selectors.EVENT_WRITE and got[0][0].data == "both"
        assert sel.get_key(a).events == selectors.EVENT_READ | selectors.EVENT_WRITE
        assert a.fileno() in sel.get_map()
    finally:
        sel.close()
        for s in (c, a, srv):
            s.close()


def test_real_descriptors_still_reported(patched: loopstack.Stack) -> None:
    r, w = socket.socketpair()  # AF_UNIX: real sockets, watched by epoll
    srv, c, a = _pair()
    sel = StackSelector()
    try:
        rk = sel.register(r, selectors.EVENT_READ)
        ak = sel.register(a, selectors.EVENT_READ)
        w.send(b"r")
        c.send(b"l")
        seen: set[Any] = set()
        for _ in range(1_000_000):  # the real one is looked at once a millisecond
            seen |= {k.fileobj for k, _ in sel.select(0)}
            if seen == {r, a}:
                break
        assert seen == {rk.fileobj, ak.fileobj}
    finally:
        sel.close()
        for s in (r, w, c, a, srv):
            s.close()


def test_a_blocked_select_wakes_when_another_thread_sends(patched: loopstack.Stack) -> None:
    srv, c, a = _pair()
    r, w = socket.socketpair()
    sel = StackSelector()
    sel.register(r, selectors.EVENT_READ)  # a real one too: the wait is in epoll
    key = sel.register(a, selectors.EVENT_READ)
    started = threading.Event()

    def send_later() -> None:
        started.wait()
        c.send(b"wake")

    t = threading.Thread(target=send_later)
    t.start()
    try:
        started.set()
        got: list[Any] = []
        for _ in range(100):  # each select waits up to 10 s for the wake-up
            got = sel.select(10)
            if got:
                break
        assert got == [(key, selectors.EVENT_READ)]
    finally:
        t.join()
        sel.close()
        for s in (r, w, c, a, srv):
            s.close()


def test_asyncio_round_trips_make_no_descriptor_changes(patched: loopstack.Stack,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An asyncio echo under patch(): no readiness syscall per change."""
    from loopstack.readiness import Readiness

    applied: list[int] = []
    real_apply = Readiness._apply

    def counting(self: Readiness, *args: Any) -> None:
        applied.append(1)
        real_apply(self, *args)

    monkeypatch.setattr(Readiness, "_apply", counting)

    async def main() -> tuple[bytes, type]:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(100):
                w.write(data)
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        before = len(applied)
        out = b""
        for i in range(50):
            w.write(b"%d," % i)
            out += await r.readuntil(b",")
        during = len(applied) - before
        assert during == 0, f"{during} descriptor updates in 50 round trips"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        loop = asyncio.get_running_loop()
        return out, type(loop._selector)  # type: ignore[attr-defined]

    out, kind = asyncio.run(main())
    assert out == b"".join(b"%d," % i for i in range(50))
    assert kind is StackSelector


def test_a_descriptor_number_is_recognised(
        patched: loopstack.Stack) -> None:
    srv, c, a = _pair()
    sel = StackSelector()
    try:
        sel.register(a.fileno(), selectors.EVENT_READ)  # a number, as asyncio registers
        assert a.fileno() in sel._mine  # recognised by its descriptor
        assert implementation(a)._efd is sel._mine[a.fileno()]
    finally:
        sel.close()
        for s in (c, a, srv):
            s.close()


def _open_fds() -> set[int]:
    """The open descriptor numbers below 256 (fstat: no descriptor of its own)."""
    import os

    found = set()
    for n in range(256):
        try:
            os.fstat(n)
        except OSError:
            continue
        found.add(n)
    return found


def test_asyncio_sockets_get_no_descriptor_until_the_program_asks(
        patched: loopstack.Stack) -> None:
    """asyncio's own fileno() calls for a loop on StackSelector take the
    reserved number and make no readiness pair; a fileno() of the program's
    (through the transport's socket) makes the descriptor on that same
    number, showing the truth to select()."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read(5))
            await w.drain()
            seen["server_paired"] = implementation(w.get_extra_info("socket")._sock)._efd.paired
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        before = _open_fds()
        r, w = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        w.write(b"hello")
        assert await r.readexactly(5) == b"hello"
        impl = implementation(w.get_extra_info("socket")._sock)
        number = impl._fd
        seen["client_paired"] = impl._efd.paired
        new = _open_fds() - before  # the client's number (and the server's, until it closes)
        seen["new_fds"] = number in new and len(new) <= 2
        assert await r.read() == b""  # EOF: readable for a real poller too, once made
        fd = w.get_extra_info("socket").fileno()
        seen["same_number"] = fd == number
        seen["paired_after"] = impl._efd.paired
        seen["select_readable"] = _readable_by_kernel(fd)
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert seen == {"server_paired": False, "client_paired": False, "new_fds": True,
                    "same_number": True, "paired_after": True, "select_readable": True}


def test_a_loop_with_a_real_selector_gets_real_descriptors(patched: loopstack.Stack) -> None:
    """A loop given a selector of its own (epoll) watches real descriptors:
    asyncio's fileno() calls make them."""
    loop = asyncio.SelectorEventLoop(RealDefaultSelector())
    try:
        async def main() -> bool:
            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                w.write(await r.read(2))
                await w.drain()
                w.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            r, w = await asyncio.open_connection("127.0.0.1",
                                                 server.sockets[0].getsockname()[1])
            w.write(b"ok")
            assert await r.readexactly(2) == b"ok"
            paired = bool(implementation(w.get_extra_info("socket")._sock)._efd.paired)
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()
            return paired

        assert loop.run_until_complete(main()) is True
    finally:
        loop.close()
