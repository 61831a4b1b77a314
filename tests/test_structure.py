"""The tree's shape: no import cycles, a size limit per module, and a library that names no CLI flags."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tracer", "analyses", "workbench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (function-level imports included)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known}


def test_no_import_cycles():
    mods = _modules()
    graph = {name: _imports(path, name, set(mods)) - {name} for name, path in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_cycle_detector_sees_function_level_imports(tmp_path):
    """The detector is real: a function-level import that closes a loop is an edge."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg.b import g\n")
    assert _imports(a, "pkg.a", {"pkg.a", "pkg.b"}) == {"pkg.b"}


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def test_tracer_messages_name_no_cli_flags():
    """tracer is a library: its strings (errors, warnings) never mention a CLI flag."""
    found = []
    for path in (ROOT / "tracer").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [f"{path.relative_to(ROOT)}: {m}" for m in _FLAG.findall(node.value)]
    assert not found, f"CLI flags in tracer strings: {found}"


def test_layering_is_enforced_by_ruff(tmp_path):
    """ruff's banned-api rule (tracer/ruff.toml, analyses/ruff.toml) refuses upward imports."""
    ruff = pytest.importorskip("ruff")
    del ruff
    probe = ROOT / "tracer" / "_layering_probe.py"
    probe.write_text("def f():\n    from analyses.base import Estimator\n\n    return Estimator\n")
    try:
        out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251",
                              str(probe)], capture_output=True, text=True, cwd=ROOT)
    finally:
        probe.unlink()
    assert out.returncode == 1 and "tracer must not import analyses" in out.stdout, out.stdout + out.stderr


def test_help_imports_no_torch():
    """`workbench --help` registers every subcommand; registering one must not import torch,
    transformers or a plotting library (style C6: heavy modules inside subcommands; help stays fast)."""
    code = ("import sys, workbench.cli as c; c.build_parser(['--help']); "
            "print(','.join(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`workbench --help` imports {out.stdout.strip()}"
