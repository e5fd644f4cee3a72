"""The package's imports point one way: no cycle, and no module imports a higher layer.

Layers, lowest first, by folder:

0. plain Python, no Dagster: the client (``kommo/``), the sandbox, the contract;
1. the DuckDB side, no Dagster either: ``warehouse/`` (tables, views, staging, the table
   registry), ``derived/`` (the derived tables' SQL and declarations), the settings (their
   values' parsers, the DuckDB path's checks, and the variables they leave unread) and the
   stream docs;
2. the Dagster side: ``orchestration/`` (resources, the IO manager, assets, checks, jobs,
   schedules, sensors, the translator);
3. what wires them: the builder, the definitions, the component, the package itself.

Every import written in a module counts, inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kommo_dagster

PACKAGE = Path(kommo_dagster.__file__).parent
LOWEST = ("kommo_dagster.kommo", "kommo_dagster.sandbox", "kommo_dagster.contract")
WAREHOUSE = (
    "kommo_dagster.warehouse",
    "kommo_dagster.derived",
    "kommo_dagster.settings",
    "kommo_dagster.setting_values",
    "kommo_dagster.duckdb_path",
    "kommo_dagster.stream_docs",
    "kommo_dagster.unread_variables",
)
DAGSTER_SIDE = ("kommo_dagster.orchestration",)
TOP = (
    "kommo_dagster",
    "kommo_dagster.builder",
    "kommo_dagster.definitions",
    "kommo_dagster.component",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _within(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(f"{r}.") for r in roots)


def layer(module: str) -> int:
    """A module's layer, from the folder it lives in."""
    if module in TOP:
        return 3
    if _within(module, LOWEST):
        return 0
    if _within(module, WAREHOUSE):
        return 1
    if _within(module, DAGSTER_SIDE):
        return 2
    raise AssertionError(f"{module} is in no layer: put it in a folder of one")


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports (a name imported from a package that is itself
    a module counts as that module)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    is_package = MODULES[module].name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_the_layers_name_existing_modules():
    named = [*LOWEST, *WAREHOUSE, *DAGSTER_SIDE, *TOP]
    assert [m for m in named if m not in MODULES] == []


def test_every_module_is_in_a_layer():
    """A new module must live in a layer's folder (or be one of the wiring modules)."""
    folders = (*LOWEST, *WAREHOUSE, *DAGSTER_SIDE)
    assert sorted(m for m in MODULES if m not in TOP and not _within(m, folders)) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module: str):
    upward = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert upward == [], f"{module} (layer {layer(module)}) imports {upward}"


@pytest.mark.parametrize("lowest", [0, 1], ids=["client", "warehouse"])
def test_the_two_lowest_layers_import_no_dagster(lowest: int):
    for module, path in MODULES.items():
        if layer(module) != lowest:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.split(".")[0].startswith("dagster")], module


def test_the_import_graph_has_no_cycle():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_the_io_manager_reads_the_registry_and_nothing_of_the_dagster_side():
    """It writes, then asks the registry what to rebuild: no asset module behind it."""
    assert "kommo_dagster.warehouse.registry" in GRAPH["kommo_dagster.orchestration.io_manager"]
    assert sorted(m for m in GRAPH["kommo_dagster.orchestration.io_manager"] if layer(m) > 1) == []
