"""The derived tables, read from the contract's entries with ``derived_from``.

A derived table is built inside DuckDB from another stream's table, never with a request to
Kommo. Its columns, types and descriptions come from ``kommo_extra_streams.json``; this module
adds only what the contract leaves to the code: each table's key and, for the custom-field value
tables, which definitions table and wide view belong to the same entity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kommo_dagster.contract import contract_streams
from kommo_dagster.kommo.streams import Column

# The key of each derived table: one row per key, and what the duplicate check groups by.
_KEYS: Mapping[str, tuple[str, ...]] = {
    "lead_custom_field_values": ("entity_id", "updated_at", "field_id", "value_index"),
    "contact_custom_field_values": ("entity_id", "updated_at", "field_id", "value_index"),
    "company_custom_field_values": ("entity_id", "updated_at", "field_id", "value_index"),
    "lead_status_changes": ("event_id",),
}


@dataclass(frozen=True, kw_only=True)
class DerivedTable:
    """A table computed from ``parent``'s table, sliced by ``cursor`` exactly as the parent is
    sliced by its own cursor (the values' ``updated_at`` is the lead version's ``updated_at``,
    a status change's ``changed_at`` is its event's ``created_at``)."""

    name: str
    description: str
    parent: str
    cursor: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True, kw_only=True)
class CustomFieldEntity:
    """One entity with custom fields: its stream, the definitions stream, the long values table
    and the wide view, named here once."""

    stream: str
    definitions: str
    values: str
    wide_view: str


CUSTOM_FIELD_ENTITIES: tuple[CustomFieldEntity, ...] = (
    CustomFieldEntity(
        stream="leads",
        definitions="lead_custom_fields",
        values="lead_custom_field_values",
        wide_view="leads_wide",
    ),
    CustomFieldEntity(
        stream="contacts",
        definitions="contact_custom_fields",
        values="contact_custom_field_values",
        wide_view="contacts_wide",
    ),
    CustomFieldEntity(
        stream="companies",
        definitions="company_custom_fields",
        values="company_custom_field_values",
        wide_view="companies_wide",
    ),
)
STATUS_CHANGES = "lead_status_changes"


def _build() -> dict[str, DerivedTable]:
    tables: dict[str, DerivedTable] = {}
    for name, spec in contract_streams().items():
        # A derived table without a cursor is rebuilt whole (`kommo_dagster.derived.activity`).
        if "derived_from" not in spec or spec["cursor"] is None:
            continue
        if name not in _KEYS:
            raise RuntimeError(f"derived table {name!r} of the contract has no declared key")
        columns = tuple(Column.from_contract(c) for c in spec["columns"])
        missing = [k for k in _KEYS[name] if k not in {c.name for c in columns}]
        if missing or spec["cursor"] not in {c.name for c in columns}:
            raise RuntimeError(f"{name}: key {missing} or cursor not among its columns")
        tables[name] = DerivedTable(
            name=name,
            description=spec["description"],
            parent=spec["derived_from"],
            cursor=spec["cursor"],
            columns=columns,
            key=_KEYS[name],
        )
    if set(tables) != set(_KEYS):
        raise RuntimeError(f"contract derived tables {sorted(tables)} differ from {sorted(_KEYS)}")
    return tables


DERIVED_TABLES: Mapping[str, DerivedTable] = _build()


def get_derived(name: str) -> DerivedTable:
    try:
        return DERIVED_TABLES[name]
    except KeyError:
        raise KeyError(
            f"unknown derived table {name!r}; known: {', '.join(DERIVED_TABLES)}"
        ) from None


def with_derived(streams: set[str]) -> set[str]:
    """``streams`` and the derived tables computed from them (what a run of them must include
    so that the derived slices follow their parents')."""
    return streams | {t.name for t in DERIVED_TABLES.values() if t.parent in streams}


def custom_field_entity(stream: str) -> CustomFieldEntity:
    for entity in CUSTOM_FIELD_ENTITIES:
        if stream in (entity.stream, entity.definitions, entity.values):
            return entity
    raise KeyError(f"{stream!r} belongs to no entity with custom fields")


__all__ = [
    "CUSTOM_FIELD_ENTITIES",
    "DERIVED_TABLES",
    "STATUS_CHANGES",
    "CustomFieldEntity",
    "DerivedTable",
    "custom_field_entity",
    "get_derived",
    "with_derived",
]
