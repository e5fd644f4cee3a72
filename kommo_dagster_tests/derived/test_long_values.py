"""Custom-field values unnested in DuckDB, compared with the Python reading of the rules."""

import json

import duckdb
import pytest

from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, get_derived
from kommo_dagster.derived.long_values import skipped_versions_sql, values_select_sql
from kommo_dagster.derived.value_text import install_macros
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.derived.reference import long_rows
from kommo_dagster_tests.derived.tables import SCHEMA, insert

LEADS = CUSTOM_FIELD_ENTITIES[0]
VALUES = get_derived(LEADS.values)

ODD = [
    {
        "field_id": 1,
        "field_name": "Orçamento",
        "field_code": None,
        "field_type": "numeric",
        "values": [{"value": 1500.0}],
    },
    {
        "field_id": 2,
        "field_name": "Produtos",
        "field_code": None,
        "field_type": "multiselect",
        "values": [{"value": "CRM", "enum_id": 21}, {"value": "Обучение", "enum_id": "23"}],
    },
    {
        "field_id": 3,
        "field_name": "Телефон",
        "field_code": "PHONE",
        "field_type": "multitext",
        "values": [{"value": "+55 11", "enum_id": 31, "enum_code": "WORK"}],
    },
    {"field_id": 4, "field_name": "empty list", "values": []},
    {"field_id": 5, "field_name": "no values key"},
    "not an object",
    {"field_id": "x", "values": [{"value": 1}]},
    {
        "field_id": 6,
        "field_name": "odd",
        "field_type": "text",
        "values": ["bare", None, {"value": "null"}, {"value": True}, {"value": {"a": 1}}, {}],
    },
    {"field_id": 1, "field_name": "listed twice", "values": [{"value": 9}]},
    {"field_id": 7, "field_name": "VIP", "field_type": "checkbox", "values": [{"value": False}]},
    {"field_id": 8, "field_name": "Data", "field_type": "date", "values": [{"value": 1700000000}]},
    # Ids that are no integer: DuckDB's cast rounded 23.7 to field 24 and read '1e3' as 1000.
    {"field_id": 23.7, "field_name": "fraction", "values": [{"value": 1}]},
    {"field_id": "1e3", "field_name": "exponent", "values": [{"value": 1}]},
    {"field_id": " 9 ", "field_name": "as text", "values": [{"value": "a", "enum_id": 2.5}]},
    # ...and ids the extracted tables' integer columns read as integers: 10.0 and "+11".
    {"field_id": 10.0, "field_name": "integral", "values": [{"value": "b", "enum_id": 3.0}]},
    {"field_id": "+11", "field_name": "signed", "values": [{"value": "c", "enum_id": " -4 "}]},
    {"field_id": 2.0**53, "field_name": "too large to trust", "values": [{"value": 1}]},
]


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    install_macros(con)
    return con


def _lead(id: int, updated_at: int, cfv) -> dict:
    text = cfv if isinstance(cfv, str) or cfv is None else json.dumps(cfv, ensure_ascii=False)
    return {"id": id, "updated_at": updated_at, "custom_fields_values": text}


def _rows(con, window=None) -> list[tuple]:
    sql = values_select_sql(LEADS, schema=SCHEMA, window=window)
    return sorted(con.execute(sql).fetchall(), key=lambda r: (*r[:3], r[6]))


def test_every_value_of_every_version_matches_the_reference(con):
    leads = [
        _lead(1, 100, ODD),
        _lead(1, 200, ODD[:2]),  # a second version of the same lead
        _lead(2, 100, None),
        _lead(3, 100, "not json"),
        _lead(4, 100, '{"an": "object"}'),
        _lead(5, 100, "null"),
    ]
    insert(con, "leads", leads)
    expected = []
    for lead in leads:
        text = lead["custom_fields_values"]
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        expected += long_rows(lead["id"], lead["updated_at"], parsed)
    assert _rows(con) == sorted(expected, key=lambda r: (*r[:3], r[6]))
    assert con.execute(skipped_versions_sql(LEADS, schema=SCHEMA, window=None)).fetchone() == (3,)


def test_a_version_stored_twice_counts_once_and_only_its_window_is_read(con):
    insert(con, "leads", [_lead(1, 100, ODD[:1]), _lead(1, 100, ODD[:1]), _lead(2, 250, ODD[:1])])
    rows = _rows(con, EpochWindow(0, 200))
    assert [(r[0], r[1], r[2], r[7]) for r in rows] == [(1, 100, 1, "1500")]


def test_a_rerun_replaces_its_slice_and_keeps_the_others(con):
    insert(con, "leads", [_lead(1, 100, ODD[:2]), _lead(2, 250, ODD[:1])])
    first, second = EpochWindow(0, 200), EpochWindow(200, 300)
    for window in (first, second, first, first):
        result = replace_slice(
            con,
            VALUES,
            schema=SCHEMA,
            window=window,
            select_sql=values_select_sql(LEADS, schema=SCHEMA, window=window),
        )
    assert (result.rows, result.deleted, result.table_rows) == (3, 3, 4)
    keys = con.execute(
        "SELECT count(*), count(DISTINCT (entity_id, updated_at, field_id, value_index)) "
        f"FROM {SCHEMA}.{VALUES.name}"
    ).fetchone()
    assert keys == (4, 4)


def test_a_failed_write_leaves_the_previous_rows(con):
    insert(con, "leads", [_lead(1, 100, ODD[:2])])
    window = EpochWindow(0, 200)
    select = values_select_sql(LEADS, schema=SCHEMA, window=window)
    replace_slice(con, VALUES, schema=SCHEMA, window=window, select_sql=select)
    before = con.execute(f"FROM {SCHEMA}.{VALUES.name} ORDER BY ALL").fetchall()
    con.execute(f"UPDATE {SCHEMA}.leads SET custom_fields_values = NULL")

    def fail(_con):
        raise RuntimeError("the views could not be rebuilt")

    with pytest.raises(RuntimeError, match="views"):
        replace_slice(con, VALUES, schema=SCHEMA, window=window, select_sql=select, after=fail)
    assert con.execute(f"FROM {SCHEMA}.{VALUES.name} ORDER BY ALL").fetchall() == before
    assert len(before) == 3
