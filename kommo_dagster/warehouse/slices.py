"""The one-transaction write of a slice (``BEGIN; DELETE <slice>; INSERT ...; COMMIT``) and the
read of one: a failure anywhere rolls back and leaves the previous rows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import duckdb

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

from kommo_dagster.kommo.streams import Stream
from kommo_dagster.warehouse.sql import (
    check_table_columns,
    column_list,
    create_table_sql,
    quote,
    select_casts,
    table_columns,
    table_exists,
    table_ref,
)
from kommo_dagster.warehouse.windows import EpochWindow


class StagedSlice(Protocol):
    """What `write_slice` reads of the rows it writes (`StagedRows` is one)."""

    stream: Stream
    window: EpochWindow | None
    rows: int
    duplicates: int

    def sources(self) -> Iterable[str]: ...


@dataclass(frozen=True)
class WriteResult:
    """What a write did: rows written, rows they replaced, rows in the table after, the
    table's columns as DuckDB reports them, and the staged rows dropped as repeats of a key."""

    rows: int
    deleted: int
    table_rows: int
    columns: tuple[tuple[str, str], ...]
    duplicates: int = 0


def insert_arrays(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    arrays: Mapping[str, np.ndarray] | pd.DataFrame | pa.Table,
    *,
    target: str,
) -> None:
    con.register("kommo_frame", arrays)
    try:
        con.execute(
            f"INSERT INTO {target} ({column_list(stream)}) "
            f"SELECT {select_casts(stream)} FROM kommo_frame"
        )
    finally:
        con.unregister("kommo_frame")


def write_slice(
    con: duckdb.DuckDBPyConnection,
    staged: StagedSlice,
    *,
    catalog: str,
    schema: str,
    after: Callable[[duckdb.DuckDBPyConnection], None] | None,
) -> WriteResult:
    stream = staged.stream
    target = table_ref(schema, stream.name, catalog=catalog)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(catalog)}.{quote(schema)}")
        if staged.window is None:
            deleted = 0
            if table_exists(con, schema=schema, table=stream.name, catalog=catalog):
                row = con.execute(f"SELECT count(*) FROM {target}").fetchone()
                deleted = int(row[0]) if row else 0
            con.execute(create_table_sql(stream, schema=schema, catalog=catalog, replace=True))
        else:
            con.execute(create_table_sql(stream, schema=schema, catalog=catalog))
            check_table_columns(con, stream, schema=schema, catalog=catalog)
            cursor = quote(stream.cursor or "")
            row = con.execute(
                f"DELETE FROM {target} WHERE {cursor} >= ? AND {cursor} < ?",
                [staged.window.start, staged.window.end],
            ).fetchone()
            deleted = int(row[0]) if row else 0
        if staged.rows:
            for source in staged.sources():
                con.execute(
                    f"INSERT INTO {target} ({column_list(stream)}) "
                    f"SELECT {select_casts(stream)} FROM {source}"
                )
        if after is not None:
            after(con)
        row = con.execute(f"SELECT count(*) FROM {target}").fetchone()
        table_rows = int(row[0]) if row else 0
        columns = table_columns(con, schema=schema, table=stream.name, catalog=catalog)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    return WriteResult(
        rows=staged.rows,
        deleted=deleted,
        table_rows=table_rows,
        columns=tuple(columns),
        duplicates=staged.duplicates,
    )


def read_slice(
    con: duckdb.DuckDBPyConnection, stream: Stream, *, schema: str, window: EpochWindow | None
) -> pd.DataFrame:
    """The rows of a table (or of one cursor slice), contract columns in contract order."""
    sql = f"SELECT {column_list(stream)} FROM {table_ref(schema, stream.name)}"
    params: list[int] = []
    if window is not None:
        cursor = quote(stream.cursor or "")
        sql += f" WHERE {cursor} >= ? AND {cursor} < ?"
        params = [window.start, window.end]
    frame = con.execute(sql, params).df()
    dtypes = {"integer": "Int64", "boolean": "boolean", "string": "object"}
    return frame.astype({c.name: dtypes[c.type] for c in stream.columns})


__all__ = [
    "WriteResult",
    "read_slice",
]
