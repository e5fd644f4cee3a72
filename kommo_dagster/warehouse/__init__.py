"""The DuckDB side: a stream's table, typed batches, staging, the one-transaction write, views,
the all-accounts views and the table registry.

Plain Python (no Dagster), used by the IO manager and by anything else that reads or writes the
warehouse (checks, views). Modules: `sql` (names, DDL), `arrays` (typed batches), `locks`
(connections that take turns), `staging` (`StagedRows`), `cursor_span` (the staged rows'
cursor totals), `slices` (the write and read of a slice), `windows` (cursor windows), `views`,
`all_accounts`, `tables`, `registry`, `link_write` (the link tables' rows, written with the
slice they were read with).

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
which says what holds the file (the lock's holder writes its PID to ``<file>.lock.holder``) and
what to do.
"""

from kommo_dagster.warehouse.arrays import typed_arrays, typed_frame
from kommo_dagster.warehouse.errors import TableSchemaMismatch, WarehouseError
from kommo_dagster.warehouse.locks import DatabaseLockTimeout, connect, database_lock, lock_path
from kommo_dagster.warehouse.slices import WriteResult, read_slice
from kommo_dagster.warehouse.sql import (
    catalog_name,
    check_table_columns,
    column_definitions,
    create_table_sql,
    is_file_database,
    quote,
    table_columns,
    table_exists,
    table_ref,
)
from kommo_dagster.warehouse.staging import StagedRows

__all__ = [
    "DatabaseLockTimeout",
    "StagedRows",
    "TableSchemaMismatch",
    "WarehouseError",
    "WriteResult",
    "catalog_name",
    "check_table_columns",
    "column_definitions",
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
