"""The derived tables as Dagster assets, built from their declarations, and
`build_derived_assets`, which adds the views' (`kommo_dagster.orchestration.derived_views`).
Which tables and views the settings select, and what each asset depends on, is
`kommo_dagster.orchestration.derived_selection`.

* Sliced tables (``kommo/<entity>_custom_field_values``, ``kommo/lead_status_changes``, and any
  table declared with a ``select``): partitioned exactly like their parent (daily by the
  parent's cursor, or unpartitioned when the parent is synced as a full table) and downstream
  of what they read. A run reads the parent's slice from DuckDB and replaces the same slice in
  one transaction (`kommo_dagster.derived.write`), which also rebuilds what the registry says
  follows the table (`kommo_dagster.warehouse.registry`). The jobs run them in the same run as their
  parent; a run of days the parent was never materialized for warns and says which in its
  ``kommo/parents_missing`` metadata (`kommo_dagster.orchestration.missing_parents`).
* Tables rebuilt whole (``kommo/chat_response_times``, ``kommo/calls``,
  ``kommo/manager_activity_daily``: declared without partitioning): unpartitioned, downstream
  of whichever of their inputs the settings select; a run recomputes the whole table from
  everything extracted so far (its ``plan`` looks at what the warehouse holds first) and
  replaces it in one transaction. The jobs run them with the full tables.
* Views (``kommo/<stream>_wide``, ``kommo/lead_stage_durations``, ``kommo/pipeline_funnel``,
  ``kommo/response_time_by_manager``, in `derived_views`): kept current by every write of what
  they follow; materializing one (re)creates it and records its columns, with descriptions, as
  the asset's column schema.

Every write also rebuilds, in its transaction, what the registry says follows it, the
``kommo_all`` views over the accounts (``account_schemas``) included.

This module deliberately has no ``from __future__ import annotations``: Dagster reads the
asset functions' annotations at definition time.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import duckdb

from kommo_dagster.derived.value_text import install_macros
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.orchestration.derived_build import Build, define, full_table_name
from kommo_dagster.orchestration.derived_selection import (
    asset_deps,
    is_partitioned,
    selected_declarations,
    upstream,
)
from kommo_dagster.orchestration.derived_views import view_asset
from kommo_dagster.orchestration.freshness import freshness_policy
from kommo_dagster.orchestration.io_manager import KommoDuckDBResource, table_schema
from kommo_dagster.orchestration.missing_parents import not_written_yet, report_missing_parent
from kommo_dagster.orchestration.partitions import (
    build_daily_partitions,
    report_rows_by_day,
    run_window,
    utc_day_sql,
)
from kommo_dagster.orchestration.translator import AccountSpecs, asset_arguments
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster.warehouse.slices import WriteResult
from kommo_dagster.warehouse.sql import quote, table_exists, table_ref
from kommo_dagster.warehouse.tables import SLICED_KINDS, PlanContext, Table, WritePlan
from kommo_dagster.warehouse.windows import EpochWindow


def build_derived_assets(
    settings: Settings,
    *,
    specs: AccountSpecs | None = None,
    account_schemas: Mapping[str, str] | None = None,
) -> list[dg.AssetsDefinition]:
    """The derived tables and views of the selected streams; ``account_schemas`` ({account:
    schema}, several accounts) are the schemas their ``kommo_all`` views unite."""
    specs = specs or AccountSpecs(settings)
    build = Build(settings, specs, dict(account_schemas or {}))
    return [
        _table_asset(t, build) if t.kind in SLICED_KINDS else view_asset(t, build)
        for t in selected_declarations(settings)
    ]


def _table_description(table: Table, build: Build, *, partitioned: bool) -> str:
    schema = build.settings.schema
    if table.rebuilt_whole:
        reads = ", ".join(f"`{schema}.{n}`" for n in asset_deps(table, build.selected))
        how = (
            f"rebuilt whole from {reads} in one transaction: the current truth over everything "
            f"extracted so far, however the partitions arrived."
        )
        return f"{table.description}\n\nDuckDB table `{schema}.{table.name}`, {how}"
    parent = get_table(table.parent)
    how = (
        f"Daily partitions as `{parent.name}` (by `{table.cursor}` = the parent's "
        f"`{parent.partitioning.cursor if parent.partitioning else table.cursor}`): a run reads "
        f"that slice of `{schema}.{parent.name}` and replaces the same slice, in one transaction."
        if partitioned
        else f"Rebuilt whole from `{schema}.{parent.name}` (synced as a full table)."
    )
    return f"{table.description}\n\nDuckDB table `{schema}.{table.name}`. {how}"


def _table_asset(table: Table, build: Build) -> dg.AssetsDefinition:
    settings = build.settings
    partitioned = is_partitioned(table, settings)
    deps = asset_deps(table, build.selected)
    spec = build.specs.spec(
        table,
        description=_table_description(table, build, partitioned=partitioned),
        metadata={
            "dagster/column_schema": table_schema(table),
            "dagster/table_name": full_table_name(settings, table.name),
            "kommo/key": ", ".join(table.key),
        },
        deps=upstream(table, deps, build.selected),
    )
    freshness = freshness_policy(partitioned=partitioned)
    arguments: dict[str, Any] = asset_arguments(spec, freshness=freshness)
    if partitioned:
        arguments["partitions_def"] = build_daily_partitions(settings.start_date)
        arguments["backfill_policy"] = dg.BackfillPolicy.single_run()
    # A sliced table reads its parent's slice; one rebuilt whole, whichever inputs exist.
    inputs = deps if table.rebuilt_whole else (table.parent,)

    def derive(
        context: dg.AssetExecutionContext, duckdb: KommoDuckDBResource
    ) -> dg.MaterializeResult:
        window = run_window(context, partitioned=partitioned)
        with duckdb.get_connection(on_wait=context.log.info) as con:
            _require_inputs(con, inputs, build=build, every=table.sliced)
            metadata = _write(context, con, table, build=build, window=window, inputs=deps)
        if window is not None:  # a slice: say if the parent never ran for some of its days
            parent, full_name = build.specs.key(table.parent), full_table_name(settings, table.name)
            metadata |= report_missing_parent(context, parent, table=full_name, window=window)
        return dg.MaterializeResult(metadata=metadata)

    return define(derive, table.name, arguments)


def _require_inputs(
    con: duckdb.DuckDBPyConnection, names: Sequence[str], *, build: Build, every: bool
) -> None:
    """Refuse to write before ``names`` exist (``every``) or one of them does (else)."""
    schema = build.settings.schema
    there = [n for n in names if table_exists(con, schema=schema, table=n)]
    if (every and len(there) < len(names)) or not there:
        missing = [n for n in names if n not in there]
        joiner = " and " if every else " or "
        raise RuntimeError(
            not_written_yet(missing, schema=schema, specs=build.specs, joiner=joiner)
        )


def _plan(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    *,
    schema: str,
    window: EpochWindow | None,
    inputs: tuple[str, ...],
) -> WritePlan:
    """What the write runs: the declared plan's, or the select and its skipped rows."""
    if table.plan is not None:
        return table.plan(PlanContext(con=con, schema=schema, window=window, inputs=inputs))
    select_sql = table.select(schema=schema, window=window)  # type: ignore[misc]
    if table.skipped is None:
        return WritePlan(select_sql=select_sql)
    (count,) = con.execute(table.skipped(schema=schema, window=window)).fetchone() or (0,)
    label = "full table" if window is None else window.label()
    warning = (
        f"{table.name} {label}: {count} versions of {table.parent} hold custom fields that are "
        f"not a JSON list; they give no rows"
    )
    counts = {"skipped_versions": int(count)}
    return WritePlan(select_sql=select_sql, counts=counts, warnings=(warning,) if count else ())


def _write(
    context: dg.AssetExecutionContext,
    con: duckdb.DuckDBPyConnection,
    table: Table,
    *,
    build: Build,
    window: EpochWindow | None,
    inputs: tuple[str, ...],
) -> dict[str, Any]:
    """Replace the slice (or the whole table), rebuild what follows it, say what was written."""
    schema, full_name = build.settings.schema, full_table_name(build.settings, table.name)
    label = "full table" if window is None else window.label()
    install_macros(con)
    plan = _plan(con, table, schema=schema, window=window, inputs=inputs)
    result = replace_slice(
        con,
        table,
        schema=schema,
        window=window,
        select_sql=plan.select_sql,
        after=lambda c: build.refresh(c, table.name),
        recreate=table.rebuilt_whole,
    )
    metadata = _write_metadata(table, result, label=label, full_name=full_name)
    metadata |= {f"kommo/{k}": dg.MetadataValue.int(int(v)) for k, v in plan.counts.items()}
    metadata |= {f"kommo/{k}": dg.MetadataValue.text(v) for k, v in plan.notes.items()}
    for warning in plan.warnings:
        context.log.warning(warning)
    if window is not None and len(context.partition_keys) > 1:
        _report_partitions(context, con, table, schema=schema, window=window)
    source = table.parent if table.sliced else ", ".join(inputs)
    context.log.info(
        f"{full_name} {label}: {result.rows} rows from {schema}.{source} "
        f"(replaced {result.deleted})"
    )
    return metadata


def _write_metadata(
    table: Table, result: WriteResult, *, label: str, full_name: str
) -> dict[str, Any]:
    return {
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        "dagster/table_name": dg.MetadataValue.text(full_name),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            table_schema(table, actual=list(result.columns))
        ),
        "kommo/slice": dg.MetadataValue.text(label),
        "kommo/replaced_rows": dg.MetadataValue.int(result.deleted),
        "kommo/table_row_count": dg.MetadataValue.int(result.table_rows),
    }


def _report_partitions(
    context: dg.AssetExecutionContext,
    con: duckdb.DuckDBPyConnection,
    table: Table,
    *,
    schema: str,
    window: EpochWindow,
) -> None:
    """Per-partition row counts: a range is one write, but each day is its own partition."""
    cursor = quote(table.cursor)
    counts = con.execute(
        f"SELECT {utc_day_sql(cursor)}, count(*) FROM {table_ref(schema, table.name)} "
        f"WHERE {cursor} >= ? AND {cursor} < ? GROUP BY 1",
        [window.start, window.end],
    ).fetchall()
    report_rows_by_day(context, dict(counts))


__all__ = ["build_derived_assets"]
