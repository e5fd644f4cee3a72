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
* rows are staged first, batch by batch, in a private in-memory DuckDB (`StagedRows`) that
  spills to a temporary directory past its memory limit, so a large extraction neither holds its
  records as Python objects nor holds the database file while it waits on the API. The write
  attaches the database file to that staging instance and copies: a short, local step.

Concurrency: DuckDB lets one process at a time open a file for writing, and an open reader blocks
writers. Every access of this project (`connect`, `StagedRows.write`) holds a lock file next to
the database (``<file>.lock``) from connect (or attach) to close, so two runs launched at once
take turns instead of failing; a file refused by another program (a DuckDB CLI or notebook
holding it) is retried until the same deadline. Either wait ends with `DatabaseLockTimeout`,
which says what to do.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import filelock
import numpy as np
import pandas as pd
import pyarrow as pa

from kommo_dagster.kommo.columns import arrow_schema
from kommo_dagster.kommo.links import LinkRows
from kommo_dagster.kommo.streams import Stream
from kommo_dagster.partitions import EpochWindow

# Databases that are not local files (MotherDuck): no absolute path, no lock file next to them.
REMOTE_DATABASE_PREFIXES = ("md:", "motherduck:")
# Threads of a staging instance while it receives batches (see `StagedRows._connection`).
STAGING_THREADS = 1
# The alias of the database file inside a staging instance while it is written.
_TARGET = "kommo_target"
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


def table_ref(schema: str, table: str, *, catalog: str | None = None) -> str:
    ref = f"{quote(schema)}.{quote(table)}"
    return f"{quote(catalog)}.{ref}" if catalog else ref


def column_definitions(stream: Stream) -> str:
    return ", ".join(f"{quote(c.name)} {c.duckdb_type}" for c in stream.columns)


def create_table_sql(
    stream: Stream, *, schema: str | None, catalog: str | None = None, replace: bool = False
) -> str:
    target = table_ref(schema, stream.name, catalog=catalog) if schema else quote(stream.name)
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
    return f"{verb} {target} ({column_definitions(stream)})"


def _catalog_sql(catalog: str | None) -> str:
    return "?" if catalog else "current_database()"


def table_columns(
    con: duckdb.DuckDBPyConnection, *, schema: str, table: str, catalog: str | None = None
) -> list[tuple[str, str]]:
    """``[(name, DuckDB type)]`` of a table (in ``catalog``, default the current database)."""
    params = [catalog] if catalog else []
    return [
        (name, data_type)
        for name, data_type in con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            f"WHERE database_name = {_catalog_sql(catalog)} AND schema_name = ? "
            "AND table_name = ? ORDER BY column_index",
            [*params, schema, table],
        ).fetchall()
    ]


def check_table_columns(
    con: duckdb.DuckDBPyConnection, stream: Stream, *, schema: str, catalog: str | None = None
) -> None:
    actual = table_columns(con, schema=schema, table=stream.name, catalog=catalog)
    expected = [(c.name, c.duckdb_type) for c in stream.columns]
    if actual != expected:
        raise TableSchemaMismatch(
            f"{schema}.{stream.name} has columns {actual}, but the contract wants {expected}. "
            f"It was created by another version or by hand: rename or drop it, then re-run the "
            f"partitions you need."
        )


def table_exists(
    con: duckdb.DuckDBPyConnection, *, schema: str, table: str, catalog: str | None = None
) -> bool:
    params = [catalog] if catalog else []
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() "
        f"WHERE database_name = {_catalog_sql(catalog)} AND schema_name = ? AND table_name = ?",
        [*params, schema, table],
    ).fetchone()
    return bool(row and row[0])


# ---------------------------------------------------------------------------------------------
# Typed batches


def typed_arrays(stream: Stream, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """NumPy arrays of the contract's columns, in contract order, with types that cannot drift.

    integer -> int64, boolean -> bool, each a masked array when it holds NULLs (never float);
    string -> object holding ``str`` or ``None``. ``columns`` is the output of
    `kommo_dagster.kommo.records.to_columns`: exactly the stream's columns. DuckDB scans such a
    dict directly (no DataFrame in between), NULLs taken from the masks.
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
    return {c.name: _typed_array(c.type, columns[c.name], c.name) for c in stream.columns}


def typed_frame(stream: Stream, columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """`typed_arrays` as a DataFrame: masked columns become pandas ``Int64`` / ``boolean``."""
    data = {name: _masked_to_pandas(array) for name, array in typed_arrays(stream, columns).items()}
    return pd.DataFrame(data, columns=list(stream.column_names), copy=False)


def _masked_to_pandas(array: np.ndarray) -> Any:
    if not isinstance(array, np.ma.MaskedArray):
        return array
    mask = np.ma.getmaskarray(array)
    data = array.data
    return (
        pd.arrays.BooleanArray(data, mask)
        if data.dtype == np.bool_
        else pd.arrays.IntegerArray(data, mask)
    )


_NONE = type(None)


def _typed_array(kind: str, values: Sequence[Any], name: str) -> np.ndarray:
    # One pass over the types picks the path: numpy for columns without NULLs, a mask built by
    # numpy for int/bool columns with NULLs, and pandas' checked conversion for anything
    # unusual, which refuses lossy casts.
    kinds = set(map(type, values))
    if kind == "string":
        if not kinds <= {str, _NONE}:
            raise WarehouseError(
                f"column {name!r} (string) holds {sorted(k.__name__ for k in kinds)}"
            )
        return np.array(values, dtype=object)
    scalar, dtype = (int, np.int64) if kind == "integer" else (bool, np.bool_)
    try:
        if kinds <= {scalar}:
            return np.array(values, dtype=dtype)
        if kinds <= {scalar, _NONE}:
            objects = np.array(values, dtype=object)
            mask = np.equal(objects, None)
            objects[mask] = 0
            return np.ma.MaskedArray(objects.astype(dtype), mask)
        if kind == "integer" and bool in kinds:
            raise TypeError("a boolean is not an integer")
        checked = pd.array(values, dtype="Int64" if kind == "integer" else "boolean")
        mask = np.asarray(checked.isna())
        return np.ma.MaskedArray(checked.to_numpy(dtype=dtype, na_value=0), mask)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WarehouseError(
            f"column {name!r} ({kind}) holds a value that is not {kind}: {exc}"
        ) from exc


def _contract_table(stream: Stream, table: pa.Table) -> pa.Table:
    """The table, if its columns are the contract's, in order, with the contract's types."""
    expected = arrow_schema(stream)
    if not table.schema.equals(expected):
        raise WarehouseError(
            f"{stream.name}: batch columns differ from the contract (got {table.schema.names} "
            f"typed {[str(t) for t in table.schema.types]}, expected {expected.names} typed "
            f"{[str(t) for t in expected.types]})"
        )
    return table


def _cursors(
    columns: Mapping[str, Sequence[Any]] | pa.Table, cursor: str
) -> tuple[np.ndarray, int]:
    """The batch's non-null cursor values and how many were null."""
    if isinstance(columns, pa.Table):
        values = columns.column(cursor)
        return values.drop_null().to_numpy().astype(np.int64, copy=False), values.null_count
    present = [v for v in columns[cursor] if v is not None]
    return np.array(present, dtype=np.int64), len(columns[cursor]) - len(present)


def _select_casts(stream: Stream) -> str:
    return ", ".join(f"CAST({quote(c.name)} AS {c.duckdb_type})" for c in stream.columns)


def _column_list(stream: Stream) -> str:
    return ", ".join(quote(c.name) for c in stream.columns)


# ---------------------------------------------------------------------------------------------
# Connections


def is_file_database(database: str | Path) -> bool:
    """False for MotherDuck (``md:...``) and in-memory databases: no file, no lock file."""
    text = str(database)
    return text != ":memory:" and not text.lower().startswith(REMOTE_DATABASE_PREFIXES)


def lock_path(database: str | Path) -> Path:
    return Path(f"{database}.lock")


@contextlib.contextmanager
def database_lock(
    database: str | Path, *, timeout: float, on_wait: Callable[[str], None] | None = None
) -> Iterator[float]:
    """Hold the project's lock file of ``database``; yields the deadline left for DuckDB's own.

    A database that is not a local file (MotherDuck) has no lock file: its service orders
    concurrent writers itself, and a lock on one machine could not reach the others anyway.
    """
    deadline = time.monotonic() + timeout
    if not is_file_database(database):
        yield deadline
        return
    database = Path(database)
    database.parent.mkdir(parents=True, exist_ok=True)
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
        yield deadline
    finally:
        lock.release()


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
    with database_lock(database, timeout=timeout, on_wait=on_wait) as deadline:
        con = _retry_while_locked(
            lambda: duckdb.connect(str(database), read_only=read_only, config=dict(config or {})),
            database=Path(database),
            deadline=deadline,
            on_wait=on_wait,
        )
        try:
            yield con
        finally:
            con.close()


def _retry_while_locked(
    open_: Callable[[], Any],
    *,
    database: Path,
    deadline: float,
    on_wait: Callable[[str], None] | None,
) -> Any:
    delay = 0.05
    while True:
        try:
            return open_()
        except duckdb.Error as exc:
            if not is_file_database(database):
                raise WarehouseError(
                    f"could not open the MotherDuck database {database}: {exc}. MotherDuck needs "
                    f"network access and a token (the motherduck_token or MOTHERDUCK_TOKEN "
                    f"variable); check both, or point KOMMO_DUCKDB_PATH at a local file."
                ) from exc
            if not isinstance(exc, duckdb.IOException):
                raise
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


@dataclass(frozen=True)
class WriteResult:
    """What a write did: rows written, rows they replaced, rows in the table after, the
    table's columns as DuckDB reports them, and the staged rows dropped as repeats of a key."""

    rows: int
    deleted: int
    table_rows: int
    columns: tuple[tuple[str, str], ...]
    duplicates: int = 0


class StagedRows:
    """One stream's extracted rows, waiting to be written as one slice of its table.

    Batches arrive as contract columns (`append`) and go straight into a private in-memory
    DuckDB instance, typed by the contract. DuckDB keeps them compactly and spills to a
    temporary directory (in ``staging_dir``, default the system's) past ``memory_limit``, so
    memory stays flat however large the extraction. `write` then attaches the database file to
    this instance and replaces the slice in one transaction; `discard` (the IO manager calls it
    after writing) closes the instance and removes its directory.

    ``window`` is the cursor slice the rows belong to (``None`` for a full table); every row's
    cursor is checked against it before anything is deleted. ``note`` is what the extractor wants
    said with the write (requests made, elapsed time...); ``links`` the link-table rows read
    with them (`kommo_dagster.link_write` writes them in the same transaction).
    """

    def __init__(
        self,
        stream: Stream,
        *,
        window: EpochWindow | None,
        staging_dir: str | Path | None = None,
        memory_limit: str | None = None,
    ) -> None:
        if window is not None and stream.cursor is None:
            raise WarehouseError(f"{stream.name} has no cursor column to slice by a window")
        self.stream = stream
        self.window = window
        self.note = ""
        # Rows of link tables read with these rows, written in the same transaction.
        self.links: list[LinkRows] = []
        self.rows = 0
        self.cursor_min: int | None = None
        self.cursor_max: int | None = None
        self.null_cursors = 0
        # Staged rows dropped before the write as repeats of a key (see `_drop_repeats`).
        self.duplicates = 0
        self._rows_by_day: dict[int, int] = {}
        self._staging_dir = Path(staging_dir) if staging_dir else None
        self._memory_limit = memory_limit
        self._directory: Path | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> StagedRows:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.discard()

    @property
    def directory(self) -> Path | None:
        """The staging instance's temporary directory (None before the first batch)."""
        return self._directory

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if self._staging_dir is not None:
                self._staging_dir.mkdir(parents=True, exist_ok=True)
            self._directory = Path(
                tempfile.mkdtemp(prefix=f"kommo-stage-{self.stream.name}-", dir=self._staging_dir)
            )
            # One thread: batches arrive while requests are in flight, and DuckDB's pool would
            # take every core for a few milliseconds at each batch, stalling the request threads
            # (and, on a shared machine, whatever else runs there) for no gain on 10,000 rows.
            config: dict[str, str | int] = {
                "temp_directory": str(self._directory),
                "threads": STAGING_THREADS,
            }
            if self._memory_limit:
                config["memory_limit"] = self._memory_limit
            self._con = duckdb.connect(":memory:", config=config)
            self._con.execute(create_table_sql(self.stream, schema=None))
        return self._con

    def append(self, columns: Mapping[str, Sequence[Any]] | pa.Table) -> None:
        """Stage a batch: contract columns (`kommo_dagster.kommo.records.to_columns`), or an
        Arrow table with the contract's schema (`KommoClient.iter_batches`),
        which DuckDB scans as it is."""
        if isinstance(columns, pa.Table):
            data: Mapping[str, np.ndarray] | pa.Table = _contract_table(self.stream, columns)
            rows = columns.num_rows
        else:
            data = typed_arrays(self.stream, columns)
            rows = len(next(iter(data.values()), ()))
        if not rows:
            return
        _insert_arrays(self._connection(), self.stream, data, target=quote(self.stream.name))
        if self.stream.cursor is not None:
            self._track_cursor(*_cursors(columns, self.stream.cursor))
        self.rows += rows

    def _track_cursor(self, cursors: np.ndarray, nulls: int) -> None:
        self.null_cursors += nulls
        if len(cursors):
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

    def sources(self) -> list[str]:
        """The relations, in the staging instance, that hold the staged rows."""
        return [f"memory.main.{quote(self.stream.name)}"]

    def write(
        self,
        database: str | Path,
        *,
        schema: str,
        timeout: float,
        on_wait: Callable[[str], None] | None = None,
        after: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> WriteResult:
        """Replace the rows' slice of ``<schema>.<stream>`` in ``database`` in one transaction.

        With a window, the slice is ``window.start <= cursor < window.end``; without one, the
        whole table (recreated from the contract, which also heals a drifted full-table stream).
        ``after(con)`` runs inside the same transaction once the rows are in, with ``database``
        as the connection's current database (derived views, snapshots...). On any error the
        transaction rolls back and the table keeps its previous rows.
        """
        self.check_window()
        con = self._connection()
        # The extraction is over: the write may use every core again.
        con.execute("RESET threads")
        self._drop_repeats(con)
        with database_lock(database, timeout=timeout, on_wait=on_wait) as deadline:
            _retry_while_locked(
                lambda: con.execute(f"ATTACH {_sql_string(str(database))} AS {quote(_TARGET)}"),
                database=Path(database),
                deadline=deadline,
                on_wait=on_wait,
            )
            try:
                con.execute(f"USE {quote(_TARGET)}")
                return _write_slice(con, self, catalog=_TARGET, schema=schema, after=after)
            finally:
                con.execute("USE memory")
                con.execute(f"DETACH {quote(_TARGET)}")

    def _drop_repeats(self, con: duckdb.DuckDBPyConnection) -> None:
        """Keep one staged row per the stream's key, so that whatever an extraction yielded, a
        version of a record (an id at one cursor value) reaches the table once; counted in
        `duplicates`. The common case, no repeat, costs one grouping of the key columns."""
        key = ", ".join(quote(c) for c in self.stream.key)
        for source in self.sources():
            row = con.execute(
                f"SELECT coalesce(sum(n - 1), 0) FROM "
                f"(SELECT count(*) AS n FROM {source} GROUP BY {key} HAVING n > 1)"
            ).fetchone()
            repeats = int(row[0]) if row else 0
            if repeats:
                con.execute(
                    f"DELETE FROM {source} WHERE rowid NOT IN "
                    f"(SELECT min(rowid) FROM {source} GROUP BY {key})"
                )
                self.duplicates += repeats
                self.rows -= repeats

    def discard(self) -> None:
        """Drop the staged rows: close the staging instance and remove its directory."""
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _insert_arrays(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    arrays: Mapping[str, np.ndarray] | pd.DataFrame | pa.Table,
    *,
    target: str,
) -> None:
    con.register("kommo_frame", arrays)
    try:
        con.execute(
            f"INSERT INTO {target} ({_column_list(stream)}) "
            f"SELECT {_select_casts(stream)} FROM kommo_frame"
        )
    finally:
        con.unregister("kommo_frame")


def _write_slice(
    con: duckdb.DuckDBPyConnection,
    staged: StagedRows,
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
                    f"INSERT INTO {target} ({_column_list(stream)}) "
                    f"SELECT {_select_casts(stream)} FROM {source}"
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
    """The catalog DuckDB gives an attached database: a file's stem, a MotherDuck database's
    name (``md:my_db?...`` -> ``my_db``)."""
    if not is_file_database(database):
        name = str(database).split(":", 1)[1].split("?", 1)[0]
        return name or "my_db"
    return Path(database).stem


__all__ = [
    "DatabaseLockTimeout",
    "StagedRows",
    "TableSchemaMismatch",
    "WarehouseError",
    "WriteResult",
    "catalog_name",
    "check_table_columns",
    "connect",
    "create_table_sql",
    "database_lock",
    "is_file_database",
    "lock_path",
    "quote",
    "read_slice",
    "table_columns",
    "table_exists",
    "table_ref",
    "typed_arrays",
    "typed_frame",
]
