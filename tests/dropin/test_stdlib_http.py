"""The standard library's HTTP server and clients, and requests, unmodified,
on a stack: plain HTTP and HTTPS (TLS over loopstack sockets, tls.py)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import requests

import loopstack
from loopstack.stream import StreamSocket
from loopstack.tls import TLSSocket

from .conftest import Certs, KernelLog, http_server, real_port_free


def listeners(stack: loopstack.Stack) -> list[tuple[Any, ...]]:
    return [row["local"] for row in stack.sockets() if row["state"] == "LISTEN"]


def test_http_server_and_urllib(kernel: KernelLog) -> None:
    with loopstack.patch() as stack, http_server() as server:
        port = server.server_address[1]
        assert isinstance(server.socket, StreamSocket)
        assert listeners(stack) == [("127.0.0.1", port)]
        before = stack.stats()["Tcp"]
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/hello?x=1", timeout=5) as r:
            got = json.loads(r.read())
            assert r.status == 200
        assert got["method"] == "GET" and got["path"] == "/hello?x=1"
        assert got["client"][0] == "127.0.0.1"
        req = urllib.request.Request(f"http://localhost:{port}/form", data=b"a=1&b=2")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["body"] == "a=1&b=2"
        after = stack.stats()["Tcp"]
        # localhost is ::1 first (nothing listens there: refused), then 127.0.0.1.
        assert after["ActiveOpens"] - before["ActiveOpens"] == 3
        assert after["PassiveOpens"] - before["PassiveOpens"] == 2
        assert after["OutRsts"] - before["OutRsts"] == 1
        assert after["InSegs"] > before["InSegs"]
        assert real_port_free(port)  # the kernel never bound it


def test_requests_session(kernel: KernelLog) -> None:
    with loopstack.patch() as stack, http_server() as server:
        port = server.server_address[1]
        r = requests.get(f"http://localhost:{port}/one", timeout=5)
        assert r.status_code == 200 and r.json()["path"] == "/one"
        opens = stack.stats()["Tcp"]["ActiveOpens"]
        with requests.Session() as s:
            bodies = [s.post(f"http://127.0.0.1:{port}/n", data=str(i), timeout=5).json()["body"]
                      for i in range(5)]
        assert bodies == ["0", "1", "2", "3", "4"]
        # Five requests on one kept-alive connection: one more active open.
        assert stack.stats()["Tcp"]["ActiveOpens"] - opens == 1


def test_https_http_server_urllib_and_requests(kernel: KernelLog, certs: Certs, tmp_path: Any
                                               ) -> None:
    server_ctx = certs.server_context()
    with loopstack.patch() as stack, \
            http_server(lambda s: server_ctx.wrap_socket(s, server_side=True)) as server:
        assert isinstance(server.socket, TLSSocket)
        port = server.server_address[1]
        with urllib.request.urlopen(f"https://localhost:{port}/secret", timeout=5,
                                    context=certs.client_context()) as r:
            got = json.loads(r.read())
        assert got["path"] == "/secret" and got["tls"] in ("TLSv1.2", "TLSv1.3")
        ca_file = tmp_path / "ca.pem"
        certs.ca.cert_pem.write_to_path(str(ca_file))
        r = requests.post(f"https://127.0.0.1:{port}/p", data=b"over tls", verify=str(ca_file),
                          timeout=5)
        assert r.json()["body"] == "over tls"
        # A client that does not trust the CA is refused by the handshake.
        try:
            requests.get(f"https://localhost:{port}/", timeout=5)
        except requests.exceptions.SSLError as e:
            assert "CERTIFICATE_VERIFY_FAILED" in str(e)
        else:
            raise AssertionError("an untrusted certificate was accepted")
        assert stack.stats()["Tcp"]["PassiveOpens"] >= 3
