"""The DuckDB side of a stream: its table, typed batches, staging, and the one-transaction write.

Plain Python (no Dagster), used by the IO manager and by anything else that reads or writes the
warehouse (checks, views).

Why not the stock ``DuckDBPandasIOManager``: it deletes a partition and inserts the new rows as two
autocommitted statements (a failed insert loses the partition), inserts positionally, creates no
table for an empty partition and lets DuckDB infer nested types per batch. Here:

* every table is created from the contract, with its exact types in contract order, whether or
  not there are rows;
* a write is ``BEGIN; DELETE <slice>; INSERT (<explicit columns>) ...; COMMIT``: a failure
  anywhere rolls back and leaves the previous rows;
* a slice is an integer range of the cursor (Unix seconds), never a formatted timestamp;
* rows are staged first (in memory, spilling to a temporary DuckDB file past a threshold), so a
  large extraction neither holds all its records in memory nor holds the database file while it
  waits on the API; the write itself is a short, local copy.

Concurrency: DuckDB lets one process at a time open a file for writing, and an open reader blocks
writers. `connect` serialises every access of this project behind a lock file next to the
database (``<file>.lock``), held around connect and write, so two runs launched at once take turns
instead of failing; a connection refused by another program (a DuckDB CLI or notebook holding the
file) is retried until the same deadline. Either wait ends with `DatabaseLockTimeout`, which says
what to do.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import filelock
import numpy as np
import pandas as pd

from kommo_dagster.kommo.streams import Stream
from kommo_dagster.partitions import EpochWindow

# Rows kept in memory before a StagedRows spills to its staging file.
DEFAULT_SPILL_ROWS = 50_000
_STAGE_ALIAS = "kommo_stage"
_DAY = 86_400


class WarehouseError(RuntimeError):
    """A write to the DuckDB warehouse could not be done as asked."""


class DatabaseLockTimeout(WarehouseError):
    """The database file stayed busy for longer than the configured timeout."""


class TableSchemaMismatch(WarehouseError):
    """An existing table's columns differ from the contract."""


# ---------------------------------------------------------------------------------------------
# Names and DDL


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def table_ref(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def column_definitions(stream: Stream) -> str:
    return ", ".join(f"{quote(c.name)} {c.duckdb_type}" for c in stream.columns)


def create_table_sql(stream: Stream, *, schema: str | None, replace: bool = False) -> str:
    target = table_ref(schema, stream.name) if schema else quote(stream.name)
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
    return f"{verb} {target} ({column_definitions(stream)})"


def ensure_table(con: duckdb.DuckDBPyConnection, stream: Stream, *, schema: str) -> None:
    """Create the schema and the stream's table if missing; refuse a table that drifted."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    con.execute(create_table_sql(stream, schema=schema))
    check_table_columns(con, stream, schema=schema)


def table_columns(
    con: duckdb.DuckDBPyConnection, *, schema: str, table: str
) -> list[tuple[str, str]]:
    """``[(name, DuckDB type)]`` of a table in the current database, in column order."""
    return [
        (name, data_type)
        for name, data_type in con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = ? AND table_name = ? "
            "ORDER BY column_index",
            [schema, table],
        ).fetchall()
    ]


def check_table_columns(con: duckdb.DuckDBPyConnection, stream: Stream, *, schema: str) -> None:
    actual = table_columns(con, schema=schema, table=stream.name)
    expected = [(c.name, c.duckdb_type) for c in stream.columns]
    if actual != expected:
        raise TableSchemaMismatch(
            f"{schema}.{stream.name} has columns {actual}, but the contract wants {expected}. "
            f"It was created by another version or by hand: rename or drop it, then re-run the "
            f"partitions you need."
        )


# ---------------------------------------------------------------------------------------------
# Typed batches


def typed_frame(stream: Stream, columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """A DataFrame of the contract's columns, in contract order, with types that cannot drift.

    integer -> int64 (pandas ``Int64`` when there are NULLs: never float), boolean -> bool
    (``boolean`` with NULLs), string -> object holding ``str`` or ``None``. ``columns`` is the
    output of `kommo_dagster.kommo.records.to_columns`: exactly the stream's columns.
    """
    names = stream.column_names
    if set(columns) != set(names):
        missing = [n for n in names if n not in columns]
        extra = [n for n in columns if n not in names]
        raise WarehouseError(
            f"{stream.name}: batch columns differ from the contract "
            f"(missing {missing}, unexpected {extra})"
        )
    lengths = {len(columns[n]) for n in names}
    if len(lengths) > 1:
        raise WarehouseError(f"{stream.name}: batch columns have different lengths {lengths}")
    data = {c.name: _typed_array(c.type, columns[c.name], c.name) for c in stream.columns}
    return pd.DataFrame(data, columns=list(names), copy=False)


_NONE = type(None)


def _typed_array(kind: str, values: Sequence[Any], name: str) -> Any:
    # One pass over the types picks the path: numpy for columns without NULLs, a mask built by
    # numpy for int/bool columns with NULLs (pandas' own list conversion is three times slower),
    # and pandas' checked conversion for anything unusual, which refuses lossy casts.
    kinds = set(map(type, values))
    if kind == "string":
        if not kinds <= {str, _NONE}:
            raise WarehouseError(
                f"column {name!r} (string) holds {sorted(k.__name__ for k in kinds)}"
            )
        return np.array(values, dtype=object)
    scalar, dtype, masked = (
        (int, np.int64, pd.arrays.IntegerArray)
        if kind == "integer"
        else (bool, np.bool_, pd.arrays.BooleanArray)
    )
    try:
        if kinds <= {scalar}:
            return np.array(values, dtype=dtype)
        if kinds <= {scalar, _NONE}:
            objects = np.array(values, dtype=object)
            mask = np.equal(objects, None)
            objects[mask] = 0
            return masked(objects.astype(dtype), mask)
        if kind == "integer" and bool in kinds:
            raise TypeError("a boolean is not an integer")
        return pd.array(values, dtype="Int64" if kind == "integer" else "boolean")
    except (TypeError, ValueError, OverflowError) as exc:
        raise WarehouseError(
            f"column {name!r} ({kind}) holds a value that is not {kind}: {exc}"
        ) from exc


def _select_casts(stream: Stream) -> str:
    return ", ".join(f"CAST({quote(c.name)} AS {c.duckdb_type})" for c in stream.columns)


def _column_list(stream: Stream) -> str:
    return ", ".join(quote(c.name) for c in stream.columns)


# ---------------------------------------------------------------------------------------------
# Connections


def lock_path(database: str | Path) -> Path:
    return Path(f"{database}.lock")


@contextlib.contextmanager
def connect(
    database: str | Path,
    *,
    timeout: float,
    config: Mapping[str, Any] | None = None,
    read_only: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to ``database``, holding the project's lock file for as long as it is open.

    Waits up to ``timeout`` seconds in total: first for the lock file (another run of this
    project), then for DuckDB's own lock (another program holding the file). ``config`` is
    DuckDB's connection configuration (``{"memory_limit": "512MB"}``...). ``on_wait`` is told,
    once, when the connection has to wait.
    """
    database = Path(database)
    database.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    lock = filelock.FileLock(str(lock_path(database)), timeout=timeout)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if on_wait is not None:
                on_wait(
                    f"{database} is being written by another run; waiting up to "
                    f"{timeout:.0f} s for it (KOMMO_DUCKDB_LOCK_TIMEOUT)"
                )
            lock.acquire()
    except filelock.Timeout:
        raise DatabaseLockTimeout(
            f"waited {timeout:.0f} s for {lock_path(database)}: another run of this project is "
            f"still writing {database}. Let it finish, or raise KOMMO_DUCKDB_LOCK_TIMEOUT."
        ) from None
    try:
        con = _connect_with_retry(
            database,
            deadline=deadline,
            config=dict(config or {}),
            read_only=read_only,
            on_wait=on_wait,
        )
        try:
            yield con
        finally:
            con.close()
    finally:
        lock.release()


def _connect_with_retry(
    database: Path,
    *,
    deadline: float,
    config: dict[str, Any],
    read_only: bool,
    on_wait: Callable[[str], None] | None,
) -> duckdb.DuckDBPyConnection:
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(database), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if delay == 0.05 and on_wait is not None:
                on_wait(f"{database} is held open by another program; waiting for it ({exc})")
            if time.monotonic() + delay > deadline:
                raise DatabaseLockTimeout(
                    f"{database} stays locked by another program ({exc}). Close the DuckDB "
                    f"CLI, notebook or process that holds it open, then re-run."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


# ---------------------------------------------------------------------------------------------
# Staging


class StagedRows:
    """One stream's extracted rows, waiting to be written as one slice of its table.

    Batches arrive as contract columns (`append`). Up to ``spill_rows`` rows stay in memory as
    typed DataFrames; past that, everything goes to a temporary DuckDB file in ``staging_dir``
    (the system's temporary directory by default), so memory stays flat however large the
    extraction. The file is removed by `discard` (the IO manager calls it after writing).

    ``window`` is the cursor slice the rows belong to (``None`` for a full table); every row's
    cursor is checked against it before anything is deleted. ``note`` is what the extractor wants
    said with the write (requests made, elapsed time...).
    """

    def __init__(
        self,
        stream: Stream,
        *,
        window: EpochWindow | None,
        spill_rows: int = DEFAULT_SPILL_ROWS,
        staging_dir: str | Path | None = None,
        memory_limit: str | None = None,
    ) -> None:
        if window is not None and stream.cursor is None:
            raise WarehouseError(f"{stream.name} has no cursor column to slice by a window")
        self.stream = stream
        self.window = window
        self.note = ""
        self.rows = 0
        self.cursor_min: int | None = None
        self.cursor_max: int | None = None
        self.null_cursors = 0
        self._rows_by_day: dict[int, int] = {}
        self._spill_rows = spill_rows
        self._staging_dir = Path(staging_dir) if staging_dir else None
        self._memory_limit = memory_limit
        self._frames: list[pd.DataFrame] = []
        self._pending = 0
        self._file: Path | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> StagedRows:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.discard()

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def append(self, columns: Mapping[str, Sequence[Any]]) -> None:
        frame = typed_frame(self.stream, columns)
        if frame.empty:
            return
        self._track_cursor(columns)
        self._frames.append(frame)
        self._pending += len(frame)
        self.rows += len(frame)
        if self._pending >= self._spill_rows:
            self._spill()

    def _track_cursor(self, columns: Mapping[str, Sequence[Any]]) -> None:
        if self.stream.cursor is None:
            return
        values = [v for v in columns[self.stream.cursor] if v is not None]
        self.null_cursors += len(columns[self.stream.cursor]) - len(values)
        if values:
            cursors = np.array(values, dtype=np.int64)
            low, high = int(cursors.min()), int(cursors.max())
            self.cursor_min = low if self.cursor_min is None else min(self.cursor_min, low)
            self.cursor_max = high if self.cursor_max is None else max(self.cursor_max, high)
            days, counts = np.unique(cursors // _DAY, return_counts=True)
            for day, count in zip(days.tolist(), counts.tolist(), strict=True):
                self._rows_by_day[day] = self._rows_by_day.get(day, 0) + count

    def rows_by_day(self) -> dict[date, int]:
        """Staged rows per UTC day of their cursor (days without rows are absent)."""
        epoch = date(1970, 1, 1)
        return {epoch + timedelta(days=d): n for d, n in sorted(self._rows_by_day.items())}

    def _spill(self) -> None:
        if self._con is None:
            directory = self._staging_dir or Path(tempfile.gettempdir())
            directory.mkdir(parents=True, exist_ok=True)
            self._file = directory / f"kommo-stage-{self.stream.name}-{uuid.uuid4().hex}.duckdb"
            config = {"memory_limit": self._memory_limit} if self._memory_limit else {}
            self._con = duckdb.connect(str(self._file), config=config)
            self._con.execute(create_table_sql(self.stream, schema=None))
        for frame in self._frames:
            _insert_frame(self._con, self.stream, frame, target=quote(self.stream.name))
        self._frames.clear()
        self._pending = 0

    def check_window(self) -> None:
        """Raise unless every row's cursor lies in the window (so a re-run can find it)."""
        if self.window is None or self.rows == 0:
            return
        cursor = self.stream.cursor
        if self.null_cursors:
            raise WarehouseError(f"{self.stream.name}: {self.null_cursors} rows have no {cursor}")
        assert self.cursor_min is not None and self.cursor_max is not None
        if not (self.window.contains(self.cursor_min) and self.window.contains(self.cursor_max)):
            raise WarehouseError(
                f"{self.stream.name}: {cursor} spans [{self.cursor_min}, {self.cursor_max}], "
                f"outside the slice [{self.window.start}, {self.window.end}) being written; "
                f"writing it would leave rows a re-run of this slice cannot replace"
            )

    @contextlib.contextmanager
    def sources(self, con: duckdb.DuckDBPyConnection) -> Iterator[list[str]]:
        """Relations on ``con`` that together hold the staged rows, for the duration of a write."""
        names: list[str] = []
        attached = False
        try:
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._file is not None:
                con.execute(f"ATTACH {_sql_string(str(self._file))} AS {_STAGE_ALIAS} (READ_ONLY)")
                attached = True
                names.append(f"{_STAGE_ALIAS}.{quote(self.stream.name)}")
            for i, frame in enumerate(self._frames):
                name = f"kommo_batch_{i}"
                con.register(name, frame)
                names.append(name)
            yield names
        finally:
            for name in names:
                if name.startswith("kommo_batch_"):
                    con.unregister(name)
            if attached:
                con.execute(f"DETACH {_STAGE_ALIAS}")

    def discard(self) -> None:
        """Drop the staged rows and delete the staging file."""
        self._frames.clear()
        self._pending = 0
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._file is not None:
            for path in (self._file, Path(f"{self._file}.wal")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            self._file = None


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _insert_frame(
    con: duckdb.DuckDBPyConnection, stream: Stream, frame: pd.DataFrame, *, target: str
) -> None:
    con.register("kommo_frame", frame)
    try:
        con.execute(
            f"INSERT INTO {target} ({_column_list(stream)}) "
            f"SELECT {_select_casts(stream)} FROM kommo_frame"
        )
    finally:
        con.unregister("kommo_frame")


# ---------------------------------------------------------------------------------------------
# The write


def write_slice(
    con: duckdb.DuckDBPyConnection, staged: StagedRows, *, schema: str
) -> dict[str, int]:
    """Replace the staged rows' slice of their table in one transaction.

    With a window, the slice is ``window.start <= cursor < window.end``; without one, the whole
    table (recreated from the contract, which also heals a drifted full-table stream). Returns
    ``{"rows": rows written, "deleted": rows replaced, "table_rows": rows in the table after}``.
    On any error the transaction rolls back and the table keeps its previous rows.
    """
    stream = staged.stream
    staged.check_window()
    target = table_ref(schema, stream.name)
    with staged.sources(con) as sources:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            if staged.window is None:
                before = _count_if_exists(con, schema=schema, table=stream.name)
                con.execute(create_table_sql(stream, schema=schema, replace=True))
                deleted = before
            else:
                con.execute(create_table_sql(stream, schema=schema))
                check_table_columns(con, stream, schema=schema)
                cursor = quote(stream.cursor or "")
                row = con.execute(
                    f"DELETE FROM {target} WHERE {cursor} >= ? AND {cursor} < ?",
                    [staged.window.start, staged.window.end],
                ).fetchone()
                deleted = int(row[0]) if row else 0
            for source in sources:
                con.execute(
                    f"INSERT INTO {target} ({_column_list(stream)}) "
                    f"SELECT {_select_casts(stream)} FROM {source}"
                )
            row = con.execute(f"SELECT count(*) FROM {target}").fetchone()
            table_rows = int(row[0]) if row else 0
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
    return {"rows": staged.rows, "deleted": deleted, "table_rows": table_rows}


def table_exists(con: duckdb.DuckDBPyConnection, *, schema: str, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def _count_if_exists(con: duckdb.DuckDBPyConnection, *, schema: str, table: str) -> int:
    if not table_exists(con, schema=schema, table=table):
        return 0
    row = con.execute(f"SELECT count(*) FROM {table_ref(schema, table)}").fetchone()
    return int(row[0]) if row else 0


def read_slice(
    con: duckdb.DuckDBPyConnection, stream: Stream, *, schema: str, window: EpochWindow | None
) -> pd.DataFrame:
    """The rows of a table (or of one cursor slice), contract columns in contract order."""
    sql = f"SELECT {_column_list(stream)} FROM {table_ref(schema, stream.name)}"
    params: list[int] = []
    if window is not None:
        cursor = quote(stream.cursor or "")
        sql += f" WHERE {cursor} >= ? AND {cursor} < ?"
        params = [window.start, window.end]
    frame = con.execute(sql, params).df()
    dtypes = {"integer": "Int64", "boolean": "boolean", "string": "object"}
    return frame.astype({c.name: dtypes[c.type] for c in stream.columns})


def catalog_name(database: str | Path) -> str:
    """The catalog DuckDB gives an attached file: its stem."""
    return Path(database).stem


__all__ = [
    "DEFAULT_SPILL_ROWS",
    "DatabaseLockTimeout",
    "StagedRows",
    "TableSchemaMismatch",
    "WarehouseError",
    "catalog_name",
    "check_table_columns",
    "connect",
    "create_table_sql",
    "ensure_table",
    "lock_path",
    "quote",
    "read_slice",
    "table_columns",
    "table_exists",
    "table_ref",
    "typed_frame",
    "write_slice",
]
