"""The package's structure holds: imports point down the layers of
docs/architecture.md, and no module imports another module's private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flowsql"

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


MODULES = dict(_modules())


def test_the_package_is_read() -> None:
    assert {"flowsql.runtime.coordinator", "flowsql.server.api", "flowsql.cli"} <= set(MODULES)


def test_no_private_name_is_imported_from_another_module() -> None:
    assert private_crossings(MODULES) == []


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(MODULES) == []


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
