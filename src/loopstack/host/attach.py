"""Processes a stack's owner starts share its stack (DESIGN.md, "One
loopback for the machine").

``os.fork`` (and what is built on it: ``socketserver.ForkingMixIn``,
``multiprocessing``'s "fork", the forks a "forkserver" makes): hooks
registered with ``os.register_at_fork`` run around every fork.

- before: for each stack this process owns and uses (it has sockets, or a
  patch routes to it), take the stack's lock so its state is consistent,
  flush captures (a copied file buffer would be written twice), and have its
  attach server make the child's holder now, holding every socket this
  process holds: a socket the parent closes right after the fork (as
  ForkingMixIn does) stays open for the child. An attached process asks its
  owner for the same over its channel.
- after, in the parent: let the lock go; close the child's end.
- after, in the child: no thread of the parent exists here, so the copied
  stack must not be used: the ``Stack`` object becomes a ``RemoteStack`` and
  every socket object a ``RemoteSocket`` for the same socket (same objects,
  so the program's references stay valid); copies of the owner's channel
  connections are closed.

Processes started by ``exec`` (``subprocess``, ``multiprocessing``'s
"spawn" and "forkserver", ``os.exec*``) learn where the owner is from the
environment: ``LOOPSTACK_ATTACH`` names the attach socket and the owner's
token, and the start-up hook ``host/_hook/sitecustomize.py``, put first on
``PYTHONPATH``, attaches the new interpreter and patches it before its main
module runs (then runs the user's own sitecustomize, if any).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..socket import _RESERVED
from ..stack import Stack, live_stacks
from .remote import Link, RemoteSocket, RemoteStack

ENV = "LOOPSTACK_ATTACH"
# The nearest attached process (or the owner) of a new process's ancestors:
# each sets it to its own pid for its children. The start-up hook attaches
# only a descendant of it through programs that are not Python (see
# _hook/sitecustomize.py): a Python process in between did not attach.
PARENT_ENV = "LOOPSTACK_ATTACHED_PID"
HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_hook")
_installed = False
# What the before-fork hook prepared, for the after-fork hooks. Per thread:
# the hooks run in the forking thread, and two threads may fork at once
# (each must close only its own child's descriptors).
_forking = threading.local()
_env_lock = threading.Lock()
_process_patch: Any = None


def install() -> None:
    """Register the fork hooks (once per interpreter)."""
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                            after_in_child=_after_fork_child)
        _installed = True


def _in_use(stack: Stack) -> bool:
    from ..patch import _active

    return bool(stack._sockets) or stack.attach_server is not None or any(
        s is stack for s, _ in _active)


def _pending() -> list[tuple[Any, ...]]:
    pending: list[tuple[Any, ...]] = _forking.__dict__.setdefault("pending", [])
    return pending


def _before_fork() -> None:
    _pending().clear()
    for stack in list(live_stacks):
        if isinstance(stack, RemoteStack):
            link = stack._link
            if link is not None and not link.dead and not stack._closed:
                _pending().append(("attached", stack, link.prepare_fork()))
            continue
        if stack._closed or not _in_use(stack):
            continue
        try:
            server = stack.serve_children()
        except OSError:
            continue
        stack.lock.acquire()
        try:
            from ..link.capture import flush_all

            flush_all()
            holder, end = server.fork_holder(None)
            exported = server.export_local(holder)
        except BaseException:
            stack.lock.release()
            raise
        _pending().append(("owner", stack, server, holder, end, exported))


def _after_fork_parent() -> None:
    pending = _pending()[:]
    _pending().clear()
    for item in pending:
        if item[0] == "owner":
            _, stack, _server, _holder, end, _exported = item
            end.close()
            stack.lock.release()
        else:
            prepared = item[2]
            if prepared is not None:
                os.close(prepared[2])


def _mark_attached() -> None:
    """This process is attached: processes it starts (with exec) attach."""
    if os.environ.get(ENV):
        os.environ[PARENT_ENV] = str(os.getpid())


def _after_fork_child() -> None:
    pending = _pending()[:]
    _pending().clear()
    if pending:
        _mark_attached()
    import importlib

    patch_module: Any = importlib.import_module("loopstack.patch")
    patch_module._lock = threading.RLock()
    for item in pending:
        if item[0] == "owner":
            _, stack, server, holder, end, exported = item
            _become_attached(stack, server, holder, end, exported)
        else:
            _, stack, prepared = item
            stack._link.after_fork_child(prepared)


def _become_attached(stack: Stack, server: Any, holder: Any, end: Any,
                     exported: dict[int, int]) -> None:
    """In the child of a fork of the owner: the copied stack and its socket
    objects turn into proxies for the owner's (same objects, new classes)."""
    link = Link(server.path, server.token, server.pid, holder.hid, holder.key, end)
    server.close_inherited()
    sockets = list(stack._sockets.values())
    hosts = stack.hosts
    stack.__dict__.clear()
    stack.__class__ = RemoteStack
    rstack: RemoteStack = stack  # type: ignore[assignment]
    rstack._setup(link, server.pid, hosts)
    live_stacks.add(rstack)
    # The readiness descriptors came with the fork: each object keeps the
    # number fileno() gave it (the program may have handed it to a selector
    # already); numbers no kept object uses are closed, not leaked.
    inherited: set[int] = set()
    kept: set[int] = set()
    for sock in sockets:
        family, kind, proto, timeout = sock._family, sock._kind, sock._proto, sock._timeout
        io_refs = getattr(sock, "_io_refs", 0)
        closing = getattr(sock, "_closing", False)  # close() waits for makefile()s
        # An object's own number, where the core gives each object one (a
        # dup of the pair's end for a second object of a socket); else the
        # pair's end is the socket's only number.
        own = getattr(sock, "_fd", None)
        fd = -1
        efd = sock._efd
        if efd is not None:
            number = efd._watched.fileno()
            if number >= 0:
                efd._watched.detach()  # the number outlives the owner's object for it
                inherited.add(number)
            efd._peer.close()
            fd = number if own is None else own
        elif own is not None and own in _RESERVED:
            fd = own  # reserved, not yet made: fileno() in the child puts its descriptor there
        handle = exported.get(id(sock))
        sock.__dict__.clear()
        sock.__class__ = RemoteSocket
        remote: RemoteSocket = sock  # type: ignore[assignment]
        if handle is None or fd < 0:
            if fd >= 0:
                inherited.add(fd)  # closed, or held only by other processes
            fd = -1
        else:
            kept.add(fd)
        remote._shared = None  # a slot: the owner's record stays with the owner
        remote._setup(rstack, handle, family, kind, proto, timeout, fd)
        remote._io_refs = io_refs
        remote._closing = closing
    for number in inherited - kept:
        _RESERVED.discard(number)
        os.close(number)


# -- processes started with exec -------------------------------------------------------
def attach_from_environment(address: str | None = None) -> RemoteStack:
    """Attach this (new) interpreter to the owner named by LOOPSTACK_ATTACH
    and route its sockets there for good (the start-up hook calls this). If
    the owner cannot be reached, sockets fail with a clear error rather than
    silently using the real network."""
    from ..patch import patch

    spec = address if address is not None else os.environ.get(ENV, "")
    fields = spec.split("|")
    passthrough = len(fields) > 3 and fields[3] == "passthrough"
    try:
        owner_pid = int(fields[2])
    except (IndexError, ValueError):
        owner_pid = 0
    link: Link | None
    try:
        link = Link.join("|".join(fields[:3]))
        error: Exception | None = None
    except (OSError, ValueError) as e:
        link, error = None, e
    stack = RemoteStack(link, owner_pid)
    live_stacks.add(stack)
    global _process_patch
    _process_patch = patch(stack, passthrough=passthrough)  # kept: for the process's life
    _process_patch.__enter__()
    install()
    if error is not None:
        raise error
    _mark_attached()
    return stack


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextmanager
def children_environment(stack: Stack, passthrough: bool = False) -> Iterator[None]:
    """While active, Python processes started with exec attach to ``stack``:
    LOOPSTACK_ATTACH names it and PYTHONPATH starts with the start-up hook."""
    if isinstance(stack, RemoteStack):
        yield  # already attached: the environment this process got says it
        return
    server = stack.serve_children()
    with _env_lock:
        saved = {k: os.environ.get(k) for k in (ENV, PARENT_ENV, "PYTHONPATH")}
        os.environ[ENV] = server.address + ("|passthrough" if passthrough else "")
        os.environ[PARENT_ENV] = str(os.getpid())
        parts = [HOOK_DIR]
        root = _package_root()
        if "site-packages" not in root and "dist-packages" not in root:
            parts.append(root)  # a source checkout: let the child import loopstack
        old = [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep)
               if p and p not in parts]
        os.environ["PYTHONPATH"] = os.pathsep.join(parts + old)
    try:
        yield
    finally:
        with _env_lock:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


__all__ = ["ENV", "PARENT_ENV", "attach_from_environment", "children_environment", "install"]
