"""Rows staged before they are written: a private in-memory DuckDB per stream that spills to
disk, so a large extraction neither holds its records as Python objects nor holds the
database file while it waits on the API."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:
    # Only batches need them, not loading the definitions (see `warehouse.arrays`).
    import numpy as np
    import pyarrow as pa

    from kommo_dagster.kommo.link_rows import LinkRows
    from kommo_dagster.kommo.secrecy import Scrubber

from kommo_dagster.kommo.streams import Stream
from kommo_dagster.warehouse.arrays import arrow_contract_table, cursor_values, typed_arrays
from kommo_dagster.warehouse.cursor_span import CursorSpan
from kommo_dagster.warehouse.errors import WarehouseError
from kommo_dagster.warehouse.leftovers import make_staging_dir
from kommo_dagster.warehouse.locks import database_lock, retry_while_locked
from kommo_dagster.warehouse.slices import (
    COMMIT_NOT_KNOWN,
    WriteResult,
    insert_arrays,
    left_as_it_was,
    write_slice,
)
from kommo_dagster.warehouse.sql import (
    create_table_sql,
    qualified_table_name,
    quote,
    scalar_int,
    sql_string,
)
from kommo_dagster.warehouse.windows import EpochWindow

# Threads of a staging instance while it receives batches (see `StagingInstance.connection`).
STAGING_THREADS = 1
# Rows staged before the staging instance would checkpoint: never, in practice.
STAGING_CHECKPOINT_THRESHOLD = "1TB"
# The alias of the database file inside a staging instance while it is written.
_TARGET = "kommo-target"


class StagedRows:
    """One stream's extracted rows, waiting to be written as one slice of its table.

    Batches arrive as contract columns (`append`) and go straight into a private in-memory
    DuckDB instance, typed by the contract. DuckDB keeps them as they came (never checkpointed,
    so never compressed twice: the write compresses them into the file) and spills to a
    temporary directory (in ``staging_dir``, default the system's) past ``memory_limit``, so
    memory stays flat however large the extraction. `write` then attaches the database file to
    this instance and replaces the slice in one transaction; `discard` (the IO manager calls it
    after writing) closes the instance and removes its directory.

    ``window`` is the cursor slice the rows belong to (``None`` for a full table); every row's
    cursor is checked against it before anything is deleted. ``note`` is what the extractor wants
    said with the write (requests made, elapsed time...); ``links`` the link-table rows read
    with them (`kommo_dagster.warehouse.link_write` writes them in the same transaction).
    ``cursors`` (`CursorSpan`) tracks the staged rows' cursor values for that check and for the
    per-day counts; the instance and its directory are a `StagingInstance`.
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
        # What masks the account's token in the write's errors, which may quote staged values.
        self.scrubber: Scrubber | None = None
        # Rows of link tables read with these rows, written in the same transaction.
        self.links: list[LinkRows] = []
        self.rows = 0
        # Staged rows dropped before the write as repeats of a key (see `_drop_repeats`).
        self.duplicates = 0
        # `rows` when repeats were last dropped: until a batch arrives there is none to look for.
        self._unique_at: int | None = None
        self.cursors = CursorSpan()
        self._instance = StagingInstance(stream, staging_dir=staging_dir, memory_limit=memory_limit)

    def __enter__(self) -> StagedRows:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.discard()

    @property
    def directory(self) -> Path | None:
        """The staging instance's temporary directory (None before the first batch)."""
        return self._instance.directory

    def _connection(self) -> duckdb.DuckDBPyConnection:
        return self._instance.connection()

    def append(self, columns: Mapping[str, Sequence[Any]] | pa.Table) -> None:
        """Stage a batch: contract columns (`kommo_dagster.kommo.records.to_columns`), or an
        Arrow table with the contract's schema (`KommoClient.iter_batches`),
        which DuckDB scans as it is."""
        import pyarrow as pa

        if isinstance(columns, pa.Table):
            data: Mapping[str, np.ndarray] | pa.Table = arrow_contract_table(self.stream, columns)
            rows = columns.num_rows
        else:
            data = typed_arrays(self.stream, columns)
            rows = len(next(iter(data.values()), ()))
        if not rows:
            return
        insert_arrays(self._connection(), self.stream, data, target=quote(self.stream.name))
        if self.stream.cursor is not None:
            self.cursors.add(*cursor_values(columns, self.stream.cursor))
        self.rows += rows

    def rows_by_day(self) -> dict[date, int]:
        """Rows per UTC day of their cursor, as the write will write them: repeats of a key are
        dropped first (days without rows are absent)."""
        if self.rows:
            self._drop_repeats(self._connection())
        return self.cursors.rows_by_day()

    def check_window(self) -> None:
        """Raise unless every row's cursor lies in the window (so a re-run can find it)."""
        if self.window is None or self.rows == 0:
            return
        cursor = self.stream.cursor
        span = self.cursors
        if span.nulls:
            raise WarehouseError(f"{self.stream.name}: {span.nulls} rows have no {cursor}")
        if not span.within(self.window):
            raise WarehouseError(
                f"{self.stream.name}: {cursor} spans [{span.low}, {span.high}], "
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
        as the connection's current database (derived views, snapshots...). On any error before the
        ``COMMIT`` the transaction rolls back and the table keeps its previous rows, which a note
        on the error says (`left_as_it_was`); an error of the ``COMMIT`` itself says instead that
        the rows may be in (`COMMIT_NOT_KNOWN`).
        """
        result: WriteResult | None = None  # set once the transaction committed
        try:
            self.check_window()
            con = self._connection()
            # The extraction is over: the write may use every core again.
            con.execute("RESET threads")
            self._drop_repeats(con)
            with database_lock(database, timeout=timeout, on_wait=on_wait) as deadline:
                retry_while_locked(
                    lambda: con.execute(f"ATTACH {sql_string(str(database))} AS {quote(_TARGET)}"),
                    database=Path(database),
                    deadline=deadline,
                    on_wait=on_wait,
                )
                try:
                    con.execute(f"USE {quote(_TARGET)}")
                    result = write_slice(con, self, catalog=_TARGET, schema=schema, after=after)
                finally:
                    con.execute("USE memory")
                    con.execute(f"DETACH {quote(_TARGET)}")
        except Exception as exc:
            # Not after the COMMIT (a failed DETACH, the lock's release): the rows are in. Nor
            # from the COMMIT itself, which DuckDB may have applied before failing.
            if result is None and COMMIT_NOT_KNOWN not in getattr(exc, "__notes__", ()):
                table_name = qualified_table_name(database, schema=schema, name=self.stream.name)
                exc.add_note(left_as_it_was(table_name, self.window))
            raise
        return result

    def _check_keys(self, con: duckdb.DuckDBPyConnection) -> None:
        """Raise if a staged row has no value in a key column: the repeats of a key are
        dropped by grouping, where rows without one would be taken for one record and all but
        one of them lost."""
        if not self.rows:
            return
        key = self.stream.key
        missing = " OR ".join(f"{quote(c)} IS NULL" for c in key)
        for source in self.sources():
            n = scalar_int(con, f"SELECT count(*) FROM {source} WHERE {missing}")
            if n:
                raise WarehouseError(
                    f"{self.stream.name}: {n} rows have no {' or '.join(key)}, the columns "
                    "that identify a record; Kommo served records without them"
                )

    def _drop_repeats(self, con: duckdb.DuckDBPyConnection) -> None:
        """Keep one staged row per the stream's key, so that whatever an extraction yielded, a
        version of a record (an id at one cursor value) reaches the table once; counted in
        `duplicates`. The common case, no repeat, costs one grouping of the key columns.

        The row kept is the newest reading: a deleted one first (a record deleted in place keeps
        its cursor, and the ``_current`` views let the deleted version win such a tie), else the
        last staged, read after the others. Rows without a key are refused first
        (`_check_keys`): grouping would merge them."""
        if self._unique_at == self.rows:
            return
        self._check_keys(con)
        key = ", ".join(quote(c) for c in self.stream.key)
        order = "rowid DESC"
        if "is_deleted" in self.stream.column_names:
            order = f"coalesce({quote('is_deleted')}, false) DESC, {order}"
        for source in self.sources():
            repeats = scalar_int(
                con,
                f"SELECT coalesce(sum(n - 1), 0) FROM "
                f"(SELECT count(*) AS n FROM {source} GROUP BY {key} HAVING n > 1)",
            )
            if repeats:
                cursor = self.stream.cursor
                dropped = con.execute(
                    f"DELETE FROM {source} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, "
                    f"row_number() OVER (PARTITION BY {key} ORDER BY {order}) AS n "
                    f"FROM {source}) WHERE n > 1) RETURNING {quote(cursor) if cursor else 'NULL'}"
                ).fetchall()
                if cursor is not None:
                    self.cursors.drop([value for (value,) in dropped])
                self.duplicates += repeats
                self.rows -= repeats
        self._unique_at = self.rows

    def discard(self) -> None:
        """Drop the staged rows: close the staging instance and remove its directory."""
        self._instance.close()


class StagingInstance:
    """The private in-memory DuckDB that holds one stream's staged rows, and the temporary
    directory it spills to: both made at the first batch (an empty extraction makes neither),
    both gone at `close`. Making the directory also clears those of killed runs
    (`kommo_dagster.warehouse.leftovers`)."""

    def __init__(
        self, stream: Stream, *, staging_dir: str | Path | None, memory_limit: str | None
    ) -> None:
        self.stream = stream
        self.directory: Path | None = None
        self._staging_dir = Path(staging_dir) if staging_dir else None
        self._memory_limit = memory_limit
        self._con: duckdb.DuckDBPyConnection | None = None

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The instance, with the stream's table from the contract (made on the first call)."""
        if self._con is None:
            if self._staging_dir is not None:
                self._staging_dir.mkdir(parents=True, exist_ok=True)
            self.directory = make_staging_dir(self.stream.name, parent=self._staging_dir)
            # One thread: batches arrive while requests are in flight, and DuckDB's pool would
            # take every core for a few milliseconds at each batch, stalling the request threads
            # (and, on a shared machine, whatever else runs there) for no gain on 10,000 rows.
            config: dict[str, str | int] = {
                "temp_directory": str(self.directory),
                "threads": STAGING_THREADS,
                # No checkpoint of the staged rows: it compresses them, a pause of about 0.7 s
                # of CPU every 400,000 leads, and the write compresses them again into the file.
                "checkpoint_threshold": STAGING_CHECKPOINT_THRESHOLD,
            }
            if self._memory_limit:
                config["memory_limit"] = self._memory_limit
            self._con = duckdb.connect(":memory:", config=config)
            self._con.execute(create_table_sql(self.stream, schema=None))
        return self._con

    def close(self) -> None:
        """Close the instance and remove its directory (nothing to do if never opened)."""
        if self._con is not None:
            self._con.close()
            self._con = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


__all__ = [
    "STAGING_THREADS",
    "StagedRows",
    "StagingInstance",
]
