"""Deterministic mode: asyncio on the stack's virtual clock
(loopstack.aio.run). Time moves only when nothing is ready, so a slow,
lossy network costs no wall time, and one seed repeats a run exactly, down
to the bytes of its capture."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import loopstack
import loopstack.aio


async def echo_round_trips(rounds: int, timeout: float) -> dict[str, Any]:
    """A client and an echo server; ``rounds`` request/reply exchanges under one timeout."""
    loop = asyncio.get_running_loop()
    served = asyncio.Event()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1000):
            w.write(data)
            await w.drain()
        w.close()
        served.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    start = loop.time()
    async with asyncio.timeout(timeout):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for i in range(rounds):
            msg = b"%06d" % i
            w.write(msg)
            await w.drain()
            assert await r.readexactly(len(msg)) == msg
        w.close()
        await w.wait_closed()
        await served.wait()
    elapsed = loop.time() - start
    server.close()
    await server.wait_closed()
    return {"elapsed": elapsed, "port": port}


def test_slow_network_costs_no_wall_time() -> None:
    """delay 200ms on lo, 100 round trips (400 ms each) under a 60 s timeout."""
    stack = loopstack.Stack(clock="virtual", seed=1)
    stack.lo.netem("delay 200ms")
    wall = time.perf_counter()
    got = loopstack.aio.run(echo_round_trips(100, timeout=60), stack=stack)
    wall = time.perf_counter() - wall
    # SYN and SYN-ACK (400 ms), 100 round trips (400 ms each), then the
    # client's FIN reaching the server (200 ms): 40.6 s to the nanosecond.
    assert got["elapsed"] == pytest.approx(40.6, abs=1e-6)
    assert stack.now() >= 40
    assert stack.stats()["Tcp"]["RetransSegs"] == 0
    assert wall < 10, f"wall time {wall:.2f}s"  # about 0.05 s here; kept loose for slow CI
    stack.close()


def test_a_timeout_fires_at_its_virtual_deadline() -> None:
    stack = loopstack.Stack(clock="virtual", seed=1)
    stack.lo.netem("delay 200ms")

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await echo_round_trips(100, timeout=30)
        return loop.time() - start

    assert loopstack.aio.run(main(), stack=stack) == pytest.approx(30.0, abs=1e-6)
    stack.close()


def lossy_run(seed: int, pcap: Path) -> tuple[bytes, dict[str, int]]:
    stack = loopstack.Stack(clock="virtual", seed=seed)
    stack.lo.netem("loss 10% delay 50ms")
    with stack.capture(str(pcap)):
        loopstack.aio.run(echo_round_trips(100, timeout=600), stack=stack)
    tcp = stack.stats()["Tcp"]
    stack.close()
    return pcap.read_bytes(), tcp


def test_same_seed_same_pcap_other_seed_other_pcap(tmp_path: Path) -> None:
    first, tcp1 = lossy_run(7, tmp_path / "a.pcap")
    again, tcp2 = lossy_run(7, tmp_path / "b.pcap")
    other, _ = lossy_run(8, tmp_path / "c.pcap")
    assert tcp1["RetransSegs"] > 0  # the loss happened and TCP repaired it
    assert len(first) > 10_000
    assert first == again and tcp1 == tcp2
    assert other != first


def test_executor_work_is_waited_for_in_real_time() -> None:
    """A thread's work (here 50 ms of real sleep) is not outrun by a virtual
    timeout: the loop waits for the thread before jumping ahead."""
    stack = loopstack.Stack(clock="virtual", seed=1)

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await asyncio.wait_for(asyncio.to_thread(lambda: time.sleep(0.05) or "done"),
                                        timeout=1)
        await asyncio.sleep(5)  # and with no thread at work, time jumps again
        return result, loop.time() - start

    result, elapsed = loopstack.aio.run(main(), stack=stack)
    assert result == "done"
    assert elapsed == pytest.approx(5.0, abs=1e-6)
    stack.close()
