"""The package's structure holds: imports point down the layers of
docs/architecture.md, no module imports another module's private names, and no
function imports a module except to break an optional dependency."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flowsql"
PYPROJECT = PACKAGE.parent / "pyproject.toml"

#: docs/architecture.md "Layers": a package may import its own rank and below,
#: except the packages that stand side by side on one rank.
RANK = {
    "errors": 1,
    "records": 1,
    "redaction": 2,
    "plan": 3,
    "sql": 4,
    "exec": 4,
    "connectors": 4,
    "state": 5,
    "engine": 5,
    "runtime": 6,
    "server": 7,
    "bench": 7,
    "cli": 8,
}
SIDE_BY_SIDE = {"sql", "exec", "connectors", "state", "engine", "server", "bench"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield name.removesuffix(".__init__"), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) of every ``from flowsql... import`` and ``import flowsql...``,
    function-local ones included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "flowsql" or len(parts) < 2:
        return None
    return parts[1]


def private_crossings(modules: dict[str, ast.Module]) -> list[str]:
    """Every import of a ``_private`` name of one flowsql module by another."""
    return [
        f"{importer}:{line} imports {name} from {module}"
        for importer, tree in modules.items()
        for line, module, names in _imports(tree)
        if module.startswith("flowsql") and module != importer
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]


def upward_imports(modules: dict[str, ast.Module]) -> list[str]:
    """Every import of a higher layer, or of a package standing on the same rank."""
    upward = []
    for importer, tree in modules.items():
        low = _layer(importer)
        if low not in RANK:
            continue
        for line, module, _ in _imports(tree):
            high = _layer(module)
            if high is None or high == low or high not in RANK:
                continue
            sideways = RANK[high] == RANK[low] and {low, high} <= SIDE_BY_SIDE
            if RANK[high] > RANK[low] or sideways:
                upward.append(f"{importer}:{line} ({low}) imports {module} ({high})")
    return upward


def import_cycles(modules: dict[str, ast.Module]) -> list[str]:
    """Every cycle of imports between flowsql modules, ``if TYPE_CHECKING:`` and
    function-local imports included (each cycle once, as ``a -> b -> a``)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for importer, tree in modules.items():
        for _, module, names in _imports(tree):
            for target in [f"{module}.{name}" for name in names] + [module]:
                if target in modules and target != importer:
                    graph[importer].add(target)
                    break
    cycles: set[tuple[str, ...]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                loop = path[path.index(nxt) :]
                turn = loop.index(min(loop))
                cycles.add(tuple(loop[turn:] + loop[:turn]))
            elif len(path) < 12:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return sorted(" -> ".join([*c, c[0]]) for c in cycles)


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _hard_dependencies() -> frozenset[str]:
    """Top-level modules of pyproject's ``[project].dependencies``: always installed."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    names = {
        _normalized(re.match(r"[A-Za-z0-9_.-]+", spec).group())  # type: ignore[union-attr]
        for spec in project["dependencies"]
    }
    modules = {name.replace("-", "_") for name in names}  # where the module is not installed
    modules |= {
        module
        for module, distributions in packages_distributions().items()
        if any(_normalized(d) in names for d in distributions)
    }
    return frozenset(modules)


#: Modules a function may not import: its own package, the standard library and
#: the hard dependencies. Only an optional dependency (an extra) is imported where
#: it is used, so that the rest works without it.
ALWAYS_THERE = frozenset({"flowsql", *sys.stdlib_module_names, *_hard_dependencies()})


def _function_imports(
    node: ast.AST, function: str | None = None
) -> Iterator[tuple[int, str, str, list[str]]]:
    """(line, function, module, names) of every import inside a function (the innermost
    one named); imports at module level, ``if TYPE_CHECKING:`` ones included, are left out."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _function_imports(child, child.name)
        elif function is not None and isinstance(child, ast.ImportFrom):
            module = "." * child.level + (child.module or "")
            yield child.lineno, function, module, [alias.name for alias in child.names]
        elif function is not None and isinstance(child, ast.Import):
            for alias in child.names:
                yield child.lineno, function, alias.name, []
        else:
            yield from _function_imports(child, function)


#: The one deferred import of the package, (importer, function, module): the
#: web stack (fastapi, about 0.4 s) loads for ``flowsql server`` only, not for
#: every other command and ``--help``.
DEFERRED = frozenset({("flowsql.cli.server", "server", "flowsql.server.api")})


def local_imports(modules: dict[str, ast.Module]) -> list[str]:
    """Every function-local import of a module that is always there (see
    :data:`ALWAYS_THERE`; a relative import is of this package), but the
    :data:`DEFERRED` one: such an import belongs at the top of its module."""
    found = []
    for importer, tree in modules.items():
        for line, function, module, names in _function_imports(tree):
            top = "flowsql" if module.startswith(".") else module.partition(".")[0]
            if top in ALWAYS_THERE and (importer, function, module) not in DEFERRED:
                what = f"{', '.join(names)} from {module}" if names else module
                found.append(f"{importer}:{line} imports {what} inside {function}()")
    return found


MODULES = dict(_modules())


def test_the_package_is_read() -> None:
    assert {"flowsql.runtime.coordinator", "flowsql.server.api", "flowsql.cli"} <= set(MODULES)


def test_no_private_name_is_imported_from_another_module() -> None:
    assert private_crossings(MODULES) == []


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(MODULES) == []


def test_no_import_loops() -> None:
    assert import_cycles(MODULES) == []


def test_a_planted_import_loop_is_reported() -> None:
    planted = _planted(
        "flowsql.runtime.splits",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from flowsql.runtime.coordinator import SplitRun\n",
    )
    assert any("flowsql.runtime.splits" in cycle for cycle in import_cycles(planted))


def test_functions_import_only_optional_dependencies() -> None:
    found = local_imports(MODULES)
    assert found == [], "imports to move to the top of their module:\n" + "\n".join(found)


def _planted(importer: str, code: str) -> dict[str, ast.Module]:
    return {**MODULES, importer: ast.parse(code)}


@pytest.mark.parametrize(
    "code",
    [
        "from flowsql.runtime.runner import _cut",
        "def f():\n    from flowsql.runtime.runner import single_source, _cut\n",
    ],
)
def test_a_planted_private_import_is_reported(code: str) -> None:
    line = 1 if code.startswith("from") else 2
    found = private_crossings(_planted("flowsql.server.jobserver", code))
    assert f"flowsql.server.jobserver:{line} imports _cut from flowsql.runtime.runner" in found


@pytest.mark.parametrize(
    ("importer", "code"),
    [
        ("flowsql.exec.aggregate", "from flowsql.runtime.coordinator import merge_values"),
        ("flowsql.sql.planner", "import flowsql.exec.compile"),
        ("flowsql.plan.nodes", "def f():\n    from flowsql.sql import parse\n"),
    ],
)
def test_a_planted_upward_import_is_reported(importer: str, code: str) -> None:
    found = set(upward_imports(_planted(importer, code))) - set(upward_imports(MODULES))
    assert len(found) == 1 and found.pop().startswith(importer)


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("def f():\n    from flowsql.sql import parse, bind\n", "parse, bind from flowsql.sql"),
        ("def f():\n    import flowsql.sql\n", "flowsql.sql"),
        ("def f():\n    from . import sql\n", "sql from ."),
        ("def f():\n    import numpy as np\n", "numpy"),
        ("def f():\n    import yaml\n", "yaml"),
        ("def f():\n    from rich.progress import Progress\n", "Progress from rich.progress"),
        ("def f():\n    import json\n", "json"),
    ],
)
def test_a_planted_local_import_is_reported(code: str, what: str) -> None:
    found = local_imports({"flowsql.cli.run": ast.parse(code)})
    assert found == [f"flowsql.cli.run:2 imports {what} inside f()"]


def test_a_nested_function_is_named() -> None:
    code = "class C:\n    def f(self):\n        def g():\n            import numpy\n"
    assert local_imports({"m": ast.parse(code)}) == ["m:4 imports numpy inside g()"]


@pytest.mark.parametrize(
    "code",
    [
        "import numpy\nfrom flowsql.sql import parse\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flowsql.sql import parse\n",
        "def f():\n    import duckdb\n",
        "def f():\n    from confluent_kafka.admin import AdminClient\n",
        "def f():\n    from google.protobuf import json_format\n",
        "def f():\n    import matplotlib.pyplot as plt\n",
    ],
)
def test_module_level_and_optional_imports_pass(code: str) -> None:
    assert local_imports({"flowsql.cli.run": ast.parse(code)}) == []
