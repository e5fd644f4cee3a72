"""Views over every account: ``kommo_all.<stream>`` = the accounts' tables, with an ``account``.

With several accounts (``KOMMO_ACCOUNTS``) each writes ``kommo_<account>.<stream>``; one query
over all of them reads ``kommo_all.<stream>`` (and ``kommo_all.<stream>_current`` for the
incremental streams), a ``UNION ALL BY NAME`` of the accounts that have the relation, with the
account's name as the first column.

Plain Python (no Dagster), declared in the table registry and run inside the transaction of every
write, like `kommo_dagster.warehouse.views`: an account's first write of a stream adds it to the
view, atomically with its rows. The view's query names no catalog, so it resolves in the database it
lives in however the file is attached later.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

from kommo_dagster.kommo.config import ALL_ACCOUNTS
from kommo_dagster.kommo.streams import Stream
from kommo_dagster.warehouse.sql import quote, table_ref
from kommo_dagster.warehouse.views import current_view_name, has_current_view

ALL_ACCOUNTS_SCHEMA = f"kommo_{ALL_ACCOUNTS}"
ACCOUNT_COLUMN = "account"


def relation_names(stream: Stream) -> list[str]:
    """The relations of ``stream`` that get a cross-account view: its table, its current view."""
    names = [stream.name]
    if has_current_view(stream):
        names.append(current_view_name(stream))
    return names


def _exists(con: duckdb.DuckDBPyConnection, *, catalog: str | None, schema: str, name: str) -> bool:
    where = "database_name = ?" if catalog else "database_name = current_database()"
    row = con.execute(
        f"SELECT count(*) FROM duckdb_tables() WHERE {where} AND schema_name = ? AND "
        f"table_name = ? UNION ALL SELECT count(*) FROM duckdb_views() WHERE {where} AND "
        f"schema_name = ? AND view_name = ?",
        [*([catalog] if catalog else []), schema, name] * 2,
    ).fetchall()
    return any(count for (count,) in row)


def cross_account_view_sql(name: str, schemas: Mapping[str, str], *, catalog: str | None) -> str:
    """``CREATE OR REPLACE VIEW kommo_all.<name>`` over ``{account: schema}`` (not empty)."""
    if not schemas:
        raise ValueError(f"no account has {name}")
    parts = [
        f"SELECT '{account}' AS {quote(ACCOUNT_COLUMN)}, * FROM {table_ref(schema, name)}"
        for account, schema in schemas.items()
    ]
    view = table_ref(ALL_ACCOUNTS_SCHEMA, name, catalog=catalog)
    return f"CREATE OR REPLACE VIEW {view} AS " + " UNION ALL BY NAME ".join(parts)


def refresh_cross_account_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    *,
    schemas: Mapping[str, str],
    catalog: str | None = None,
) -> str | None:
    """(Re)create ``kommo_all.<name>`` over the accounts that already have relation ``name``;
    returns the view's name, or None when no account has it (or there are no accounts)."""
    present = {
        account: schema
        for account, schema in schemas.items()
        if _exists(con, catalog=catalog, schema=schema, name=name)
    }
    if not present:
        return None
    prefix = f"{quote(catalog)}." if catalog else ""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {prefix}{quote(ALL_ACCOUNTS_SCHEMA)}")
    con.execute(cross_account_view_sql(name, present, catalog=catalog))
    return f"{ALL_ACCOUNTS_SCHEMA}.{name}"


__all__ = [
    "ACCOUNT_COLUMN",
    "ALL_ACCOUNTS_SCHEMA",
    "cross_account_view_sql",
    "refresh_cross_account_view",
    "relation_names",
]
