"""Stage history of leads: status changes from events, time in stage, and the pipeline funnel.

Kommo keeps no history of stages other than its ``lead_status_changed`` events, whose
``value_before`` / ``value_after`` are ``[{"lead_status": {"id": S, "pipeline_id": P}}]``.

* ``<schema>.lead_status_changes``: one row per such event, sliced by ``changed_at`` (the event's
  ``created_at``) exactly as the events table is sliced, computed from that events slice.
* ``<schema>.lead_stage_durations`` (view): each stay of a lead in a stage. A lead enters the
  stage after each change at the change's time and leaves it at its next change. Before its first
  recorded change it was in that change's "before" stage since its ``created_at``; a live lead
  without any recorded change has been in its current stage since its ``created_at``. The stay a
  lead is still in has ``left_at`` and ``seconds_in_stage`` NULL. When the events start after a
  lead was created (a later ``KOMMO_START_DATE``), its first stay may have missed earlier moves.
* ``<schema>.pipeline_funnel`` (view): per stage of every pipeline (``statuses``, by sort
  order), the leads that entered it, the live leads in it now, the median and 90th percentile of
  the completed stays, and of the leads that entered it, how many later reached the next stage
  by sort order or any stage after it (won included, lost not), won (142) and lost (143).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from kommo_dagster.derived.write import window_condition
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.partitions import EpochWindow
from kommo_dagster.views import current_view_name, ensure_current_view
from kommo_dagster.warehouse import column_definitions, quote, table_ref

STATUS_CHANGED_EVENT = "lead_status_changed"
WON_STATUS_ID, LOST_STATUS_ID = 142, 143
DURATIONS_VIEW = "lead_stage_durations"
FUNNEL_VIEW = "pipeline_funnel"


@dataclass(frozen=True)
class ViewColumn:
    name: str
    type: str
    description: str


DURATION_COLUMNS: tuple[ViewColumn, ...] = (
    ViewColumn("lead_id", "BIGINT", "Lead identifier"),
    ViewColumn("pipeline_id", "BIGINT", "Pipeline of the stage"),
    ViewColumn("status_id", "BIGINT", "Stage (status) identifier; with pipeline_id, the stage"),
    ViewColumn("entered_at", "BIGINT", "When the lead entered the stage (Unix)"),
    ViewColumn("left_at", "BIGINT", "When it left the stage (Unix); NULL while still there"),
    ViewColumn("seconds_in_stage", "BIGINT", "left_at - entered_at; NULL while still in the stage"),
)

FUNNEL_COLUMNS: tuple[ViewColumn, ...] = (
    ViewColumn("pipeline_id", "BIGINT", "Pipeline identifier"),
    ViewColumn("pipeline_name", "VARCHAR", "Pipeline name"),
    ViewColumn("status_id", "BIGINT", "Stage (status) identifier"),
    ViewColumn("status_name", "VARCHAR", "Stage name"),
    ViewColumn("sort", "BIGINT", "Stage sort order within the pipeline"),
    ViewColumn("leads_entered", "BIGINT", "Leads that entered the stage at least once"),
    ViewColumn("leads_in_stage", "BIGINT", "Live leads in the stage now"),
    ViewColumn(
        "median_seconds_in_stage", "DOUBLE", "Median of the completed stays' seconds in the stage"
    ),
    ViewColumn("p90_seconds_in_stage", "DOUBLE", "90th percentile of the completed stays' seconds"),
    ViewColumn("next_status_id", "BIGINT", "The next stage by sort order (NULL for won, lost)"),
    ViewColumn(
        "leads_to_next",
        "BIGINT",
        "Leads that entered the stage and later entered the next stage or any after it "
        "(won included, lost not)",
    ),
    ViewColumn("conversion_to_next", "DOUBLE", "leads_to_next / leads_entered"),
    ViewColumn("won", "BIGINT", "Leads that entered the stage and later entered won (142)"),
    ViewColumn("lost", "BIGINT", "Leads that entered the stage and later entered lost (143)"),
)


def _lead_status(column: str, key: str) -> str:
    # The first lead_status entry of the array; ids as served, NULL when absent or not integral.
    return f"TRY_CAST(json_extract(e.{column}, '$[*].lead_status')[1] ->> '{key}' AS BIGINT)"


def status_changes_select_sql(*, schema: str, window: EpochWindow | None) -> str:
    """The ``lead_status_changes`` rows of the events' ``window`` slice (whole table for None).

    An event stored twice counts once; events whose ``value_*`` text is not JSON give NULL
    stages rather than failing the run.
    """
    events = get_stream("events")
    cursor = events.cursor or ""

    def status(column: str, key: str) -> str:
        return f"CASE WHEN json_valid(e.{column}) THEN {_lead_status(column, key)} ELSE NULL END"

    return (
        f"SELECT DISTINCT ON (e.id) e.id AS event_id, e.entity_id AS lead_id, "
        f"e.{cursor} AS changed_at, e.created_by AS changed_by, "
        f"{status('value_before', 'pipeline_id')} AS pipeline_id_before, "
        f"{status('value_before', 'id')} AS status_id_before, "
        f"{status('value_after', 'pipeline_id')} AS pipeline_id_after, "
        f"{status('value_after', 'id')} AS status_id_after "
        f"FROM {table_ref(schema, events.name)} AS e "
        f"WHERE e.type = '{STATUS_CHANGED_EVENT}' "
        f"AND {window_condition(cursor, window, alias='e')} "
        f"ORDER BY e.id, e.{cursor}"
    )


def durations_view_sql(*, schema: str, changes_table: str) -> str:
    changes = table_ref(schema, changes_table)
    leads = table_ref(schema, "leads")
    current = table_ref(schema, current_view_name("leads"))
    return f"""CREATE OR REPLACE VIEW {table_ref(schema, DURATIONS_VIEW)} AS
WITH changes AS (SELECT DISTINCT ON (event_id) * FROM {changes} ORDER BY event_id),
ordered AS (
    SELECT *, row_number() OVER w AS n, lead(changed_at) OVER w AS next_changed_at
    FROM changes WINDOW w AS (PARTITION BY lead_id ORDER BY changed_at, event_id)
),
created AS (SELECT id, min(created_at) AS created_at FROM {leads} GROUP BY id),
stays AS (
    SELECT lead_id, pipeline_id_after AS pipeline_id, status_id_after AS status_id,
        changed_at AS entered_at, next_changed_at AS left_at
    FROM ordered
    UNION ALL
    SELECT o.lead_id, o.pipeline_id_before, o.status_id_before, c.created_at, o.changed_at
    FROM ordered AS o JOIN created AS c ON c.id = o.lead_id
    WHERE o.n = 1 AND c.created_at IS NOT NULL
    UNION ALL
    SELECT l.id, l.pipeline_id, l.status_id, l.created_at, NULL
    FROM {current} AS l ANTI JOIN changes AS x ON x.lead_id = l.id
)
SELECT CAST(lead_id AS BIGINT) AS lead_id, CAST(pipeline_id AS BIGINT) AS pipeline_id,
    CAST(status_id AS BIGINT) AS status_id, CAST(entered_at AS BIGINT) AS entered_at,
    CAST(left_at AS BIGINT) AS left_at, CAST(left_at - entered_at AS BIGINT) AS seconds_in_stage
FROM stays"""


def funnel_view_sql(*, schema: str) -> str:
    statuses = table_ref(schema, "statuses")
    pipelines = table_ref(schema, "pipelines")
    current = table_ref(schema, current_view_name("leads"))
    stays = table_ref(schema, DURATIONS_VIEW)
    won, lost = WON_STATUS_ID, LOST_STATUS_ID
    return f"""CREATE OR REPLACE VIEW {table_ref(schema, FUNNEL_VIEW)} AS
WITH stages AS (SELECT DISTINCT ON (pipeline_id, id) pipeline_id, id AS status_id, name, sort
    FROM {statuses} ORDER BY pipeline_id, id),
forward AS (
    SELECT pipeline_id, status_id,
        CASE WHEN status_id <> {won} THEN lead(status_id) OVER w END AS next_status_id,
        CASE WHEN status_id <> {won} THEN lead(sort) OVER w END AS next_sort
    FROM stages WHERE status_id <> {lost}
    WINDOW w AS (PARTITION BY pipeline_id ORDER BY sort, status_id)
),
entries AS (
    SELECT lead_id, pipeline_id, status_id, min(entered_at) AS first_entered
    FROM {stays} GROUP BY ALL
),
outcomes AS (
    SELECT e.pipeline_id, e.status_id, e.lead_id,
        bool_or(s.status_id <> {lost} AND t.sort >= f.next_sort) AS to_next,
        bool_or(s.status_id = {won}) AS won,
        bool_or(s.status_id = {lost}) AS lost
    FROM entries AS e
    LEFT JOIN forward AS f ON f.pipeline_id = e.pipeline_id AND f.status_id = e.status_id
    LEFT JOIN {stays} AS s ON s.lead_id = e.lead_id AND s.pipeline_id = e.pipeline_id
        AND s.entered_at >= e.first_entered
    LEFT JOIN stages AS t ON t.pipeline_id = s.pipeline_id AND t.status_id = s.status_id
    GROUP BY ALL
),
per_stage AS (
    SELECT pipeline_id, status_id, count(*) AS leads_entered,
        count(*) FILTER (WHERE to_next) AS leads_to_next,
        count(*) FILTER (WHERE won) AS won, count(*) FILTER (WHERE lost) AS lost
    FROM outcomes GROUP BY ALL
),
times AS (
    SELECT pipeline_id, status_id,
        quantile_cont(seconds_in_stage, 0.5) AS median_seconds_in_stage,
        quantile_cont(seconds_in_stage, 0.9) AS p90_seconds_in_stage
    FROM {stays} WHERE seconds_in_stage IS NOT NULL GROUP BY ALL
),
now AS (SELECT pipeline_id, status_id, count(*) AS leads_in_stage FROM {current} GROUP BY ALL)
SELECT st.pipeline_id, p.name AS pipeline_name, st.status_id, st.name AS status_name,
    CAST(st.sort AS BIGINT) AS sort,
    coalesce(ps.leads_entered, 0) AS leads_entered,
    coalesce(n.leads_in_stage, 0) AS leads_in_stage,
    CAST(t.median_seconds_in_stage AS DOUBLE) AS median_seconds_in_stage,
    CAST(t.p90_seconds_in_stage AS DOUBLE) AS p90_seconds_in_stage,
    f.next_status_id,
    CASE WHEN f.next_status_id IS NOT NULL THEN coalesce(ps.leads_to_next, 0) END
        AS leads_to_next,
    CASE WHEN f.next_status_id IS NOT NULL AND ps.leads_entered > 0
        THEN ps.leads_to_next / ps.leads_entered END AS conversion_to_next,
    coalesce(ps.won, 0) AS won, coalesce(ps.lost, 0) AS lost
FROM stages AS st
LEFT JOIN {pipelines} AS p ON p.id = st.pipeline_id
LEFT JOIN forward AS f USING (pipeline_id, status_id)
LEFT JOIN per_stage AS ps USING (pipeline_id, status_id)
LEFT JOIN times AS t USING (pipeline_id, status_id)
LEFT JOIN now AS n USING (pipeline_id, status_id)
ORDER BY st.pipeline_id, st.sort, st.status_id"""


def ensure_stage_inputs(con: duckdb.DuckDBPyConnection, *, schema: str) -> None:
    """Create the stream tables the views read, empty, if missing (and the leads' current
    view), so the views exist whatever has been extracted so far."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    for name in ("leads", "statuses", "pipelines"):
        stream = get_stream(name)
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {table_ref(schema, name)} ({column_definitions(stream)})"
        )
    ensure_current_view(con, get_stream("leads"), schema=schema)


def rebuild_stage_views(con: duckdb.DuckDBPyConnection, *, schema: str, changes_table: str) -> None:
    """(Re)create the durations and funnel views over ``<schema>.<changes_table>``."""
    ensure_stage_inputs(con, schema=schema)
    con.execute(durations_view_sql(schema=schema, changes_table=changes_table))
    con.execute(funnel_view_sql(schema=schema))


__all__ = [
    "DURATIONS_VIEW",
    "DURATION_COLUMNS",
    "FUNNEL_COLUMNS",
    "FUNNEL_VIEW",
    "LOST_STATUS_ID",
    "STATUS_CHANGED_EVENT",
    "WON_STATUS_ID",
    "ViewColumn",
    "rebuild_stage_views",
    "status_changes_select_sql",
]
