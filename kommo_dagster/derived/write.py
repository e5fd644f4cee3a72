"""Replace one slice of a derived table with rows computed by a query, in one transaction.

The same guarantees as a stream's write (`kommo_dagster.warehouse`): the table is created from
the contract, the slice is an integer range of the table's cursor, and ``BEGIN; DELETE <slice>;
INSERT ... SELECT; <views>; COMMIT`` either happens whole or not at all, so a failure leaves the
previous rows. The rows come straight from the parent's table in the same database and the same
transaction, so a derived slice always matches the parent slice it was computed from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from kommo_dagster.warehouse.slices import WriteResult, one_transaction
from kommo_dagster.warehouse.sql import (
    check_table_columns,
    column_list,
    create_table_sql,
    declared_columns,
    quote,
    scalar_int,
    select_casts,
    table_columns,
    table_exists,
    table_ref,
)
from kommo_dagster.warehouse.tables import Table
from kommo_dagster.warehouse.windows import EpochWindow


def ensure_table(con: duckdb.DuckDBPyConnection, table: Table, *, schema: str) -> None:
    """Create ``<schema>.<table>`` from the contract if missing; refuse one with other columns."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    con.execute(create_table_sql(table, schema=schema))
    check_table_columns(con, table, schema=schema)


def window_condition(column: str, window: EpochWindow | None, *, alias: str = "") -> str:
    """``start <= column < end`` for a window (``TRUE`` for a whole table), as literals: the
    bounds are integers, so there is nothing to format or to drift."""
    if window is None:
        return "TRUE"
    ref = f"{alias}.{quote(column)}" if alias else quote(column)
    return f"{ref} >= {int(window.start)} AND {ref} < {int(window.end)}"


def replace_slice(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    *,
    schema: str,
    window: EpochWindow | None,
    select_sql: str,
    params: Sequence[Any] = (),
    after: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    recreate: bool = False,
) -> WriteResult:
    """Replace the ``window`` slice of ``<schema>.<table>`` (the whole table for ``None``) with
    the rows of ``select_sql``, which must yield the table's columns by name.

    ``after(con)`` runs in the same transaction once the rows are in (the views that read the
    table). ``recreate`` (a table rebuilt whole) first drops a table whose columns an older
    version made, in the same transaction, instead of refusing it.
    """
    target = table_ref(schema, table.name)
    # The query reads its parent's slice of the same window, so the filter drops nothing; it
    # makes sure no row can land where no re-run of this slice would replace it. A table rebuilt
    # whole has no slice to keep its rows inside.
    whole = not table.sliced
    slice_ = "TRUE" if whole else window_condition(table.cursor, window)
    inside = "TRUE" if whole else f"{quote(table.cursor)} IS NOT NULL AND {slice_}"
    names, casts = column_list(table), select_casts(table)
    with one_transaction(con):
        if recreate:
            _drop_if_drifted(con, table, schema=schema)
        ensure_table(con, table, schema=schema)
        deleted = scalar_int(con, f"DELETE FROM {target} WHERE {slice_}")
        rows = scalar_int(
            con,
            f"INSERT INTO {target} ({names}) SELECT {casts} FROM ({select_sql}) AS derived "
            f"WHERE {inside}",
            params,
        )
        if after is not None:
            after(con)
        table_rows = scalar_int(con, f"SELECT count(*) FROM {target}")
        actual = table_columns(con, schema=schema, table=table.name)
    return WriteResult(rows=rows, deleted=deleted, table_rows=table_rows, columns=tuple(actual))


def _drop_if_drifted(con: duckdb.DuckDBPyConnection, table: Table, *, schema: str) -> None:
    """Drop ``<schema>.<table>`` if an older version made it with other columns (a table rebuilt
    whole is made again from the contract, in the caller's transaction)."""
    if not table_exists(con, schema=schema, table=table.name):
        return
    if table_columns(con, schema=schema, table=table.name) != declared_columns(table):
        con.execute(f"DROP TABLE {table_ref(schema, table.name)}")


__all__ = ["ensure_table", "replace_slice", "window_condition"]
