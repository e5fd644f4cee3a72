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

from collections.abc import Mapping

import duckdb

from kommo_dagster.derived.entities import DURATIONS_VIEW, FUNNEL_VIEW, STATUS_CHANGES
from kommo_dagster.derived.json_values import json_integer
from kommo_dagster.derived.view_inputs import create_missing_inputs
from kommo_dagster.derived.write import window_condition
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.sql import table_ref
from kommo_dagster.warehouse.tables import ViewColumn, sql_text
from kommo_dagster.warehouse.views import current_view_name
from kommo_dagster.warehouse.windows import EpochWindow

STATUS_CHANGED_EVENT = "lead_status_changed"
WON_STATUS_ID, LOST_STATUS_ID = 142, 143
SQL_PACKAGE = "kommo_dagster.derived.sql"


DURATION_COLUMNS: tuple[ViewColumn, ...] = (
    ViewColumn("lead_id", "BIGINT", "Lead identifier"),
    ViewColumn("pipeline_id", "BIGINT", "Pipeline of the stage"),
    ViewColumn("status_id", "BIGINT", "Stage (status) identifier; with pipeline_id, the stage"),
    ViewColumn("entered_at", "BIGINT", "When the lead entered the stage (Unix)"),
    ViewColumn("left_at", "BIGINT", "When it left the stage (Unix); NULL while still there"),
    ViewColumn("seconds_in_stage", "BIGINT", "left_at - entered_at; NULL while still in the stage"),
)

LEADS_CURRENT = current_view_name("leads")
# What each view's SQL reads, by the placeholder its .sql file names it with: the one list of
# them. The SQL is formatted from it, the views' declarations (`kommo_dagster.derived.
# declaration`) take their inputs from it, and a rebuild creates the streams in it empty.
DURATIONS_READS: Mapping[str, str] = {
    "changes": STATUS_CHANGES,
    "leads": "leads",
    "current": LEADS_CURRENT,
}
# The funnel reads the stays through the durations view only, so lead_status_changes is not
# among its reads; its asset still follows that table through the view's (see
# `kommo_dagster.orchestration.derived_selection.asset_deps`).
FUNNEL_READS: Mapping[str, str] = {
    "stays": DURATIONS_VIEW,
    "statuses": "statuses",
    "pipelines": "pipelines",
    "current": LEADS_CURRENT,
}

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


def _first_status(column: str) -> str:
    # The first lead_status entry of the array that is an object; NULL when absent, or when the
    # text is not JSON (an event stored so gives NULL stages rather than failing the run).
    statuses = f"json_extract(e.{column}, '$[*].lead_status')"
    first = f"list_filter({statuses}, lambda s: json_type(s) = 'OBJECT')[1]"
    return f"CASE WHEN json_valid(e.{column}) THEN {first} END"


def _status_id(side: str, key: str) -> str:
    return json_integer(f"{side} -> '$.{key}'")


def status_changes_select_sql(*, schema: str, window: EpochWindow | None) -> str:
    """The ``lead_status_changes`` rows of the events' ``window`` slice (whole table for None).

    An event stored twice counts once; events whose ``value_*`` text is not JSON give NULL
    stages rather than failing the run. Each value's first lead_status is found once, then its
    ids read (as served; NULL when absent or not integral).
    """
    events = get_stream("events")
    cursor = events.cursor or ""
    ids = ", ".join(
        f"{_status_id(side, key)} AS {name}_{side}"
        for side in ("before", "after")
        for key, name in (("pipeline_id", "pipeline_id"), ("id", "status_id"))
    )
    return (
        f"SELECT event_id, lead_id, changed_at, changed_by, {ids} FROM ("
        f"SELECT DISTINCT ON (e.id) e.id AS event_id, e.entity_id AS lead_id, "
        f"e.{cursor} AS changed_at, e.created_by AS changed_by, "
        f"{_first_status('value_before')} AS before, {_first_status('value_after')} AS after "
        f"FROM {table_ref(schema, events.name)} AS e "
        f"WHERE e.type = '{STATUS_CHANGED_EVENT}' "
        f"AND {window_condition(cursor, window, alias='e')} "
        f"ORDER BY e.id, e.{cursor})"
    )


def _view_sql(file: str, reads: Mapping[str, str], *, schema: str, view: str) -> str:
    """The view's SQL file, with each relation it reads named from ``reads``."""
    named = {placeholder: table_ref(schema, name) for placeholder, name in reads.items()}
    return sql_text(SQL_PACKAGE, file).format(
        view=table_ref(schema, view), won=WON_STATUS_ID, lost=LOST_STATUS_ID, **named
    )


def durations_view_sql(*, schema: str) -> str:
    return _view_sql(
        "lead_stage_durations.sql", DURATIONS_READS, schema=schema, view=DURATIONS_VIEW
    )


def funnel_view_sql(*, schema: str) -> str:
    return _view_sql("pipeline_funnel.sql", FUNNEL_READS, schema=schema, view=FUNNEL_VIEW)


def rebuild_durations_view(con: duckdb.DuckDBPyConnection, *, schema: str) -> None:
    """(Re)create the durations view, creating the streams it reads empty when missing."""
    create_missing_inputs(con, DURATIONS_READS.values(), schema=schema)
    con.execute(durations_view_sql(schema=schema))


def rebuild_funnel_view(con: duckdb.DuckDBPyConnection, *, schema: str) -> None:
    """(Re)create the funnel view, creating the streams it reads empty when missing."""
    create_missing_inputs(con, FUNNEL_READS.values(), schema=schema)
    con.execute(funnel_view_sql(schema=schema))


def rebuild_stage_views(con: duckdb.DuckDBPyConnection, *, schema: str) -> None:
    """(Re)create the durations and funnel views over ``<schema>.lead_status_changes``."""
    rebuild_durations_view(con, schema=schema)
    rebuild_funnel_view(con, schema=schema)


__all__ = [
    "DURATIONS_READS",
    "DURATIONS_VIEW",
    "DURATION_COLUMNS",
    "FUNNEL_COLUMNS",
    "FUNNEL_READS",
    "FUNNEL_VIEW",
    "LOST_STATUS_ID",
    "STATUS_CHANGED_EVENT",
    "WON_STATUS_ID",
    "ViewColumn",
    "durations_view_sql",
    "funnel_view_sql",
    "rebuild_durations_view",
    "rebuild_funnel_view",
    "rebuild_stage_views",
    "status_changes_select_sql",
]
