"""The derived checks on DuckDB tables built here: each passes on good rows and fails on bad."""

import dagster as dg
import duckdb

from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, get_derived
from kommo_dagster.derived.stages import DURATIONS_VIEW
from kommo_dagster.derived.write import ensure_table
from kommo_dagster.orchestration.derived_checks import (
    FIELD_IDS_DEFINED,
    NO_DUPLICATE_KEYS,
    NO_NEGATIVE_RESPONSE_SECONDS,
    evaluate_table,
    no_negative_durations,
    unanswered_over_24_hours,
)
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster.warehouse.tables import Table
from kommo_dagster_tests.derived.tables import SCHEMA

ENTITY = CUSTOM_FIELD_ENTITIES[1]
VALUES = get_derived(ENTITY.values)


def _insert(con: duckdb.DuckDBPyConnection, table: Table, columns: str, rows: tuple) -> None:
    """Rows of ``columns`` into ``table``, created from its declaration if missing."""
    ensure_table(con, table, schema=SCHEMA)
    marks = ", ".join("?" * len(columns.split(",")))
    for row in rows:
        con.execute(f"INSERT INTO {SCHEMA}.{table.name} ({columns}) VALUES ({marks})", list(row))


def _values(con: duckdb.DuckDBPyConnection, *rows: tuple) -> None:
    _insert(con, VALUES, "entity_id, updated_at, field_id, value_index", rows)


def test_duplicate_keys_and_undefined_fields_are_reported():
    con = duckdb.connect()
    _values(con, (1, 100, 7, 0), (1, 100, 7, 1), (2, 100, 8, 0))
    outcomes = evaluate_table(con, VALUES, schema=SCHEMA)
    assert outcomes[NO_DUPLICATE_KEYS].passed
    # no definitions extracted: the warning says it could not look
    assert not outcomes[FIELD_IDS_DEFINED].passed
    assert "does not exist" in outcomes[FIELD_IDS_DEFINED].description

    con.execute(f"CREATE TABLE {SCHEMA}.{ENTITY.definitions} (id BIGINT)")
    con.execute(f"INSERT INTO {SCHEMA}.{ENTITY.definitions} VALUES (7)")
    _values(con, (1, 100, 7, 1))
    outcomes = evaluate_table(con, VALUES, schema=SCHEMA)
    assert not outcomes[NO_DUPLICATE_KEYS].passed
    assert outcomes[NO_DUPLICATE_KEYS].metadata["duplicate_keys"] == 1
    assert not outcomes[FIELD_IDS_DEFINED].passed
    assert outcomes[FIELD_IDS_DEFINED].metadata["sample"] == [8]
    # once field 8 is defined too, every value names a definition: the check passes
    con.execute(f"INSERT INTO {SCHEMA}.{ENTITY.definitions} VALUES (8)")
    outcome = evaluate_table(con, VALUES, schema=SCHEMA)[FIELD_IDS_DEFINED]
    assert outcome.passed and outcome.metadata["undefined_fields"] == 0


def test_a_stay_ending_before_it_starts_is_reported():
    con = duckdb.connect()
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    assert not no_negative_durations(con, schema=SCHEMA).passed  # no view yet
    # stays that end after they start (or have not ended) pass
    con.execute(
        f"CREATE VIEW {SCHEMA}.{DURATIONS_VIEW} AS SELECT * FROM (VALUES "
        "(1, 7, 10, 100, 200, 100), (2, 7, 10, 300, NULL, NULL)) "
        "AS t(lead_id, pipeline_id, status_id, entered_at, left_at, seconds_in_stage)"
    )
    assert no_negative_durations(con, schema=SCHEMA).passed
    con.execute(
        f"CREATE OR REPLACE VIEW {SCHEMA}.{DURATIONS_VIEW} AS SELECT * FROM (VALUES "
        "(1, 7, 10, 100, 200, 100), (2, 7, 10, 300, 250, -50)) "
        "AS t(lead_id, pipeline_id, status_id, entered_at, left_at, seconds_in_stage)"
    )
    outcome = no_negative_durations(con, schema=SCHEMA)
    assert not outcome.passed and outcome.metadata["negative_stays"] == 1


RUNS = get_table("chat_response_times")
NOW = 1_800_000_000
HOUR = 3600


def _runs(con: duckdb.DuckDBPyConnection, *rows: tuple) -> None:
    columns = "entity_type, entity_id, first_message_id, first_message_at, replied_at, "
    _insert(con, RUNS, columns + "response_seconds", rows)


def test_a_reply_before_its_first_message_is_reported():
    con = duckdb.connect()
    _runs(con, ("lead", 1, "a", NOW - 100, NOW - 40, 60), ("lead", 2, "b", NOW - 50, None, None))
    assert evaluate_table(con, RUNS, schema=SCHEMA)[NO_NEGATIVE_RESPONSE_SECONDS].passed
    _runs(con, ("contact", 3, "c", NOW - 30, NOW - 90, -60))
    outcome = evaluate_table(con, RUNS, schema=SCHEMA)[NO_NEGATIVE_RESPONSE_SECONDS]
    assert not outcome.passed
    assert outcome.metadata == {"negative_runs": 1, "sample": ["('c', -60)"]}


def test_only_runs_unanswered_for_more_than_a_day_warn():
    con = duckdb.connect()
    _runs(
        con,
        ("lead", 1, "answered", NOW - 50 * HOUR, NOW - 49 * HOUR, HOUR),
        ("lead", 2, "recent", NOW - 23 * HOUR, None, None),
    )
    outcome = unanswered_over_24_hours(con, RUNS, schema=SCHEMA, now=NOW)
    assert outcome.passed and outcome.metadata == {"unanswered_runs_over_24_hours": 0}
    _runs(
        con,
        ("contact", 3, "older", NOW - 30 * HOUR, None, None),
        ("lead", 4, "oldest", NOW - 40 * HOUR, None, None),
    )
    outcome = unanswered_over_24_hours(con, RUNS, schema=SCHEMA, now=NOW)
    assert not outcome.passed
    assert outcome.metadata == {
        "unanswered_runs_over_24_hours": 2,
        "oldest_first_message_id": "oldest",
        # A timestamp, shown as a date in the UI, not Unix seconds.
        "oldest_first_message_at": dg.MetadataValue.timestamp(float(NOW - 40 * HOUR)),
        "oldest_entity": "lead 4",
    }
