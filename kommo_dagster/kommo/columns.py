"""Pages of records as contract columns, gathered into Arrow tables typed by the contract.

`KommoClient.iter_batches` gathers pages into Arrow tables with these: a typed page
(`kommo_dagster.kommo.decoding`) is transposed into columns with its JSON values as the UTF-8
bytes Kommo sent (Arrow checks them and takes them as text: no Python string per value); a page
of dicts follows the general rules of `kommo_dagster.kommo.records` first. DuckDB scans Arrow
tables without converting a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pyarrow as pa

from kommo_dagster.kommo.decoding import TypedRecord, typed_to_columns
from kommo_dagster.kommo.errors import KommoContractError
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.streams import Column, Stream, get_stream

ARROW_TYPES: Mapping[str, pa.DataType] = {
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "number": pa.float64(),
}

# What Arrow raises for a value its column's type cannot hold.
_MISFITS = (pa.ArrowException, OverflowError, TypeError)


@cache
def arrow_schema(stream: Stream) -> pa.Schema:
    """The contract's columns as an Arrow schema (every column nullable)."""
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in stream.columns])


def page_columns(stream: str, records: Sequence[Any]) -> dict[str, list]:
    """One page of records (typed or dicts) as contract columns, JSON columns as UTF-8 bytes."""
    if records and isinstance(records[0], TypedRecord):
        return typed_to_columns(stream, records, json_bytes=True)
    columns = to_columns(stream, records)
    for col in get_stream(stream).columns:
        if col.is_json:
            columns[col.name] = [None if v is None else v.encode() for v in columns[col.name]]
    return columns


def columns_table(
    stream: str, columns: Mapping[str, Sequence[Any]], *, json_bytes: bool = False
) -> pa.Table:
    """Contract columns (`to_columns`) as a table; with ``json_bytes`` the JSON columns hold
    UTF-8 bytes, which Arrow checks and takes as text without a Python string per value."""
    spec = get_stream(stream)
    schema = arrow_schema(spec)
    arrays = []
    for col, field in zip(spec.columns, schema, strict=True):
        as_bytes = json_bytes and col.is_json
        try:
            arrays.append(_array(columns[field.name], field.type, as_bytes=as_bytes))
        except _MISFITS as exc:
            raise KommoContractError(_misfit(spec, columns, col, exc, as_bytes=as_bytes)) from None
    return pa.Table.from_arrays(arrays, schema=schema)


def _array(values: Sequence[Any], arrow_type: pa.DataType, *, as_bytes: bool) -> pa.Array:
    if as_bytes:
        return pa.array(values, pa.binary()).cast(pa.string())
    return pa.array(values, arrow_type)


def _misfit(
    spec: Stream,
    columns: Mapping[str, Sequence[Any]],
    col: Column,
    exc: Exception,
    *,
    as_bytes: bool,
) -> str:
    """What a column Arrow refused holds: the first value that does not fit (an integer past
    int64, bytes that are not UTF-8) and the key of its record, found again value by value,
    which only a failing batch pays for."""
    arrow_type = ARROW_TYPES[col.type]
    for i, value in enumerate(columns[col.name]):
        try:
            _array([value], arrow_type, as_bytes=as_bytes)
        except _MISFITS as one:
            key = ", ".join(f"{k} {columns[k][i]!r}" for k in spec.key)
            return (
                f"{spec.name}.{col.name} ({col.type}) got {type(value).__name__} {value!r:.80} "
                f"in the record with {key}: it does not fit the column's type ({one})"
            )
    return f"{spec.name}.{col.name}: a value does not fit the column's type ({exc})"


class ColumnBatch:
    """Pages of columns (`page_columns`) gathered into one Arrow table: building arrays costs
    per call as well as per value, so they are built for thousands of rows at once."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._columns: dict[str, list] = self._empty()

    @property
    def rows(self) -> int:
        return len(next(iter(self._columns.values()), ()))

    def _empty(self) -> dict[str, list]:
        return {name: [] for name in get_stream(self.stream).column_names}

    def extend(self, page: Mapping[str, list]) -> None:
        """Append one page's columns (each of the contract's, all of one length)."""
        for name, column in self._columns.items():
            column.extend(page[name])

    def take(self) -> pa.Table:
        """The gathered rows as a table; the batch starts empty again."""
        table = columns_table(self.stream, self._columns, json_bytes=True)
        self._columns = self._empty()
        return table


__all__ = ["ARROW_TYPES", "ColumnBatch", "arrow_schema", "columns_table", "page_columns"]
