"""Custom-field values, one row per value, computed in DuckDB from the parent's JSON column.

Each stored version of a lead (contact, company) carries ``custom_fields_values`` as JSON text:
``[{field_id, field_name, field_code, field_type, values: [{value, enum_id?, enum_code?}]}]``.
`values_select_sql` unnests it into the long table's columns, reading only the parent rows of
the slice being written, so the long table is sliced exactly as its parent (by the version's
``updated_at``) and a re-run replaces exactly what the parent's slice holds.

What real accounts send is not always that shape. Nothing here fails a run on a value:

* a version without custom fields (NULL), or whose text is not a JSON array, gives no rows
  (counted by `skipped_versions_sql`);
* an entry that is not an object, or has no integer ``field_id``, gives no rows (ids are read
  by `kommo_dagster.derived.json_values.json_integer`);
* a field without ``values``, or with an empty list, gives no rows;
* a value element that is not an object is taken as the value itself;
* the value's text follows `kommo_dagster.derived.value_text` (the string "null" is kept).

A version listing the same field twice keeps its first entry, so the key
``(entity_id, updated_at, field_id, value_index)`` is unique; two stored rows of the same
version (same id and ``updated_at``) count once.
"""

from __future__ import annotations

from kommo_dagster.derived.entities import CustomFieldEntity
from kommo_dagster.derived.json_values import json_integer
from kommo_dagster.derived.value_text import VALUE_TEXT_MACRO
from kommo_dagster.derived.write import window_condition
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.sql import table_ref
from kommo_dagster.warehouse.windows import EpochWindow

SOURCE_COLUMN = "custom_fields_values"


def _versions_sql(entity: CustomFieldEntity, *, schema: str, window: EpochWindow | None) -> str:
    parent = get_stream(entity.stream)
    cursor = parent.cursor or ""
    return (
        f"SELECT DISTINCT ON (p.id, p.{cursor}) p.id AS entity_id, p.{cursor} AS updated_at, "
        f"p.{SOURCE_COLUMN} AS cfv "
        f"FROM {table_ref(schema, parent.name)} AS p "
        f"WHERE {window_condition(cursor, window, alias='p')} AND p.{SOURCE_COLUMN} IS NOT NULL "
        f"ORDER BY p.id, p.{cursor}, p.{SOURCE_COLUMN}"
    )


def values_select_sql(entity: CustomFieldEntity, *, schema: str, window: EpochWindow | None) -> str:
    """The long rows of the parent's ``window`` slice (whole table for ``None``).

    Needs `kommo_dagster.derived.value_text.install_macros` on the connection.
    """
    element = "vs[value_index + 1]"
    field_id = json_integer("field_json")
    return f"""
WITH versions AS ({_versions_sql(entity, schema=schema, window=window)}),
arrays AS (
    SELECT entity_id, updated_at, json_extract(cfv, '$[*]') AS fields
    FROM versions WHERE CASE WHEN json_valid(cfv) THEN json_type(cfv) = 'ARRAY' ELSE false END
),
entries AS (
    SELECT entity_id, updated_at, unnest(fields) AS f, unnest(range(len(fields))) AS position
    FROM arrays
),
objects AS (
    -- the id's JSON extracted once: its rule reads it up to 7 times, and DuckDB pushes the
    -- filter on field_id below the row's projection, repeating what that filter reads
    SELECT *, f -> '$.field_id' AS field_json FROM entries WHERE json_type(f) = 'OBJECT'
),
identified AS (
    -- the id read once: the filter, the repeats' partition and the row use it
    SELECT entity_id, updated_at, f, position, {field_id} AS field_id FROM objects
),
fields AS (
    SELECT entity_id, updated_at, field_id,
        f ->> 'field_name' AS field_name,
        f ->> 'field_code' AS field_code,
        f ->> 'field_type' AS field_type,
        CASE WHEN json_type(f, '$.values') = 'ARRAY' THEN json_extract(f, '$.values[*]')
             ELSE CAST([] AS JSON[]) END AS vs
    FROM identified
    WHERE field_id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY entity_id, updated_at, field_id ORDER BY position) = 1
),
values_ AS (SELECT *, unnest(range(len(vs))) AS value_index FROM fields)
SELECT entity_id, updated_at, field_id, field_name, field_code, field_type, value_index,
    {VALUE_TEXT_MACRO}(CASE WHEN json_type({element}) = 'OBJECT'
        THEN json_extract({element}, '$.value') ELSE {element} END) AS value,
    {json_integer(f"{element} -> '$.enum_id'")} AS enum_id,
    {element} ->> 'enum_code' AS enum_code
FROM values_
"""


def skipped_versions_sql(
    entity: CustomFieldEntity, *, schema: str, window: EpochWindow | None
) -> str:
    """How many versions of the slice hold custom fields that are not a JSON array."""
    return (
        f"SELECT count(*) FROM ({_versions_sql(entity, schema=schema, window=window)}) "
        f"WHERE NOT CASE WHEN json_valid(cfv) THEN json_type(cfv) = 'ARRAY' ELSE false END"
    )


__all__ = ["SOURCE_COLUMN", "skipped_versions_sql", "values_select_sql"]
