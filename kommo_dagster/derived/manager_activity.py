"""What each user did per day, in the account's time zone: messages, replies, calls, stages.

Read from the events (outgoing chat messages), ``lead_status_changes`` (stage changes, won 142
and lost 143), ``chat_response_times`` (replies by ``replied_at``'s day, and their median
response seconds) and ``calls`` (by ``created_at``'s day). A row exists when any count is not
zero; user 0 is bots and integrations. A table that is not there yet counts as empty.
"""

from __future__ import annotations

from kommo_dagster.derived.chats import OUTGOING
from kommo_dagster.derived.entities import CALLS, CHAT_RESPONSE_TIMES, STATUS_CHANGES
from kommo_dagster.derived.stages import LOST_STATUS_ID, WON_STATUS_ID
from kommo_dagster.warehouse.sql import table_ref
from kommo_dagster.warehouse.tables import contract_columns

MANAGER_ACTIVITY_DAILY = "manager_activity_daily"
KEY = ("day", "user_id")
# The integer columns besides the key: sums over the parts, zero when a part has none.
_COUNTS = tuple(
    c.name
    for c in contract_columns(MANAGER_ACTIVITY_DAILY)
    if c.type == "integer" and c.name not in KEY
)


def _parts(schema: str, day: str, present: set[str]) -> list[str]:
    parts = []
    if "events" in present:
        parts.append(
            f"SELECT {day.format('created_at')} AS day, created_by AS user_id, "
            f"count(DISTINCT id) AS messages_sent FROM {table_ref(schema, 'events')} "
            f"WHERE type = '{OUTGOING}' GROUP BY ALL"
        )
    if STATUS_CHANGES in present:
        parts.append(
            f"SELECT {day.format('changed_at')} AS day, changed_by AS user_id, "
            f"count(*) AS stage_changes, "
            f"count(*) FILTER (WHERE status_id_after = {WON_STATUS_ID}) AS leads_won, "
            f"count(*) FILTER (WHERE status_id_after = {LOST_STATUS_ID}) AS leads_lost "
            f"FROM (SELECT DISTINCT ON (event_id) * FROM "
            f"{table_ref(schema, STATUS_CHANGES)}) GROUP BY ALL"
        )
    if CHAT_RESPONSE_TIMES in present:
        parts.append(
            f"SELECT {day.format('replied_at')} AS day, replied_by AS user_id, "
            f"count(*) AS replies, "
            f"quantile_cont(response_seconds, 0.5) AS median_response_seconds "
            f"FROM {table_ref(schema, CHAT_RESPONSE_TIMES)} "
            f"WHERE replied_at IS NOT NULL GROUP BY ALL"
        )
    if CALLS in present:
        parts.append(
            f"SELECT {day.format('created_at')} AS day, created_by AS user_id, "
            f"count(*) FILTER (WHERE direction = 'in') AS calls_in, "
            f"count(*) FILTER (WHERE direction = 'out') AS calls_out, "
            f"coalesce(sum(duration_seconds), 0) AS call_seconds "
            f"FROM {table_ref(schema, CALLS)} GROUP BY ALL"
        )
    return parts


def activity_select_sql(*, schema: str, time_zone: str, present: set[str]) -> str:
    """Every manager_activity_daily row; ``present`` names the tables of ``schema`` that exist
    (events, lead_status_changes, chat_response_times, calls)."""
    zone = time_zone.replace("'", "''")
    day = f"CAST(timezone('{zone}', to_timestamp({{}})) AS DATE)"
    # A part with every column and no row: an input that is not there counts zero, however
    # many of the others are (each part has its own columns only).
    zeros = ", ".join(f"0 AS {c}" for c in _COUNTS)
    every_column = (
        f"SELECT NULL::DATE AS day, NULL::BIGINT AS user_id, {zeros}, "
        f"NULL::DOUBLE AS median_response_seconds WHERE false"
    )
    parts = [every_column, *_parts(schema, day, present)]
    sums = ", ".join(f"coalesce(sum({c}), 0) AS {c}" for c in _COUNTS)
    nonzero = " OR ".join(f"coalesce(sum({c}), 0) <> 0" for c in _COUNTS)
    return (
        f"SELECT day, user_id, {sums}, "
        f"CAST(max(median_response_seconds) AS DOUBLE) AS median_response_seconds "
        f"FROM ({' UNION ALL BY NAME '.join(f'({p})' for p in parts)}) "
        f"GROUP BY day, user_id HAVING {nonzero}"
    )


__all__ = ["KEY", "MANAGER_ACTIVITY_DAILY", "activity_select_sql"]
