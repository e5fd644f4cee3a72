"""Writing the link tables inside the transaction of the slice their rows came with.

The rows of the link tables are gathered while their parent's pages are read
(`kommo_dagster.kommo.link_rows.LinkRows`) and staged with the parent's slice (or with the events
slice whose link events named them). Each link table's declaration in the registry
(`kommo_dagster.warehouse.registry`) writes its rows here when that slice is written, on the
same connection and in the same transaction, and the registry rebuilds what follows it. So the
link tables never disagree with the rows they came with, and a failed write leaves them as they
were.

A table replaced by parent loses every row of the parents read, then takes their current rows
(of two versions of a record read in one window, the newer one's), so a removed link goes; a
full-table write of the parent replaces the whole link table. ``lead_sources`` is replaced by
source id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb

from kommo_dagster.kommo.links import VERSION, LinkTable

if TYPE_CHECKING:
    import pyarrow as pa

    from kommo_dagster.kommo.link_rows import LinkRows

from kommo_dagster.warehouse.sql import (
    check_table_columns,
    create_table_sql,
    quote,
    scalar_int,
    table_ref,
)

_PARENTS = "_kommo_link_parents"
_ROWS = "_kommo_link_rows"


def ensure_link_table(con: duckdb.DuckDBPyConnection, table: LinkTable, *, schema: str) -> None:
    """Create ``<schema>.<table>`` from its declaration if missing; refuse one with other
    columns."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    con.execute(create_table_sql(table, schema=schema))
    check_table_columns(con, table, schema=schema)


def _newest_rows_sql(table: LinkTable) -> str:
    """The staged rows to write, one row per key: by key, those of the newest version of each
    key; by parent, those of the newest version read of each parent, and none when that version
    has no links or is deleted (a tie of versions: the deleted reading wins, as in the
    ``_current`` views)."""
    columns = ", ".join(quote(c) for c in table.column_names)
    casts = ", ".join(
        f"CAST({quote(c.name)} AS {c.duckdb_type}) AS {quote(c.name)}" for c in table.columns
    )
    key = ", ".join(quote(k) for k in table.key)
    version = quote(VERSION)
    if table.replace == "key":
        rows = (
            f"SELECT {casts}, {version}, max({version}) OVER (PARTITION BY {key}) AS _newest "
            f"FROM {_ROWS}"
        )
        return (
            f"SELECT DISTINCT ON ({key}) {columns} FROM ({rows}) "
            f"WHERE {version} IS NOT DISTINCT FROM _newest ORDER BY {key}"
        )
    r_key = ", ".join(f"r.{quote(k)}" for k in table.key)
    return (
        f"SELECT DISTINCT ON ({r_key}) {', '.join(f'r.{quote(c)}' for c in table.column_names)} "
        f"FROM (SELECT {casts}, {version} FROM {_ROWS}) AS r "
        f"JOIN {_PARENTS} AS p ON r.{quote(table.parent_column)} = p.id "
        f"WHERE r.{version} IS NOT DISTINCT FROM p.{version} AND NOT p.is_deleted ORDER BY {r_key}"
    )


def write_link_table(
    con: duckdb.DuckDBPyConnection,
    table: LinkTable,
    links: Sequence[LinkRows],
    *,
    schema: str,
    written: str | None,
    full_table: bool,
) -> int | None:
    """Replace the rows of ``table`` that the collectors staged with a write of ``written``
    hold; the rows written, or None when none of them reads ``table``.

    A full-table write of the parent replaces a table replaced by parent whole (its parents
    absent from the write are gone).
    """
    count: int | None = None
    for collector in links:
        if table not in collector.link_tables:
            continue
        whole = full_table and collector.parent == written
        con.register(_PARENTS, collector.parent_heads())
        try:
            rows = collector.table(table)
            count = (count or 0) + _replace(con, table, rows, schema=schema, whole_table=whole)
        finally:
            with contextlib.suppress(duckdb.Error):  # an aborted transaction keeps its error
                con.unregister(_PARENTS)
    return count


def _replace(
    con: duckdb.DuckDBPyConnection,
    table: LinkTable,
    rows: pa.Table,
    *,
    schema: str,
    whole_table: bool,
) -> int:
    ensure_link_table(con, table, schema=schema)
    target = table_ref(schema, table.name)
    con.register(_ROWS, rows)
    try:
        if table.replace == "key":
            key = ", ".join(quote(k) for k in table.key)
            con.execute(f"DELETE FROM {target} WHERE ({key}) IN (SELECT ({key}) FROM {_ROWS})")
        elif whole_table:
            con.execute(f"DELETE FROM {target}")
        else:
            column = quote(table.parent_column)
            con.execute(f"DELETE FROM {target} WHERE {column} IN (SELECT id FROM {_PARENTS})")
        columns = ", ".join(quote(c) for c in table.column_names)
        return scalar_int(con, f"INSERT INTO {target} ({columns}) {_newest_rows_sql(table)}")
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister(_ROWS)


__all__ = ["ensure_link_table", "write_link_table"]
