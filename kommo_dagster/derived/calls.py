"""Calls: one row per ``call_in`` / ``call_out`` note, its ``params`` as typed columns.

Kommo has no call list: a call is a note of a lead, contact or company, with ``params`` {uniq,
duration, source, link, phone, call_responsible} and, from some telephony integrations,
``call_status`` (1-7) and ``call_result``. Each note's newest stored version counts.
``duration``, ``call_status`` and ``call_responsible`` are read by the project's one integer rule
for JSON values (`json_values.json_integer`, the extracted tables' rule): a JSON integer, a
number with no fraction below 2**53 (65.0), or a string of digits with a sign and white space
around it (Unicode's too); NULL otherwise (absent, "1:05", "65 sec", 6.5, beyond BIGINT): such
durations are kept as NULL and counted (`input_counts_sql`); params that are not JSON give
NULL columns and are counted too.
"""

from __future__ import annotations

from collections.abc import Mapping

from kommo_dagster.derived.json_values import json_integer
from kommo_dagster.warehouse.sql import table_ref

CALL_DIRECTIONS: Mapping[str, str] = {"call_in": "in", "call_out": "out"}


def _integer(path: str) -> str:
    return json_integer(f"p -> '{path}'")


def _notes_sql(schema: str, streams: Mapping[str, str]) -> str:
    types = ", ".join(f"'{t}'" for t in CALL_DIRECTIONS)
    parts = [
        f"SELECT * FROM (SELECT DISTINCT ON (id) '{entity}' AS entity_type, *, "
        f"CASE WHEN json_valid(params) THEN CAST(params AS JSON) END AS p "
        f"FROM {table_ref(schema, stream)} WHERE note_type IN ({types}) "
        f"ORDER BY id, updated_at DESC)"
        for stream, entity in streams.items()
    ]
    return " UNION ALL ".join(parts)


def calls_select_sql(*, schema: str, streams: Mapping[str, str]) -> str:
    """Every calls row of the note tables ``streams`` ({stream: entity type}, not empty)."""
    direction = " ".join(f"WHEN '{t}' THEN '{d}'" for t, d in CALL_DIRECTIONS.items())
    return f"""SELECT entity_type, entity_id, id AS note_id,
    CASE note_type {direction} END AS direction, created_at, created_by, responsible_user_id,
    {_integer("$.duration")} AS duration_seconds,
    json_extract_string(p, '$.phone') AS phone, json_extract_string(p, '$.source') AS source,
    json_extract_string(p, '$.uniq') AS uniq, json_extract_string(p, '$.link') AS link,
    {_integer("$.call_status")} AS call_status,
    json_extract_string(p, '$.call_result') AS call_result,
    {_integer("$.call_responsible")} AS call_responsible
FROM ({_notes_sql(schema, streams)})"""


def input_counts_sql(*, schema: str, streams: Mapping[str, str]) -> str:
    """One row: call notes, those whose params are not JSON, those with a duration that is
    present but no integer (kept, duration NULL), and those with no duration."""
    # The duration's JSON extracted once (NULL when absent): inside a filter DuckDB repeats the
    # extraction each time the integer rule reads it, up to 7 times.
    return f"""WITH notes AS (SELECT p, p -> '$.duration' AS d FROM ({_notes_sql(schema, streams)}))
SELECT count(*), count(*) FILTER (WHERE p IS NULL),
    count(*) FILTER (WHERE d IS NOT NULL AND ({json_integer("d")}) IS NULL),
    count(*) FILTER (WHERE p IS NOT NULL AND d IS NULL)
FROM notes"""


__all__ = ["CALL_DIRECTIONS", "calls_select_sql", "input_counts_sql"]
