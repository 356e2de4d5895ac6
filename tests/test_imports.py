"""The package's import graph: no circles, and few modules that speak HTTP.

Read from the source with ``ast``, not by importing it. An edge is any ``import`` or
``from … import`` of one of the package's modules, at module level or inside a function
(a function-level import hides a circle until the function runs; it does not remove it).
Two kinds are left out: imports under ``if TYPE_CHECKING:``, which never run (mypy
resolves circles among annotations), and the implicit import of a module's parent
package, which always runs first (counting it would make every ``__init__`` that
re-exports a submodule a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

import pytest

import register_runner

PACKAGE = Path(register_runner.__file__).parent

# Issue 24 wants HTTP in at most two modules (outside testing/): there is one stack,
# http.client in transport.py, for every call and every page of a list. No module may
# join it.
HTTP_LIBRARIES = ("http.client", "requests", "urllib3", "gitlab")
HTTP_CEILING = {"register_runner.transport"}


class Import:
    """One import statement in module ``source``: ``module`` (absolute), and for
    ``from module import a, b`` the ``names``."""

    def __init__(self, source: str, where: str, module: str, names: tuple[str, ...], level: int):
        self.source, self.where, self.module, self.names = source, where, module, names
        self.level = level

    def targets(self) -> list[str]:
        """What the statement may import: module.name for each name (a submodule, when
        there is one), and the module itself."""
        return [*(f"{self.module}.{name}" for name in self.names), self.module]


def modules(root: Path) -> dict[str, Path]:
    """Dotted name → file, for every module of the package at ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, type_checking: bool) -> list[Import]:
    """The import statements of module ``name`` (at ``path``); with ``type_checking``,
    those under ``if TYPE_CHECKING:`` too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    shown = path.relative_to(path.parents[name.count(".") + (path.name == "__init__.py")])
    found: list[Import] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and not type_checking and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        where = f"{shown.as_posix()}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found.extend(Import(name, where, alias.name, (), 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                module = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [module])])
            names = tuple(alias.name for alias in node.names)
            found.append(Import(name, where, module, names, node.level))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


Edge = tuple[str, str, str]  # (importer, imported, file:line)


def graph(root: Path) -> dict[str, list[Edge]]:
    """Module → the edges to the package's modules it imports. ``from a import b`` is an
    edge to the module a.b when there is one, else to a."""
    known = modules(root)
    edges: dict[str, list[Edge]] = {}
    for name, path in known.items():
        out: dict[str, Edge] = {}
        for imp in imports(name, path, type_checking=False):
            submodules = [t for t in imp.targets()[:-1] if t in known]
            hit = submodules if submodules else [imp.module]
            if len(submodules) < len(imp.names) and imp.module not in hit:
                hit.append(imp.module)  # some names are attributes of the module itself
            for target in hit:
                if target in known and target != name:
                    out.setdefault(target, (name, target, imp.where))
        edges[name] = [out[t] for t in sorted(out)]
    return edges


def find_cycle(edges: dict[str, list[Edge]]) -> Optional[list[Edge]]:
    """One circle, as the edges along it, or None."""
    done: set[str] = set()
    path: list[Edge] = []  # from the walk's start to the module being walked
    on_path: list[str] = []

    def walk(node: str) -> Optional[list[Edge]]:
        on_path.append(node)
        for edge in edges[node]:
            target = edge[1]
            if target in on_path:
                return [*path[on_path.index(target) :], edge]
            if target not in done:
                path.append(edge)
                cycle = walk(target)
                if cycle is not None:
                    return cycle
                path.pop()
        on_path.pop()
        done.add(node)
        return None

    for node in sorted(edges):
        if node not in done:
            cycle = walk(node)
            if cycle is not None:
                return cycle
    return None


def describe(cycle: list[Edge]) -> str:
    names = " -> ".join([*(source for source, _, _ in cycle), cycle[0][0]])
    where = ", ".join(f"{source} imports {target} at {at}" for source, target, at in cycle)
    return f"import circle: {names} ({where})"


def test_the_package_has_no_import_circle():
    cycle = find_cycle(graph(PACKAGE))
    assert cycle is None, describe(cycle)


def test_at_most_the_ceiling_of_modules_import_an_http_library():
    speaking = {}
    for name, path in modules(PACKAGE).items():
        if name.startswith("register_runner.testing"):
            continue
        for imp in imports(name, path, type_checking=True):
            if imp.level:  # relative: the package's own gitlab.py is not python-gitlab
                continue
            for target in imp.targets():
                if any(target == lib or target.startswith(lib + ".") for lib in HTTP_LIBRARIES):
                    speaking.setdefault(name, f"{target} at {imp.where}")
    joined = {name: where for name, where in speaking.items() if name not in HTTP_CEILING}
    assert not joined, f"an HTTP library outside the modules that own HTTP: {joined}"
    stopped = HTTP_CEILING - set(speaking)
    assert not stopped, f"no longer import an HTTP library, lower HTTP_CEILING: {stopped}"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {
                "__init__.py": "",
                "a.py": "from . import b\n",
                "b.py": "def f():\n    from .c import x\n",
                "c.py": "import pkg.a\nx = 1\n",
            },
            "import circle: pkg.a -> pkg.b -> pkg.c -> pkg.a (pkg.a imports pkg.b at "
            "pkg/a.py:1, pkg.b imports pkg.c at pkg/b.py:2, pkg.c imports pkg.a at pkg/c.py:1)",
        ),
        (
            {
                "__init__.py": "from .a import run\n",
                "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from . import b\nrun = 1\n",
                "b.py": "from .a import run\n",
            },
            None,
        ),
    ],
    ids=["function-level", "type-checking-and-parent"],
)
def test_the_check_names_a_circle_and_skips_what_never_runs(tmp_path, files, expected):
    root = tmp_path / "pkg"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    cycle = find_cycle(graph(root))
    assert (describe(cycle) if cycle else None) == expected
