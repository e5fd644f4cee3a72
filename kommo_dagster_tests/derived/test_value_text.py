"""The value-text macros against the Python reading of the rule, on a real DuckDB."""

import json
import random

import duckdb
import pytest

from kommo_dagster.derived.value_text import VALUE_TEXT_MACRO, install_macros
from kommo_dagster_tests.derived.reference import value_text


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    install_macros(con)
    return con


def _texts(con: duckdb.DuckDBPyConnection, values: list) -> list[str | None]:
    con.execute("CREATE OR REPLACE TABLE doc (i INTEGER, j VARCHAR)")
    con.executemany(
        "INSERT INTO doc VALUES (?, ?)",
        [[i, json.dumps({"value": v}, ensure_ascii=False)] for i, v in enumerate(values)],
    )
    rows = con.execute(
        f"SELECT {VALUE_TEXT_MACRO}(json_extract(j, '$.value')) FROM doc ORDER BY i"
    ).fetchall()
    return [r[0] for r in rows]


def test_each_json_type_has_its_text_form(con):
    values = [
        "1500.75",
        "null",
        "",
        "é 📞",
        1500,
        -3,
        0,
        1500.0,
        1500.75,
        1e20,
        1e-7,
        -2.5e-5,
        -0.0,
        True,
        False,
        None,
        [],
        {"a": "b"},
        1700000000.0,
    ]
    expected = [
        "1500.75",
        "null",
        "",
        "é 📞",
        "1500",
        "-3",
        "0",
        "1500",
        "1500.75",
        "100000000000000000000",
        "0.0000001",
        "-0.000025",
        "0",
        "true",
        "false",
        None,
        "[]",
        '{"a":"b"}',
        "1700000000",
    ]
    assert _texts(con, values) == expected
    assert [value_text(v) for v in values] == expected


def test_random_numbers_match_the_reference(con):
    rng = random.Random(11)
    values = [rng.uniform(-1e6, 1e6) for _ in range(2000)]
    values += [rng.random() * 10 ** rng.randint(-25, 25) for _ in range(2000)]
    values += [float(rng.randint(-(10**15), 10**15)) for _ in range(500)]
    values += [rng.randint(-(2**63), 2**63 - 1) for _ in range(500)]
    assert _texts(con, values) == [value_text(v) for v in values]
