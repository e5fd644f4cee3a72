"""The entities with custom fields and the names of their relations, named here once.

The SQL modules (`long_values`, `wide`, `stages`) and the declarations (`declaration`) import
these names; they import nothing else of the derived package.
"""

from __future__ import annotations

from dataclasses import dataclass


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
DURATIONS_VIEW = "lead_stage_durations"
FUNNEL_VIEW = "pipeline_funnel"
# The conversation tables (`kommo_dagster.derived.activity`), read by manager_activity_daily.
CHAT_RESPONSE_TIMES = "chat_response_times"
CALLS = "calls"


def custom_field_entity(name: str) -> CustomFieldEntity:
    """The entity ``name`` (its stream, definitions or values table) belongs to."""
    for entity in CUSTOM_FIELD_ENTITIES:
        if name in (entity.stream, entity.definitions, entity.values):
            return entity
    raise KeyError(f"{name!r} belongs to no entity with custom fields")


__all__ = [
    "CALLS",
    "CHAT_RESPONSE_TIMES",
    "CUSTOM_FIELD_ENTITIES",
    "DURATIONS_VIEW",
    "FUNNEL_VIEW",
    "STATUS_CHANGES",
    "CustomFieldEntity",
    "custom_field_entity",
]
