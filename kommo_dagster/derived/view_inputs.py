"""The relations a view reads, created empty when missing, from the view's declared inputs.

A view over streams nothing has extracted yet still exists (and shows no rows until they are
written); a computed input (a derived table or view) is never created empty: without it the
rebuild fails, and the view's asset says what to materialize first.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.warehouse.sql import create_table_sql, quote
from kommo_dagster.warehouse.views import current_view_name, ensure_current_view, has_current_view

_CURRENT_VIEWS = {current_view_name(s): s for s in STREAMS.values() if has_current_view(s)}


def create_missing_inputs(
    con: duckdb.DuckDBPyConnection, inputs: Iterable[str], *, schema: str
) -> None:
    """Create the streams and link tables among ``inputs`` empty when missing, and (re)create
    the current views among them over their streams (created empty too when missing)."""
    names = tuple(inputs)
    views = [_CURRENT_VIEWS[n] for n in names if n in _CURRENT_VIEWS]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    streams = {s.name: s for s in [STREAMS[n] for n in names if n in STREAMS] + views}
    for stream in streams.values():
        con.execute(create_table_sql(stream, schema=schema))
    for name in names:
        if name in LINK_TABLES:
            con.execute(create_table_sql(LINK_TABLES[name], schema=schema))
    for stream in views:
        ensure_current_view(con, stream, schema=schema)


__all__ = ["create_missing_inputs"]
