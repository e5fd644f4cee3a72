"""Rows in tests: synthetic contract rows for the DuckDB layer (typed, with NULLs), and rows made
comparable with their exact types."""

from __future__ import annotations

import json
from typing import Any

import orjson

from kommo_dagster.kommo.streams import STREAMS, Stream


def synthetic_columns(
    stream: Stream, n: int, *, cursor_start: int = 1_790_000_000, step: int = 60, first_id: int = 1
) -> dict[str, list[Any]]:
    """``n`` rows of ``stream`` as contract columns; the cursor starts at ``cursor_start``.

    Every third row has NULL in each nullable-looking column, so NULL handling is exercised for
    every type.
    """
    columns: dict[str, list[Any]] = {}
    for column in stream.columns:
        values: list[Any] = []
        for i in range(n):
            if column.name in ("id", *stream.key) and column.name != stream.cursor:
                value: Any = first_id + i if column.type == "integer" else f"ev{first_id + i:08d}"
            elif column.name == stream.cursor:
                value = cursor_start + i * step
            elif i % 3 == 2:
                value = None
            elif column.is_json:
                value = orjson.dumps([{"id": i, "name": f"tag ü {i}"}]).decode()
            elif column.type == "integer":
                value = 10**12 + i
            elif column.type == "boolean":
                value = i % 2 == 0
            else:
                value = f"{column.name} {i} ü"
            values.append(value)
        columns[column.name] = values
    return columns


def canonical(stream: str, rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows as comparable tuples: each value with its exact Python type, JSON text parsed."""
    spec = STREAMS[stream]
    json_columns = {c.name for c in spec.columns if c.is_json}

    def value(name: str, v: Any) -> tuple[str, Any]:
        if name in json_columns and v is not None:
            return ("json", json.loads(v))
        return (type(v).__name__, v)

    out = [tuple((n, value(n, r[n])) for n in spec.column_names) for r in rows]
    return sorted(out, key=lambda t: json.dumps(t, sort_keys=True, ensure_ascii=False))
