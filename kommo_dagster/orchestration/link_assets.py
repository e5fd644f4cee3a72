"""The link tables as Dagster assets, with their checks, built from `kommo.links.LINK_TABLES`.

A link table is written by its parent's asset, in the transaction of the parent's slice
(`kommo_dagster.warehouse.link_write`), from the pages the parent's walk reads anyway; and by
the events asset for the records whose links changed without moving their ``updated_at``. Its
asset (``kommo/<table>``, partitioned like the parent, downstream of it and run in the same
runs) records what the parent's write left: the rows of the parents of its slice, the table's
rows, its columns. Materializing it alone re-reads nothing from Kommo. The events' rewrite is
recorded on it as an observation (``kommo/link_rows_rewritten``, ``kommo/table_row_count``,
which asset, slice and run), logged by the IO manager once the events' write committed
(`kommo_dagster.orchestration.io_manager.RewrittenLinks`): not a materialization, which would
start the automation downstream. The IO manager finds these assets' keys in the events asset's
definition metadata (``kommo/link_asset/<table>``, `rewritten_link_metadata`).

Their checks (``kommo_<table>_checks``) are the declared tables' ones
(`kommo_dagster.orchestration.derived_checks`), built from the registry's declaration of each
table (`kommo_dagster.warehouse.registry.link_table`): ``contract_columns`` (blocking),
``no_duplicate_keys``, a warning per reference into a selected stream and the checks its
`LinkTable` names (``one_main_contact``).
"""

import warnings
from typing import Any

import dagster as dg
import duckdb as duckdb_lib

from kommo_dagster.kommo.links import LINK_TABLES, LinkTable
from kommo_dagster.kommo.relinks import LINK_EVENTS_STREAM
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.orchestration.derived_checks import build_table_checks
from kommo_dagster.orchestration.freshness import freshness_policy
from kommo_dagster.orchestration.io_manager import (
    LINK_ASSET_METADATA_PREFIX,
    KommoDuckDBResource,
    table_schema,
)
from kommo_dagster.orchestration.missing_parents import not_written_yet, report_missing_parent
from kommo_dagster.orchestration.partitions import (
    build_daily_partitions,
    report_rows_by_day,
    run_window,
    utc_day_sql,
)
from kommo_dagster.orchestration.translator import AccountSpecs, asset_arguments
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.link_write import ensure_link_table
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster.warehouse.sql import (
    qualified_table_name,
    quote,
    scalar_int,
    table_columns,
    table_exists,
    table_ref,
)
from kommo_dagster.warehouse.windows import EpochWindow


def link_tables(settings: Settings) -> list[LinkTable]:
    """The link tables of the selected streams, in declaration order."""
    return [t for t in LINK_TABLES.values() if t.parent in settings.streams]


def link_keys(
    settings: Settings, *, partitioned: bool, specs: AccountSpecs | None = None
) -> list[dg.AssetKey]:
    """Keys of the link tables partitioned (or not) like their parent, for the jobs (the
    ``leads_enriched`` view is a derived view: `derived_keys`)."""
    specs = specs or AccountSpecs(settings)
    return [
        specs.key(t.name)
        for t in link_tables(settings)
        if settings.is_partitioned(t.parent) == partitioned
    ]


def rewritten_link_metadata(
    stream: str, *, settings: Settings, specs: AccountSpecs | None = None
) -> dict[str, dg.MetadataValue]:
    """Definition metadata of ``stream``'s asset naming each link asset whose table its writes
    rewrite though it is not their parent (the events' relinks): the IO manager observes those
    after such a write (`RewrittenLinks`), since their own runs do not record it. The UI shows
    them as links to the assets."""
    specs = specs or AccountSpecs(settings)
    return {
        f"{LINK_ASSET_METADATA_PREFIX}{t.name}": dg.MetadataValue.asset(specs.key(t.name))
        for t in link_tables(settings)
        if t.parent != stream and stream in get_table(t.name).refresh_on
    }


def _rows_follow_slices(table: LinkTable) -> bool:
    """Whether the table's rows belong to its parents' slices (replaced per parent record read
    of a stream with a cursor), so a slice has rows of its own; else a slice's are the table's."""
    return table.replace != "key" and get_stream(table.parent).cursor is not None


def _summary(
    table: LinkTable, *, full_name: str, window: EpochWindow | None, rows: int, total: int
) -> str:
    """The run log's line of what the parent's writes left, as the other assets log theirs."""
    if window is None:
        return f"{full_name} full table: {total} rows"
    if not _rows_follow_slices(table):
        return f"{full_name} {window.label()}: {total} rows in the table"
    return (
        f"{full_name} {window.label()}: {rows} rows of the {table.parent} of its slice, "
        f"{total} in all"
    )


def _slice_rows(
    con: duckdb_lib.DuckDBPyConnection, table: LinkTable, *, schema: str, window: EpochWindow | None
) -> int:
    """Rows of the table belonging to the parents of the window's slice (all rows for None)."""
    target = table_ref(schema, table.name)
    parent = get_stream(table.parent)
    if window is None or not _rows_follow_slices(table) or parent.cursor is None:
        sql, params = f"SELECT count(*) FROM {target}", []
    else:
        cursor = quote(parent.cursor)
        sql = (
            f"SELECT count(*) FROM {target} WHERE {quote(table.parent_column)} IN (SELECT id "
            f"FROM {table_ref(schema, parent.name)} WHERE {cursor} >= ? AND {cursor} < ?)"
        )
        params = [window.start, window.end]
    return scalar_int(con, sql, params)


def _report_partitions(
    context: dg.AssetExecutionContext,
    con: duckdb_lib.DuckDBPyConnection,
    table: LinkTable,
    *,
    schema: str,
    window: EpochWindow,
    rows: int,
) -> None:
    """Per-partition row counts of a range: each day's, as a run of that day alone reports
    them (`_slice_rows`), not the whole range's on every day. One query for the range: a
    weekly full sync has a partition per day since the start date."""
    parent = get_stream(table.parent)
    if not _rows_follow_slices(table) or parent.cursor is None:
        # Not tied to the parents' slices: a day alone reports the whole table too.
        report_rows_by_day(context, {}, default=rows)
        return
    cursor = quote(parent.cursor)
    by_day = con.execute(
        f"SELECT p.day, count(*) FROM (SELECT DISTINCT id, {utc_day_sql(cursor)} AS day "
        f"FROM {table_ref(schema, parent.name)} WHERE {cursor} >= ? AND {cursor} < ?) "
        f"AS p JOIN {table_ref(schema, table.name)} AS l "
        f"ON l.{quote(table.parent_column)} = p.id GROUP BY p.day",
        [window.start, window.end],
    ).fetchall()
    report_rows_by_day(context, dict(by_day))


def _by_events(table: LinkTable, *, settings: Settings) -> str:
    """What the description says of the events run: it rewrites the links its link events
    name only for a table it refreshes (not ``lead_sources``), and only when it is selected."""
    if LINK_EVENTS_STREAM not in get_table(table.name).refresh_on:
        return ""
    if LINK_EVENTS_STREAM in settings.streams:
        return ", and for the records that the day's link events name by the events run"
    return (
        "; the events stream is not selected, so a link changed without moving its record's "
        "`updated_at` waits for the record's next change or a full sync"
    )


def _asset_arguments(table: LinkTable, *, settings: Settings, specs: AccountSpecs) -> dict:
    """The asset's definition through the translator: key, description, metadata, partitions
    like the parent's."""
    parent = get_stream(table.parent)
    partitioned = settings.is_partitioned(parent.name)
    schema = settings.schema
    replaced = (
        "by source id"
        if table.replace == "key"
        else f"per {parent.name} record read, so a link removed in Kommo disappears"
    )
    spec = specs.spec(
        get_table(table.name),
        description=(
            f"{table.description}\n\nDuckDB table `{schema}.{table.name}`, written with each "
            f"slice of `{schema}.{parent.name}` in the same transaction (rows replaced "
            f"{replaced}){_by_events(table, settings=settings)}. This asset records what those "
            "writes left."
        ),
        metadata={
            "dagster/column_schema": table_schema(table),
            "dagster/table_name": qualified_table_name(
                settings.duckdb_path, schema=schema, name=table.name
            ),
            "kommo/key": ", ".join(table.key),
            "kommo/parent": parent.name,
        },
        deps=(parent.name,),
    )
    freshness = freshness_policy(partitioned=partitioned)
    arguments: dict[str, Any] = asset_arguments(spec, freshness=freshness)
    if partitioned:
        arguments["partitions_def"] = build_daily_partitions(settings.start_date)
        arguments["backfill_policy"] = dg.BackfillPolicy.single_run()
    return arguments


def build_link_asset(
    table: LinkTable, *, settings: Settings, specs: AccountSpecs | None = None
) -> dg.AssetsDefinition:
    specs = specs or AccountSpecs(settings)
    parent = get_stream(table.parent)
    partitioned = settings.is_partitioned(parent.name)
    schema = settings.schema
    full_name = qualified_table_name(settings.duckdb_path, schema=schema, name=table.name)
    arguments = _asset_arguments(table, settings=settings, specs=specs)

    def record(
        context: dg.AssetExecutionContext, duckdb: KommoDuckDBResource
    ) -> dg.MaterializeResult:
        window = run_window(context, partitioned=partitioned)
        with duckdb.get_connection(on_wait=context.log.info) as con:
            if not table_exists(con, schema=schema, table=parent.name):
                missing = not_written_yet([parent.name], schema=schema, specs=specs)
                raise RuntimeError(f"{missing} (it writes {table.name})")
            ensure_link_table(con, table, schema=schema)
            rows = _slice_rows(con, table, schema=schema, window=window)
            (total,) = con.execute(
                f"SELECT count(*) FROM {table_ref(schema, table.name)}"
            ).fetchone() or (0,)
            columns = table_columns(con, schema=schema, table=table.name)
            if window is not None and len(context.partition_keys) > 1:
                _report_partitions(context, con, table, schema=schema, window=window, rows=rows)
        context.log.info(
            _summary(table, full_name=full_name, window=window, rows=rows, total=int(total))
        )
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(rows),
            "dagster/table_name": dg.MetadataValue.text(full_name),
            # The columns the table has, as the other assets record theirs: what a column
            # schema change check compares.
            "dagster/column_schema": dg.MetadataValue.table_schema(
                table_schema(table, actual=columns)
            ),
            "kommo/table_row_count": dg.MetadataValue.int(int(total)),
        }
        if window is not None:  # the parent writes this table: did it run for every day?
            parent_key = specs.key(parent.name)
            metadata |= report_missing_parent(context, parent_key, table=full_name, window=window)
        return dg.MaterializeResult(metadata=metadata)

    record.__name__ = table.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(**arguments)(record)


def build_link_assets(
    settings: Settings, *, specs: AccountSpecs | None = None
) -> list[dg.AssetsDefinition]:
    """The link tables of the selected streams (``leads_enriched`` is a derived view)."""
    specs = specs or AccountSpecs(settings)
    return [build_link_asset(t, settings=settings, specs=specs) for t in link_tables(settings)]


def build_link_checks(
    settings: Settings, *, specs: AccountSpecs | None = None
) -> list[dg.AssetChecksDefinition]:
    """The checks of the selected link tables, built from their registry declarations by the
    declared tables' builder (`kommo_dagster.orchestration.derived_checks`)."""
    specs = specs or AccountSpecs(settings)
    return [
        build_table_checks(get_table(t.name), settings=settings, specs=specs)
        for t in link_tables(settings)
    ]


__all__ = [
    "build_link_asset",
    "build_link_assets",
    "build_link_checks",
    "link_keys",
    "link_tables",
    "rewritten_link_metadata",
]
