"""aio_transport.py: asyncio's socket transport for loopstack TCP sockets
under patch() (the data path calls the loopstack socket without the front's
dispatcher). Every scenario runs on the kernel's sockets (plain asyncio.run),
under patch() (asyncio.run) and in virtual time (loopstack.aio.run), and
what the protocols saw must be the same."""

from __future__ import annotations

import asyncio
import socket
import struct
from asyncio import selector_events
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import loopstack
import loopstack.aio
from loopstack.aio_transport import _REAL_MAKE_SOCKET_TRANSPORT, StackSocketTransport

Scenario = Callable[[], Awaitable[Any]]


def on_all(scenario: Scenario) -> dict[str, Any]:
    """What ``scenario`` returns on the kernel, under patch() and in virtual time."""
    out = {"kernel": asyncio.run(scenario())}
    with loopstack.patch():
        out["patch"] = asyncio.run(scenario())
    out["virtual"] = loopstack.aio.run(scenario())
    return out


def same(out: dict[str, Any]) -> Any:
    assert out["patch"] == out["kernel"], out
    assert out["virtual"] == out["kernel"], out
    return out["kernel"]


class Recorder(asyncio.Protocol):
    """Every protocol callback, in order; data joined."""

    def __init__(self, keep_open: bool = False) -> None:
        self.events: list[Any] = []
        self.data = bytearray()
        self.keep_open = keep_open
        self.transport: Any = None
        self.lost = asyncio.get_running_loop().create_future()
        self.got_eof = asyncio.Event()
        self.paused = asyncio.Event()
        self.resumed = asyncio.Event()
        self.arrived = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self.arrived.set()

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.got_eof.set()
        return self.keep_open

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.paused.set()

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.resumed.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", type(exc).__name__ if exc else None))
        if not self.lost.done():
            self.lost.set_result(exc)


async def _pair(server_keep_open: bool = False, client_keep_open: bool = False
                ) -> tuple[Recorder, Recorder, asyncio.AbstractServer]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[Recorder] = loop.create_future()

    def factory() -> Recorder:
        p = Recorder(server_keep_open)
        accepted.set_result(p)
        return p

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(lambda: Recorder(client_keep_open),
                                             "127.0.0.1", port)
    return client, await accepted, server


def test_the_transport_is_asyncio_own_kind() -> None:
    """Under patch() a loopstack TCP socket gets StackSocketTransport, an
    asyncio _SelectorSocketTransport with the same name; without the patch,
    asyncio's own; a program sees the same socket object either way."""

    async def scenario() -> tuple[str, bool, str, str]:
        client, srv, server = await _pair()
        tr = client.transport
        info = (type(tr).__name__, isinstance(tr, selector_events._SelectorSocketTransport),
                repr(tr).split()[0], type(tr.get_extra_info("socket")).__name__)
        kinds = {type(client.transport), type(srv.transport)}
        client.transport.close()
        await client.lost
        await srv.lost
        server.close()
        await server.wait_closed()
        return (*info[:3], info[3]) if len(kinds) == 1 else ("mixed", False, "", "")

    out = on_all(scenario)
    assert same(out) == ("_SelectorSocketTransport", True, "<_SelectorSocketTransport",
                         "TransportSocket")
    with loopstack.patch():
        async def kind() -> type:
            client, srv, server = await _pair()
            k = type(client.transport)
            client.transport.close()
            await srv.lost
            server.close()
            return k

        assert asyncio.run(kind()) is StackSocketTransport
    assert selector_events.BaseSelectorEventLoop._make_socket_transport is \
        _REAL_MAKE_SOCKET_TRANSPORT  # restored when the patch ends


def test_echo_eof_and_half_close() -> None:
    """Data both ways, write_eof (the peer keeps its side open and answers),
    then close: the same callbacks in the same order."""

    async def scenario() -> tuple[Any, ...]:
        client, srv, server = await _pair(server_keep_open=True, client_keep_open=True)
        for i in range(50):
            client.transport.write(b"%d," % i)
        client.transport.write(memoryview(b"mv"))
        client.transport.write(bytearray(b"ba"))
        client.transport.write(b"")
        client.transport.write_eof()
        await srv.got_eof.wait()
        srv.transport.write(bytes(srv.data[::-1]))
        srv.transport.close()
        await srv.lost
        await client.got_eof.wait()
        closing = client.transport.is_closing()  # (it kept its side open)
        client.transport.close()
        await client.lost
        server.close()
        await server.wait_closed()
        return (bytes(srv.data), bytes(client.data), srv.events, client.events, closing)

    sent, back, srv_events, client_events, closing = same(on_all(scenario))
    assert sent.endswith(b"49,mvba") and back == sent[::-1]
    assert srv_events == ["made", "data", "eof", ("lost", None)]
    assert client_events == ["made", "data", "eof", ("lost", None)]
    assert not closing


def test_write_flow_control() -> None:
    """A peer that does not read: the writer's protocol is paused once the
    buffer passes the high-water mark, resumed when the peer reads, and
    every byte arrives in order."""
    total = 8 << 20

    async def scenario() -> tuple[Any, ...]:
        client, srv, server = await _pair()
        srv.transport.pause_reading()
        client.transport.set_write_buffer_limits(high=64 << 10, low=16 << 10)
        chunk = bytes(range(256)) * 256
        sent = 0
        while sent < total and not client.paused.is_set():
            client.transport.write(chunk)
            sent += len(chunk)
        paused = client.paused.is_set()
        buffered = client.transport.get_write_buffer_size() > 0
        srv.transport.resume_reading()
        await client.resumed.wait()
        while len(srv.data) < sent:
            srv.arrived.clear()
            await srv.arrived.wait()
        intact = bytes(srv.data) == chunk * (sent // len(chunk))
        client.transport.close()
        await srv.lost
        server.close()
        await server.wait_closed()
        return paused, buffered, intact, client.events[:3], client.transport.get_write_buffer_size()

    assert same(on_all(scenario)) == (True, True, True,
                                      ["made", "pause_writing", "resume_writing"], 0)


def test_pause_reading_holds_data_back() -> None:
    """pause_reading: nothing is delivered until resume_reading, then all of it."""

    async def scenario() -> tuple[Any, ...]:
        client, srv, server = await _pair()
        srv.transport.pause_reading()
        client.transport.write(b"x" * 1000)
        for _ in range(20):
            await asyncio.sleep(0)
        held = bytes(srv.data)
        reading = srv.transport.is_reading()
        srv.transport.resume_reading()
        while len(srv.data) < 1000:
            srv.arrived.clear()
            await srv.arrived.wait()
        client.transport.close()
        await srv.lost
        server.close()
        await server.wait_closed()
        return held, reading, bytes(srv.data), srv.transport.is_reading()

    assert same(on_all(scenario)) == (b"", False, b"x" * 1000, False)


def test_reset_by_peer() -> None:
    """The peer closes with an RST (SO_LINGER 0) while data are unread: the
    other side's transport loses its connection with the kernel's error, and
    writes afterwards are dropped as asyncio drops them."""

    async def scenario() -> tuple[Any, ...]:
        client, srv, server = await _pair()
        client.transport.write(b"unread")
        await srv.arrived.wait()
        sock = srv.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        srv.transport.write(b"last")
        srv.transport.abort()
        exc = await client.lost
        client.transport.write(b"after")  # dropped (connection lost)
        server.close()
        await server.wait_closed()
        return bytes(client.data), type(exc).__name__ if exc else None, client.events

    assert same(on_all(scenario)) == (b"last", "ConnectionResetError",
                                      ["made", "data", ("lost", "ConnectionResetError")])


def test_a_write_the_socket_refuses() -> None:
    """A write asyncio accepts but the socket refuses (a non-contiguous
    memoryview): the same fatal error on every side, the kernel's
    BufferError (the transport's own send path falls back to the socket's
    call for its error)."""

    async def scenario() -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        loop.set_exception_handler(
            lambda lp, ctx: errors.append(type(ctx.get("exception")).__name__))
        client, srv, server = await _pair()
        client.transport.write(memoryview(b"abcdef")[::2])
        exc = await client.lost
        await srv.lost
        server.close()
        await server.wait_closed()
        return type(exc).__name__, errors, client.events

    assert same(on_all(scenario)) == ("BufferError", ["BufferError"],
                                      ["made", ("lost", "BufferError")])


class Buffered(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(100)
        self.got = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buf[:nbytes]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.done.set_result(bytes(self.got))


def test_buffered_protocol() -> None:
    """A BufferedProtocol reads through recv_into, 100 bytes at a time."""

    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[Buffered] = loop.create_future()

        def factory() -> Buffered:
            p = Buffered()
            got.set_result(p)
            return p

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(bytes(range(256)) * 40)
        w.write_eof()
        data = await (await got).done
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        return data

    assert same(on_all(scenario)) == bytes(range(256)) * 40


@pytest.mark.parametrize("size", [1, 70_000, 3 << 20])
def test_streams_round_trip_sizes(size: int) -> None:
    """Streams: writes of every size through the transport (sent at once,
    partly buffered, buffered and drained), echoed back intact."""

    async def scenario() -> bool:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(1 << 16):
                w.write(data)
                await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes(i % 251 for i in range(size))
        w.write(payload)
        await w.drain()
        back = await r.readexactly(size)
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        return back == payload

    assert same(on_all(scenario)) is True
