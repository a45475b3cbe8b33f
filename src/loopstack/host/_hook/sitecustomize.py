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


def _attach() -> None:
    if not os.environ.get("LOOPSTACK_ATTACH"):
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
