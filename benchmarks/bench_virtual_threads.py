"""Virtual time with threads: a threaded HTTP server and its client through
a slow network, in wall time.

The issue's figure: http.server's ThreadingHTTPServer (a thread per
request) and an http.client client in another thread, ``delay 200ms`` on
lo, 100 requests each on its own connection. Every request costs 800 ms of
network time (a handshake, then the request and its response), so 80 s of
virtual time; the goal is well under a second of wall time.

For scale, the same 100 requests without any delay: on the kernel's
127.0.0.1, and on loopstack with the real clock and with the virtual one (the
price of the idle checks when there is nothing to wait for).

    .venv/bin/python benchmarks/bench_virtual_threads.py [--requests 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import loopstack


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def run(requests: int) -> float:
    """Serve and fetch ``requests`` pages with whatever ``socket`` is now; wall seconds."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                               daemon=True)
    serving.start()
    port = server.server_address[1]
    took: list[float] = []

    def client() -> None:
        start = time.perf_counter()
        for i in range(requests):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", f"/{i}")
            assert conn.getresponse().read() == f"/{i}".encode()
            conn.close()
        took.append(time.perf_counter() - start)

    fetching = threading.Thread(target=client)
    fetching.start()
    fetching.join()
    server.shutdown()
    server.server_close()
    return took[0]


def on_stack(clock: str, netem: str | None, requests: int) -> tuple[float, float]:
    """(wall seconds, virtual seconds) of a run on a fresh stack."""
    stack = loopstack.Stack(clock=clock, seed=1)
    if netem:
        stack.lo.netem(netem)
    start = stack.now()
    with loopstack.patch(stack):
        wall = run(requests)
    elapsed = stack.now() - start
    stack.close()
    return wall, elapsed


def median(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, r = args.requests, args.repeats

    slow = [on_stack("virtual", "delay 200ms", n) for _ in range(r)]
    virtual = {round(v, 6) for _, v in slow}
    print(f"\n{n} requests, ThreadingHTTPServer + http.client threads (median of {r})")
    print(f"  {'case':<44} {'wall':>9} {'virtual':>10}")
    print(f"  {'loopstack, virtual clock, delay 200ms':<44} "
          f"{statistics.median(w for w, _ in slow):>8.3f}s "
          f"{', '.join(f'{v:.3f}s' for v in sorted(virtual)):>10}")
    kernel = median(lambda: run(n), r)
    print(f"  {'kernel 127.0.0.1, no delay':<44} {kernel:>8.3f}s")
    real = median(lambda: on_stack("real", None, n)[0], r)
    print(f"  {'loopstack, real clock, no delay':<44} {real:>8.3f}s")
    idle = median(lambda: on_stack("virtual", None, n)[0], r)
    print(f"  {'loopstack, virtual clock, no delay':<44} {idle:>8.3f}s")
    same = "the same virtual time every run" if len(virtual) == 1 else "DIFFERENT virtual times"
    print(f"\n  {n * 0.8:.1f} s of network time ran in "
          f"{statistics.median(w for w, _ in slow):.3f} s of wall time; the same seed gave {same}.")


if __name__ == "__main__":
    main()
