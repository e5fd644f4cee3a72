"""The derived tables and views as Dagster assets, built from the derived declarations.

* ``kommo/<entity>_custom_field_values`` and ``kommo/lead_status_changes``: partitioned exactly
  like their parent (daily by the parent's cursor, or unpartitioned when the parent is synced as
  a full table) and downstream of it. A run reads the parent's slice from DuckDB and replaces the
  same slice in one transaction (`kommo_dagster.derived.write`), which also rebuilds the views
  that read the table. The jobs run them in the same run as their parent.
* ``kommo/<stream>_wide``, ``kommo/lead_stage_durations`` and ``kommo/pipeline_funnel``: views,
  kept current by every write of what they read; materializing one (re)creates it and records
  its columns, with descriptions, as the asset's column schema.

This module deliberately has no ``from __future__ import annotations``: Dagster reads the
asset functions' annotations at definition time.
"""

import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any

import dagster as dg
import duckdb

from kommo_dagster.accounts import AccountScope
from kommo_dagster.derived.declaration import (
    CUSTOM_FIELD_ENTITIES,
    STATUS_CHANGES,
    CustomFieldEntity,
    DerivedTable,
    get_derived,
)
from kommo_dagster.derived.long_values import skipped_versions_sql, values_select_sql
from kommo_dagster.derived.stages import (
    DURATION_COLUMNS,
    DURATIONS_VIEW,
    FUNNEL_COLUMNS,
    FUNNEL_VIEW,
    ViewColumn,
    rebuild_stage_views,
    status_changes_select_sql,
)
from kommo_dagster.derived.value_text import install_macros
from kommo_dagster.derived.wide import rebuild_wide_view
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.freshness import freshness_policy
from kommo_dagster.io_manager import KommoDuckDBResource, table_schema
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.partitions import PARTITION_FORMAT, EpochWindow, build_daily_partitions
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse import WriteResult, catalog_name, quote, table_exists, table_ref

KINDS = {"duckdb", "sql"}
_DAY = 86_400


def custom_field_entities(settings: Settings) -> list[CustomFieldEntity]:
    """The entities whose stream the settings select."""
    return [e for e in CUSTOM_FIELD_ENTITIES if e.stream in settings.streams]


def derived_tables(settings: Settings) -> list[DerivedTable]:
    """The derived tables of the selected streams, in declaration order."""
    tables = [get_derived(e.values) for e in custom_field_entities(settings)]
    if get_derived(STATUS_CHANGES).parent in settings.streams:
        tables.append(get_derived(STATUS_CHANGES))
    return tables


def derived_keys(settings: Settings, *, partitioned: bool) -> list[dg.AssetKey]:
    """Keys of the derived tables (partitioned like their parent or not) and, with
    ``partitioned=False``, the views; for the jobs that run them with their parents."""
    scope = AccountScope.of(settings)
    keys = [
        scope.asset_key(t.name)
        for t in derived_tables(settings)
        if settings.is_partitioned(t.parent) == partitioned
    ]
    if not partitioned:
        keys += [scope.asset_key(name) for name in _view_names(settings)]
    return keys


def all_derived_keys(settings: Settings) -> list[dg.AssetKey]:
    """Every derived table and view the settings define."""
    return derived_keys(settings, partitioned=True) + derived_keys(settings, partitioned=False)


def _view_names(settings: Settings) -> list[str]:
    names = [e.wide_view for e in custom_field_entities(settings)]
    if get_derived(STATUS_CHANGES).parent in settings.streams:
        names += [DURATIONS_VIEW, FUNNEL_VIEW]
    return names


def build_derived_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The derived tables and views of the selected streams."""
    assets = []
    for entity in custom_field_entities(settings):
        assets.append(
            _table_asset(
                get_derived(entity.values),
                settings=settings,
                select=lambda w, e=entity: values_select_sql(e, schema=settings.schema, window=w),
                refresh=lambda con, e=entity: rebuild_wide_view(con, e, schema=settings.schema),
                skipped=lambda w, e=entity: skipped_versions_sql(
                    e, schema=settings.schema, window=w
                ),
            )
        )
        assets.append(_wide_view_asset(entity, settings=settings))
    if get_derived(STATUS_CHANGES).parent in settings.streams:
        assets += _stage_assets(settings)
    return assets


def _stage_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """lead_status_changes and the two views over it."""
    changes = get_derived(STATUS_CHANGES)
    key = AccountScope.of(settings).asset_key
    reads = [changes.name, *(s for s in ("leads", "statuses") if s in settings.streams)]

    def refresh(con: duckdb.DuckDBPyConnection) -> None:
        rebuild_stage_views(con, schema=settings.schema, changes_table=changes.name)

    def rebuilding(columns: tuple[ViewColumn, ...]) -> Callable[..., dict[str, str]]:
        def rebuild(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
            refresh(con)
            return {c.name: c.description for c in columns}

        return rebuild

    assets = [
        _table_asset(
            changes,
            settings=settings,
            select=lambda w: status_changes_select_sql(schema=settings.schema, window=w),
            refresh=refresh,
        )
    ]
    for name, columns, description in (
        (DURATIONS_VIEW, DURATION_COLUMNS, "Each stay of a lead in a pipeline stage."),
        (
            FUNNEL_VIEW,
            FUNNEL_COLUMNS,
            "Per pipeline stage: entered, now in it, time spent, conversion to the next stage, "
            "won and lost.",
        ),
    ):
        assets.append(
            _view_asset(
                name,
                settings=settings,
                deps=[key(n) for n in reads],
                description=description,
                rebuild=rebuilding(columns),
            )
        )
    return assets


# --- tables -----------------------------------------------------------------------------------


def _table_asset(
    table: DerivedTable,
    *,
    settings: Settings,
    select: Callable[[EpochWindow | None], str],
    refresh: Callable[[duckdb.DuckDBPyConnection], Any],
    skipped: Callable[[EpochWindow | None], str] | None = None,
) -> dg.AssetsDefinition:
    parent = get_stream(table.parent)
    partitioned = settings.is_partitioned(parent.name)
    schema = settings.schema
    scope = AccountScope.of(settings)
    full_name = f"{catalog_name(settings.duckdb_path)}.{schema}.{table.name}"
    how = (
        f"Daily partitions as `{parent.name}` (by `{table.cursor}` = the parent's "
        f"`{parent.cursor}`): a run reads that slice of `{schema}.{parent.name}` and replaces "
        f"the same slice, in one transaction."
        if partitioned
        else f"Rebuilt whole from `{schema}.{parent.name}` (synced as a full table)."
    )
    extra: dict[str, Any] = {}
    if partitioned:
        extra["partitions_def"] = build_daily_partitions(settings.start_date)
        extra["backfill_policy"] = dg.BackfillPolicy.single_run()

    spec: dict[str, Any] = dict(
        key=scope.asset_key(table.name),
        deps=[scope.asset_key(parent.name)],
        description=f"{table.description}\n\nDuckDB table `{schema}.{table.name}`. {how}",
        group_name=scope.group_name,
        kinds=KINDS,
        metadata={
            "dagster/column_schema": table_schema(table),  # type: ignore[arg-type]
            "dagster/table_name": full_name,
            "kommo/key": ", ".join(table.key),
        },
        freshness_policy=freshness_policy(partitioned=partitioned),
        **extra,
    )

    def derive(
        context: dg.AssetExecutionContext, duckdb: KommoDuckDBResource
    ) -> dg.MaterializeResult:
        window = (
            EpochWindow.from_time_window(context.partition_time_window) if partitioned else None
        )
        label = "full table" if window is None else window.label()
        with duckdb.get_connection(on_wait=context.log.info) as con:
            if not table_exists(con, schema=schema, table=parent.name):
                raise RuntimeError(
                    f"{schema}.{parent.name} does not exist yet: materialize "
                    f"{scope.label(parent.name)} first"
                )
            install_macros(con)
            result = replace_slice(
                con, table, schema=schema, window=window, select_sql=select(window), after=refresh
            )
            metadata = _write_metadata(table, result, label=label, full_name=full_name)
            if skipped is not None:
                (count,) = con.execute(skipped(window)).fetchone() or (0,)
                metadata["kommo/skipped_versions"] = dg.MetadataValue.int(int(count))
                if count:
                    context.log.warning(
                        f"{table.name} {label}: {count} versions of {parent.name} hold custom "
                        f"fields that are not a JSON list; they give no rows"
                    )
            if window is not None and len(context.partition_keys) > 1:
                _report_partitions(context, con, table, schema=schema, window=window)
        context.log.info(
            f"{full_name} {label}: {result.rows} rows from {schema}.{parent.name} "
            f"(replaced {result.deleted})"
        )
        return dg.MaterializeResult(metadata=metadata)

    return _define(derive, table.name, spec)


def _define(
    compute: Callable[..., dg.MaterializeResult], name: str, spec: dict[str, Any]
) -> dg.AssetsDefinition:
    compute.__name__ = name
    with warnings.catch_warnings():
        # backfill_policy is still marked beta in Dagster 1.13, though the CLI relies on it.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(**spec)(compute)


def _write_metadata(
    table: DerivedTable, result: WriteResult, *, label: str, full_name: str
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
    table: DerivedTable,
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


def _wide_view_asset(entity: CustomFieldEntity, *, settings: Settings) -> dg.AssetsDefinition:
    stream = get_stream(entity.stream)
    key = AccountScope.of(settings).asset_key
    deps = [key(entity.values), key(entity.stream)]
    if entity.definitions in settings.streams:
        deps.append(key(entity.definitions))

    def rebuild(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        fields = rebuild_wide_view(con, entity, schema=settings.schema)
        return {c.name: c.description for c in stream.columns} | {
            c.name: c.description for c in fields
        }

    return _view_asset(
        entity.wide_view,
        settings=settings,
        deps=deps,
        description=(
            f"One row per live {entity.stream} record (`{settings.schema}."
            f"{entity.stream}_current`) with one typed column per custom field defined for "
            f"{entity.stream}."
        ),
        rebuild=rebuild,
    )


def _view_asset(
    name: str,
    *,
    settings: Settings,
    deps: list[dg.AssetKey],
    description: str,
    rebuild: Callable[[duckdb.DuckDBPyConnection], dict[str, str]],
) -> dg.AssetsDefinition:
    """A view's asset: materializing it rebuilds the view and records its columns; ``rebuild``
    returns the columns' descriptions."""
    schema = settings.schema
    scope = AccountScope.of(settings)
    full_name = f"{catalog_name(settings.duckdb_path)}.{schema}.{name}"

    spec: dict[str, Any] = dict(
        key=scope.asset_key(name),
        deps=deps,
        description=(
            f"{description}\n\nDuckDB view `{schema}.{name}`, kept current by every write of "
            f"what it reads; materializing it rebuilds it and records its columns."
        ),
        group_name=scope.group_name,
        kinds={"duckdb", "view"},
        metadata={"dagster/table_name": full_name},
    )

    def view(
        context: dg.AssetExecutionContext, duckdb: KommoDuckDBResource
    ) -> dg.MaterializeResult:
        with duckdb.get_connection(on_wait=context.log.info) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                descriptions = rebuild(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            columns = con.execute(f"DESCRIBE {table_ref(schema, name)}").fetchall()
            (rows,) = con.execute(f"SELECT count(*) FROM {table_ref(schema, name)}").fetchone() or (
                0,
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(rows)),
                "dagster/table_name": dg.MetadataValue.text(full_name),
                "dagster/column_schema": dg.MetadataValue.table_schema(
                    dg.TableSchema(
                        columns=[
                            dg.TableColumn(name=c[0], type=c[1], description=descriptions.get(c[0]))
                            for c in columns
                        ]
                    )
                ),
            }
        )

    return _define(view, name, spec)


__all__ = [
    "all_derived_keys",
    "build_derived_assets",
    "custom_field_entities",
    "derived_keys",
    "derived_tables",
]
