"""Wide views: column names, types and values, on real DuckDB tables built here."""

import json
from datetime import UTC, datetime

import duckdb
import pytest

from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, get_derived
from kommo_dagster.derived.long_values import values_select_sql
from kommo_dagster.derived.value_text import install_macros
from kommo_dagster.derived.wide import (
    FieldDefinition,
    assign_columns,
    duckdb_type,
    rebuild_wide_view,
    slug,
)
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.registry import refresh_after_write, refreshed_after
from kommo_dagster_tests.derived.tables import SCHEMA, insert

LEADS = CUSTOM_FIELD_ENTITIES[0]


def test_names_are_codes_or_slugs_with_the_field_id_on_a_clash():
    fields = [
        FieldDefinition(1, "Телефон", "PHONE", "multitext"),
        FieldDefinition(2, "Orçamento (R$)", None, "numeric"),
        FieldDefinition(3, "Notes", None, "textarea"),
        FieldDefinition(4, "notes", None, "text"),
        FieldDefinition(5, "Name", None, "text"),  # a stream column
        FieldDefinition(6, "📞", None, "text"),
        FieldDefinition(7, "  UTM  source 2 ", None, "text"),
    ]
    names = [c.name for c in assign_columns(fields, stream_columns=["id", "name"])]
    assert names == [
        "phone",
        "orçamento_r",
        "notes_3",
        "notes_4",
        "name_5",
        "field_6",
        "utm_source_2",
    ]
    assert slug("Data do contrato") == "data_do_contrato"


def test_a_suffixed_name_never_meets_another_field():
    fields = [
        FieldDefinition(7, "a", None, "text"),
        FieldDefinition(8, "a", None, "text"),
        FieldDefinition(9, "a_7", None, "text"),
    ]
    names = [c.name for c in assign_columns(fields, stream_columns=[])]
    # the two "a" clash and take their ids; the field named "a_7" by hand then meets one of
    # them and takes its own id as well
    assert names == ["a_7", "a_8", "a_7_9"]


@pytest.mark.parametrize(
    ("field_type", "expected"),
    [
        ("numeric", "DOUBLE"),
        ("price", "DOUBLE"),
        ("monetary", "DOUBLE"),
        ("checkbox", "BOOLEAN"),
        ("date", "TIMESTAMP WITH TIME ZONE"),
        ("date_time", "TIMESTAMP WITH TIME ZONE"),
        ("birthday", "TIMESTAMP WITH TIME ZONE"),
        ("multiselect", "VARCHAR[]"),
        ("multitext", "VARCHAR[]"),
        ("select", "VARCHAR"),
        ("url", "VARCHAR"),
        (None, "VARCHAR"),
    ],
)
def test_types_follow_the_field_type(field_type, expected):
    assert duckdb_type(field_type) == expected


DEFINITIONS = [
    (11, "Orçamento", None, "numeric", 1),
    (12, "Produtos", None, "multiselect", 2),
    (13, "VIP", None, "checkbox", 3),
    (14, "Data", None, "date", 4),
    (15, "Fonte", None, "select", 5),
    (16, "Notes", None, "text", 6),
    (17, "Notes", None, "textarea", 7),
    (18, "Never used", None, "text", 8),
]


def _cfv(*entries) -> str:
    return json.dumps(
        [
            {"field_id": f, "field_type": t, "values": [{"value": v} for v in vs]}
            for f, t, vs in entries
        ],
        ensure_ascii=False,
    )


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    install_macros(con)
    insert(
        con,
        "leads",
        [
            {
                "id": 1,
                "updated_at": 100,
                "name": "old",
                "custom_fields_values": _cfv((11, "numeric", ["1"])),
            },
            {
                "id": 1,
                "updated_at": 200,
                "name": "new",
                "custom_fields_values": _cfv(
                    (11, "numeric", ["1500.75"]),
                    (12, "multiselect", ["B", "A"]),
                    (13, "checkbox", [True]),
                    (14, "date", [1700000000]),
                    (15, "select", ["Сайт"]),
                    (16, "text", ["first"]),
                    (17, "textarea", ["second"]),
                ),
            },
            {"id": 2, "updated_at": 100, "name": "no fields"},
            {
                "id": 3,
                "updated_at": 100,
                "name": "odd",
                "custom_fields_values": _cfv(
                    (11, "numeric", ["n/a"]),
                    (14, "date", ["tomorrow"]),
                    (99, "text", ["undefined"]),
                ),
            },
            {
                "id": 4,
                "updated_at": 100,
                "name": "deleted",
                "is_deleted": True,
                "custom_fields_values": _cfv((16, "text", ["gone"])),
            },
        ],
    )
    values = get_derived(LEADS.values)
    replace_slice(
        con,
        values,
        schema=SCHEMA,
        window=None,
        select_sql=values_select_sql(LEADS, schema=SCHEMA, window=None),
    )
    return con


def _definitions(con):
    con.execute(
        f"CREATE TABLE {SCHEMA}.{LEADS.definitions} "
        "(id BIGINT, name VARCHAR, code VARCHAR, type VARCHAR, sort BIGINT)"
    )
    con.executemany(f"INSERT INTO {SCHEMA}.{LEADS.definitions} VALUES (?, ?, ?, ?, ?)", DEFINITIONS)


def test_one_row_per_live_record_one_typed_column_per_definition(con):
    _definitions(con)
    columns = rebuild_wide_view(con, LEADS, schema=SCHEMA)
    names = [c.name for c in columns]
    assert names == [
        "orçamento",
        "produtos",
        "vip",
        "data",
        "fonte",
        "notes_16",
        "notes_17",
        "never_used",
    ]
    described = con.execute(f"DESCRIBE {SCHEMA}.{LEADS.wide_view}").fetchall()
    stream_columns = list(get_stream("leads").column_names)
    assert [r[0] for r in described] == stream_columns + names
    assert [r[1] for r in described[len(stream_columns) :]] == [c.duckdb_type for c in columns]
    rows = con.execute(
        f"SELECT id, name, {', '.join(names)} FROM {SCHEMA}.{LEADS.wide_view} ORDER BY id"
    ).fetchall()
    assert rows == [
        (
            1,
            "new",
            1500.75,
            ["B", "A"],
            True,
            datetime.fromtimestamp(1700000000, UTC),
            "Сайт",
            "first",
            "second",
            None,
        ),
        (2, "no fields", None, None, None, None, None, None, None, None),
        (3, "odd", None, None, None, None, None, None, None, None),
    ]


def test_without_definitions_the_columns_come_from_the_values(con):
    columns = rebuild_wide_view(con, LEADS, schema=SCHEMA)
    assert [c.field.id for c in columns] == [11, 12, 13, 14, 15, 16, 17, 99]
    (value,) = con.execute(
        f"SELECT field_99 FROM {SCHEMA}.{LEADS.wide_view} WHERE id = 3"
    ).fetchone()
    assert value == "undefined"


def test_the_view_exists_before_anything_is_extracted():
    con = duckdb.connect()
    assert rebuild_wide_view(con, LEADS, schema="kommo_other") == []
    assert con.execute("SELECT count(*) FROM kommo_other.leads_wide").fetchone() == (0,)


def test_a_definitions_write_rebuilds_the_view_with_the_new_fields(con):
    _definitions(con)
    rebuild_wide_view(con, LEADS, schema=SCHEMA)
    con.execute(f"INSERT INTO {SCHEMA}.{LEADS.definitions} VALUES (19, 'Cidade', NULL, 'text', 9)")
    # A write of the stream changes rows, not columns: the view is not rebuilt for it.
    assert LEADS.wide_view not in [t.name for t in refreshed_after("leads")]
    columns = refresh_after_write(con, LEADS.definitions, schema=SCHEMA)[LEADS.wide_view]
    assert columns is not None and list(columns)[-1] == "cidade"
    described = con.execute(f"DESCRIBE {SCHEMA}.{LEADS.wide_view}").fetchall()
    assert described[-1][0] == "cidade"
