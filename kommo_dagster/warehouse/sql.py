"""Names, DDL and catalog queries of the warehouse: quoting, table references, contract
columns, and which database (a file, MotherDuck, in memory) a path names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import duckdb

from kommo_dagster.kommo.streams import Column
from kommo_dagster.warehouse.errors import TableSchemaMismatch


class ContractTable(Protocol):
    """What the DDL and the copies read of a table's declaration, whichever kind: a `Stream`, a
    declared `kommo_dagster.warehouse.tables.Table` or a `kommo_dagster.kommo.links.LinkTable`."""

    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> tuple[Column, ...]: ...


# Databases that are not local files (MotherDuck): no absolute path, no lock file next to them.
REMOTE_DATABASE_PREFIXES = ("md:", "motherduck:")


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def table_ref(schema: str, table: str, *, catalog: str | None = None) -> str:
    ref = f"{quote(schema)}.{quote(table)}"
    return f"{quote(catalog)}.{ref}" if catalog else ref


def column_definitions(stream: ContractTable) -> str:
    return ", ".join(f"{quote(c.name)} {c.duckdb_type}" for c in stream.columns)


def create_table_sql(
    stream: ContractTable, *, schema: str | None, catalog: str | None = None, replace: bool = False
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


def declared_columns(table: ContractTable) -> list[tuple[str, str]]:
    """``[(name, DuckDB type)]`` of the declaration, in order: what `table_columns` must read."""
    return [(c.name, c.duckdb_type) for c in table.columns]


def check_table_columns(
    con: duckdb.DuckDBPyConnection,
    stream: ContractTable,
    *,
    schema: str,
    catalog: str | None = None,
) -> None:
    actual = table_columns(con, schema=schema, table=stream.name, catalog=catalog)
    expected = declared_columns(stream)
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


def scalar_int(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    """The first value ``sql`` returns, as an int (0 without a row): a count, or the rows a
    DELETE or an INSERT reports."""
    row = con.execute(sql, list(params)).fetchone()
    return int(row[0]) if row else 0


def select_casts(stream: ContractTable) -> str:
    return ", ".join(f"CAST({quote(c.name)} AS {c.duckdb_type})" for c in stream.columns)


def column_list(stream: ContractTable) -> str:
    return ", ".join(quote(c.name) for c in stream.columns)


def is_file_database(database: str | Path) -> bool:
    """False for MotherDuck (``md:...``) and in-memory databases: no file, no lock file."""
    text = str(database)
    return text != ":memory:" and not text.lower().startswith(REMOTE_DATABASE_PREFIXES)


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def catalog_name(database: str | Path) -> str:
    """The catalog DuckDB gives an attached database: a file's stem, a MotherDuck database's
    name (``md:my_db?...`` -> ``my_db``)."""
    if not is_file_database(database):
        name = str(database).split(":", 1)[1].split("?", 1)[0]
        return name or "my_db"
    return Path(database).stem


def qualified_table_name(database: str | Path, *, schema: str, name: str) -> str:
    """A table as its assets' ``dagster/table_name`` and the run logs name it."""
    return f"{catalog_name(database)}.{schema}.{name}"


__all__ = [
    "REMOTE_DATABASE_PREFIXES",
    "ContractTable",
    "catalog_name",
    "check_table_columns",
    "column_definitions",
    "create_table_sql",
    "declared_columns",
    "is_file_database",
    "qualified_table_name",
    "quote",
    "scalar_int",
    "table_columns",
    "table_exists",
    "table_ref",
]
