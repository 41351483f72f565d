"""The package's shape: errors and validators at the bottom, paradigms above the core, exercises and
panels on top; no import loop, no upward import, and graders live only in labkit.exercises."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "labkit"
UPPER = ("labkit.exercises", "labkit.widgets", "labkit.predict", "labkit.assignments", "labkit.classroom")
MIDDLE = ("labkit.paradigms",)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(name: str) -> int:
    if name.startswith(UPPER):
        return 2
    if name.startswith(MIDDLE):
        return 1
    return 0


def _imports(path: Path, modules: dict) -> set[str]:
    """labkit modules imported anywhere in the file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("labkit"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("labkit."))
    return found - {"labkit"}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path, modules) if m in modules and m != name} for name, path in modules.items()
            if name != "labkit"}


def test_no_upward_import():
    bad = [f"{a} -> {b}" for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a)]
    assert not bad, "upward imports (core < paradigms < exercises/panels/classroom): " + ", ".join(sorted(bad))


def test_no_import_loop():
    graph, state, loops = _graph(), {}, []

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                loops.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not loops, "import loops: " + "; ".join(loops)


def test_contracts_is_the_bottom():
    assert not _graph()["labkit.contracts"], "labkit.contracts must import nothing from labkit"


def test_graders_live_in_exercises():
    """Paradigm and core modules hold builders and objectives; every check_* grader sits in the top layer."""
    stray = [f"{name}.{fn}" for name, path in _modules().items() if _layer(name) < 2
             for fn in re.findall(r"^def (check_\w+)", path.read_text(), flags=re.M)]
    assert not stray, f"exercise graders outside labkit.exercises: {stray}"


def test_one_ignore_constant():
    defs = [name for name, path in _modules().items() if re.search(r"^IGNORE\s*=", path.read_text(), flags=re.M)]
    assert defs == ["labkit.contracts"], defs


def test_readme_package_table_has_one_row_per_module():
    """README's package table names every module (paradigms one by one; exercises, widgets, classroom as packages)."""
    readme = (PKG.parent / "README.md").read_text()
    rows = re.findall(r"^\| `(labkit[\w.]*)` \|", readme, flags=re.M)
    wanted = {f"labkit.{p.stem}" for p in PKG.glob("*.py") if p.stem != "__init__"}
    wanted |= {f"labkit.paradigms.{p.stem}" for p in (PKG / "paradigms").glob("*.py") if p.stem != "__init__"}
    wanted |= {f"labkit.{p.parent.name}" for p in PKG.glob("*/__init__.py") if p.parent.name != "paradigms"}
    assert sorted(rows) == sorted(set(rows)), "a module has two rows"
    assert set(rows) == wanted, f"missing rows: {sorted(wanted - set(rows))}; stale rows: {sorted(set(rows) - wanted)}"
