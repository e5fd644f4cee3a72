"""One integer rule: what an extracted integer column takes, a derived table's JSON id takes."""

from __future__ import annotations

import sys

import duckdb
import orjson
import pytest

from kommo_dagster.derived.json_values import json_integer
from kommo_dagster.kommo import KommoContractError
from kommo_dagster.kommo.integers import PADDING
from kommo_dagster.kommo.records import to_columns

ODD = [
    12,
    -12,
    12.0,
    12.5,
    2.0**53,
    True,
    "12",
    " +12 ",
    "-0",
    "1e3",
    "12abc",
    "1 2",
    "",
    "1_000",
    "٣",  # another script's digit
    "\u200b12",  # a zero-width space is no white space
    *(f"{c}12{c}" for c in PADDING),
]


def test_padding_is_what_str_strip_removes():
    assert set(PADDING) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}


@pytest.mark.parametrize("value", ODD, ids=repr)
def test_a_derived_json_id_reads_what_an_extracted_integer_column_reads(value):
    try:
        extracted = to_columns("pipelines", [{"id": value}])["id"][0]
    except KommoContractError:
        extracted = None
    served = orjson.dumps(value).decode()
    derived = duckdb.connect().execute(f"SELECT {json_integer('$1::JSON')}", [served]).fetchone()
    assert derived == (extracted,)
