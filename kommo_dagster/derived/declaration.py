"""The derived tables and views: one `Table` declaration each, the only list of them.

A derived table is built inside DuckDB from another table, never with a request to Kommo. Its
columns, types, description, parent and cursor come from the contract's entry with
``derived_from`` (``kommo_extra_streams.json``); the declaration adds what the contract leaves to
the code: its key, its SQL (``select``), and the checks beyond the ones every table gets. A view
declares what it reads, which writes rebuild it (``refresh_on``) and the function rebuilding it.

Assets (`kommo_dagster.derived.assets`), checks (`kommo_dagster.derived.checks`), the refresh
after each write (`kommo_dagster.registry`) and the README's table reference are read from
`DECLARATIONS`; adding a table is one entry here (see the README, "Adding a table").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from kommo_dagster.contract import contract_streams
from kommo_dagster.derived.entities import (
    CUSTOM_FIELD_ENTITIES,
    DURATIONS_VIEW,
    FUNNEL_VIEW,
    STATUS_CHANGES,
    CustomFieldEntity,
    custom_field_entity,
)
from kommo_dagster.derived.long_values import skipped_versions_sql, values_select_sql
from kommo_dagster.derived.stages import (
    DURATION_COLUMNS,
    FUNNEL_COLUMNS,
    rebuild_durations_view,
    rebuild_funnel_view,
    status_changes_select_sql,
)
from kommo_dagster.derived.wide import rebuild_wide_view
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.tables import SLICED_KINDS, RefreshContext, Table, contract_table
from kommo_dagster.views import current_view_name

DerivedTable = Table  # the declaration of a table computed from a slice of its parent

VALUE_KEY = ("entity_id", "updated_at", "field_id", "value_index")
# Checks named by a declaration's ``checks``, defined in `kommo_dagster.derived.checks`.
NO_DUPLICATE_KEYS = "no_duplicate_keys"
FIELD_IDS_DEFINED = "field_ids_defined"
NO_NEGATIVE_DURATIONS = "no_negative_durations"


def _wide_refresh(entity: CustomFieldEntity) -> Callable[[RefreshContext], dict[str, str]]:
    def refresh(ctx: RefreshContext) -> dict[str, str]:
        fields = rebuild_wide_view(ctx.con, entity, schema=ctx.schema)
        stream = {c.name: c.description for c in get_stream(entity.stream).columns}
        return stream | {c.name: c.description for c in fields}

    return refresh


def _custom_field_tables(entity: CustomFieldEntity) -> tuple[Table, Table]:
    values = contract_table(
        entity.values,
        kind="long",
        key=VALUE_KEY,
        select=partial(values_select_sql, entity),
        skipped=partial(skipped_versions_sql, entity),
        checks=(NO_DUPLICATE_KEYS, FIELD_IDS_DEFINED),
    )
    wide = Table(
        name=entity.wide_view,
        kind="view",
        description=(
            f"One row per live {entity.stream} record (`{current_view_name(entity.stream)}`) "
            f"with one typed column per custom field defined for {entity.stream}."
        ),
        inputs=(entity.values, current_view_name(entity.stream), entity.definitions),
        # Its columns follow the definitions; the stream's writes only change its rows.
        refresh_on=(entity.values, entity.definitions),
        refresh=_wide_refresh(entity),
    )
    return values, wide


def _stage_tables() -> tuple[Table, ...]:
    changes = contract_table(
        STATUS_CHANGES,
        kind="derived",
        key=("event_id",),
        select=status_changes_select_sql,
        checks=(NO_DUPLICATE_KEYS,),
    )
    durations = Table(
        name=DURATIONS_VIEW,
        kind="view",
        description="Each stay of a lead in a pipeline stage.",
        inputs=(STATUS_CHANGES, "leads", current_view_name("leads")),
        refresh_on=(STATUS_CHANGES,),
        refresh=lambda ctx: rebuild_durations_view(ctx.con, schema=ctx.schema),
        column_descriptions={c.name: c.description for c in DURATION_COLUMNS},
        checks=(NO_NEGATIVE_DURATIONS,),
    )
    funnel = Table(
        name=FUNNEL_VIEW,
        kind="view",
        description=(
            "Per pipeline stage: entered, now in it, time spent, conversion to the next stage, "
            "won and lost."
        ),
        inputs=(
            DURATIONS_VIEW,
            STATUS_CHANGES,
            "statuses",
            "pipelines",
            current_view_name("leads"),
        ),
        refresh_on=(DURATIONS_VIEW,),
        refresh=lambda ctx: rebuild_funnel_view(ctx.con, schema=ctx.schema),
        column_descriptions={c.name: c.description for c in FUNNEL_COLUMNS},
    )
    return changes, durations, funnel


def _declarations() -> tuple[Table, ...]:
    pairs = [_custom_field_tables(e) for e in CUSTOM_FIELD_ENTITIES]
    tables = (
        *(values for values, _ in pairs),
        *(wide for _, wide in pairs),
        *_stage_tables(),
        # A new table or view: one more entry here (README, "Adding a table").
    )
    declared = [t.name for t in tables if t.kind in SLICED_KINDS]
    # A derived table without a cursor is rebuilt whole (`kommo_dagster.derived.activity`).
    in_contract = [
        n for n, spec in contract_streams().items() if "derived_from" in spec and spec["cursor"]
    ]
    if sorted(declared) != sorted(in_contract):
        raise RuntimeError(f"contract derived tables {in_contract} differ from {declared}")
    return tables


DECLARATIONS: tuple[Table, ...] = _declarations()
# The tables computed from a slice of their parent, in the contract's order.
DERIVED_TABLES: Mapping[str, Table] = {
    n: t for n in contract_streams() for t in DECLARATIONS if t.name == n and t.kind in SLICED_KINDS
}
DERIVED_VIEWS: Mapping[str, Table] = {t.name: t for t in DECLARATIONS if t.kind == "view"}


def get_derived(name: str) -> Table:
    try:
        return DERIVED_TABLES[name]
    except KeyError:
        raise KeyError(
            f"unknown derived table {name!r}; known: {', '.join(DERIVED_TABLES)}"
        ) from None


def with_derived(streams: set[str]) -> set[str]:
    """``streams`` and the derived tables computed from them (what a run of them must include
    so that the derived slices follow their parents')."""
    chosen = set(streams)
    for table in DERIVED_TABLES.values():  # declaration order: a parent before its children
        if table.parent in chosen:
            chosen.add(table.name)
    return chosen


__all__ = [
    "CUSTOM_FIELD_ENTITIES",
    "DECLARATIONS",
    "DERIVED_TABLES",
    "DERIVED_VIEWS",
    "FIELD_IDS_DEFINED",
    "NO_DUPLICATE_KEYS",
    "NO_NEGATIVE_DURATIONS",
    "STATUS_CHANGES",
    "CustomFieldEntity",
    "DerivedTable",
    "custom_field_entity",
    "get_derived",
    "with_derived",
]
