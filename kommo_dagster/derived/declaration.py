"""The derived tables and views: one `Table` declaration each, the only list of them.

A derived table is built inside DuckDB from another table, never with a request to Kommo. Its
columns, types, description, parent and cursor come from the contract's entry with
``derived_from`` (``kommo_extra_streams.json``, ``kommo_activity_streams.json``); the declaration
adds what the contract leaves to the code: its key, its SQL (``select``, or ``plan`` for a table
rebuilt whole whose SQL depends on what the warehouse holds), and the checks beyond the ones
every table gets. A contract entry with a null ``cursor`` is rebuilt whole at each write. A view
declares what it reads, which writes rebuild it (``refresh_on``) and the function rebuilding it.

Assets (`kommo_dagster.orchestration.derived_assets`, `derived_views`), checks
(`kommo_dagster.orchestration.derived_checks`), the refresh after each write
(`kommo_dagster.warehouse.registry`) and the README's table reference are read from `DECLARATIONS`;
adding a table is one entry here (see the README, "Adding a table").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from kommo_dagster.contract import contract_streams
from kommo_dagster.derived import enriched
from kommo_dagster.derived.activity import (
    CALLS,
    CHAT_RESPONSE_TIMES,
    EXTRA_COLUMNS,
    NOTE_STREAMS,
    TIME_ZONE_SOURCE,
    activity_plan,
    calls_plan,
    chat_plan,
    rebuild_response_view,
)
from kommo_dagster.derived.chats import RESPONSE_COLUMNS, RESPONSE_VIEW, RESPONSIBLE_VIEWS
from kommo_dagster.derived.entities import (
    CUSTOM_FIELD_ENTITIES,
    DURATIONS_VIEW,
    FUNNEL_VIEW,
    STATUS_CHANGES,
    CustomFieldEntity,
    custom_field_entity,
)
from kommo_dagster.derived.long_values import skipped_versions_sql, values_select_sql
from kommo_dagster.derived.manager_activity import KEY as MANAGER_ACTIVITY_KEY
from kommo_dagster.derived.manager_activity import MANAGER_ACTIVITY_DAILY
from kommo_dagster.derived.stages import (
    DURATION_COLUMNS,
    DURATIONS_READS,
    FUNNEL_COLUMNS,
    FUNNEL_READS,
    rebuild_durations_view,
    rebuild_funnel_view,
    status_changes_select_sql,
)
from kommo_dagster.derived.wide import rebuild_wide_view
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.tables import SLICED_KINDS, RefreshContext, Table, contract_table
from kommo_dagster.warehouse.views import current_view_name

DerivedTable = Table  # the declaration of a table computed from a slice of its parent

VALUE_KEY = ("entity_id", "updated_at", "field_id", "value_index")
# Checks named by a declaration's ``checks``, defined in
# `kommo_dagster.orchestration.derived_checks`.
NO_DUPLICATE_KEYS = "no_duplicate_keys"
FIELD_IDS_DEFINED = "field_ids_defined"
NO_NEGATIVE_DURATIONS = "no_negative_durations"
NO_NEGATIVE_RESPONSE_SECONDS = "no_negative_response_seconds"
UNANSWERED_OVER_24_HOURS = "unanswered_over_24_hours"


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
    """``lead_status_changes`` and the two views over it. A view's inputs are what its SQL reads
    (`kommo_dagster.derived.stages`, ``*_READS``, from which the SQL is formatted): the funnel
    reads the changes only through the durations view, so they are not among its inputs; its
    asset depends on them all the same, as the assets behind a view read are the reader's too
    (`kommo_dagster.orchestration.derived_selection.asset_deps`)."""
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
        inputs=tuple(DURATIONS_READS.values()),
        refresh_on=(STATUS_CHANGES,),
        refresh=lambda ctx: rebuild_durations_view(ctx.con, schema=ctx.schema),
        view_columns=DURATION_COLUMNS,
        checks=(NO_NEGATIVE_DURATIONS,),
    )
    funnel = Table(
        name=FUNNEL_VIEW,
        kind="view",
        description=(
            "Per pipeline stage: entered, now in it, time spent, conversion to the next stage, "
            "won and lost."
        ),
        inputs=tuple(FUNNEL_READS.values()),
        refresh_on=(DURATIONS_VIEW,),
        refresh=lambda ctx: rebuild_funnel_view(ctx.con, schema=ctx.schema),
        view_columns=FUNNEL_COLUMNS,
    )
    return changes, durations, funnel


def _activity_tables() -> tuple[Table, ...]:
    """The conversation and activity tables, rebuilt whole (`kommo_dagster.derived.activity`),
    and the response-time view over the chats; all united over the accounts in kommo_all."""
    chat_runs = contract_table(
        CHAT_RESPONSE_TIMES,
        kind="derived",
        key=("first_message_id",),
        plan=chat_plan,
        extra_columns=EXTRA_COLUMNS[CHAT_RESPONSE_TIMES],
        checks=(NO_DUPLICATE_KEYS, NO_NEGATIVE_RESPONSE_SECONDS, UNANSWERED_OVER_24_HOURS),
        all_accounts=True,
    )
    calls = contract_table(
        CALLS,
        kind="derived",
        key=("entity_type", "note_id"),
        inputs=tuple(NOTE_STREAMS),
        plan=calls_plan,
        extra_columns=EXTRA_COLUMNS[CALLS],
        checks=(NO_DUPLICATE_KEYS,),
        all_accounts=True,
    )
    daily = contract_table(
        MANAGER_ACTIVITY_DAILY,
        kind="derived",
        key=MANAGER_ACTIVITY_KEY,
        inputs=("events", STATUS_CHANGES, CHAT_RESPONSE_TIMES, CALLS),
        also_reads=(TIME_ZONE_SOURCE,),
        plan=activity_plan,
        checks=(NO_DUPLICATE_KEYS,),
        all_accounts=True,
    )
    response = Table(
        name=RESPONSE_VIEW,
        kind="view",
        description=(
            "Per user and ISO week of the customers' first message: replies, median and 90th "
            "percentile response seconds, share answered within 5 minutes, unanswered runs."
        ),
        inputs=(CHAT_RESPONSE_TIMES, *RESPONSIBLE_VIEWS.values()),
        refresh_on=(CHAT_RESPONSE_TIMES,),
        also_reads=(TIME_ZONE_SOURCE,),
        refresh=rebuild_response_view,
        view_columns=RESPONSE_COLUMNS,
        all_accounts=True,
    )
    return chat_runs, calls, daily, response


def _enriched_view() -> Table:
    """``leads_enriched``: a deal view over the leads, their links and the records they name.
    DuckDB resolves a view when it is queried, so no write needs to rebuild it."""
    return Table(
        name=enriched.VIEW,
        kind="view",
        description=(
            "One row per live lead: pipeline and stage names, main contact, company, product "
            "count and amount, source name."
        ),
        inputs=enriched.inputs(),
        refresh_on=(),
        refresh=enriched.refresh_enriched,
        view_columns=enriched.COLUMNS,
        needs_all_inputs=True,
    )


def _declarations() -> tuple[Table, ...]:
    pairs = [_custom_field_tables(e) for e in CUSTOM_FIELD_ENTITIES]
    tables = (
        *(values for values, _ in pairs),
        *(wide for _, wide in pairs),
        *_stage_tables(),
        *_activity_tables(),
        _enriched_view(),
        # A new table or view: one more entry here (README, "Adding a table").
    )
    declared = [t.name for t in tables if t.kind in SLICED_KINDS]
    in_contract = [n for n, spec in contract_streams().items() if "derived_from" in spec]
    if sorted(declared) != sorted(in_contract):
        raise RuntimeError(f"contract derived tables {in_contract} differ from {declared}")
    return tables


DECLARATIONS: tuple[Table, ...] = _declarations()
# The tables computed from a slice of their parent, in the contract's order.
DERIVED_TABLES: Mapping[str, Table] = {
    n: t for n in contract_streams() for t in DECLARATIONS if t.name == n and t.sliced
}
# The conversation and activity tables (rebuilt whole), in the contract's order.
ACTIVITY_TABLES: Mapping[str, Table] = {
    n: t for n in contract_streams() for t in DECLARATIONS if t.name == n and t.rebuilt_whole
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
    # Declaration order: a parent before its children. Tables rebuilt whole follow no slices.
    for table in DERIVED_TABLES.values():
        if table.parent in chosen:
            chosen.add(table.name)
    return chosen


__all__ = [
    "ACTIVITY_TABLES",
    "CUSTOM_FIELD_ENTITIES",
    "DECLARATIONS",
    "DERIVED_TABLES",
    "DERIVED_VIEWS",
    "FIELD_IDS_DEFINED",
    "NO_DUPLICATE_KEYS",
    "NO_NEGATIVE_DURATIONS",
    "NO_NEGATIVE_RESPONSE_SECONDS",
    "STATUS_CHANGES",
    "UNANSWERED_OVER_24_HOURS",
    "CustomFieldEntity",
    "DerivedTable",
    "custom_field_entity",
    "get_derived",
    "with_derived",
]
