"""Chat response times: runs of customer messages and the reply to each, from the events.

Kommo writes each chat message as an event ``incoming_chat_message`` / ``outgoing_chat_message``
on a lead, contact or customer, with ``value_after`` ``[{"message": {"id": ...}}]``. A
conversation is the messages of one (entity_type, entity_id) in (created_at, id) order. A run
starts at an incoming message that does not follow an incoming one; its reply is the next
message when that is outgoing. Outgoing messages answering no run give no row.

Bad input is kept or skipped, and counted (`input_counts_sql`): a message without its message
id is still a message (the event id is the key); a message on an entity type other than lead,
contact or customer belongs to no conversation and is skipped; an event stored twice counts once.

``response_time_by_manager`` (view): per user who replied and ISO week (Monday, in the account's
time zone, of the run's first message) the replies, the median and 90th percentile of their
response seconds and the share answered within 5 minutes; runs still unanswered count for the
responsible user of their lead or contact (NULL when that record is not extracted).
"""

from __future__ import annotations

from kommo_dagster.derived.entities import CHAT_RESPONSE_TIMES
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.warehouse.sql import table_ref
from kommo_dagster.warehouse.tables import ViewColumn
from kommo_dagster.warehouse.views import current_view_name

INCOMING, OUTGOING = "incoming_chat_message", "outgoing_chat_message"
CHAT_ENTITY_TYPES = ("lead", "contact", "customer")
RESPONSE_VIEW = "response_time_by_manager"
QUICK_REPLY_SECONDS = 300
# The current views holding the responsible user of a conversation's record, by the entity
# type its events carry (leads, contacts: the streams whose declared event entity chats have).
RESPONSIBLE_VIEWS = {
    s.event_entity: current_view_name(s)
    for s in STREAMS.values()
    if s.event_entity in CHAT_ENTITY_TYPES
}


def _messages_sql(schema: str) -> str:
    entity_types = ", ".join(f"'{t}'" for t in CHAT_ENTITY_TYPES)
    return (
        f"SELECT DISTINCT ON (id) id, type, entity_type, entity_id, created_at, created_by "
        f"FROM {table_ref(schema, 'events')} "
        f"WHERE type IN ('{INCOMING}', '{OUTGOING}') AND entity_type IN ({entity_types}) "
        f"ORDER BY id"
    )


def response_times_select_sql(*, schema: str) -> str:
    """Every chat_response_times row of ``<schema>.events``."""
    return f"""WITH messages AS ({_messages_sql(schema)}),
ordered AS (
    SELECT *, type = '{INCOMING}' AS incoming,
        lag(type) OVER w AS previous_type, row_number() OVER w AS n
    FROM messages WINDOW w AS (PARTITION BY entity_type, entity_id ORDER BY created_at, id)
),
runs AS (
    SELECT *, sum(CASE WHEN incoming AND previous_type IS DISTINCT FROM '{INCOMING}'
        THEN 1 ELSE 0 END) OVER (PARTITION BY entity_type, entity_id ORDER BY n) AS run
    FROM ordered
),
grouped AS (
    SELECT entity_type, entity_id,
        arg_min(id, n) FILTER (WHERE incoming) AS first_message_id,
        min(created_at) FILTER (WHERE incoming) AS first_message_at,
        count(*) FILTER (WHERE incoming) AS incoming_messages,
        max(created_at) FILTER (WHERE incoming) AS last_message_at,
        arg_min(id, n) FILTER (WHERE NOT incoming) AS reply_event_id,
        arg_min(created_at, n) FILTER (WHERE NOT incoming) AS replied_at,
        arg_min(created_by, n) FILTER (WHERE NOT incoming) AS replied_by
    FROM runs WHERE run > 0 GROUP BY entity_type, entity_id, run
)
SELECT *, replied_at - first_message_at AS response_seconds FROM grouped"""


def input_counts_sql(*, schema: str) -> str:
    """One row: message events, those without a message id (kept), those on an entity type
    no conversation belongs to (skipped), and events stored more than once (counted once)."""
    entity_types = ", ".join(f"'{t}'" for t in CHAT_ENTITY_TYPES)
    message_id = (
        "CASE WHEN json_valid(value_after) THEN json_extract_string(value_after, "
        "'$[0].message.id') END"
    )
    return f"""SELECT count(DISTINCT id),
    count(DISTINCT id) FILTER (WHERE {message_id} IS NULL),
    count(DISTINCT id) FILTER (WHERE entity_type IS NULL OR entity_type NOT IN ({entity_types})),
    count(*) - count(DISTINCT id)
FROM {table_ref(schema, "events")} WHERE type IN ('{INCOMING}', '{OUTGOING}')"""


RESPONSE_COLUMNS: tuple[ViewColumn, ...] = (
    ViewColumn(
        "user_id",
        "BIGINT",
        "Who replied (0: a bot); for unanswered runs the "
        "responsible user of the lead or contact (NULL when not extracted)",
    ),
    ViewColumn("week", "DATE", "Monday of the ISO week of the runs' first message"),
    ViewColumn("iso_year", "BIGINT", "ISO year of that week"),
    ViewColumn("iso_week", "BIGINT", "ISO week number"),
    ViewColumn("replies", "BIGINT", "Runs the user answered"),
    ViewColumn("median_response_seconds", "DOUBLE", "Median response_seconds of the replies"),
    ViewColumn("p90_response_seconds", "DOUBLE", "90th percentile of response_seconds"),
    ViewColumn("share_within_5_min", "DOUBLE", "Share of the replies sent within 300 seconds"),
    ViewColumn("unanswered_runs", "BIGINT", "Runs with no reply yet"),
)


def _responsible_sql(schema: str, present: set[str]) -> str:
    parts = [
        f"SELECT '{entity}' AS entity_type, id AS entity_id, responsible_user_id "
        f"FROM {table_ref(schema, view)}"
        for entity, view in RESPONSIBLE_VIEWS.items()
        if view in present
    ]
    if not parts:
        return (
            "SELECT NULL::VARCHAR AS entity_type, NULL::BIGINT AS entity_id, "
            "NULL::BIGINT AS responsible_user_id WHERE false"
        )
    return " UNION ALL ".join(parts)


def response_view_sql(*, schema: str, time_zone: str, present: set[str]) -> str:
    """``CREATE OR REPLACE VIEW <schema>.response_time_by_manager``; ``present`` names the
    relations of ``schema`` that exist (the leads' and contacts' current views are optional)."""
    runs = table_ref(schema, CHAT_RESPONSE_TIMES)
    zone = time_zone.replace("'", "''")
    return f"""CREATE OR REPLACE VIEW {table_ref(schema, RESPONSE_VIEW)} AS
WITH responsible AS ({_responsible_sql(schema, present)}),
runs AS (
    SELECT r.*,
        CASE WHEN r.replied_at IS NULL THEN o.responsible_user_id ELSE r.replied_by END AS user_id,
        CAST(timezone('{zone}', to_timestamp(r.first_message_at)) AS DATE) AS day
    FROM {runs} AS r
    LEFT JOIN responsible AS o USING (entity_type, entity_id)
)
SELECT CAST(user_id AS BIGINT) AS user_id,
    CAST(date_trunc('week', day) AS DATE) AS week,
    CAST(isoyear(day) AS BIGINT) AS iso_year, CAST(week(day) AS BIGINT) AS iso_week,
    count(*) FILTER (WHERE replied_at IS NOT NULL) AS replies,
    CAST(quantile_cont(response_seconds, 0.5) AS DOUBLE) AS median_response_seconds,
    CAST(quantile_cont(response_seconds, 0.9) AS DOUBLE) AS p90_response_seconds,
    CAST(count(*) FILTER (WHERE response_seconds <= {QUICK_REPLY_SECONDS}) AS DOUBLE)
        / nullif(count(*) FILTER (WHERE replied_at IS NOT NULL), 0) AS share_within_5_min,
    count(*) FILTER (WHERE replied_at IS NULL) AS unanswered_runs
FROM runs GROUP BY ALL ORDER BY week, user_id NULLS LAST"""


__all__ = [
    "CHAT_ENTITY_TYPES",
    "INCOMING",
    "OUTGOING",
    "RESPONSE_COLUMNS",
    "RESPONSE_VIEW",
    "RESPONSIBLE_VIEWS",
    "input_counts_sql",
    "response_times_select_sql",
    "response_view_sql",
]
