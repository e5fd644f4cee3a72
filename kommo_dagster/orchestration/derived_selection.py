"""Which derived tables and views the settings select, their asset keys, and what each one's
asset depends on.

A sliced table is selected when its parent is, a table rebuilt whole when any of its inputs is,
a view when what it reads is (`selected_declarations`); a sliced table is partitioned exactly
like the stream it follows (`root_stream`). The jobs (`kommo_dagster.orchestration.jobs`) and
the derived checks read the selection from here; the assets
(`kommo_dagster.orchestration.derived_assets`, `derived_views`) their dependencies.
"""

from __future__ import annotations

import dagster as dg

from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import derived_relations, get_table, link_relations
from kommo_dagster.warehouse.tables import SLICED_KINDS, Table


def selected_declarations(settings: Settings) -> list[Table]:
    """The derived tables and views of the selected streams, in declaration order: a sliced
    table when its parent is selected, a table rebuilt whole when any of its inputs is, and
    anything else when the derived and link tables it reads are (a view that
    ``needs_all_inputs``: when everything it reads is)."""
    chosen: list[Table] = []
    # A link table is there when its parent stream is; a view reading one needs it.
    names = set(settings.streams) | selected_links(settings)
    declared = derived_relations()
    derived = {t.name for t in declared} | {t.name for t in link_relations()}
    for table in declared:
        if table.sliced and table.parent not in names:
            continue
        if table.rebuilt_whole:
            wanted = bool(names.intersection(table.inputs))
        elif table.needs_all_inputs:
            wanted = all(_source(i) in names for i in table.inputs)
        else:
            wanted = all(i in names for i in table.inputs if i in derived)
        if wanted:
            chosen.append(table)
            names.add(table.name)
    return chosen


def _source(name: str) -> str:
    """The relation behind ``name``: a current view's stream, else itself."""
    table = get_table(name)
    return table.inputs[0] if table.kind == "current_view" else name


def selected_links(settings: Settings) -> set[str]:
    """The link tables whose parent stream the settings select."""
    return {t.name for t in link_relations() if t.inputs[0] in settings.streams}


def selected_names(settings: Settings) -> set[str]:
    derived = {t.name for t in selected_declarations(settings)}
    return set(settings.streams) | selected_links(settings) | derived


def is_partitioned(table: Table, settings: Settings) -> bool:
    return table.sliced and settings.is_partitioned(root_stream(table))


def root_stream(table: Table) -> str:
    """The extracted stream whose slices ``table`` follows, through derived parents."""
    while get_table(table.parent).kind in SLICED_KINDS:
        table = get_table(table.parent)
    return table.parent


def derived_declarations(settings: Settings, *, partitioned: bool) -> list[Table]:
    """The derived tables partitioned like their parent (or not) and, with
    ``partitioned=False``, the tables rebuilt whole and the views."""
    return [
        t for t in selected_declarations(settings) if is_partitioned(t, settings) == partitioned
    ]


def derived_keys(
    settings: Settings, *, partitioned: bool, specs: AccountSpecs | None = None
) -> list[dg.AssetKey]:
    """Keys of `derived_declarations`, for the jobs that run them with their parents."""
    specs = specs or AccountSpecs(settings)
    return [specs.key(t.name) for t in derived_declarations(settings, partitioned=partitioned)]


def all_derived_keys(settings: Settings) -> list[dg.AssetKey]:
    """Every derived table and view the settings define."""
    return derived_keys(settings, partitioned=True) + derived_keys(settings, partitioned=False)


def asset_deps(table: Table, selected: set[str]) -> tuple[str, ...]:
    """The assets behind what ``table`` reads, among the ``selected`` ones: a current view is
    its stream's. A derived view read is its own asset and, as DuckDB reads through a view when
    it is queried, also the assets behind what it reads: the reader's rows follow theirs, and
    Dagster orders a run only by direct dependencies (a run of the funnel and
    lead_status_changes without the durations view between them would not wait)."""
    names: list[str] = []
    for name in (n for i in table.inputs for n in _behind(i)):
        if name in selected and name not in names:
            names.append(name)
    if table.sliced and table.parent not in names:
        names.insert(0, table.parent)
    return tuple(names)


def _behind(name: str) -> list[str]:
    """The assets behind relation ``name``: a current view's stream, a derived view and what
    it reads, else ``name`` itself."""
    source = get_table(name)
    if source.kind == "current_view":
        return [source.inputs[0]]
    if source.kind == "view":
        return [name, *(n for i in source.inputs for n in _behind(i))]
    return [name]


def upstream(table: Table, reads: tuple[str, ...], selected: set[str]) -> tuple[str, ...]:
    """The asset's dependencies: what it reads rows of (``reads``), then the selected
    relations it reads a setting from (``also_reads``)."""
    also = [n for n in table.also_reads if n in selected and n not in reads]
    return (*reads, *also)


__all__ = [
    "all_derived_keys",
    "asset_deps",
    "derived_declarations",
    "derived_keys",
    "is_partitioned",
    "root_stream",
    "selected_declarations",
    "selected_links",
    "selected_names",
    "upstream",
]
