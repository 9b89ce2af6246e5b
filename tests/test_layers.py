"""The core's layers point one way: Recipe → Plan → Train → Records → Display, with the doors on top.

Checking a recipe (recipe, plan, data, models, techniques) must never need training, drawing, widgets
or the magics: neither by importing them anywhere in its own files, nor through what it imports
when it loads.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nbopt"
CHECKING = ("nbopt.recipe", "nbopt.plan", "nbopt.data", "nbopt.models", "nbopt.techniques")
FORBIDDEN = ("nbopt.training", "nbopt.display", "nbopt.widgets", "nbopt.magics")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _targets(node: ast.AST, here: str) -> list[str]:
    """The nbopt modules an import statement loads (`from nbopt.x import y` loads nbopt.x.y if it is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = here if MODULES[here].name == "__init__.py" else here.rpartition(".")[0]
    for _ in range(max(node.level - 1, 0)):
        package = package.rpartition(".")[0]
    base = f"{package}.{node.module}" if node.level and node.module else (node.module or package)
    return [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]


def imports(name: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(MODULES[name].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports inside module-level try/if blocks run at load time too
        nodes = [n for stmt in tree.body for n in ast.walk(stmt)
                 if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(t for t in _targets(node, name) if t.startswith("nbopt"))
    return found


def loaded_with(name: str) -> set[str]:
    """Every nbopt module that loading `name` loads: its module-level imports, their parents, transitively."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in MODULES:
            continue
        seen.add(current)
        parents = [current.rsplit(".", i)[0] for i in range(1, current.count(".") + 1)]
        todo += [*imports(current, top_level_only=True), *parents]
    return seen


def forbidden(names) -> list[str]:
    return sorted(n for n in names if n.startswith(FORBIDDEN))


CHECKING_MODULES = sorted(n for n in MODULES if n.startswith(CHECKING))


def test_the_walk_sees_the_checking_layer_and_would_see_a_forbidden_import():
    assert {"nbopt.recipe", "nbopt.plan", "nbopt.data.resolve", "nbopt.techniques.prune"} <= set(CHECKING_MODULES)
    assert "nbopt.display.live" in loaded_with("nbopt.training")  # the walk follows imports for real


@pytest.mark.parametrize("name", CHECKING_MODULES)
def test_checking_never_imports_training_display_widgets_or_magics(name):
    assert forbidden(imports(name, top_level_only=False)) == []
    assert forbidden(loaded_with(name)) == []


def test_importing_the_checking_layer_loads_none_of_them():
    code = ("import sys\n" + "".join(f"import {name}\n" for name in CHECKING_MODULES)
            + "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('nbopt'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "nbopt.plan" in loaded
    assert forbidden(loaded) == []
