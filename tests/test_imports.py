"""The import graph of the package: no cycle between modules, and every import follows the layer table.

Every module of ``zonkey`` is parsed (not imported) and every import statement in it counts,
those inside functions too: a lazy import hides a cycle from Python but not from a reader.
Relative imports are resolved; ``from package import name`` points at the submodule ``name`` where
one exists. An import names one module: importing ``a.b.c`` is an edge to ``a.b.c`` only, not to the
packages ``a`` and ``a.b`` that Python initialises on the way. Imports under ``if TYPE_CHECKING:``
never run, so they are left out of the cycle check; the layer table counts them as well.

The layer table (:data:`LAYERS`, the same as docs/architecture.md's): each unit of the package (a
job package of ``zonkey.core``, or a top-level package or module) with the units it may import.
The table is itself acyclic, so no import runs back up; in particular nothing in ``zonkey.core``
imports ``zonkey.components``, ``zonkey.baselines``, ``zonkey.cli`` or ``zonkey.api``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import zonkey

CORE = "zonkey.core"
ABOVE_CORE = ("zonkey.components", "zonkey.baselines", "zonkey.cli", "zonkey.api")

#: unit -> the units it may import (names without the ``zonkey.`` prefix), lowest first
LAYERS: dict[str, set[str]] = {
    "version": set(),
    "errors": set(),
    "inputs": {"errors"},
    "fsguard": {"errors"},
    "io": {"errors", "inputs", "fsguard"},
    "core.contracts": {"errors"},
    "core.recipe": {"core.contracts", "errors", "inputs", "fsguard"},
    "core.nn": {"core.contracts", "errors"},
    "data": {"inputs", "fsguard", "core.recipe", "errors", "io"},
    "core.checkpoint": {"inputs", "fsguard", "core.recipe", "io", "errors", "version"},
    "core.model": {"inputs", "fsguard", "core.contracts", "core.nn", "core.recipe", "core.checkpoint", "data", "io", "errors"},
    "core.train": {"inputs", "fsguard", "core.contracts", "core.nn", "core.recipe", "core.checkpoint", "core.model", "data", "io",
                   "errors", "version"},
    "core.generate": {"core.contracts", "core.nn", "core.recipe", "core.model", "data", "errors"},
    "core.evaluate": {"inputs", "fsguard", "core.contracts", "core.nn", "core.recipe", "core.checkpoint", "core.model",
                      "core.generate", "data", "io", "errors"},
    "core": set(),  # zonkey/core/__init__.py: a docstring only
    "components": {"inputs", "fsguard", "core.contracts", "core.nn", "core.recipe", "data", "io", "errors"},
    "baselines": {"inputs", "fsguard", "core.contracts", "core.nn", "core.recipe", "core.checkpoint", "core.train", "core.evaluate",
                  "data", "io", "errors", "version"},
    "diagnose": {"inputs", "fsguard", "core.contracts", "core.nn", "core.recipe", "core.model", "core.generate", "core.evaluate",
                 "data", "io", "errors"},
    "hub": {"inputs", "fsguard", "core.checkpoint", "io", "errors"},
    "api": {"inputs", "fsguard", "core.contracts", "core.recipe", "core.model", "core.generate", "core.evaluate",
            "baselines", "data", "hub", "errors"},
    "ablate": {"inputs", "fsguard", "core.contracts", "core.recipe", "core.checkpoint", "core.train", "core.evaluate",
               "api", "baselines", "data", "io", "errors"},
    "plot": {"inputs", "fsguard", "core.recipe", "core.model", "ablate", "data", "io", "errors"},
    "cli": {"inputs", "fsguard", "core.contracts", "core.recipe", "core.checkpoint", "core.train", "core.generate",
            "core.evaluate", "api", "hub", "baselines", "ablate", "diagnose", "plot", "data", "io", "errors", "version"},
    "": {"api", "core.recipe", "version"},  # zonkey/__init__.py: the user API and recipes
    "__main__": {"cli"},
}


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


def test_core_imports_neither_components_nor_baselines_nor_cli_nor_the_api() -> None:
    found = layer_violations(PACKAGE)
    assert not found, "zonkey.core imports a layer above it:\n" + "\n".join(found)


def unit_of(module: str, package: str = "zonkey") -> str:
    """The layer-table unit of a dotted module: a job package of core, else the top-level name."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] == "core" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def table_violations(imports: list[Import], table: dict[str, set[str]]) -> list[str]:
    """``source:line -> target (unit -> unit)`` for each import between units that the table does not allow."""
    out = set()
    for imp in imports:
        a, b = unit_of(imp.source), unit_of(imp.target)
        if a != b and b not in table.get(a, set()):
            out.add(f"{imp.source}:{imp.line} -> {imp.target} ({a or 'zonkey'} -> {b or 'zonkey'})")
    return sorted(out)


def test_every_import_follows_the_layer_table() -> None:
    found = table_violations(PACKAGE, LAYERS)
    assert not found, "imports the layer table does not allow:\n" + "\n".join(found)


def test_every_unit_of_the_package_is_in_the_table() -> None:
    units = {unit_of(m) for m in modules_of(Path(zonkey.__file__).parent, "zonkey")}
    assert units == set(LAYERS), f"not in the table: {sorted(units - set(LAYERS))}; gone: {sorted(set(LAYERS) - units)}"


def test_the_layer_table_has_no_cycle_so_no_arrow_runs_back_up() -> None:
    edges = [Import(f"zonkey.{a}", f"zonkey.{b}", 0, False) for a, allowed in LAYERS.items() for b in allowed]
    assert cycles(edges) == []


def test_the_layer_table_keeps_the_jobs_apart() -> None:
    above_core = {"components", "baselines", "cli", "api"}
    for unit, allowed in LAYERS.items():
        if unit.startswith("core"):
            assert not allowed & above_core, unit
    assert LAYERS["core.nn"] <= {"core.contracts", "errors"}
    assert not LAYERS["core.model"] & {"core.generate", "core.evaluate", "core.train"}
    assert not LAYERS["core.train"] & {"core.generate", "core.evaluate"}


def test_core_holds_job_packages_and_no_module_at_its_root() -> None:
    core = Path(zonkey.__file__).parent / "core"
    assert sorted(p.name for p in core.glob("*.py")) == ["__init__.py"]
    assert {p.name for p in core.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        u.split(".")[1] for u in LAYERS if u.startswith("core.")}


def test_no_package_holds_more_than_a_fifth_of_the_code() -> None:
    root = Path(zonkey.__file__).parent
    lines = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in root.rglob("*.py")}
    total = sum(lines.values())
    by_unit: dict[str, int] = {}
    for path, n in lines.items():
        unit = unit_of(".".join(["zonkey", *path.relative_to(root).with_suffix("").parts]))
        by_unit[unit] = by_unit.get(unit, 0) + n
    big = {u: round(n / total, 3) for u, n in by_unit.items() if n > 0.2 * total}
    assert not big, f"packages over 20% of zonkey's lines: {big}"


def test_the_walk_sees_the_package() -> None:
    sources = {imp.source for imp in PACKAGE}
    assert {"zonkey.core.contracts.registry", "zonkey.core.nn.attention", "zonkey.components.attention.flex"} <= sources
    assert any(imp.target == "zonkey.core.contracts.registry" for imp in PACKAGE)


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


def test_an_import_the_table_does_not_allow_is_found(tmp_path: Path) -> None:
    imports = _package(tmp_path, {
        "core/__init__.py": "",
        "core/train/__init__.py": "",
        "core/train/t.py": "def f():\n    from pkg.core.evaluate import e\n",
        "core/evaluate/__init__.py": "",
        "core/evaluate/e.py": "from pkg.core.train import t\n",
    })
    table = {"core.train": set(), "core.evaluate": {"core.train"}}
    assert table_violations(imports, table) == ["pkg.core.train.t:2 -> pkg.core.evaluate.e (core.train -> core.evaluate)"]


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
