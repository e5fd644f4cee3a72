"""The conversation and activity tables: declared once, rebuilt whole inside DuckDB.

``chat_response_times``, ``calls`` and ``manager_activity_daily`` come from
``kommo_activity_streams.json`` (entries with ``derived_from`` and no cursor). A run answered in
a later partition of the events must get its reply, so these tables are not sliced: each write
recomputes the whole table from everything extracted so far and replaces it in one transaction
(`kommo_dagster.derived.write.replace_slice` with no window), so the table is the current truth
however the partitions arrived, and a failure leaves the previous rows.

This module adds what the contract leaves to the code: each table's key, the tables it reads
(a table of a stream the settings leave out is read as empty), and the columns users expect
beyond the contract's, which follow the contract's columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import duckdb

from kommo_dagster.contract import ACTIVITY_CONTRACT_FILE, load_contract
from kommo_dagster.kommo.streams import Column
from kommo_dagster.warehouse import table_exists, table_ref

CHAT_RESPONSE_TIMES = "chat_response_times"
CALLS = "calls"
MANAGER_ACTIVITY_DAILY = "manager_activity_daily"
NOTE_STREAMS: Mapping[str, str] = {
    "lead_notes": "lead",
    "contact_notes": "contact",
    "company_notes": "company",
}

# Key of each table, and the tables it reads (streams, or tables declared before it).
_DECLARED: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    CHAT_RESPONSE_TIMES: (("first_message_id",), ("events",)),
    CALLS: (("entity_type", "note_id"), tuple(NOTE_STREAMS)),
    MANAGER_ACTIVITY_DAILY: (
        ("day", "user_id"),
        ("events", "lead_status_changes", CHAT_RESPONSE_TIMES, CALLS),
    ),
}


# Columns after the contract's, declared like the contract's.
_EXTRA_COLUMNS: Mapping[str, tuple[dict[str, str], ...]] = {
    CHAT_RESPONSE_TIMES: (
        {
            "name": "last_message_at",
            "type": "integer",
            "description": "When the customer wrote last in this run (Unix); first_message_at "
            "for a run of one message",
        },
    ),
    CALLS: (
        {
            "name": "call_responsible",
            "type": "integer",
            "description": "params.call_responsible: the user the telephony gave the call to "
            "(NULL when absent or not a number)",
        },
    ),
}


@dataclass(frozen=True, kw_only=True)
class ActivityTable:
    """A table rebuilt whole from ``reads`` (streams, or tables declared before it)."""

    name: str
    description: str
    reads: tuple[str, ...]
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # Not sliced: `kommo_dagster.derived.write.replace_slice` replaces the whole table.
    cursor: None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _build() -> dict[str, ActivityTable]:
    specs = load_contract(ACTIVITY_CONTRACT_FILE)["streams"]
    if set(specs) != set(_DECLARED):
        raise RuntimeError(f"activity tables {sorted(specs)} differ from {sorted(_DECLARED)}")
    tables = {}
    for name, spec in specs.items():
        key, reads = _DECLARED[name]
        extra = _EXTRA_COLUMNS.get(name, ())
        columns = tuple(Column.from_contract(c) for c in (*spec["columns"], *extra))
        if spec.get("cursor") is not None or not set(key) <= {c.name for c in columns}:
            raise RuntimeError(f"{name}: a cursor, or key {key} not among its columns")
        tables[name] = ActivityTable(
            name=name, description=spec["description"], reads=reads, columns=columns, key=key
        )
    return tables


ACTIVITY_TABLES: Mapping[str, ActivityTable] = _build()


def existing(con: duckdb.DuckDBPyConnection, names: tuple[str, ...], *, schema: str) -> list[str]:
    """Those of ``names`` that ``schema`` holds (a table or a view) in the current database."""
    held = {
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = ? UNION ALL SELECT view_name FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = ?",
            [schema, schema],
        ).fetchall()
    }
    return [n for n in names if n in held]


def account_time_zone(con: duckdb.DuckDBPyConnection, *, schema: str) -> tuple[str, str | None]:
    """The account's time zone (``<schema>.account``) and, when it cannot be used, why: then
    the days are UTC days."""
    if not table_exists(con, schema=schema, table="account"):
        return "UTC", f"{schema}.account does not exist"
    row = con.execute(
        f"SELECT timezone FROM {table_ref(schema, 'account')} WHERE timezone IS NOT NULL LIMIT 1"
    ).fetchone()
    if row is None:
        return "UTC", f"{schema}.account holds no timezone"
    known = con.execute("SELECT count(*) FROM pg_timezone_names() WHERE name = ?", [row[0]])
    if not (known.fetchone() or (0,))[0]:
        return "UTC", f"{schema}.account has timezone {row[0]!r}, which DuckDB does not know"
    return str(row[0]), None


__all__ = [
    "ACTIVITY_TABLES",
    "CALLS",
    "CHAT_RESPONSE_TIMES",
    "MANAGER_ACTIVITY_DAILY",
    "NOTE_STREAMS",
    "ActivityTable",
    "account_time_zone",
    "existing",
]
