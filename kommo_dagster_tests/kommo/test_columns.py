"""Page columns and their Arrow batches: contract schema, JSON bytes taken as text, clear errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kommo_dagster.kommo import KommoContractError
from kommo_dagster.kommo.columns import ColumnBatch, arrow_schema, columns_table, page_columns
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster_tests.kommo.test_records import lead

LEADS = get_stream("leads")


def test_dict_pages_give_json_columns_as_utf8_bytes():
    columns = page_columns("leads", [lead()])
    general = to_columns("leads", [lead()])
    assert columns["custom_fields_values"] == [general["custom_fields_values"][0].encode()]
    assert {k: v for k, v in columns.items() if k not in ("custom_fields_values", "tags")} == {
        k: v for k, v in general.items() if k not in ("custom_fields_values", "tags")
    }


def test_a_batch_is_one_table_with_the_contract_schema_and_the_pages_values():
    batch = ColumnBatch("leads")
    pages = [[lead(id=1)], [lead(id=2, name=None, score=None), lead(id=3, _embedded=None)]]
    for page in pages:
        batch.extend(page_columns("leads", page))
    assert batch.rows == 3
    table = batch.take()
    assert batch.rows == 0 and table.schema == arrow_schema(LEADS)
    expected = to_columns("leads", [r for page in pages for r in page])
    assert table.to_pydict() == expected


def test_values_that_do_not_fit_the_column_fail_naming_it():
    columns = to_columns("leads", [lead()])
    with pytest.raises(KommoContractError, match=r"leads\.price"):
        columns_table("leads", columns | {"price": [2**63]})
    with pytest.raises(KommoContractError, match=r"leads\.custom_fields_values"):
        columns_table("leads", columns | {"custom_fields_values": [b'["\xff"]']}, json_bytes=True)


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("price", 2**63, "int 9223372036854775808"),
        ("closed_at", -(2**63) - 1, "int -9223372036854775809"),
        ("custom_fields_values", b'["\xff"]', "bytes b'[\"\\xff\"]'"),
    ],
)
def test_a_value_that_does_not_fit_is_named_with_its_record(column, value, shown):
    columns = page_columns("leads", [lead(), lead(id=8)])
    columns[column][1] = value
    with pytest.raises(KommoContractError) as err:
        columns_table("leads", columns, json_bytes=True)
    message = str(err.value)
    assert message.startswith(f"leads.{column} (")
    assert shown in message and "record with id 8, updated_at 1790000100" in message


def test_an_empty_batch_is_an_empty_table_with_the_schema():
    table = ColumnBatch("events").take()
    assert table.num_rows == 0 and table.schema == arrow_schema(get_stream("events"))
    assert isinstance(table, pa.Table)
