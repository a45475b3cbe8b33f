"""The attach channel lets in only the owner's own descendants, and a peer
that sends garbage or dies mid-message is dropped without harming the
owner or the other attached processes."""

from __future__ import annotations

import errno
import os
import pickle
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopstack import Stack
from loopstack.host.channel import HELLO, KEY_LEN, MAGIC, MAX_FRAME, Channel, encode
from loopstack.host.owner import AttachServer
from loopstack.host.remote import Link, RemoteStack


@pytest.fixture
def served() -> Iterator[tuple[Stack, AttachServer]]:
    stack = Stack()
    server = stack.serve_children()
    yield stack, server
    stack.close()


def raw(server: AttachServer) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(server.path)
    return s


def closed_by_owner(s: socket.socket) -> bool:
    """True when the owner hung up on us (EOF or reset), within 5 s."""
    try:
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def attach(server: AttachServer) -> RemoteStack:
    return RemoteStack(Link.join(server.address), server.pid)


def still_serves(stack: Stack, server: AttachServer) -> None:
    """A legitimate attached process and the owner itself both still work."""
    remote = attach(server)
    try:
        listener = remote.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with stack.create_connection(("127.0.0.1", port), timeout=5) as c:
            conn, _ = listener.accept()
            c.sendall(b"ok")
            assert conn.recv(10) == b"ok"
            conn.close()
        listener.close()
    finally:
        remote.close()


def test_wrong_token_is_refused(served: tuple[Stack, AttachServer]) -> None:
    stack, server = served
    before = server.counters["refused"]
    s = raw(server)
    s.sendall(HELLO.pack(MAGIC, os.urandom(32), b"H", 0, bytes(KEY_LEN)))
    assert closed_by_owner(s)
    assert server.counters["refused"] == before + 1
    still_serves(stack, server)


def test_call_connection_needs_its_holder_key(served: tuple[Stack, AttachServer]) -> None:
    stack, server = served
    remote = attach(server)
    assert remote._link is not None
    s = raw(server)
    s.sendall(HELLO.pack(MAGIC, server.token, b"C", remote._link.hid, os.urandom(KEY_LEN)))
    assert closed_by_owner(s)
    remote.close()
    still_serves(stack, server)


def as_nobody(check: Callable[[], bool]) -> bool:
    """check() run in a forked child as user and group 65534."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        ok = False
        try:
            os.setgid(65534)
            os.setuid(65534)
            ok = check()
        finally:
            os._exit(0 if ok else 1)
    return os.waitpid(pid, 0)[1] == 0


def test_directory_is_private_and_other_users_are_refused(
        served: tuple[Stack, AttachServer]) -> None:
    stack, server = served
    assert stat.S_IMODE(os.stat(server.dir).st_mode) == 0o700
    if os.getuid() != 0:
        pytest.skip("needs root to become another user")

    def cannot_connect() -> bool:
        try:
            socket.socket(socket.AF_UNIX).connect(server.path)
            return False
        except PermissionError:
            return True
    assert as_nobody(cannot_connect)
    # Even with the directory opened up, another uid is refused (SO_PEERCRED).
    os.chmod(server.dir, 0o755)
    os.chmod(server.path, 0o777)
    before = server.counters["refused"]

    def is_refused() -> bool:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(server.path)
        s.sendall(HELLO.pack(MAGIC, server.token, b"H", 0, bytes(KEY_LEN)))
        return closed_by_owner(s)
    assert as_nobody(is_refused)
    os.chmod(server.dir, 0o700)
    deadline = time.monotonic() + 5
    while server.counters["refused"] == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.counters["refused"] == before + 1
    still_serves(stack, server)


def call_channel(server: AttachServer, remote: RemoteStack) -> socket.socket:
    assert remote._link is not None
    s = raw(server)
    s.sendall(HELLO.pack(MAGIC, server.token, b"C", remote._link.hid, remote._link.key))
    assert Channel(s).recv()[0] is None
    return s


TRUNCATED = encode(("socket", 0, None, (2, 1, 0)))[:-3]
SYSTEM = pickle.dumps(os.system, protocol=5)


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff",                                      # a length over the limit
    struct.pack("<I", MAX_FRAME + 1) + b"x" * 10,
    struct.pack("<I", 5) + b"junk!",                          # not a pickle
    encode(("socket", 0, None)),                              # not a call's shape
    encode(("_hand_over", 1, None, ())),                      # not a call anyone may make
    TRUNCATED,                                                # dies mid-message
    struct.pack("<I", len(SYSTEM)) + SYSTEM,                  # names a function
], ids=["huge", "over", "junk", "shape", "private", "truncated", "class"])
def test_garbage_after_the_hello_drops_only_that_connection(
        served: tuple[Stack, AttachServer], payload: bytes) -> None:
    stack, server = served
    remote = attach(server)
    s = call_channel(server, remote)
    s.sendall(payload)
    if payload == TRUNCATED:
        s.close()  # the peer dies in the middle of its message
    else:
        assert closed_by_owner(s)
    # the same process's other connections, and everyone else, carry on
    sock = remote.socket()
    sock.bind(("127.0.0.1", 0))
    sock.close()
    remote.close()
    still_serves(stack, server)


def test_a_pickle_naming_a_class_runs_nothing(served: tuple[Stack, AttachServer],
                                              tmp_path: object) -> None:
    stack, server = served
    remote = attach(server)
    s = call_channel(server, remote)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (f"{tmp_path}/pwned",))

    body = pickle.dumps(("socket", 0, None, (Evil(),)), protocol=5)
    s.sendall(struct.pack("<I", len(body)) + body)
    assert closed_by_owner(s)
    assert not os.path.exists(f"{tmp_path}/pwned")
    remote.close()
    still_serves(stack, server)


def test_a_handle_not_held_is_ebadf(served: tuple[Stack, AttachServer]) -> None:
    stack, server = served
    mine = stack.socket()  # the owner's, never given to the attached process
    remote = attach(server)
    assert remote._link is not None
    handle = server.export_local(server.fork_holder(None)[0])[id(mine)]
    with pytest.raises(OSError) as e:
        remote._link.call("getsockname", handle, None, ())
    assert e.value.errno == errno.EBADF
    remote.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=300), hello=st.booleans())
def test_fuzzed_bytes_never_harm_the_owner(served: tuple[Stack, AttachServer], blob: bytes,
                                           hello: bool) -> None:
    stack, server = served
    remote = attach(server) if hello else None
    s = call_channel(server, remote) if remote is not None else raw(server)
    try:
        s.sendall(blob)
    except OSError:
        pass
    s.close()
    if remote is not None:
        remote.close()
    # the owner still answers a legitimate process at once
    probe = attach(server)
    sock = probe.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    assert sock.getsockname()[0] == "127.0.0.1"
    probe.close()


def test_a_dead_holder_releases_its_sockets(served: tuple[Stack, AttachServer]) -> None:
    stack, server = served
    remote = attach(server)
    listener = remote.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert any(r["local"][1] == port for r in stack.sockets())
    assert remote._link is not None and remote._link.liveness is not None
    remote._link.liveness.close()  # as if the process had died
    deadline = time.monotonic() + 5
    while any(r["local"][1] == port for r in stack.sockets()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(r["local"][1] == port for r in stack.sockets())
    with pytest.raises(ConnectionRefusedError):
        stack.create_connection(("127.0.0.1", port), timeout=5)
