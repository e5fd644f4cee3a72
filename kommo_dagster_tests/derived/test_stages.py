"""Status changes, time in stage and the funnel, on real DuckDB tables built here."""

import json
import re
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import numpy as np
import pytest

from kommo_dagster.derived.declaration import DERIVED_VIEWS, STATUS_CHANGES, get_derived
from kommo_dagster.derived.stages import (
    DURATION_COLUMNS,
    DURATIONS_VIEW,
    FUNNEL_COLUMNS,
    FUNNEL_VIEW,
    durations_view_sql,
    funnel_view_sql,
    rebuild_stage_views,
    status_changes_select_sql,
)
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.derived.reference import status_change, stays
from kommo_dagster_tests.derived.tables import SCHEMA, create, insert

CHANGES = get_derived(STATUS_CHANGES)
P = 7  # the pipeline: incoming 10 (sort 10), talks 20 (sort 20), offer 30 (sort 30)
STAGES = [
    (10, "Incoming", 10),
    (20, "Talks", 20),
    (30, "Offer", 30),
    (142, "Won", 10000),
    (143, "Lost", 11000),
]


def _status(status_id: int) -> list:
    return [{"lead_status": {"id": status_id, "pipeline_id": P}}]


def _event(id: str, lead: int, at: int, before: int, after: int, **extra) -> dict:
    return {
        "id": id,
        "type": "lead_status_changed",
        "entity_type": "lead",
        "entity_id": lead,
        "created_by": 5,
        "created_at": at,
        "value_before": _status(before),
        "value_after": _status(after),
        **extra,
    }


EVENTS = [
    _event("e1", 1, 1000, 10, 20),
    _event("e2", 1, 3000, 20, 30),
    _event("e3", 1, 6000, 30, 142),
    _event("e4", 2, 1500, 10, 20),
    _event("e5", 2, 2500, 20, 143),
    _event("e6", 3, 90_000, 10, 30),  # the next day's slice
    _event("e6", 3, 90_000, 10, 30),  # stored twice
]
LEADS = {
    1: {"id": 1, "created_at": 0, "updated_at": 6000, "pipeline_id": P, "status_id": 142},
    2: {"id": 2, "created_at": 500, "updated_at": 2500, "pipeline_id": P, "status_id": 143},
    3: {"id": 3, "created_at": 80_000, "updated_at": 90_000, "pipeline_id": P, "status_id": 30},
    4: {"id": 4, "created_at": 700, "updated_at": 700, "pipeline_id": P, "status_id": 10},
}


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    other = [
        {
            "id": "x1",
            "type": "entity_responsible_changed",
            "entity_type": "lead",
            "entity_id": 1,
            "created_at": 2000,
            "value_before": "[]",
            "value_after": "[]",
        },
        {
            "id": "x2",
            "type": "lead_status_changed",
            "entity_type": "lead",
            "entity_id": 4,
            "created_at": 2000,
            "value_before": "not json",
            "value_after": "[]",
        },
    ]
    insert(
        con,
        "events",
        [
            e
            | {
                "value_before": json.dumps(e["value_before"]),
                "value_after": json.dumps(e["value_after"]),
            }
            for e in EVENTS
        ]
        + other,
    )
    insert(con, "leads", [lead | {"is_deleted": False} for lead in LEADS.values()])
    insert(con, "pipelines", [{"id": P, "name": "Vendas"}])
    insert(
        con, "statuses", [{"id": s, "name": n, "sort": o, "pipeline_id": P} for s, n, o in STAGES]
    )
    return con


def _write(con, window):
    return replace_slice(
        con,
        CHANGES,
        schema=SCHEMA,
        window=window,
        select_sql=status_changes_select_sql(schema=SCHEMA, window=window),
        after=lambda c: rebuild_stage_views(c, schema=SCHEMA),
    )


def test_status_changes_are_the_events_slice_by_slice(con):
    day1, day2 = EpochWindow(0, 86_400), EpochWindow(86_400, 172_800)
    assert _write(con, day1).rows == 6  # five changes and the one with unreadable values
    assert _write(con, day2).rows == 1
    assert _write(con, day1).deleted == 6
    rows = con.execute(f"FROM {SCHEMA}.{CHANGES.name} ORDER BY event_id").fetchall()
    expected = sorted({status_change(e) for e in EVENTS})
    assert rows == [*expected, ("x2", 4, 2000, None, None, None, None, None)]


def test_a_stage_id_that_is_no_integer_is_null_not_rounded():
    """DuckDB's cast rounded 142.5 to 143 (lost) and read '1e3' as 1000; the first
    lead_status that is an object counts, as the reference reads it."""
    con = duckdb.connect()
    odd = [
        [{"lead_status": {"id": 142.5, "pipeline_id": "7"}}],
        [{"lead_status": {"id": "1e3", "pipeline_id": True}}],
        [{"lead_status": 5}, {"other": 1}, {"lead_status": {"id": " 20 ", "pipeline_id": 7}}],
        # read as the extracted tables' integer columns read them
        [{"lead_status": {"id": 142.0, "pipeline_id": "+8"}}],
    ]
    events = [
        _event(f"o{i}", 9, 1000 + i, 10, 20) | {"value_before": value}
        for i, value in enumerate(odd)
    ]
    insert(
        con,
        "events",
        [e | {k: json.dumps(e[k]) for k in ("value_before", "value_after")} for e in events],
    )
    sql = status_changes_select_sql(schema=SCHEMA, window=None)
    got = con.execute(f"{sql}").fetchall()
    assert sorted(got) == sorted(status_change(e) for e in events)
    assert [r[4:6] for r in sorted(got)] == [(7, None), (None, None), (7, 20), (8, 142)]


def test_durations_and_funnel_match_the_reference(con):
    con.execute(f"DELETE FROM {SCHEMA}.events WHERE id = 'x2'")
    _write(con, None)
    got = con.execute(f"FROM {SCHEMA}.{DURATIONS_VIEW} ORDER BY ALL").fetchall()
    expected = stays([status_change(e) for e in EVENTS[:-1]], LEADS, set(LEADS))
    assert got == sorted(expected)
    assert [d[0] for d in con.execute(f"DESCRIBE {SCHEMA}.{DURATIONS_VIEW}").fetchall()] == [
        c.name for c in DURATION_COLUMNS
    ]

    funnel = con.execute(f"FROM {SCHEMA}.{FUNNEL_VIEW}").fetchall()
    described = con.execute(f"DESCRIBE {SCHEMA}.{FUNNEL_VIEW}").fetchall()
    assert [(d[0], d[1]) for d in described] == [(c.name, c.type) for c in FUNNEL_COLUMNS]
    by_stage = {
        row[2]: dict(zip([c.name for c in FUNNEL_COLUMNS], row, strict=True)) for row in funnel
    }
    assert list(by_stage) == [10, 20, 30, 142, 143]
    for status_id, row in by_stage.items():
        mine = [s for s in expected if s[2] == status_id]
        done = [s[5] for s in mine if s[5] is not None]
        assert row["leads_entered"] == len({s[0] for s in mine})
        assert row["leads_in_stage"] == sum(
            1 for x in LEADS.values() if x["status_id"] == status_id
        )
        assert row["median_seconds_in_stage"] == (statistics.median(done) if done else None)
        assert row["p90_seconds_in_stage"] == (float(np.percentile(done, 90)) if done else None)
    # Incoming: leads 1, 2, 3, 4 entered; 1, 2, 3 moved on to talks or beyond; 1 won, 2 lost.
    assert [by_stage[10][k] for k in ("next_status_id", "leads_to_next", "won", "lost")] == [
        20,
        3,
        1,
        1,
    ]
    assert by_stage[10]["conversion_to_next"] == 0.75
    # Talks: leads 1 and 2; only 1 went on (2 was lost).
    assert [by_stage[20][k] for k in ("leads_entered", "leads_to_next", "won", "lost")] == [
        2,
        1,
        1,
        1,
    ]
    assert by_stage[30]["next_status_id"] == 142 and by_stage[30]["leads_to_next"] == 1
    assert by_stage[142]["next_status_id"] is None and by_stage[142]["won"] == 1


def test_stage_views_exist_before_anything_is_extracted():
    con = duckdb.connect()
    create(con, "events", schema="kommo_x")
    replace_slice(
        con,
        CHANGES,
        schema="kommo_x",
        window=None,
        select_sql=status_changes_select_sql(schema="kommo_x", window=None),
        after=lambda c: rebuild_stage_views(c, schema="kommo_x"),
    )
    assert con.execute(f"SELECT count(*) FROM kommo_x.{FUNNEL_VIEW}").fetchone() == (0,)


def _base_tables(node: Any) -> Iterator[tuple[str, str]]:
    """``(schema, table)`` of every table a serialized statement names (a CTE's: no schema)."""
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE":
            yield node["schema_name"], node["table_name"]
        for value in node.values():
            yield from _base_tables(value)
    elif isinstance(node, list):
        for value in node:
            yield from _base_tables(value)


def _relations_read(view_sql: str, *, schema: str) -> set[str]:
    """The relations of ``schema`` a ``CREATE OR REPLACE VIEW ... AS`` query reads, as DuckDB
    parses it (its CTEs name no schema)."""
    header = re.search(r"CREATE OR REPLACE VIEW \S+ AS\s", view_sql)
    assert header is not None, view_sql
    query = view_sql[header.end() :]
    (serialized,) = duckdb.execute("SELECT json_serialize_sql(?)", [query]).fetchone() or ("",)
    parsed = json.loads(serialized)
    assert not parsed["error"], parsed
    return {table for named, table in _base_tables(parsed) if named == schema}


@pytest.mark.parametrize(
    ("view", "sql"), [(DURATIONS_VIEW, durations_view_sql), (FUNNEL_VIEW, funnel_view_sql)]
)
def test_a_stage_view_declares_exactly_the_relations_its_sql_reads(
    view: str, sql: Callable[..., str]
):
    read = _relations_read(sql(schema="kommo_x"), schema="kommo_x")
    assert read == set(DERIVED_VIEWS[view].inputs)
    # The parse sees the view's tables: the funnel reads the changes only through the stays.
    assert (STATUS_CHANGES in read) == (view == DURATIONS_VIEW)
