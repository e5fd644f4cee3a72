"""Ground truth rows: contract columns and types, read independently of the client."""

from __future__ import annotations

import json

import pytest

from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.sandbox import ChurnConfig
from kommo_dagster.sandbox.truth import to_row

_TYPES = {"integer": int, "string": str, "boolean": bool}


@pytest.mark.parametrize("stream", STREAMS)
def test_rows_have_the_contract_columns_in_order_with_contract_types(sandbox, stream):
    rows = sandbox.expected_rows(stream)
    assert rows
    columns = STREAMS[stream].columns
    for row in rows:
        assert list(row) == [c.name for c in columns]
        for col in columns:
            value = row[col.name]
            assert value is None or type(value) is _TYPES[col.type], (stream, col.name)


@pytest.mark.parametrize("stream", STREAMS)
def test_every_column_holds_a_value_somewhere(sandbox, stream):
    rows = sandbox.expected_rows(stream)
    for col in STREAMS[stream].columns:
        assert any(r[col.name] is not None for r in rows), (stream, col.name)


def test_json_columns_are_compact_utf8_json_of_the_served_value(sandbox):
    records = {r["id"]: r for r in sandbox.records("leads")}
    for row in sandbox.expected_rows("leads"):
        rec = records[row["id"]]
        assert row["tags"] == json.dumps(
            rec["_embedded"]["tags"], ensure_ascii=False, separators=(",", ":")
        )
        cfv = rec["custom_fields_values"]
        assert row["custom_fields_values"] == (
            None if cfv is None else json.dumps(cfv, ensure_ascii=False, separators=(",", ":"))
        )
    assert any("Опт" in (r["custom_fields_values"] or "") for r in sandbox.expected_rows("leads"))
    events = sandbox.expected_rows("events")
    assert {e["value_before"] for e in events} >= {"[]"}


def test_leads_rows_include_the_with_fields_and_the_deleted_leads(sandbox):
    rows = sandbox.expected_rows("leads")
    assert any(r["is_deleted"] for r in rows) and any(not r["is_deleted"] for r in rows)
    live = [r for r in rows if not r["is_deleted"]]
    assert {type(r["is_price_modified_by_robot"]) for r in live} == {bool}
    assert {type(r["source_id"]) for r in live} == {int, type(None)}
    # with=only_deleted shows a deleted lead's id, last change and is_deleted, the rest null.
    trashed = [r for r in rows if r["is_deleted"]]
    assert all(r["is_price_modified_by_robot"] is None and r["name"] is None for r in trashed)
    assert all(isinstance(r["updated_at"], int) for r in trashed)


def test_task_result_is_the_text_or_null(sandbox):
    records = {r["id"]: r for r in sandbox.records("tasks")}
    for row in sandbox.expected_rows("tasks"):
        result = records[row["id"]]["result"]
        assert row["result"] == (result["text"] if result else None)
    assert "" in {r["result"] for r in sandbox.expected_rows("tasks")}


def test_statuses_are_one_row_per_pipeline_and_status(sandbox):
    rows = sandbox.expected_rows("statuses")
    keys = [(r["pipeline_id"], r["id"]) for r in rows]
    assert len(keys) == len(set(keys))
    pipelines = {p["id"] for p in sandbox.expected_rows("pipelines")}
    assert {(p, 142) for p in pipelines} <= set(keys)
    assert {(p, 143) for p in pipelines} <= set(keys)


def test_truth_follows_the_churned_state(sandbox_factory):
    sb = sandbox_factory(
        leads=60, requests_per_second=None, churn=ChurnConfig(updates=2, creates=1, deletes=1)
    )
    before = {r["id"]: r for r in sb.expected_rows("leads")}
    sb.churn_step()
    after = {r["id"]: r for r in sb.expected_rows("leads")}
    assert len(after) == len(before) + 1
    assert sum(after[i] != before[i] for i in before) == 3
    assert sum(after[i]["is_deleted"] and not before[i]["is_deleted"] for i in before) == 1


def test_a_value_of_the_wrong_type_is_refused():
    with pytest.raises(TypeError, match=r"users\.id should be integer"):
        to_row("users", {"id": "7", "name": "x", "email": "e", "lang": "en", "rights": {}})
