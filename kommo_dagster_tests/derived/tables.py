"""Real DuckDB tables of the streams the derived tables read, filled by the tests."""

from __future__ import annotations

from typing import Any

import duckdb

from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.sql import column_definitions

SCHEMA = "kommo"


def create(con: duckdb.DuckDBPyConnection, stream: str, *, schema: str = SCHEMA) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {schema}.{stream} ({column_definitions(get_stream(stream))})"
    )


def insert(
    con: duckdb.DuckDBPyConnection, stream: str, rows: list[dict[str, Any]], *, schema: str = SCHEMA
) -> None:
    create(con, stream, schema=schema)
    names = get_stream(stream).column_names
    con.executemany(
        f"INSERT INTO {schema}.{stream} VALUES ({', '.join('?' * len(names))})",
        [[row.get(n) for n in names] for row in rows],
    )
