"""Writing the link tables inside the transaction of the slice their rows came with.

The rows of the link tables are gathered while their parent's pages are read
(`kommo_dagster.kommo.links.LinkRows`); the IO manager hands them here from the write of the
parent's slice (or of the events slice whose link events named them), on the same connection
and in the same transaction. So the link tables never disagree with the rows they came with, and
a failed write leaves them as they were.

A table replaced by parent loses every row of the parents read, then takes their current rows
(of two versions of a record read in one window, the newer one's), so a removed link goes; a
full-table write of the parent replaces the whole link table. ``lead_sources`` is replaced by
source id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa

from kommo_dagster.kommo.links import LINK_TABLES, VERSION, LinkRows, LinkTable
from kommo_dagster.warehouse.registry import refresh_after_write
from kommo_dagster.warehouse.sql import check_table_columns, create_table_sql, quote, table_ref

_PARENTS = "_kommo_link_parents"
_ROWS = "_kommo_link_rows"


def ensure_link_table(con: duckdb.DuckDBPyConnection, table: LinkTable, *, schema: str) -> None:
    """Create ``<schema>.<table>`` from its declaration if missing; refuse one with other
    columns."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    con.execute(create_table_sql(table, schema=schema))  # type: ignore[arg-type]
    check_table_columns(con, table, schema=schema)  # type: ignore[arg-type]


def _newest_rows_sql(table: LinkTable) -> str:
    """The staged rows, newest version per replaced unit (parent or key), one row per key."""
    unit = (
        quote(table.parent_column)
        if table.replace == "parent"
        else ", ".join(quote(k) for k in table.key)
    )
    columns = ", ".join(quote(c) for c in table.column_names)
    casts = ", ".join(
        f"CAST({quote(c.name)} AS {c.duckdb_type}) AS {quote(c.name)}" for c in table.columns
    )
    key = ", ".join(quote(k) for k in table.key)
    version = quote(VERSION)
    return (
        f"SELECT DISTINCT ON ({key}) {columns} FROM ("
        f"SELECT {casts}, {version}, max({version}) OVER (PARTITION BY {unit}) AS _newest "
        f"FROM {_ROWS}) WHERE {version} IS NOT DISTINCT FROM _newest ORDER BY {key}"
    )


def write_link_rows(
    con: duckdb.DuckDBPyConnection,
    links: LinkRows,
    *,
    schema: str,
    whole_table: bool = False,
    account_schemas: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Replace the rows ``links`` holds in each of its tables; ``{table: rows written}``.

    ``whole_table``: the parent was written whole, so tables replaced by parent are replaced
    whole too (their parents absent from it are gone). What the registry says follows each
    table (its ``kommo_all`` view with several accounts, ``account_schemas``) is rebuilt after.
    """
    written: dict[str, int] = {}
    con.register(_PARENTS, links.parent_id_array())
    try:
        for name, rows in links.tables().items():
            table = LINK_TABLES[name]
            written[name] = _replace(con, table, rows, schema=schema, whole_table=whole_table)
            # What follows a link table (its kommo_all view, the views reading it) comes
            # from the registry, in this transaction.
            refresh_after_write(
                con, name, schema=schema, account_schemas=dict(account_schemas or {})
            )
    finally:
        with contextlib.suppress(duckdb.Error):  # an aborted transaction keeps its own error
            con.unregister(_PARENTS)
    return written


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
        row = con.execute(f"INSERT INTO {target} ({columns}) {_newest_rows_sql(table)}").fetchone()
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister(_ROWS)
    return int(row[0]) if row else 0


def write_staged_links(
    con: duckdb.DuckDBPyConnection,
    links: Sequence[LinkRows],
    *,
    schema: str,
    stream: str,
    full_table: bool,
    account_schemas: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """`write_link_rows` for every collector staged with a slice of ``stream`` (the IO
    manager's hook); a full-table write of a parent replaces its link tables whole."""
    written: dict[str, int] = {}
    for collector in links:
        whole = full_table and collector.parent == stream
        for name, n in write_link_rows(
            con, collector, schema=schema, whole_table=whole, account_schemas=account_schemas
        ).items():
            written[name] = written.get(name, 0) + n
    return written


__all__ = ["ensure_link_table", "write_link_rows", "write_staged_links"]
