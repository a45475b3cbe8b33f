"""benchmarks/mypyc_build.py without compiling (the build takes minutes):
which modules it compiles, and that its one change to the copied source
keeps each file valid Python with the same fields."""

from __future__ import annotations

import ast
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "loopstack"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mypyc_build", ROOT / "benchmarks" /
                                                  "mypyc_build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_per_packet_modules_are_compiled_and_the_others_are_not() -> None:
    build = _builder()
    chosen = {p.relative_to(SRC).as_posix() for p in build.modules(SRC)}
    for hot in ("transport/tcp/input.py", "transport/tcp/output.py", "transport/tcp/tcb.py",
                "ip/ipv4.py", "link/loopback.py", "readiness.py", "transport/udp.py"):
        assert hot in chosen
    for kept in ("clock.py", "socket.py", "stream.py", "stack.py", "patch.py", "aio.py",
                 "link/capture.py", "cli/main.py", "host/attach.py", "report/html.py"):
        assert kept not in chosen
    every = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")}
    assert chosen < every


def _fields(tree: ast.Module, cls: str) -> dict[str, str]:
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    return {s.target.id: ast.unparse(s.annotation) for s in node.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}


def test_memoryview_fields_are_aliased_and_nothing_else_changes(tmp_path: Path) -> None:
    build = _builder()
    for rel, cls in (("transport/tcp/segment.py", "Segment"), ("ip/packet.py", "Inbound")):
        copy = tmp_path / Path(rel).name
        shutil.copy(SRC / rel, copy)
        before = ast.parse((SRC / rel).read_text())
        assert build.work_around_memoryview_fields(copy)
        after = ast.parse(copy.read_text())  # still Python
        old, new = _fields(before, cls), _fields(after, cls)
        assert old.keys() == new.keys()
        changed = {k for k in old if old[k] != new[k]}
        assert changed == {k for k, v in old.items() if v == "memoryview"} != set()
        assert all(new[k] == "_MypycView" for k in changed)
        assert 'TypeAlias = "memoryview"' in copy.read_text()
        # the __future__ import stays first
        first = next(n for n in after.body if isinstance(n, ast.ImportFrom))
        assert first.module == "__future__"
    plain = tmp_path / "plain.py"
    shutil.copy(SRC / "transport" / "tcp" / "seq.py", plain)
    assert not build.work_around_memoryview_fields(plain)
