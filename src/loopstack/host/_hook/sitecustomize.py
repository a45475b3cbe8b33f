"""loopstack's start-up hook for processes started under a stack's owner.

``loopstack run`` and ``loopstack.patch(children=True)`` put this folder
first on PYTHONPATH and name the owner in LOOPSTACK_ATTACH, so a Python
process they start (``subprocess``, ``multiprocessing`` "spawn" and
"forkserver", ``os.exec*``) attaches to the owner's stack before its main
module runs. Then the user's own ``sitecustomize``, if there is one further
along the path, runs as it would have.
"""

import importlib
import os
import sys


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[1])  # (the name may hold spaces)


def _is_python(pid: int) -> bool:
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return False
    return exe.startswith(("python", "pypy"))


def _descends_from_attached() -> bool:
    """Whether this process descends from the stack's owner through
    attached processes only. LOOPSTACK_ATTACHED_PID names the nearest
    process of the chain that is attached (the owner, or an attached
    process: each sets it for its children). Between it and this process
    there may be programs that are not Python (``sh -c``); a Python process
    there did not attach (it ran with -E or -I, which ignore PYTHONPATH, so
    this hook never ran in it), so it and what it starts use the kernel's
    sockets, as they would on Linux: a process must not attach to a stack
    its parent is not on (its parent's server socket would be on the kernel
    and its own connection on the stack). A chain that ends before it meets
    either (the owner died and its children went to init) attaches, and
    its sockets then fail with ENETDOWN rather than reach the real network.
    Without /proc: attach."""
    fields = os.environ.get("LOOPSTACK_ATTACH", "").split("|")
    try:
        owner = int(fields[2])
        nearest = int(os.environ.get("LOOPSTACK_ATTACHED_PID") or owner)
    except (IndexError, ValueError):
        return True  # malformed: attaching says so
    if not os.path.isdir(f"/proc/{os.getpid()}"):
        return True
    pid = os.getppid()
    for _ in range(256):
        if pid in (owner, nearest):
            return True
        if pid <= 1:
            return True
        if _is_python(pid):
            return False
        try:
            pid = _ppid(pid)
        except (OSError, ValueError, IndexError):
            return True
    return True


def _attach() -> None:
    if not os.environ.get("LOOPSTACK_ATTACH") or not _descends_from_attached():
        return
    try:
        from loopstack.host.attach import attach_from_environment

        attach_from_environment()
    except Exception as e:  # the program still starts; its sockets say why they fail
        sys.stderr.write(f"loopstack: this process could not attach to its parent's "
                         f"stack: {e}\n")


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        importlib.import_module("sitecustomize")  # the user's own, if any
    except ImportError as e:
        if e.name != "sitecustomize":
            raise
        if ours is not None:
            sys.modules["sitecustomize"] = ours
    finally:
        sys.path[:] = saved


_attach()
_chain()
