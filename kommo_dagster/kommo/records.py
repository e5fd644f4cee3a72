"""Raw API records to contract columns.

`to_columns` is on the hot path of every extraction, so it works column by column with
comprehensions and checks types per column with one ``set(map(type, ...))`` pass; the slow,
value-by-value path only runs when a column holds something unusual (to convert it or to say
exactly which record broke the contract).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import orjson

from kommo_dagster.kommo.errors import KommoContractError
from kommo_dagster.kommo.streams import Column, Stream, get_stream

_NONE = type(None)
_INT_OK = frozenset({int, _NONE})
_BOOL_OK = frozenset({bool, _NONE})
_STR_OK = frozenset({str, _NONE})


def _getter(source: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Any]:
    if len(source) == 1:
        key = source[0]
        return lambda r: r.get(key)
    first, rest = source[0], source[1:]

    def get(r: Mapping[str, Any]) -> Any:
        value = r.get(first)
        for key in rest:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return get


@cache
def _plan(stream_name: str) -> tuple[Stream, tuple[tuple[Column, Callable, str | None], ...]]:
    stream = get_stream(stream_name)
    plan = []
    for col in stream.columns:
        simple_key = col.source[0] if len(col.source) == 1 else None
        plan.append((col, _getter(col.source), simple_key))
    return stream, tuple(plan)


def _record_id(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else None


def _fail(stream: str, col: Column, records: Sequence[Any], index: int, value: Any, why: str):
    raise KommoContractError(
        f"{stream}.{col.name} ({col.type}) got {type(value).__name__} {value!r:.80} in the record "
        f"with id {_record_id(records[index])!r}: {why}"
    )


def _as_int(stream: str, col: Column, values: list, records: Sequence[Any]) -> list:
    out = []
    for i, v in enumerate(values):
        if v is None or type(v) is int:
            out.append(v)
        elif isinstance(v, bool):
            _fail(stream, col, records, i, v, "a boolean is not an integer")
        elif isinstance(v, int):
            out.append(int(v))
        elif isinstance(v, float):
            if v.is_integer():
                out.append(int(v))
            else:
                _fail(stream, col, records, i, v, "not an integral number")
        elif isinstance(v, str):
            try:
                out.append(int(v.strip()))
            except ValueError:
                _fail(stream, col, records, i, v, "not an integral number")
        else:
            _fail(stream, col, records, i, v, "expected an integer or null")
    return out


def _as_bool(stream: str, col: Column, values: list, records: Sequence[Any]) -> list:
    for i, v in enumerate(values):
        if v is not None and type(v) is not bool:
            _fail(stream, col, records, i, v, "expected true, false or null")
    return values


def _as_str(stream: str, col: Column, values: list, records: Sequence[Any]) -> list:
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            _fail(stream, col, records, i, v, "expected a string or null")
    return [None if v is None else str(v) for v in values]


def to_columns(stream: str, records: Iterable[Mapping[str, Any]]) -> dict[str, list]:
    """The contract columns of ``records``, in contract order, as plain Python lists.

    Integers are ``int`` (integral floats and numeric strings are converted, anything else is a
    `KommoContractError`), booleans ``bool``, strings ``str``; JSON columns hold the compact UTF-8
    JSON text of the value at the column's source path. Missing keys and nulls are ``None``.
    """
    if not isinstance(records, list | tuple):
        records = list(records)
    stream_def, plan = _plan(stream)
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise KommoContractError(
                f"{stream_def.name}: record {i} is a {type(r).__name__}, not a JSON object"
            )
    dumps = orjson.dumps
    out: dict[str, list] = {}
    for col, getter, key in plan:
        values = [r.get(key) for r in records] if key is not None else [getter(r) for r in records]
        if col.is_json:
            try:
                out[col.name] = [None if v is None else dumps(v).decode() for v in values]
            except TypeError as exc:
                raise KommoContractError(
                    f"{stream_def.name}.{col.name}: value cannot be written as JSON ({exc})"
                ) from None
            continue
        kinds = set(map(type, values))
        if col.type == "integer":
            out[col.name] = (
                values if kinds <= _INT_OK else _as_int(stream_def.name, col, values, records)
            )
        elif col.type == "boolean":
            out[col.name] = (
                values if kinds <= _BOOL_OK else _as_bool(stream_def.name, col, values, records)
            )
        else:
            out[col.name] = (
                values if kinds <= _STR_OK else _as_str(stream_def.name, col, values, records)
            )
    return out


__all__ = ["to_columns"]
