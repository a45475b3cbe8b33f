"""The connection path's bookkeeping: a blocking accept() waits as a
hand-off (woken with the GIL let go, as accept(2) is woken inside
connect(2)), the port table's buckets (a busy server's port holds every
TIME-WAIT connection it accepted; one leaves in O(1), the order kept), and
the stack's table of socket objects (weak, no Python code to put an object
in or take it out)."""

from __future__ import annotations

import gc
import socket
import threading
import weakref
from typing import Any

import pytest

import loopstack
from loopstack.socket import SocketTable
from loopstack.transport.tcp.constants import State


def _listener(stack: loopstack.Stack) -> tuple[Any, tuple[str, int]]:
    lst = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    return lst, lst.getsockname()


def test_a_blocking_accept_waits_as_a_hand_off_and_is_woken_by_connect() -> None:
    with loopstack.Stack() as stack:
        lst, addr = _listener(stack)
        seen: list[bool] = []
        wait_for = stack.wait_for

        def recording(cond: Any, predicate: Any, timeout: Any, handoff: bool = False) -> bool:
            seen.append(handoff)
            return wait_for(cond, predicate, timeout, handoff)

        stack.wait_for = recording  # type: ignore[method-assign]
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(lst.accept()))
        t.start()
        # (until the server thread waits: then connect's wake is a hand-off)
        while not lst._cond._waiters:
            threading.Event().wait(0.001)
        c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(addr)
        t.join(10)
        assert not t.is_alive()
        assert seen[0] is True  # (accept's own wait)
        conn, peer = got[0]
        assert peer == c.getsockname()
        conn.sendall(b"x")
        assert c.recv(1) == b"x"
        conn.close()
        assert c.recv(1) == b""
        c.close()
        lst.close()


def test_accept_with_a_timeout_still_times_out_and_a_shutdown_listener_says_einval() -> None:
    with loopstack.Stack() as stack:
        lst, _ = _listener(stack)
        lst.settimeout(0.05)
        with pytest.raises(TimeoutError):
            lst.accept()
        lst.settimeout(None)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                lst.accept()
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        while not lst._cond._waiters:
            threading.Event().wait(0.001)
        lst.shutdown(socket.SHUT_RDWR)
        t.join(10)
        assert not t.is_alive()
        assert errors and errors[0].errno == 22  # EINVAL
        lst.close()


def test_time_wait_children_leave_the_listeners_port_in_order() -> None:
    with loopstack.Stack() as stack:
        lst, addr = _listener(stack)
        port = addr[1]
        clients = []
        children = []
        for _ in range(5):
            c = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.connect(addr)
            s, _ = lst.accept()
            children.append(loopstack.socket.implementation(s)._tcb)
            s.close()  # the server closes first: its end goes to TIME-WAIT
            assert c.recv(1) == b""
            c.close()
            clients.append(c)
        table = stack.tcp_ports
        bucket = list(table.at(port))
        listening = loopstack.socket.implementation(lst)._tcb
        assert bucket == [listening, *children]
        assert all(t.state == State.TIME_WAIT for t in children)
        # One in the middle ends (an RST in TIME-WAIT, a reopening SYN,
        # the timer: destroy): it leaves, the others keep their order.
        stack.tcp.destroy(children[2])
        assert list(table.at(port)) == [listening, *children[:2], *children[3:]]
        assert list(table).count(listening) == 1
        table.unbind(children[2])  # (already gone: nothing happens)
        lst.close()
        for t in children:
            stack.tcp.destroy(t)
        assert port not in table.by_port


def test_a_reopening_syn_on_a_time_wait_port_is_accepted() -> None:
    # The client's port lands on a server TIME-WAIT four-tuple: the SYN
    # reopens it (the old connection leaves the listener's bucket).
    with loopstack.Stack() as stack:
        lst, addr = _listener(stack)
        first = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        first.connect(addr)
        cport = first.getsockname()[1]
        s, _ = lst.accept()
        s.close()
        assert first.recv(1) == b""
        first.close()
        again = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", cport))
        again.connect(addr)
        s2, peer = lst.accept()
        assert peer[1] == cport
        bucket = list(stack.tcp_ports.at(addr[1]))
        assert len(bucket) == 2  # the listener and the new connection
        s2.close()
        again.close()
        lst.close()


class _Thing:
    pass


def test_the_socket_table_holds_objects_weakly() -> None:
    table = SocketTable()
    kept, dropped = _Thing(), _Thing()
    for obj in (kept, dropped):
        table[id(obj)] = weakref.ref(obj, table._gone)
    assert table.values() == [kept, dropped]
    del dropped, obj
    gc.collect()
    assert table.values() == [kept]
    assert len(table) == 1  # (the dead one's entry is gone too)
    assert table.pop(id(kept), None) is not None
    assert not table


def test_sockets_are_listed_and_leave_the_table_when_closed() -> None:
    with loopstack.Stack() as stack:
        a = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
        b = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert {id(s) for s in stack._sockets.values()} >= {id(a), id(b)}
        assert len(stack.sockets()) == 2
        a.close()
        assert [r["proto"] for r in stack.sockets()] == ["udp"]
        b.close()
        assert stack.sockets() == []
        assert len(stack._sockets) == 0
