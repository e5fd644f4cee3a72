"""Derived relations in the warehouse: current-state views and full-table history.

Plain Python (no Dagster). The table registry (`kommo_dagster.warehouse.registry`) declares them and
runs them inside the transaction of every write, so they exist after any first write and change
atomically with the table they read.

* ``<schema>.<stream>_current`` (incremental streams): the partitioned tables keep every version
  fetched (one row per (id, cursor)); the view keeps the latest version per id and drops deleted
  records. Leads, contacts and companies carry their own ``is_deleted`` (the client reads
  ``with=only_deleted``, so a deletion is a new version with ``is_deleted = true``). Tasks have no
  deleted list: Kommo records a ``task_deleted`` event instead, so ``tasks_current`` drops a task
  once ``<schema>.events`` holds such an event at or after its latest version. Events are never
  edited or deleted; ``events_current`` is one row per event id.
* ``<schema>.<stream>_history`` (full-table streams, and incremental streams switched to a full
  table): every write appends the new table as a snapshot with its ``snapshot_at`` (UTC), and
  snapshots older than the retention are purged in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.warehouse.sql import column_definitions, quote, scalar_int, table_columns

SNAPSHOT_COLUMN = "snapshot_at"
# The stream whose table the deletion events are read from (`deletion_events`).
_EVENTS = "events"
_RANK = "kommo_version_rank"


def _ref(schema: str, name: str, *, catalog: str | None = None) -> str:
    ref = f"{quote(schema)}.{quote(name)}"
    return f"{quote(catalog)}.{ref}" if catalog else ref


def current_view_name(stream: Stream | str) -> str:
    return f"{stream if isinstance(stream, str) else stream.name}_current"


def history_table_name(stream: Stream | str) -> str:
    return f"{stream if isinstance(stream, str) else stream.name}_history"


def has_current_view(stream: Stream) -> bool:
    """Incremental streams keep versions, so they get a current-state view."""
    return stream.is_incremental and stream.cursor is not None


def deletion_events(stream: Stream) -> tuple[str, str] | None:
    """``(event type, entity type)`` of the events that record deletions of ``stream``'s
    records, for streams whose deleted records cannot be listed (tasks: task_deleted, task)."""
    if stream.deleted_event is None or stream.event_entity is None:
        return None
    return stream.deleted_event, stream.event_entity


def current_view_inputs(stream: Stream) -> tuple[str, ...]:
    """What the stream's current view reads: its table, and the events table when its
    deletions are read from events."""
    return (stream.name, *((_EVENTS,) if deletion_events(stream) is not None else ()))


def current_view_sql(stream: Stream, *, schema: str, catalog: str | None = None) -> str:
    """``CREATE OR REPLACE VIEW <schema>.<stream>_current``: latest version per id, live only.

    ``catalog`` names the attached database the view is created in; the view's own query names
    no catalog, so DuckDB resolves it in the view's database however the file is attached later.
    """
    if not has_current_view(stream):
        raise ValueError(f"{stream.name} is a full-table stream: its table is the current state")
    cursor = quote(stream.cursor or "")
    # Ties on the cursor (a record deleted in the second it was last edited): the deleted one wins.
    tie = ", coalesce(is_deleted, false) DESC" if "is_deleted" in stream.column_names else ""
    conditions = [f"{_RANK} = 1"]
    if "is_deleted" in stream.column_names:
        conditions.append("NOT coalesce(is_deleted, false)")
    deleted = deletion_events(stream)
    if deleted is not None:
        event_type, entity_type = deleted
        events = _ref(schema, _EVENTS)
        conditions.append(
            f"NOT EXISTS (SELECT 1 FROM {events} AS e WHERE e.type = '{event_type}' "
            f"AND e.entity_type = '{entity_type}' AND e.entity_id = v.id "
            f"AND e.created_at >= v.{cursor})"
        )
    return (
        f"CREATE OR REPLACE VIEW {_ref(schema, current_view_name(stream), catalog=catalog)} AS "
        f"SELECT * EXCLUDE ({_RANK}) FROM ("
        f"SELECT *, row_number() OVER (PARTITION BY id ORDER BY {cursor} DESC{tie}) AS {_RANK} "
        f"FROM {_ref(schema, stream.name)}) AS v "
        f"WHERE {' AND '.join(conditions)}"
    )


def ensure_current_view(
    con: duckdb.DuckDBPyConnection, stream: Stream, *, schema: str, catalog: str | None = None
) -> None:
    """(Re)create the stream's current view; the tables it reads are created empty if missing."""
    if deletion_events(stream) is not None:
        # tasks_current reads the events table; it may not have been written yet.
        events = get_stream(_EVENTS)
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {_ref(schema, events.name, catalog=catalog)} "
            f"({column_definitions(events)})"
        )
    con.execute(current_view_sql(stream, schema=schema, catalog=catalog))


def ensure_history_table(
    con: duckdb.DuckDBPyConnection, stream: Stream, *, schema: str, catalog: str | None = None
) -> None:
    """Create the history table, or add the columns the contract gained since it was created:
    the full-table write recreates the stream's table from the contract, and its snapshot must
    follow (older snapshots hold NULL in a column they predate)."""
    name = history_table_name(stream)
    history = _ref(schema, name, catalog=catalog)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {history} "
        f"({quote(SNAPSHOT_COLUMN)} TIMESTAMP NOT NULL, {column_definitions(stream)})"
    )
    present = {c for c, _ in table_columns(con, schema=schema, table=name, catalog=catalog)}
    for column in stream.columns:
        if column.name not in present:
            con.execute(
                f"ALTER TABLE {history} ADD COLUMN {quote(column.name)} {column.duckdb_type}"
            )


def append_history(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    *,
    schema: str,
    snapshot_at: datetime,
    retention_days: int,
    catalog: str | None = None,
) -> dict[str, int]:
    """Append the table's current rows as one snapshot, then purge snapshots past retention.

    ``snapshot_at`` must be UTC; it is stored as a naive TIMESTAMP so that no session time zone
    shifts it. Returns ``{"rows": rows appended, "purged": rows purged}``.
    """
    if snapshot_at.tzinfo is not None:
        offset = snapshot_at.utcoffset()
        snapshot_at = (snapshot_at - (offset or timedelta(0))).replace(tzinfo=None)
    ensure_history_table(con, stream, schema=schema, catalog=catalog)
    history = _ref(schema, history_table_name(stream), catalog=catalog)
    columns = ", ".join(quote(c) for c in stream.column_names)
    appended = scalar_int(
        con,
        f"INSERT INTO {history} ({quote(SNAPSHOT_COLUMN)}, {columns}) "
        f"SELECT ?::TIMESTAMP, {columns} FROM {_ref(schema, stream.name, catalog=catalog)}",
        [snapshot_at],
    )
    cutoff = snapshot_at - timedelta(days=retention_days)
    purged = scalar_int(
        con, f"DELETE FROM {history} WHERE {quote(SNAPSHOT_COLUMN)} < ?::TIMESTAMP", [cutoff]
    )
    return {"rows": appended, "purged": purged}


__all__ = [
    "SNAPSHOT_COLUMN",
    "append_history",
    "current_view_inputs",
    "current_view_name",
    "current_view_sql",
    "deletion_events",
    "ensure_current_view",
    "ensure_history_table",
    "has_current_view",
    "history_table_name",
]
