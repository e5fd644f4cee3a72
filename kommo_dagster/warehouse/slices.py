"""The one-transaction write of a slice (``BEGIN; DELETE <slice>; INSERT ...; COMMIT``) and the
read of one: a failure anywhere rolls back and leaves the previous rows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    scalar_int,
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
        con.execute(_insert_sql(stream, target=target, source="kommo_frame"))
    finally:
        con.unregister("kommo_frame")


def _insert_sql(stream: Stream, *, target: str, source: str) -> str:
    """Copy ``source``'s contract columns into ``target`` by name, cast to the contract's types."""
    return (
        f"INSERT INTO {target} ({column_list(stream)}) SELECT {select_casts(stream)} FROM {source}"
    )


@contextlib.contextmanager
def one_transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """``BEGIN`` ... ``COMMIT``: anything raised inside rolls back, so a write either happens
    whole or leaves the previous rows; the error is raised as it came. An error of the
    ``COMMIT`` itself carries `COMMIT_NOT_KNOWN`: DuckDB rolls back a commit whose WAL write
    fails, but a checkpoint it runs instead of that write can fail after the commit applied."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        _rollback(con)
        raise
    try:
        con.execute("COMMIT")
    except Exception as exc:
        exc.add_note(COMMIT_NOT_KNOWN)
        _rollback(con)
        raise
    except BaseException:
        _rollback(con)
        raise


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back what is still open (nothing, when the COMMIT already ended the transaction)."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


# Said with an error of the COMMIT itself: DuckDB may raise it from a commit it applied.
COMMIT_NOT_KNOWN = (
    "the COMMIT itself failed: DuckDB may have applied it before failing (a checkpoint run in "
    "place of the WAL write that fails after the commit), so this write may be in the database"
)


def left_as_it_was(table_name: str, window: EpochWindow | None) -> str:
    """Said with an error raised before a write committed (an extraction that failed, a write
    that rolled back): a run writes its slice of a table (all its partitions) in one
    transaction, with the link tables and views that go with it, and only once the whole slice
    is read; nothing of it was written."""
    slice_ = "full table" if window is None else f"partitions {window.label()}"
    return (
        f"{table_name} was left as it was: nothing of this run's {slice_} was written (a run "
        "writes its slice of a table in one transaction, once all of it is read)"
    )


@contextlib.contextmanager
def noting_left_as_it_was(table_name: str, window: EpochWindow | None) -> Iterator[None]:
    """Errors raised inside end with `left_as_it_was`: for steps that come before any write of
    the slice (the extraction, the IO manager's checks of what it was given)."""
    try:
        yield
    except Exception as exc:
        exc.add_note(left_as_it_was(table_name, window))
        raise


def write_slice(
    con: duckdb.DuckDBPyConnection,
    staged: StagedSlice,
    *,
    catalog: str,
    schema: str,
    after: Callable[[duckdb.DuckDBPyConnection], None] | None,
) -> WriteResult:
    """Replace ``staged``'s slice of ``<catalog>.<schema>.<stream>`` with its rows, then run
    ``after``, all in one transaction (see `StagedRows.write`). Returns only once it committed:
    whatever it raises was rolled back, unless the ``COMMIT`` itself raised
    (`COMMIT_NOT_KNOWN`)."""
    stream = staged.stream
    target = table_ref(schema, stream.name, catalog=catalog)
    with one_transaction(con):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(catalog)}.{quote(schema)}")
        deleted = _clear_slice(con, stream, staged.window, catalog=catalog, schema=schema)
        if staged.rows:
            for source in staged.sources():
                con.execute(_insert_sql(stream, target=target, source=source))
        if after is not None:
            after(con)
        table_rows = scalar_int(con, f"SELECT count(*) FROM {target}")
        columns = table_columns(con, schema=schema, table=stream.name, catalog=catalog)
    return WriteResult(
        rows=staged.rows,
        deleted=deleted,
        table_rows=table_rows,
        columns=tuple(columns),
        duplicates=staged.duplicates,
    )


def _clear_slice(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    window: EpochWindow | None,
    *,
    catalog: str,
    schema: str,
) -> int:
    """Empty the slice about to be written, in the caller's transaction; the rows it held.

    A window's rows are deleted from the table (created from the contract if missing, refused if
    its columns differ); without a window the table is recreated from the contract, which also
    heals a full-table stream whose table drifted.
    """
    target = table_ref(schema, stream.name, catalog=catalog)
    if window is None:
        deleted = 0
        if table_exists(con, schema=schema, table=stream.name, catalog=catalog):
            deleted = scalar_int(con, f"SELECT count(*) FROM {target}")
        con.execute(create_table_sql(stream, schema=schema, catalog=catalog, replace=True))
        return deleted
    con.execute(create_table_sql(stream, schema=schema, catalog=catalog))
    check_table_columns(con, stream, schema=schema, catalog=catalog)
    cursor = quote(stream.cursor or "")
    return scalar_int(
        con,
        f"DELETE FROM {target} WHERE {cursor} >= ? AND {cursor} < ?",
        [window.start, window.end],
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
    "COMMIT_NOT_KNOWN",
    "WriteResult",
    "left_as_it_was",
    "noting_left_as_it_was",
    "one_transaction",
    "read_slice",
]
