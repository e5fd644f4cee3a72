"""The wide views: one row per live record, one typed column per custom-field definition.

``<schema>.<stream>_wide`` (``leads_wide``, ``contacts_wide``, ``companies_wide``) is the
stream's current view (every contract column) plus one column per field defined in
``<schema>.<entity>_custom_fields``, so a field no record uses still has its (NULL) column. The
values come from the long table's rows of each record's current version.

* Column name: the field's ``code`` lower-cased if it has one, else a snake_case slug of its
  name (unicode letters and digits kept, every other run of characters one ``_``); when two
  fields would get the same name, or a field's name is a stream column, those fields get
  ``_<field_id>`` appended.
* Type: numeric, price, monetary -> DOUBLE; checkbox -> BOOLEAN; date, date_time, birthday ->
  TIMESTAMPTZ from the Unix value; multiselect, multitext -> VARCHAR[] in value order;
  everything else the first value's text (a select's chosen option). A value that does not
  convert (a numeric field holding "n/a") is NULL in the view and kept as text in the long table.

Without a definitions table (its stream not extracted) the columns come from the fields found
in the long table instead. The view is rebuilt in the transaction of every write of the values
or the definitions, since its columns follow the definitions (its declaration's ``refresh_on``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import duckdb

from kommo_dagster.derived.entities import CustomFieldEntity
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.sql import column_definitions, quote, table_exists, table_ref
from kommo_dagster.warehouse.tables import contract_columns
from kommo_dagster.warehouse.views import current_view_name, ensure_current_view

LIST_TYPES = frozenset({"multiselect", "multitext"})
DOUBLE_TYPES = frozenset({"numeric", "price", "monetary"})
BOOLEAN_TYPES = frozenset({"checkbox"})
TIMESTAMP_TYPES = frozenset({"date", "date_time", "birthday"})
# Unix seconds beyond this (year 5138) are not a date anyone typed; the view shows NULL.
_MAX_EPOCH = 10**11
_NOT_SLUG = re.compile(r"[^\w]+|_+")


@dataclass(frozen=True)
class FieldDefinition:
    id: int
    name: str | None
    code: str | None
    type: str | None


@dataclass(frozen=True)
class WideColumn:
    """A custom-field column of a wide view."""

    field: FieldDefinition
    name: str

    @property
    def duckdb_type(self) -> str:
        return duckdb_type(self.field.type)

    @property
    def description(self) -> str:
        code = f", code {self.field.code}" if self.field.code else ""
        return (
            f"Custom field {self.field.id} '{self.field.name}' ({self.field.type}{code}) "
            f"of the record's current version"
        )


def duckdb_type(field_type: str | None) -> str:
    if field_type in DOUBLE_TYPES:
        return "DOUBLE"
    if field_type in BOOLEAN_TYPES:
        return "BOOLEAN"
    if field_type in TIMESTAMP_TYPES:
        return "TIMESTAMP WITH TIME ZONE"
    if field_type in LIST_TYPES:
        return "VARCHAR[]"
    return "VARCHAR"


def slug(name: str | None) -> str:
    """``'Orçamento (R$)'`` -> ``'orçamento_r'``: lower-case, letters and digits kept."""
    return _NOT_SLUG.sub("_", (name or "").lower()).strip("_")


def base_name(field: FieldDefinition) -> str:
    if field.code:
        return field.code.lower()
    return slug(field.name) or f"field_{field.id}"


def assign_columns(
    fields: Iterable[FieldDefinition], *, stream_columns: Iterable[str]
) -> list[WideColumn]:
    """Unique column names for ``fields`` (in their order), none equal to a stream column.

    Names compare case-insensitively, as DuckDB's identifiers do.
    """
    fields = list(fields)
    taken = {c.casefold() for c in stream_columns}
    bases = [base_name(f) for f in fields]
    counts: dict[str, int] = {}
    for b in bases:
        counts[b.casefold()] = counts.get(b.casefold(), 0) + 1
    names = [
        f"{b}_{f.id}" if counts[b.casefold()] > 1 or b.casefold() in taken else b
        for f, b in zip(fields, bases, strict=True)
    ]
    # A suffixed name can still meet another field's plain one ('a_7' named so by hand).
    seen: set[str] = set(taken)
    columns = []
    for field, name in zip(fields, names, strict=True):
        while name.casefold() in seen:
            name = f"{name}_{field.id}"
        seen.add(name.casefold())
        columns.append(WideColumn(field=field, name=name))
    return columns


def read_fields(
    con: duckdb.DuckDBPyConnection, entity: CustomFieldEntity, *, schema: str
) -> list[FieldDefinition]:
    """The entity's field definitions, in Kommo's sort order; from the long table's own
    field ids (latest name, code and type seen) when the definitions were not extracted."""
    if table_exists(con, schema=schema, table=entity.definitions):
        rows = con.execute(
            f"SELECT id, name, code, type FROM {table_ref(schema, entity.definitions)} "
            f"WHERE id IS NOT NULL ORDER BY sort NULLS LAST, id"
        ).fetchall()
    elif table_exists(con, schema=schema, table=entity.values):
        rows = con.execute(
            f"SELECT field_id, arg_max(field_name, updated_at), arg_max(field_code, updated_at), "
            f"arg_max(field_type, updated_at) FROM {table_ref(schema, entity.values)} "
            f"GROUP BY field_id ORDER BY field_id"
        ).fetchall()
    else:
        rows = []
    return [FieldDefinition(id=int(r[0]), name=r[1], code=r[2], type=r[3]) for r in rows]


def _column_expression(column: WideColumn) -> str:
    fid = int(column.field.id)
    if column.field.type in LIST_TYPES:
        return f"list(value ORDER BY value_index) FILTER (WHERE field_id = {fid})"
    first = f"max(value) FILTER (WHERE field_id = {fid} AND value_index = 0)"
    if column.field.type in DOUBLE_TYPES:
        return f"TRY_CAST({first} AS DOUBLE)"
    if column.field.type in BOOLEAN_TYPES:
        return f"TRY_CAST({first} AS BOOLEAN)"
    if column.field.type in TIMESTAMP_TYPES:
        seconds = f"TRY_CAST({first} AS DOUBLE)"
        return f"CASE WHEN abs({seconds}) < {_MAX_EPOCH} THEN to_timestamp({seconds}) ELSE NULL END"
    return first


def wide_view_sql(entity: CustomFieldEntity, columns: Sequence[WideColumn], *, schema: str) -> str:
    current = table_ref(schema, current_view_name(entity.stream))
    view = table_ref(schema, entity.wide_view)
    if not columns:
        return f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {current}"
    values = table_ref(schema, entity.values)
    aggregates = ",\n    ".join(f"{_column_expression(c)} AS {quote(c.name)}" for c in columns)
    picked = ", ".join(f"v.{quote(c.name)}" for c in columns)
    return f"""CREATE OR REPLACE VIEW {view} AS
WITH v AS (
    SELECT entity_id, updated_at,
    {aggregates}
    FROM {values} AS x
    SEMI JOIN {current} AS k ON k.id = x.entity_id AND k.updated_at = x.updated_at
    GROUP BY entity_id, updated_at
)
SELECT c.*, {picked}
FROM {current} AS c
LEFT JOIN v ON v.entity_id = c.id AND v.updated_at = c.updated_at"""


def ensure_inputs(
    con: duckdb.DuckDBPyConnection, entity: CustomFieldEntity, *, schema: str
) -> None:
    """Create what the view reads, empty, if it is missing: the stream's table and current
    view, and the long table (the definitions are optional)."""
    stream = get_stream(entity.stream)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {table_ref(schema, stream.name)} "
        f"({column_definitions(stream)})"
    )
    ensure_current_view(con, stream, schema=schema)
    values = ", ".join(f"{quote(c.name)} {c.duckdb_type}" for c in contract_columns(entity.values))
    con.execute(f"CREATE TABLE IF NOT EXISTS {table_ref(schema, entity.values)} ({values})")


def rebuild_wide_view(
    con: duckdb.DuckDBPyConnection, entity: CustomFieldEntity, *, schema: str
) -> list[WideColumn]:
    """(Re)create ``<schema>.<stream>_wide`` from the current definitions; returns its
    custom-field columns."""
    ensure_inputs(con, entity, schema=schema)
    columns = assign_columns(
        read_fields(con, entity, schema=schema),
        stream_columns=get_stream(entity.stream).column_names,
    )
    con.execute(wide_view_sql(entity, columns, schema=schema))
    return columns


__all__ = [
    "FieldDefinition",
    "WideColumn",
    "assign_columns",
    "base_name",
    "duckdb_type",
    "read_fields",
    "rebuild_wide_view",
    "slug",
    "wide_view_sql",
]
