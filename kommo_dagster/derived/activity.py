"""The conversation and activity tables: how each is built from what the warehouse holds.

``chat_response_times``, ``calls`` and ``manager_activity_daily`` come from
``kommo_activity_streams.json`` (entries with ``derived_from`` and no cursor), and are declared
in `kommo_dagster.derived.declaration` like every derived table. A run answered in a later
partition of the events must get its reply, so these tables are not sliced: each write
recomputes the whole table from everything extracted so far and replaces it in one transaction
(`kommo_dagster.derived.write.replace_slice` of a table rebuilt whole), so the table is the
current truth however the partitions arrived, and a failure leaves the previous rows.

Their SELECT depends on what the warehouse holds (which note tables exist, the account's time
zone), so each declares a ``plan`` (`chat_plan`, `calls_plan`, `activity_plan`): it looks, then
gives the SELECT and its counts of bad input (kept or skipped, never a failure). An input a
code location defines but has not extracted yet is read as empty.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

from kommo_dagster.derived import calls, chats
from kommo_dagster.derived.entities import CALLS, CHAT_RESPONSE_TIMES
from kommo_dagster.derived.manager_activity import MANAGER_ACTIVITY_DAILY, activity_select_sql
from kommo_dagster.kommo.streams import STREAMS, Column, Stream
from kommo_dagster.warehouse.sql import table_exists, table_ref
from kommo_dagster.warehouse.tables import PlanContext, RefreshContext, WritePlan

# The table holding the account's time zone (`account_time_zone`), which their days follow.
TIME_ZONE_SOURCE = "account"


def _annotated_entity(notes: Stream) -> str:
    """The entity type (as events and calls name it) of the records a note stream annotates:
    that of the stream its ``entity_id`` references."""
    [entity] = [STREAMS[r.stream].event_entity for r in notes.references if r.column == "entity_id"]
    if entity is None:
        raise RuntimeError(f"{notes.name}: the stream its notes belong to has no event entity")
    return entity


# The note tables (Kommo lists their records under _embedded.notes), by the entity type of the
# records they annotate.
NOTE_STREAMS: Mapping[str, str] = {
    name: _annotated_entity(s) for name, s in STREAMS.items() if s.list_key == "notes"
}

# Columns after the contract's, declared like the contract's.
EXTRA_COLUMNS: Mapping[str, tuple[Column, ...]] = {
    CHAT_RESPONSE_TIMES: (
        Column.from_contract(
            {
                "name": "last_message_at",
                "type": "integer",
                "description": "When the customer wrote last in this run (Unix); "
                "first_message_at for a run of one message",
            }
        ),
    ),
    CALLS: (
        Column.from_contract(
            {
                "name": "call_responsible",
                "type": "integer",
                "description": "params.call_responsible: the user the telephony gave the call "
                "to (NULL when absent or not a number)",
            }
        ),
    ),
}

# What a non-zero count of bad input means, logged as a warning.
_BAD_INPUT = {
    "messages_without_message_id": "message events without a message id (kept)",
    "messages_on_unknown_entity_types": "message events on an entity type that is not "
    "lead, contact or customer (skipped)",
    "params_not_json": "call notes whose params are not JSON (kept, params NULL)",
    "durations_not_a_number": "call notes whose duration is no integer (kept, NULL)",
}


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
    if not table_exists(con, schema=schema, table=TIME_ZONE_SOURCE):
        return "UTC", f"{schema}.{TIME_ZONE_SOURCE} does not exist"
    row = con.execute(
        f"SELECT timezone FROM {table_ref(schema, TIME_ZONE_SOURCE)} "
        "WHERE timezone IS NOT NULL LIMIT 1"
    ).fetchone()
    if row is None:
        return "UTC", f"{schema}.{TIME_ZONE_SOURCE} holds no timezone"
    known = con.execute("SELECT count(*) FROM pg_timezone_names() WHERE name = ?", [row[0]])
    if not (known.fetchone() or (0,))[0]:
        return (
            "UTC",
            f"{schema}.{TIME_ZONE_SOURCE} has timezone {row[0]!r}, which DuckDB does not know",
        )
    return str(row[0]), None


def _zone_note(con: duckdb.DuckDBPyConnection, *, schema: str) -> tuple[str, dict[str, str]]:
    zone, why = account_time_zone(con, schema=schema)
    return zone, {"time_zone": zone + (f" ({why})" if why else "")}


def _plan(select_sql: str, counts: dict[str, int], notes: dict[str, str], table: str) -> WritePlan:
    warnings = tuple(
        f"{table}: {counts[k]} {what}" for k, what in _BAD_INPUT.items() if counts.get(k)
    )
    return WritePlan(select_sql=select_sql, counts=counts, notes=notes, warnings=warnings)


def chat_plan(ctx: PlanContext) -> WritePlan:
    """chat_response_times from the events, with its counts of message events and bad input."""
    row = ctx.con.execute(chats.input_counts_sql(schema=ctx.schema)).fetchone() or (0, 0, 0, 0)
    names = ("message_events", "messages_without_message_id", "messages_on_unknown_entity_types")
    counts = dict(zip(names, map(int, row[:3]), strict=True))
    counts["repeated_message_events"] = int(row[3])
    _, notes = _zone_note(ctx.con, schema=ctx.schema)
    select = chats.response_times_select_sql(schema=ctx.schema)
    return _plan(select, counts, notes, CHAT_RESPONSE_TIMES)


def calls_plan(ctx: PlanContext) -> WritePlan:
    """calls from the note tables that exist, with its counts of call notes and bad input."""
    present = existing(ctx.con, ctx.inputs, schema=ctx.schema)
    streams = {n: NOTE_STREAMS[n] for n in present}
    row = ctx.con.execute(calls.input_counts_sql(schema=ctx.schema, streams=streams)).fetchone()
    names = ("call_notes", "params_not_json", "durations_not_a_number", "durations_absent")
    counts = dict(zip(names, map(int, row or (0, 0, 0, 0)), strict=True))
    return _plan(calls.calls_select_sql(schema=ctx.schema, streams=streams), counts, {}, CALLS)


def activity_plan(ctx: PlanContext) -> WritePlan:
    """manager_activity_daily from the inputs that exist; the others are named in its notes."""
    present = set(existing(ctx.con, ctx.inputs, schema=ctx.schema))
    zone, notes = _zone_note(ctx.con, schema=ctx.schema)
    notes["missing_inputs"] = ", ".join(n for n in ctx.inputs if n not in present) or "none"
    select = activity_select_sql(schema=ctx.schema, time_zone=zone, present=present)
    return _plan(select, {}, notes, MANAGER_ACTIVITY_DAILY)


def rebuild_response_view(ctx: RefreshContext) -> dict[str, str]:
    """(Re)create response_time_by_manager in the account's time zone, with the responsible
    users of the leads and contacts extracted so far; its columns' descriptions."""
    zone, _ = account_time_zone(ctx.con, schema=ctx.schema)
    views = tuple(chats.RESPONSIBLE_VIEWS.values())
    present = set(existing(ctx.con, views, schema=ctx.schema))
    ctx.con.execute(chats.response_view_sql(schema=ctx.schema, time_zone=zone, present=present))
    return {c.name: c.description for c in chats.RESPONSE_COLUMNS}


__all__ = [
    "CALLS",
    "CHAT_RESPONSE_TIMES",
    "EXTRA_COLUMNS",
    "MANAGER_ACTIVITY_DAILY",
    "NOTE_STREAMS",
    "TIME_ZONE_SOURCE",
    "account_time_zone",
    "activity_plan",
    "calls_plan",
    "chat_plan",
    "existing",
    "rebuild_response_view",
]
