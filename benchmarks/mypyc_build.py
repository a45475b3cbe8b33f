"""Build loopstack's optional compiled variant: the same typed source,
compiled module by module with mypyc, into a directory of its own (the
checkout is not touched). Issue 10 counts only pure Python; this build is
the extra measured beside it, to show how much of the gap is the
interpreter's.

    python benchmarks/mypyc_build.py                 # -> /tmp/loopstack-mypyc
    python benchmarks/mypyc_build.py --out DIR
    PYTHONPATH=/tmp/loopstack-mypyc python benchmarks/issue10.py --rows tcp_rtt

Which modules compile, and why the others stay interpreted (mypy 2.4's
mypyc; each reason was seen building this tree):

- clock.py: ``StackLock`` subclasses ``_thread.RLock`` (a native class
  over a built-in type crashes at the first ``release``), and the clocks
  bind ``now_ns`` per instance (a native method cannot be replaced); and
  marking these classes non-native fails on their property setters.
- socket.py: the socket front's metaclass derives from ``type``; and
  stream.py, whose StreamSocket subclasses its Socket (mypyc's internal
  error on a lambda in a method of such a class; the same error meets
  stack.py's and capture.py's closures if their classes are made
  non-native, as their weak references would need).
- stack.py and link/capture.py: their objects are held in weak sets, and
  this mypyc's native classes cannot be weakly referenced.
  Pipe NICs are native classes (their base, ``Interface``, is one), so
  nothing may hold them weakly: the build serves the benchmarks, and the
  test suite's white-box tests (``vars()`` of a TCB, replacing a module's
  function, weak references to NICs) do not run against it.
- the CLI, ``host/`` (processes and the attach server), ``report/``,
  the asyncio and patch layers and the pytest plug-in: not on the
  per-packet path, and they patch or subclass foreign classes at run time.

One textual change is made to the copy, never to the checkout: a
dataclass field annotated ``memoryview`` makes the compiled module fail
at import (``KeyError: 'memoryview'``, a mypyc bug), so such fields are
annotated through an alias of the same type.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "loopstack"

# Package-relative paths (directories end with "/") that stay interpreted.
INTERPRETED = (
    "cli/", "host/", "report/",
    "__main__.py", "demo.py", "pytest_plugin.py", "patch.py", "aio.py", "aio_transport.py",
    "passthrough.py", "tls.py", "sendfile.py", "selector.py", "names.py", "ping.py",
    "clock.py", "socket.py", "stream.py", "stack.py", "link/capture.py",
)

_DATACLASS_FIELD = re.compile(r"^(    \w+): memoryview\b", re.MULTILINE)
_ALIAS = "_MypycView"


def modules(pkg: Path) -> list[Path]:
    """The .py files of ``pkg`` that are compiled."""
    out = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if any(rel == x or (x.endswith("/") and rel.startswith(x)) for x in INTERPRETED):
            continue
        out.append(path)
    return out


def work_around_memoryview_fields(path: Path) -> bool:
    """Annotate ``memoryview`` dataclass fields through an alias (see the
    module docstring). True if the file changed."""
    text = path.read_text()
    if "@dataclass" not in text or not _DATACLASS_FIELD.search(text):
        return False
    text = _DATACLASS_FIELD.sub(rf"\1: {_ALIAS}", text)
    # After the last import of the module's top (the __future__ import
    # must stay first): the alias is a string, so it names no import.
    lines = text.split("\n")
    last = max(i for i, line in enumerate(lines)
               if line.startswith(("import ", "from ")) and not line.startswith("from __future__"))
    while lines[last].rstrip().endswith(("(", ",")):  # a parenthesised import
        last += 1
    lines.insert(last + 1, f'\n{_ALIAS}: TypeAlias = "memoryview"')
    lines.insert(last + 1, "from typing import TypeAlias")
    path.write_text("\n".join(lines))
    return True


def build(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pkg = out / "loopstack"
    shutil.copytree(SRC, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    patched = [p.relative_to(out).as_posix() for p in modules(pkg)
               if work_around_memoryview_fields(p)]
    targets = [p.relative_to(out).as_posix() for p in modules(pkg)]
    print(f"compiling {len(targets)} modules into {out} (memoryview fields aliased in"
          f" {len(patched)}: {', '.join(patched) or 'none'})", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mypyc", *targets], cwd=out,
                          capture_output=True, text=True,
                          env={**os.environ, "MYPYC_OPT_LEVEL": "3"})
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"mypyc_build: mypyc failed (exit {proc.returncode});"
                         " its output is above.")
    shutil.rmtree(out / "build", ignore_errors=True)
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.so"))
    print(f"built {len(built)} extension modules in {time.monotonic() - t0:.0f} s;"
          f" use: PYTHONPATH={out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/loopstack-mypyc"),
                    help="directory for the compiled copy (replaced)")
    args = ap.parse_args()
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise SystemExit("mypyc_build: mypyc is not installed; install mypy (pip install mypy),"
                         " which brings it.") from None
    build(args.out)


if __name__ == "__main__":
    main()
