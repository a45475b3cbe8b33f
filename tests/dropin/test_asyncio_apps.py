"""asyncio code on a stack: streams (in virtual time with loopstack.aio.run,
and with plain asyncio.run under patch), aiohttp's server and client,
websockets' server and client, and TLS over asyncio."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiohttp import ClientSession, ClientTimeout, web
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import loopstack
import loopstack.aio

from .conftest import Certs, KernelLog, real_port_free

Main = Callable[[], Awaitable[Any]]


def run_both(make_main: Callable[[loopstack.Stack], Main]) -> list[tuple[loopstack.Stack, Any]]:
    """Run the same coroutine with loopstack.aio.run (virtual time) and with
    asyncio.run under loopstack.patch (the stdlib's own loop, real time)."""
    out = []
    vstack = loopstack.Stack(clock="virtual", seed=5)
    out.append((vstack, loopstack.aio.run(make_main(vstack)(), stack=vstack)))
    with loopstack.patch() as stack:
        out.append((stack, asyncio.run(make_main(stack)())))
    vstack.close()
    return out


def test_streams_echo(kernel: KernelLog) -> None:
    def make(stack: loopstack.Stack) -> Main:
        async def main() -> dict[str, Any]:
            served = asyncio.Event()

            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                while line := await r.readline():
                    w.write(line.upper())
                    await w.drain()
                w.close()
                await w.wait_closed()
                served.set()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            listening = [row["local"] for row in stack.sockets() if row["state"] == "LISTEN"]
            r, w = await asyncio.open_connection("localhost", port)
            replies = []
            for i in range(20):
                w.write(b"line %d\n" % i)
                replies.append(await r.readline())
            w.close()
            await w.wait_closed()
            await served.wait()
            server.close()
            await server.wait_closed()
            return {"port": port, "listening": listening, "replies": replies}
        return main

    for stack, got in run_both(make):
        assert got["replies"] == [b"LINE %d\n" % i for i in range(20)]
        assert got["listening"] == [("127.0.0.1", got["port"])]
        tcp = stack.stats()["Tcp"]
        assert tcp["ActiveOpens"] == 2  # ::1 refused, then 127.0.0.1
        assert tcp["PassiveOpens"] == 1 and tcp["OutRsts"] == 1
        assert tcp["InSegs"] >= 40
        assert real_port_free(got["port"])


def test_aiohttp_server_and_client(kernel: KernelLog, tmp_path: Path) -> None:
    blob = os.urandom(300_000)
    (tmp_path / "blob.bin").write_bytes(blob)

    def make(stack: loopstack.Stack) -> Main:
        async def main() -> dict[str, Any]:
            async def hello(request: web.Request) -> web.Response:
                return web.json_response({"n": int(request.query["n"]) * 2,
                                          "peer": request.remote})

            async def upload(request: web.Request) -> web.Response:
                return web.Response(body=(await request.read())[::-1])

            app = web.Application()
            app.router.add_get("/double", hello)
            app.router.add_post("/reverse", upload)
            # FileResponse tries loop.sendfile (os.sendfile on the descriptor)
            # first: it must fall back to send() and deliver every byte.
            async def blob_file(request: web.Request) -> web.FileResponse:
                return web.FileResponse(tmp_path / "blob.bin")

            app.router.add_get("/blob", blob_file)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            out: dict[str, Any] = {"port": port}
            async with ClientSession(timeout=ClientTimeout(total=10)) as s:
                out["json"] = [await (await s.get(f"http://localhost:{port}/double?n={i}")).json()
                               for i in range(3)]
                async with s.post(f"http://127.0.0.1:{port}/reverse", data=b"abcdef") as r:
                    out["reversed"] = await r.read()
                async with s.get(f"http://127.0.0.1:{port}/blob") as r:
                    out["blob"] = await r.read()
            await runner.cleanup()
            return out
        return main

    for stack, got in run_both(make):
        assert [j["n"] for j in got["json"]] == [0, 2, 4]
        assert got["json"][0]["peer"] == "127.0.0.1"
        assert got["reversed"] == b"fedcba"
        assert got["blob"] == blob
        assert stack.stats()["Tcp"]["PassiveOpens"] >= 1
        assert real_port_free(got["port"])


def test_websockets_server_and_client(kernel: KernelLog) -> None:
    def make(stack: loopstack.Stack) -> Main:
        async def main() -> dict[str, Any]:
            async def echo(ws: Any) -> None:
                async for message in ws:
                    await ws.send(message[::-1] if isinstance(message, str) else message)

            async with ws_serve(echo, "127.0.0.1", 0) as server:
                port = next(iter(server.sockets)).getsockname()[1]
                async with ws_connect(f"ws://127.0.0.1:{port}/chat") as ws:
                    await ws.send("hello")
                    text = await ws.recv()
                    await ws.send(bytes(range(256)) * 100)
                    binary = await ws.recv()
                    latency = await (await ws.ping())
                rows = [r for r in stack.sockets() if r["local"][1] == port]
            return {"port": port, "text": text, "binary": binary, "latency": latency,
                    "rows": rows}
        return main

    assert websockets.__version__
    results = run_both(make)
    for _stack, got in results:
        assert got["text"] == "olleh"
        assert got["binary"] == bytes(range(256)) * 100
        assert any(r["state"] == "LISTEN" for r in got["rows"])
    vstack_latency = results[0][1]["latency"]
    assert vstack_latency == 0.0  # virtual time: nothing took time on an unimpaired lo


def test_asyncio_tls(kernel: KernelLog, certs: Certs) -> None:
    def make(stack: loopstack.Stack) -> Main:
        async def main() -> dict[str, Any]:
            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                data = await r.readline()
                w.write(data.rstrip(b"\n")[::-1] + b"\n")
                await w.drain()
                w.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                                ssl=certs.server_context())
            port = server.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_context(),
                                                 server_hostname="localhost")
            w.write(b"secret\n")
            reply = await r.readline()
            tls = w.get_extra_info("ssl_object")
            info = {"reply": reply, "version": tls.version(),
                    "subject": tls.getpeercert()["subjectAltName"]}
            w.close()
            await w.wait_closed()
            # A client that does not trust the CA fails the handshake.
            with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.open_connection("127.0.0.1", port, ssl=True,
                                              server_hostname="localhost")
            server.close()
            await server.wait_closed()
            return info
        return main

    for _stack, got in run_both(make):
        assert got["reply"] == b"terces\n"
        assert got["version"] in ("TLSv1.2", "TLSv1.3")
        assert ("DNS", "localhost") in got["subject"]
