"""What select, poll and epoll report for a TCP socket's descriptor with
urgent data about, and os.sendfile / socket.sendfile / loop.sock_sendfile
on a socket's descriptor: the kernel's loopback against loopstack's.

Linux's tcp_poll: POLLPRI (select's exceptional set) while an urgent byte
has arrived and recv(MSG_OOB) has not taken it; POLLIN needs one byte more
than a lone out-of-line urgent byte at the read position. With exact
urgent readiness on (as here), loopstack's descriptor for a TCP socket is a
kernel TCP pair set up to show the same bits (readiness.py); the default
AF_UNIX descriptor differs only for the lone urgent byte, which
tests/test_selectors.py checks. os.sendfile under ``patch()`` is sendfile.py's: the
loopstack side calls it directly (the kernel side calls the real one).
"""

from __future__ import annotations

import asyncio
import faulthandler
import hashlib
import os
import select
import socket as S
import tempfile
from typing import Any

import pytest

from loopstack import readiness
from loopstack import sendfile as lsf

from .harness import Entry, LoopNet, Net, Recorder, Scenarios, run
from .test_tcp_diff import SOL, TIMEOUT, pair, settle, wait_urgent

scenarios = Scenarios()
scenario = scenarios.add

_BITS = (("IN", select.POLLIN), ("PRI", select.POLLPRI), ("OUT", select.POLLOUT),
         ("HUP", select.POLLHUP), ("ERR", select.POLLERR))


def names(mask: int) -> str:
    return "|".join(n for n, bit in _BITS if mask & bit) or "-"


def seen(s: Any) -> dict[str, Any]:
    """The descriptor through select (which sets), poll and epoll, now."""
    fd = s.fileno()
    r, w, x = select.select([fd], [fd], [fd], 0)
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLPRI | select.POLLOUT)
    got = p.poll(0)
    with select.epoll() as ep:
        ep.register(fd, select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT)
        eg = ep.poll(0)
    return {"select": (bool(r), bool(w), bool(x)), "poll": names(got[0][1] if got else 0),
            "epoll": names(eg[0][1] if eg else 0)}


def connected(net: Net) -> tuple[Any, Any]:
    c, s, _ = pair(net)
    s.setblocking(False)
    s.fileno()  # the loopstack descriptor exists before anything arrives
    return c, s


# -- urgent data --------------------------------------------------------------------

@scenario
def poll_urgent_byte_pending_alone(net: Net, rec: Recorder) -> None:
    c, s = connected(net)
    rec("before", seen(s))
    c.send(b"!", S.MSG_OOB)
    wait_urgent(net, s)
    rec("lone urgent byte", seen(s))  # POLLPRI, no POLLIN
    rec.call(s.recv, 1, S.MSG_OOB, label="recv oob")
    rec("after recv oob", seen(s))
    c.sendall(b"data")
    net.wait(s)
    rec("data behind the taken byte", seen(s))
    rec.call(s.recv, 100, label="recv")
    rec("drained", seen(s))


@scenario
def poll_urgent_byte_lost_to_a_normal_read(net: Net, rec: Recorder) -> None:
    # A read starting on the out-of-line urgent byte steps over it: EAGAIN,
    # and the urgent data is over (no more POLLPRI).
    c, s = connected(net)
    c.send(b"!", S.MSG_OOB)
    wait_urgent(net, s)
    rec.call(s.recv, 100, label="normal recv")
    rec("after", seen(s))
    rec.call(s.recv, 1, S.MSG_OOB, label="recv oob")


@scenario
def poll_urgent_peek_keeps_it(net: Net, rec: Recorder) -> None:
    c, s = connected(net)
    c.send(b"xy", S.MSG_OOB)
    wait_urgent(net, s)
    settle(net)
    rec("pending", seen(s))
    rec.call(s.recv, 1, S.MSG_OOB | S.MSG_PEEK, label="peek oob")
    rec("after peek", seen(s))
    rec.call(s.recv, 100, label="recv to the mark")
    rec("at the mark", seen(s))
    rec.call(s.recv, 1, S.MSG_OOB, label="recv oob")
    rec("taken", seen(s))


@scenario
def poll_urgent_inline(net: Net, rec: Recorder) -> None:
    c, s = connected(net)
    s.setsockopt(SOL, S.SO_OOBINLINE, 1)
    c.send(b"!", S.MSG_OOB)
    wait_urgent(net, s)
    rec("inline urgent byte", seen(s))  # POLLIN and POLLPRI
    rec.call(s.recv, 100, label="recv")
    rec("read", seen(s))
    c.send(b"ab", S.MSG_OOB)
    c.sendall(b"cd")
    wait_urgent(net, s)
    settle(net)
    rec("inline, data after", seen(s))
    rec.call(s.recv, 100, label="recv to the mark")
    rec("at the mark", seen(s))
    rec.call(s.recv, 100, label="recv past the mark")
    rec("past", seen(s))


@scenario
def poll_urgent_byte_followed_by_data(net: Net, rec: Recorder) -> None:
    c, s = connected(net)
    c.sendall(b"ab")
    c.send(b"X", S.MSG_OOB)
    c.sendall(b"cd")
    wait_urgent(net, s)
    settle(net)
    rec("data, mark, data", seen(s))
    rec.call(s.recv, 100, label="recv to the mark")
    rec("at the mark", seen(s))  # POLLIN (cd) and POLLPRI
    rec.call(s.recv, 1, S.MSG_OOB, label="recv oob")
    rec("taken", seen(s))
    rec.call(s.recv, 100, label="recv rest")
    rec("drained", seen(s))


@scenario
def poll_urgent_then_a_newer_one(net: Net, rec: Recorder) -> None:
    c, s = connected(net)
    c.send(b"1", S.MSG_OOB)
    wait_urgent(net, s)
    c.send(b"2", S.MSG_OOB)
    settle(net)
    rec("two urgent bytes", seen(s))
    rec.call(s.recv, 1, S.MSG_OOB, label="recv oob")
    rec("taken", seen(s))
    rec.call(s.recv, 100, label="recv")
    rec("drained", seen(s))


@scenario
def poll_urgent_after_the_peer_closes(net: Net, rec: Recorder) -> None:
    c, s = connected(net)
    c.send(b"!", S.MSG_OOB)
    wait_urgent(net, s)
    c.close()
    net.wait(s)
    settle(net)
    rec("urgent byte and FIN", seen(s))
    rec.call(s.recv, 1, S.MSG_OOB, label="recv oob")
    rec("taken", seen(s))
    rec.call(s.recv, 100, label="recv")
    rec("end of stream", seen(s))


@scenario
def poll_urgent_on_the_sending_side(net: Net, rec: Recorder) -> None:
    # Sending urgent data signals nothing on the sender's descriptor.
    c, s = connected(net)
    c.setblocking(False)
    c.send(b"!", S.MSG_OOB)
    wait_urgent(net, s)
    rec("sender", seen(c))
    rec("receiver", seen(s))


@scenario
def poll_urgent_epoll_edge_triggered(net: Net, rec: Recorder) -> None:
    c, s = connected(net)
    with select.epoll() as ep:
        ep.register(s.fileno(), select.EPOLLIN | select.EPOLLPRI | select.EPOLLET)
        rec("nothing yet", [names(m) for _, m in ep.poll(0)])
        c.send(b"!", S.MSG_OOB)
        rec("edge", [names(m) for _, m in ep.poll(TIMEOUT)])
        rec("once", [names(m) for _, m in ep.poll(0)])
        rec.call(s.recv, 1, S.MSG_OOB, label="recv oob")
        c.sendall(b"z")
        rec("data edge", [names(m) for _, m in ep.poll(TIMEOUT)])


# -- sendfile ----------------------------------------------------------------------

DATA = bytes(range(256)) * 512  # 128 KiB


def data_file() -> Any:
    f = tempfile.TemporaryFile()
    f.write(DATA)
    f.flush()
    f.seek(0)
    return f


def os_sendfile(net: Net) -> Any:
    """The kernel side: the real os.sendfile; loopstack: sendfile.py's."""
    return lsf.sendfile if isinstance(net, LoopNet) else os.sendfile


def received(net: Net, s: Any, n: int) -> Any:
    """What arrives (up to ``n`` bytes, a timeout bounding each wait), as a digest."""
    s.settimeout(TIMEOUT)
    chunks = []
    got = 0
    try:
        while got < n:
            chunk = s.recv(n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except TimeoutError:
        pass
    data = b"".join(chunks)
    return len(data), hashlib.sha1(data).hexdigest()[:12]


def digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha1(data).hexdigest()[:12]


@scenario
def sendfile_os_blocking(net: Net, rec: Recorder) -> None:
    c, s, _ = pair(net)
    send = os_sendfile(net)
    f = data_file()
    fd = f.fileno()
    rec.call(send, c.fileno(), fd, 0, 1000, label="offset 0")
    rec("position kept", f.tell())
    rec.call(send, c.fileno(), fd, 5000, 3000, label="offset 5000")
    f.seek(100)
    rec.call(send, c.fileno(), fd, None, 2000, label="offset None")
    rec("position moved", f.tell())
    rec.call(send, c.fileno(), fd, len(DATA) - 10, 1000, label="short at the end")
    rec.call(send, c.fileno(), fd, len(DATA) + 10, 1000, label="past the end")
    rec.call(send, c.fileno(), fd, 0, 0, label="count 0")
    rec.call(send, c.fileno(), fd, 0, len(DATA) * 2, label="the whole file")
    rec.call(send, out_fd=c.fileno(), in_fd=fd, offset=7, count=9, label="keywords")
    rec("received", received(net, s, 1000 + 3000 + 2000 + 10 + len(DATA) + 9))
    rec("expected", digest(DATA[:1000] + DATA[5000:8000] + DATA[100:2100] + DATA[-10:]
                           + DATA + DATA[7:16]))


@scenario
def sendfile_os_errors(net: Net, rec: Recorder) -> None:
    c, s, _ = pair(net)
    send = os_sendfile(net)
    f = data_file()
    fd = f.fileno()
    rec.call(send, c.fileno(), fd, -1, 10, label="negative offset")
    rec.call(send, c.fileno(), fd, 0, -1, label="negative count")
    rec.call(send, c.fileno(), 1 << 20, 0, 10, label="in_fd not open")
    with tempfile.NamedTemporaryFile() as tmp:
        wfd = os.open(tmp.name, os.O_WRONLY)
        try:
            rec.call(send, c.fileno(), wfd, 0, 10, label="in_fd write-only")
        finally:
            os.close(wfd)
    r, w = os.pipe()
    try:
        os.write(w, b"pipe")
        rec.call(send, c.fileno(), r, 0, 4, label="pipe with offset")
        rec.call(send, c.fileno(), r, None, 4, label="pipe without offset")
    finally:
        os.close(r)
        os.close(w)
    rec.call(send, c.fileno(), s.fileno(), None, 4, label="a socket as input")
    rec.call(send, c.fileno(), fd, "0", 4, label="offset of the wrong type")
    fresh = net.socket(S.AF_INET, S.SOCK_STREAM)
    rec.call(send, fresh.fileno(), fd, 0, 10, label="unconnected")
    rec.call(send, fresh.fileno(), fd, 0, 0, label="unconnected, count 0")
    c.shutdown(S.SHUT_WR)
    rec.call(send, c.fileno(), fd, 0, 10, label="after shutdown")
    rec("received", received(net, s, 100))


@scenario
def sendfile_os_nonblocking_until_eagain(net: Net, rec: Recorder) -> None:
    c, s, _ = pair(net)
    send = os_sendfile(net)
    c.setsockopt(SOL, S.SO_SNDBUF, 4096)
    s.setsockopt(SOL, S.SO_RCVBUF, 4096)
    c.setblocking(False)
    with tempfile.TemporaryFile() as f:
        big = DATA * 32  # 4 MiB: more than both buffers hold
        f.write(big)
        f.flush()
        total = 0
        outcome: Any = None
        for _ in range(10000):
            try:
                n = send(c.fileno(), f.fileno(), total, len(big) - total)
            except BlockingIOError as e:
                outcome = ("BlockingIOError", e.errno)
                break
            total += n
        rec("ended with", outcome)
        rec("some went, not all", 0 < total < len(big))
        rec("unwritable", seen(c)["select"][1])
        rec("received", received(net, s, total) == digest(big[:total]))


@scenario
def sendfile_socket_method(net: Net, rec: Recorder) -> None:
    c, s, _ = pair(net)
    f = data_file()
    rec.call(c.sendfile, f, 10, 1000, label="offset and count")
    rec("position", f.tell())
    rec.call(c.sendfile, f, label="from 0, all")
    rec("position after", f.tell())
    c.settimeout(TIMEOUT)
    f.seek(0)
    rec.call(c.sendfile, f, len(DATA) - 5, label="with a timeout, the tail")
    rec("position at the end", f.tell())
    rec.call(c.sendfile, f, 0, 0, label="count 0")
    c.setblocking(False)
    rec.call(c.sendfile, f, label="non-blocking")
    rec("received", received(net, s, 1000 + len(DATA) + 5))
    rec("expected", digest(DATA[10:1010] + DATA + DATA[-5:]))


@scenario
def sendfile_asyncio_sock_sendfile(net: Net, rec: Recorder) -> None:
    # The native path only (fallback=False): os.sendfile on the descriptor.
    c, s, _ = pair(net)
    c.setblocking(False)
    big = DATA * 16  # 2 MiB, more than goes at once on either side

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        with tempfile.TemporaryFile() as f:
            f.write(big)
            f.flush()
            f.seek(0)
            sending = asyncio.ensure_future(
                loop.sock_sendfile(c, f, 100, None, fallback=False))
            got = bytearray()
            s.setblocking(False)
            while len(got) < len(big) - 100:
                chunk = await loop.sock_recv(s, 1 << 16)
                if not chunk:
                    break
                got += chunk
            return await sending, f.tell(), digest(bytes(got)) == digest(big[100:])

    if isinstance(net, LoopNet):
        lsf.install()  # what patch() does
    try:
        rec.call(asyncio.run, main(), label="sock_sendfile")
    finally:
        lsf.uninstall()


XFAIL: dict[str, str] = {}


def _params() -> list[Any]:
    return [pytest.param(e, id=e.name, marks=pytest.mark.xfail(strict=True, reason=XFAIL[e.name]))
            if e.name in XFAIL else pytest.param(e, id=e.name) for e in scenarios]


@pytest.mark.parametrize("entry", _params())
def test_readiness(entry: Entry) -> None:
    faulthandler.dump_traceback_later(60, exit=True)
    before = readiness.exact_urgent()
    readiness.set_exact_urgent(True)
    try:
        run(entry)
    finally:
        readiness.set_exact_urgent(before)
        faulthandler.cancel_dump_traceback_later()
