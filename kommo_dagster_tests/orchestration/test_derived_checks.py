"""The derived checks on DuckDB tables built here: each passes on good rows and fails on bad."""

import duckdb

from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, get_derived
from kommo_dagster.derived.stages import DURATIONS_VIEW
from kommo_dagster.derived.write import ensure_table
from kommo_dagster.orchestration.derived_checks import (
    FIELD_IDS_DEFINED,
    NO_DUPLICATE_KEYS,
    evaluate_table,
    no_negative_durations,
)
from kommo_dagster_tests.derived.tables import SCHEMA

ENTITY = CUSTOM_FIELD_ENTITIES[1]
VALUES = get_derived(ENTITY.values)


def _values(con: duckdb.DuckDBPyConnection, *rows: tuple) -> None:
    ensure_table(con, VALUES, schema=SCHEMA)
    for row in rows:
        con.execute(
            f"INSERT INTO {SCHEMA}.{VALUES.name} (entity_id, updated_at, field_id, value_index) "
            "VALUES (?, ?, ?, ?)",
            list(row),
        )


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


def test_a_stay_ending_before_it_starts_is_reported():
    con = duckdb.connect()
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    assert not no_negative_durations(con, schema=SCHEMA).passed  # no view yet
    con.execute(
        f"CREATE VIEW {SCHEMA}.{DURATIONS_VIEW} AS SELECT * FROM (VALUES "
        "(1, 7, 10, 100, 200, 100), (2, 7, 10, 300, 250, -50)) "
        "AS t(lead_id, pipeline_id, status_id, entered_at, left_at, seconds_in_stage)"
    )
    outcome = no_negative_durations(con, schema=SCHEMA)
    assert not outcome.passed and outcome.metadata["negative_stays"] == 1
