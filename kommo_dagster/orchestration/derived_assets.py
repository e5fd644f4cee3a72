"""The derived tables and views as Dagster assets, built from their declarations.

* Sliced tables (``kommo/<entity>_custom_field_values``, ``kommo/lead_status_changes``, and any
  table declared with a ``select``): partitioned exactly like their parent (daily by the
  parent's cursor, or unpartitioned when the parent is synced as a full table) and downstream
  of what they read. A run reads the parent's slice from DuckDB and replaces the same slice in
  one transaction (`kommo_dagster.derived.write`), which also rebuilds what the registry says
  follows the table (`kommo_dagster.warehouse.registry`). The jobs run them in the same run as their
  parent.
* Views (``kommo/<stream>_wide``, ``kommo/lead_stage_durations``, ``kommo/pipeline_funnel``):
  kept current by every write of what they follow; materializing one (re)creates it and records
  its columns, with descriptions, as the asset's column schema.

This module deliberately has no ``from __future__ import annotations``: Dagster reads the
asset functions' annotations at definition time.
"""

import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import dagster as dg
import duckdb

from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, CustomFieldEntity
from kommo_dagster.derived.value_text import install_macros
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.freshness import freshness_policy
from kommo_dagster.orchestration.io_manager import KommoDuckDBResource, table_schema
from kommo_dagster.orchestration.partitions import build_daily_partitions
from kommo_dagster.orchestration.translator import AccountSpecs, asset_arguments
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import derived_relations, get_table, refresh_after_write
from kommo_dagster.warehouse.slices import WriteResult
from kommo_dagster.warehouse.sql import catalog_name, quote, table_exists, table_ref
from kommo_dagster.warehouse.tables import SLICED_KINDS, RefreshContext, Table
from kommo_dagster.warehouse.windows import PARTITION_FORMAT, EpochWindow

_DAY = 86_400


def custom_field_entities(settings: Settings) -> list[CustomFieldEntity]:
    """The entities whose stream the settings select."""
    return [e for e in CUSTOM_FIELD_ENTITIES if e.stream in settings.streams]


def selected_declarations(settings: Settings) -> list[Table]:
    """The derived tables and views of the selected streams, in declaration order: a sliced
    table when its parent is selected, and anything when the derived tables it reads are."""
    chosen: list[Table] = []
    names = set(settings.streams)
    declared = derived_relations()
    derived = {t.name for t in declared}
    for table in declared:
        if table.kind in SLICED_KINDS and table.parent not in names:
            continue
        if all(i in names for i in table.inputs if i in derived):
            chosen.append(table)
            names.add(table.name)
    return chosen


def root_stream(table: Table) -> str:
    """The extracted stream whose slices ``table`` follows, through derived parents."""
    while get_table(table.parent).kind in SLICED_KINDS:
        table = get_table(table.parent)
    return table.parent


def derived_tables(settings: Settings) -> list[Table]:
    """The derived tables of the selected streams, in declaration order."""
    return [t for t in selected_declarations(settings) if t.kind in SLICED_KINDS]


def derived_keys(
    settings: Settings, *, partitioned: bool, specs: AccountSpecs | None = None
) -> list[dg.AssetKey]:
    """Keys of the derived tables (partitioned like their parent or not) and, with
    ``partitioned=False``, the views; for the jobs that run them with their parents."""
    specs = specs or AccountSpecs(settings)
    return [
        specs.key(t.name)
        for t in selected_declarations(settings)
        if (t.kind in SLICED_KINDS and settings.is_partitioned(root_stream(t)) == partitioned)
        or (t.kind not in SLICED_KINDS and not partitioned)
    ]


def all_derived_keys(settings: Settings) -> list[dg.AssetKey]:
    """Every derived table and view the settings define."""
    return derived_keys(settings, partitioned=True) + derived_keys(settings, partitioned=False)


def build_derived_assets(
    settings: Settings, *, specs: AccountSpecs | None = None
) -> list[dg.AssetsDefinition]:
    """The derived tables and views of the selected streams."""
    specs = specs or AccountSpecs(settings)
    return [
        _table_asset(t, settings=settings, specs=specs)
        if t.kind in SLICED_KINDS
        else _view_asset(t, settings=settings, specs=specs)
        for t in selected_declarations(settings)
    ]


def _asset_deps(table: Table, settings: Settings) -> tuple[str, ...]:
    """The assets behind what ``table`` reads: a current view is its stream's."""
    names: list[str] = []
    for name in table.inputs:
        source = get_table(name)
        if source.kind == "current_view":
            name = source.inputs[0]
        selected = name in settings.streams or name in {t.name for t in derived_relations()}
        if selected and name not in names:
            names.append(name)
    if table.kind in SLICED_KINDS and table.parent not in names:
        names.insert(0, table.parent)
    return tuple(names)


# --- tables -----------------------------------------------------------------------------------


def _full_name(settings: Settings, name: str) -> str:
    return f"{catalog_name(settings.duckdb_path)}.{settings.schema}.{name}"


def _table_description(table: Table, settings: Settings, *, partitioned: bool) -> str:
    parent, schema = get_table(table.parent), settings.schema
    how = (
        f"Daily partitions as `{parent.name}` (by `{table.cursor}` = the parent's "
        f"`{parent.partitioning.cursor if parent.partitioning else table.cursor}`): a run reads "
        f"that slice of `{schema}.{parent.name}` and replaces the same slice, in one transaction."
        if partitioned
        else f"Rebuilt whole from `{schema}.{parent.name}` (synced as a full table)."
    )
    return f"{table.description}\n\nDuckDB table `{schema}.{table.name}`. {how}"


def _table_asset(table: Table, *, settings: Settings, specs: AccountSpecs) -> dg.AssetsDefinition:
    partitioned = settings.is_partitioned(root_stream(table))
    spec = specs.spec(
        table,
        description=_table_description(table, settings, partitioned=partitioned),
        metadata={
            "dagster/column_schema": table_schema(table),  # type: ignore[arg-type]
            "dagster/table_name": _full_name(settings, table.name),
            "kommo/key": ", ".join(table.key),
        },
        deps=_asset_deps(table, settings),
    )
    arguments: dict[str, Any] = asset_arguments(spec) | {
        "freshness_policy": freshness_policy(partitioned=partitioned)
    }
    if partitioned:
        arguments["partitions_def"] = build_daily_partitions(settings.start_date)
        arguments["backfill_policy"] = dg.BackfillPolicy.single_run()
    label = AccountScope.of(settings).label

    def derive(
        context: dg.AssetExecutionContext, duckdb: KommoDuckDBResource
    ) -> dg.MaterializeResult:
        window = (
            EpochWindow.from_time_window(context.partition_time_window) if partitioned else None
        )
        with duckdb.get_connection(on_wait=context.log.info) as con:
            if not table_exists(con, schema=settings.schema, table=table.parent):
                raise RuntimeError(
                    f"{settings.schema}.{table.parent} does not exist yet: materialize "
                    f"{label(table.parent)} first"
                )
            metadata = _write(context, con, table, settings=settings, window=window)
        return dg.MaterializeResult(metadata=metadata)

    return _define(derive, table.name, arguments)


def _write(
    context: dg.AssetExecutionContext,
    con: duckdb.DuckDBPyConnection,
    table: Table,
    *,
    settings: Settings,
    window: EpochWindow | None,
) -> dict[str, Any]:
    """Replace the slice, rebuild what follows it, and say what was written."""
    schema, full_name = settings.schema, _full_name(settings, table.name)
    label = "full table" if window is None else window.label()
    install_macros(con)
    result = replace_slice(
        con,
        table,
        schema=schema,
        window=window,
        select_sql=table.select(schema=schema, window=window),  # type: ignore[misc]
        after=lambda c: refresh_after_write(c, table.name, schema=schema),
    )
    metadata = _write_metadata(table, result, label=label, full_name=full_name)
    if table.skipped is not None:
        (count,) = con.execute(table.skipped(schema=schema, window=window)).fetchone() or (0,)
        metadata["kommo/skipped_versions"] = dg.MetadataValue.int(int(count))
        if count:
            context.log.warning(
                f"{table.name} {label}: {count} versions of {table.parent} hold custom "
                f"fields that are not a JSON list; they give no rows"
            )
    if window is not None and len(context.partition_keys) > 1:
        _report_partitions(context, con, table, schema=schema, window=window)
    context.log.info(
        f"{full_name} {label}: {result.rows} rows from {schema}.{table.parent} "
        f"(replaced {result.deleted})"
    )
    return metadata


def _define(
    compute: Callable[..., dg.MaterializeResult], name: str, spec: dict[str, Any]
) -> dg.AssetsDefinition:
    compute.__name__ = name
    with warnings.catch_warnings():
        # backfill_policy is still marked beta in Dagster 1.13, though the CLI relies on it.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(**spec)(compute)


def _write_metadata(
    table: Table, result: WriteResult, *, label: str, full_name: str
) -> dict[str, Any]:
    return {
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        "dagster/table_name": dg.MetadataValue.text(full_name),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            table_schema(table, actual=list(result.columns))  # type: ignore[arg-type]
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
    counts = dict(
        con.execute(
            f"SELECT {cursor} // {_DAY}, count(*) FROM {table_ref(schema, table.name)} "
            f"WHERE {cursor} >= ? AND {cursor} < ? GROUP BY 1",
            [window.start, window.end],
        ).fetchall()
    )
    for key in context.partition_keys:
        day = int(datetime.strptime(key, PARTITION_FORMAT).timestamp()) // _DAY
        context.add_asset_metadata(
            {"dagster/row_count": dg.MetadataValue.int(int(counts.get(day, 0)))},
            partition_key=key,
        )


# --- views ------------------------------------------------------------------------------------


def _view_asset(table: Table, *, settings: Settings, specs: AccountSpecs) -> dg.AssetsDefinition:
    """A view's asset: materializing it rebuilds the view and records its columns, described
    by the declaration and by what its refresh returns."""
    schema, name = settings.schema, table.name
    full_name = _full_name(settings, name)
    spec = specs.spec(
        table,
        description=(
            f"{table.description}\n\nDuckDB view `{schema}.{name}`, kept current by every write "
            f"of what it reads; materializing it rebuilds it and records its columns."
        ),
        metadata={"dagster/table_name": full_name},
        deps=_asset_deps(table, settings),
    )

    def view(
        context: dg.AssetExecutionContext, duckdb: KommoDuckDBResource
    ) -> dg.MaterializeResult:
        with duckdb.get_connection(on_wait=context.log.info) as con:
            descriptions = _rebuild(con, table, schema=schema)
            columns = con.execute(f"DESCRIBE {table_ref(schema, name)}").fetchall()
            (rows,) = con.execute(f"SELECT count(*) FROM {table_ref(schema, name)}").fetchone() or (
                0,
            )
        schema_value = dg.TableSchema(
            columns=[
                dg.TableColumn(name=c[0], type=c[1], description=descriptions.get(c[0]))
                for c in columns
            ]
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(rows)),
                "dagster/table_name": dg.MetadataValue.text(full_name),
                "dagster/column_schema": dg.MetadataValue.table_schema(schema_value),
            }
        )

    return _define(view, name, asset_arguments(spec))


def _rebuild(con: duckdb.DuckDBPyConnection, table: Table, *, schema: str) -> dict[str, str]:
    """Rebuild the view in a transaction; its columns' descriptions."""
    con.execute("BEGIN TRANSACTION")
    try:
        result = table.refresh(RefreshContext(con=con, schema=schema))  # type: ignore[misc]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    described = result if isinstance(result, Mapping) else {}
    return dict(table.column_descriptions) | dict(described)


__all__ = [
    "all_derived_keys",
    "build_derived_assets",
    "custom_field_entities",
    "derived_keys",
    "derived_tables",
    "root_stream",
    "selected_declarations",
]
