"""The package's layout: subpackages in layers, every import pointing down (or within its own
subpackage), no import cycle, and one command line for the book's commands."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import symlib

PKG = Path(symlib.__file__).parent
#: the layers, bottom first: a module may import from its own layer and the layers before it
LAYERS = (("paths", "utils"), ("game",), ("networks",), ("intervene",), ("analyses",), ("book",))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return len(LAYERS)  # the package itself (symlib/__init__.py, __main__.py): above everything


def _imports(path: Path) -> set[str]:
    """The symlib modules ``path`` imports, at its top or inside functions (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("symlib"):
                continue
            for alias in node.names:  # "from .x import y" may name a module y
                sub = f"{target}.{alias.name}"
                found.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                          or (PKG.parent / sub.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("symlib")}
    return found - {module}


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def test_the_package_is_in_subpackages_by_purpose():
    """symlib/ holds the five subpackages and, loose, only the bottom modules and the package's own files."""
    loose = {p.name for p in PKG.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "paths.py", "utils.py"}, loose
    assert {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "game", "networks", "intervene", "analyses", "book"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in ("symlib", "symlib.__main__")))
def test_imports_point_down(module):
    """A module imports only from its own layer or the layers below it, never from the package root."""
    up = [m for m in _imports(MODULES[module]) if _layer(m) > _layer(module) or m == "symlib"]
    assert not up, f"{module} imports {up}, above its layer"


def test_no_import_cycle():
    """The graph of symlib's imports (including those inside functions) has no cycle."""
    graph = {m: {i for i in _imports(p) if i in MODULES and i != "symlib"} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_the_layout_check_sees_an_upward_import(tmp_path):
    """The check itself can fail: a lazy import from a higher layer is found."""
    f = PKG / "game" / "_probe_for_layout_test.py"
    f.write_text("def f():\n    from ..intervene.das import run_das\n    return run_das\n")
    try:
        assert "symlib.intervene.das" in _imports(f)
        assert _layer("symlib.intervene.das") > _layer(_module_name(f))
    finally:
        f.unlink()


def test_one_command_line():
    """python -m symlib lists its commands; each command's --help works; an unknown one exits with status 2."""
    from symlib.__main__ import COMMANDS
    out = subprocess.run([sys.executable, "-m", "symlib", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)
    for command in ("findings", "sweep"):
        r = subprocess.run([sys.executable, "-m", "symlib", command, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and f"python -m symlib {command}" in r.stdout, r.stderr
    bad = subprocess.run([sys.executable, "-m", "symlib", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no command 'nope'" in bad.stderr


def _private_imports(path: Path) -> list[str]:
    """``module.name`` for each private name (``_x``) ``path`` imports from a module of another subpackage."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else [])) if node.level \
                else node.module or ""
            if target.startswith("symlib") and target.split(".")[:2] != module.split(".")[:2]:
                out += [f"{target}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_module_imports_another_subpackages_private_names():
    """What one part of the package needs from another is public there (siblings inside a subpackage may share)."""
    bad = {m: _private_imports(p) for m, p in MODULES.items()}
    assert not {m: b for m, b in bad.items() if b}
    probe = PKG / "analyses" / "_probe_private.py"
    probe.write_text("from ..networks.training import _Run\n")
    try:
        assert _private_imports(probe) == ["symlib.networks.training._Run"]
    finally:
        probe.unlink()
