"""to_columns: contract order and types, JSON text, NULLs, and clear contract errors."""

from __future__ import annotations

import orjson
import pytest

from kommo_dagster.kommo import KommoContractError
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.streams import STREAMS


def lead(**overrides):
    rec = {
        "id": 7,
        "name": "Лид «A»",
        "price": 1500,
        "responsible_user_id": 3,
        "group_id": 0,
        "status_id": 142,
        "pipeline_id": 5,
        "loss_reason_id": None,
        "created_by": 3,
        "updated_by": 3,
        "created_at": 1_790_000_000,
        "updated_at": 1_790_000_100,
        "closed_at": None,
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": [
            {"field_id": 1, "field_name": "Ñ", "values": [{"value": True}, {"value": 1.5}]}
        ],
        "score": None,
        "account_id": 99,
        "labor_cost": None,
        "is_price_computed": False,
        "source_id": 12,
        "is_price_modified_by_robot": True,
        "_embedded": {"tags": [{"id": 1, "name": "vip", "color": None}]},
    }
    rec.update(overrides)
    return rec


@pytest.mark.parametrize("name", list(STREAMS))
def test_columns_follow_the_contract_order_even_for_no_records(name):
    assert list(to_columns(name, [])) == list(STREAMS[name].column_names)


def test_values_keep_their_types_and_json_columns_are_compact_utf8_text():
    cols = to_columns("leads", [lead()])
    assert cols["id"] == [7] and type(cols["id"][0]) is int
    assert cols["name"] == ["Лид «A»"]
    assert cols["is_deleted"] == [False] and cols["is_price_modified_by_robot"] == [True]
    assert cols["loss_reason_id"] == [None]
    assert cols["tags"] == ['[{"id":1,"name":"vip","color":null}]']
    text = cols["custom_fields_values"][0]
    assert "Ñ" in text and " " not in text
    assert orjson.loads(text) == lead()["custom_fields_values"]


def test_missing_keys_and_nulls_are_null():
    rec = lead(custom_fields_values=None)
    del rec["source_id"], rec["_embedded"], rec["score"]
    cols = to_columns("leads", [rec])
    assert cols["custom_fields_values"] == [None]
    assert cols["source_id"] == [None] and cols["score"] == [None] and cols["tags"] == [None]


def test_an_empty_list_is_json_not_null():
    cols = to_columns("leads", [lead(_embedded={"tags": []})])
    assert cols["tags"] == ["[]"]


def test_task_result_reads_the_text_of_an_object_and_null_for_kommos_empty_list():
    base = {"id": 1, "updated_at": 5, "entity_type": "leads", "is_completed": True}
    cols = to_columns(
        "tasks", [{**base, "result": []}, {**base, "id": 2, "result": {"text": "ok"}}]
    )
    assert cols["result"] == [None, "ok"]


def test_integral_floats_and_numeric_strings_become_ints():
    cols = to_columns("leads", [lead(price=1500.0, score="42")])
    assert cols["price"] == [1500] and type(cols["price"][0]) is int
    assert cols["score"] == [42]


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("price", 10.5, "not an integral number"),
        ("price", "ten", "not an integral number"),
        ("price", "1_000", "not an integral number"),
        ("price", "\u0663", "not an integral number"),
        ("price", "1e3", "not an integral number"),
        ("price", "9" * 5000, "too many digits for BIGINT"),  # beyond int()'s own limit
        ("price", 2.0**53, "may have lost digits"),
        ("price", -1e20, "may have lost digits"),
        ("price", True, "a boolean is not an integer"),
        ("price", [1], "expected an integer"),
        ("is_deleted", 1, "expected true, false or null"),
        ("is_deleted", "false", "expected true, false or null"),
        ("name", 12, "expected a string"),
        ("name", {"a": 1}, "expected a string"),
    ],
)
def test_values_that_break_the_contract_are_refused_clearly(field, value, why):
    with pytest.raises(KommoContractError, match=why) as err:
        to_columns("leads", [lead(), lead(id=8, **{field: value})])
    assert f"leads.{field}" in str(err.value) and "id 8" in str(err.value)


def test_a_record_that_is_not_an_object_is_refused():
    with pytest.raises(KommoContractError, match="not a JSON object"):
        to_columns("leads", [lead(), ["not", "a", "record"]])


def test_events_keep_string_ids_and_json_values():
    ev = {
        "id": "01jabc",
        "type": "lead_status_changed",
        "entity_id": 5,
        "entity_type": "lead",
        "created_by": 0,
        "created_at": 10,
        "value_after": [{"lead_status": {"id": 142, "pipeline_id": 5}}],
        "value_before": [],
        "account_id": 1,
    }
    cols = to_columns("events", [ev])
    assert cols["id"] == ["01jabc"]
    assert cols["value_after"] == ['[{"lead_status":{"id":142,"pipeline_id":5}}]']
    assert cols["value_before"] == ["[]"]
