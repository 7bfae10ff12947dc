"""The import graph of the package: no cycle between modules, and core imports nothing above it.

Every module of ``zonkey`` is parsed (not imported) and every import statement in it counts,
those inside functions too: a lazy import hides a cycle from Python but not from a reader.
Relative imports are resolved; ``from package import name`` points at the submodule ``name`` where
one exists. An import names one module: importing ``a.b.c`` is an edge to ``a.b.c`` only, not to the
packages ``a`` and ``a.b`` that Python initialises on the way. Imports under ``if TYPE_CHECKING:``
never run, so they are left out of the cycle check; the layer rule counts them as well.

The layer rule: ``zonkey.core`` (the model, its walk and its shared math) must not import
``zonkey.components`` (the registered implementations, loaded through the registry), ``zonkey.cli``
or ``zonkey.api`` (the user-facing facade), all of which build on core.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import zonkey

CORE = "zonkey.core"
ABOVE_CORE = ("zonkey.components", "zonkey.cli", "zonkey.api")


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package."""

    source: str  # the importing module
    target: str  # the imported module
    line: int
    type_checking: bool  # under ``if TYPE_CHECKING:``


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (the directory of ``package``)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([package, *parts])] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) bodies."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific known module that ``name`` (dotted) starts with, or None outside the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of ``module`` (file ``path``) that lands inside the package, self-imports left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    guarded = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def add(target: str | None, node: ast.stmt) -> None:
        if target is not None and target != module:
            found.append(Import(module, target, node.lineno, id(node) in guarded))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_resolve(alias.name, modules), node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                add(submodule if submodule in modules else _resolve(origin, modules), node)
    return found


def import_graph(root: Path, package: str) -> list[Import]:
    """Every import inside the package rooted at ``root``."""
    modules = modules_of(root, package)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def cycles(imports: list[Import]) -> list[list[str]]:
    """The import cycles (strongly connected groups of two or more modules), sorted.

    TYPE_CHECKING-only imports do not count: they never run.
    """
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_checking:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    # Tarjan's strongly connected components, iterative (the package is deep enough to matter)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(groups)


def layer_violations(imports: list[Import], lower: str = CORE, above: tuple[str, ...] = ABOVE_CORE) -> list[str]:
    """``source:line -> target`` for each import from the ``lower`` layer into one ``above`` it."""

    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return sorted({
        f"{imp.source}:{imp.line} -> {imp.target}"
        for imp in imports
        if within(imp.source, lower) and any(within(imp.target, a) for a in above)
    })


# --------------------------------------------------------------------------------- the package


PACKAGE = import_graph(Path(zonkey.__file__).parent, "zonkey")


def _edges_within(group: list[str]) -> list[str]:
    members = set(group)
    return sorted({f"  {imp.source}:{imp.line} -> {imp.target}" for imp in PACKAGE
                   if imp.source in members and imp.target in members and not imp.type_checking})


def test_the_package_has_no_import_cycle() -> None:
    found = cycles(PACKAGE)
    assert not found, "import cycles (each group imports itself through the others):\n" + "\n".join(
        " <-> ".join(group) + "\n" + "\n".join(_edges_within(group)) for group in found
    )


def test_core_imports_neither_components_nor_cli_nor_the_api() -> None:
    found = layer_violations(PACKAGE)
    assert not found, "zonkey.core imports a layer above it:\n" + "\n".join(found)


def test_the_walk_sees_the_package() -> None:
    sources = {imp.source for imp in PACKAGE}
    assert {"zonkey.core.registry", "zonkey.core.attention", "zonkey.components.attention.flex"} <= sources
    assert any(imp.target == "zonkey.core.registry" for imp in PACKAGE)


# ------------------------------------------------------------------------------- the checker itself


def _package(tmp_path: Path, files: dict[str, str]) -> list[Import]:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(root, "pkg")


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    imports = _package(tmp_path, {
        "a.py": "from pkg import b\n",
        "b.py": "def late():\n    from pkg.c import thing\n    return thing\n",
        "c.py": "import pkg.a\nthing = 1\n",
        "d.py": "from pkg import a\n",  # imports into the cycle, but is not part of it
    })
    assert cycles(imports) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_relative_imports_resolve_to_modules(tmp_path: Path) -> None:
    imports = _package(tmp_path, {
        "sub/__init__.py": "from . import x\n",
        "sub/x.py": "from .y import thing\nfrom .. import top\n",
        "sub/y.py": "thing = 1\nfrom ..sub import x\n",
        "top.py": "",
    })
    edges = {(imp.source, imp.target) for imp in imports}
    assert edges == {("pkg.sub", "pkg.sub.x"), ("pkg.sub.x", "pkg.sub.y"), ("pkg.sub.x", "pkg.top"), ("pkg.sub.y", "pkg.sub.x")}
    assert cycles(imports) == [["pkg.sub.x", "pkg.sub.y"]]


def test_type_checking_imports_are_no_cycle_but_still_break_the_layers(tmp_path: Path) -> None:
    imports = _package(tmp_path, {
        "core/__init__.py": "",
        "core/m.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.components.c import C\n",
        "components/__init__.py": "",
        "components/c.py": "from pkg.core import m\n",
    })
    assert cycles(imports) == []
    assert layer_violations(imports, "pkg.core", ("pkg.components",)) == ["pkg.core.m:3 -> pkg.components.c"]


def test_a_lazy_import_from_core_into_a_higher_layer_is_a_violation(tmp_path: Path) -> None:
    imports = _package(tmp_path, {
        "core/__init__.py": "",
        "core/m.py": "def f():\n    import pkg.cli.app\n",
        "core/n.py": "from pkg.core import m\n",
        "cli/__init__.py": "",
        "cli/app.py": "",
        "corelike.py": "import pkg.cli.app\n",  # a sibling whose name merely starts with "core"
    })
    assert layer_violations(imports, "pkg.core", ("pkg.cli",)) == ["pkg.core.m:2 -> pkg.cli.app"]


@pytest.mark.parametrize("statement", ["import os\n", "from typing import Any\n", "import torch.nn\n"])
def test_imports_outside_the_package_are_ignored(tmp_path: Path, statement: str) -> None:
    assert _package(tmp_path, {"a.py": statement}) == []
