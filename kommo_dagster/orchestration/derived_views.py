"""The derived views as Dagster assets (``kommo/<stream>_wide``, ``kommo/lead_stage_durations``,
``kommo/pipeline_funnel``, ``kommo/response_time_by_manager``), built from their declarations.

A view is kept current by every write of what it follows; materializing one (re)creates it, and
what follows it, in one transaction and records its columns, with descriptions, as the asset's
column schema. A rebuild over a table not written yet says what to materialize first.

This module deliberately has no ``from __future__ import annotations``: Dagster reads the
asset function's annotations at definition time.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import duckdb
from duckdb import CatalogException

from kommo_dagster.derived.activity import existing
from kommo_dagster.orchestration.derived_build import Build, define, full_table_name
from kommo_dagster.orchestration.derived_selection import asset_deps, upstream
from kommo_dagster.orchestration.io_manager import KommoDuckDBResource
from kommo_dagster.orchestration.missing_parents import materialize_first, not_written_yet
from kommo_dagster.orchestration.translator import asset_arguments
from kommo_dagster.warehouse.slices import one_transaction
from kommo_dagster.warehouse.sql import table_ref
from kommo_dagster.warehouse.tables import RefreshContext, Table


def view_asset(table: Table, build: Build) -> dg.AssetsDefinition:
    """A view's asset: materializing it rebuilds the view and records its columns, described
    by the declaration and by what its refresh returns."""
    schema, name = build.settings.schema, table.name
    full_name = full_table_name(build.settings, name)
    deps = asset_deps(table, build.selected)
    spec = _view_spec(table, deps, build=build, full_name=full_name)

    def view(
        context: dg.AssetExecutionContext, duckdb: KommoDuckDBResource
    ) -> dg.MaterializeResult:
        with duckdb.get_connection(on_wait=context.log.info) as con:
            descriptions = _rebuild_over(con, table, deps, build=build, log=context.log)
            columns = con.execute(f"DESCRIBE {table_ref(schema, name)}").fetchall()
            (rows,) = con.execute(f"SELECT count(*) FROM {table_ref(schema, name)}").fetchone() or (
                0,
            )
        over = f" over {', '.join(f'{schema}.{d}' for d in deps)}" if deps else ""
        context.log.info(f"{full_name} view rebuilt{over}: {rows} rows, {len(columns)} columns")
        return _materialization(columns, rows, descriptions=descriptions, full_name=full_name)

    return define(view, name, asset_arguments(spec))


def _view_spec(table: Table, deps: Sequence[str], *, build: Build, full_name: str) -> dg.AssetSpec:
    """The view's asset spec: what it is and reads, and its columns when its SQL fixes them."""
    return build.specs.spec(
        table,
        description=(
            f"{table.description}\n\nDuckDB view `{build.settings.schema}.{table.name}`, kept "
            f"current by every write of what it reads; materializing it rebuilds it and records "
            f"its columns."
        ),
        metadata={"dagster/table_name": full_name} | _declared_view_schema(table),
        deps=upstream(table, deps, build.selected),
    )


def _rebuild_over(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    deps: Sequence[str],
    *,
    build: Build,
    log: logging.Logger,
) -> dict[str, str]:
    """Rebuild the view; its columns' descriptions. A rebuild failing over relations not
    written yet says what to materialize first, one over streams it created empty warns."""
    schema = build.settings.schema
    unwritten = _unwritten_streams(con, deps, build=build)
    try:
        descriptions = _rebuild(con, table, build=build)
    except CatalogException as exc:
        _explain_missing(con, table, deps, build=build, error=exc)
        raise
    if unwritten:
        log.warning(
            f"{schema}.{table.name} was rebuilt over "
            f"{', '.join(f'{schema}.{n}' for n in unwritten)}, created empty as no run "
            f"had written them: {materialize_first(unwritten, specs=build.specs)}, "
            "then this asset again"
        )
    return descriptions


def _materialization(
    columns: Sequence[tuple[Any, ...]],
    rows: int,
    *,
    descriptions: Mapping[str, str],
    full_name: str,
) -> dg.MaterializeResult:
    """The rebuilt view's row count, table name and described columns (DESCRIBE's rows)."""
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


def _declared_view_schema(table: Table) -> dict[str, dg.TableSchema]:
    """The column schema of a view whose SQL fixes its columns, shown before it is first built;
    a wide view's columns follow the custom fields, known once it is."""
    if not table.view_columns:
        return {}
    columns = [
        dg.TableColumn(c.name, c.type, description=c.description) for c in table.view_columns
    ]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}


def _explain_missing(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    deps: Sequence[str],
    *,
    build: Build,
    error: CatalogException,
) -> None:
    """Turn a view's failed rebuild over relations not written yet into what to materialize
    first (DuckDB only says a table is missing); nothing when everything it reads exists."""
    schema = build.settings.schema
    there = set(existing(con, tuple(deps), schema=schema))
    missing = [n for n in deps if n not in there]
    if not missing:
        return
    # The views create the stream tables they read empty; a computed table they cannot.
    computed = [n for n in missing if n not in build.settings.streams]
    missing = computed or missing
    raise RuntimeError(
        f"{schema}.{table.name} cannot be rebuilt: "
        f"{not_written_yet(missing, schema=schema, specs=build.specs)} ({error})"
    ) from error


def _unwritten_streams(
    con: duckdb.DuckDBPyConnection, deps: Sequence[str], *, build: Build
) -> list[str]:
    """The streams the view reads that no run has written: its rebuild creates them empty, so
    it succeeds, but shows nothing of them until they are materialized."""
    streams = tuple(n for n in deps if n in build.settings.streams)
    there = set(existing(con, streams, schema=build.settings.schema))
    return [n for n in streams if n not in there]


def _rebuild(con: duckdb.DuckDBPyConnection, table: Table, *, build: Build) -> dict[str, str]:
    """Rebuild the view, and what follows it, in a transaction; its columns' descriptions."""
    ctx = RefreshContext(con=con, schema=build.settings.schema)
    with one_transaction(con):
        result = table.refresh(ctx)  # type: ignore[misc]
        build.refresh(con, table.name)
    described = result if isinstance(result, Mapping) else {}
    return dict(table.column_descriptions) | dict(described)


__all__ = ["view_asset"]
