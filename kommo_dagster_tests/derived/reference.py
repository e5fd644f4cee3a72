"""Independent Python readings of the derived tables' rules, to compare DuckDB with.

Written from the rules in the docstrings of `kommo_dagster.derived`, never with its SQL.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any


def value_text(value: Any) -> str | None:
    """The text form of one custom-field value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def long_rows(entity_id: int, updated_at: int, custom_fields_values: Any) -> list[tuple[Any, ...]]:
    """The long rows of one record version, in the long table's column order."""
    if not isinstance(custom_fields_values, list):
        return []
    rows: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    for entry in custom_fields_values:
        if not isinstance(entry, dict):
            continue
        field_id = _integer(entry.get("field_id"))
        if field_id is None or field_id in seen:
            continue
        seen.add(field_id)
        values = entry.get("values")
        if not isinstance(values, list):
            continue
        for index, element in enumerate(values):
            item = element if isinstance(element, dict) else {"value": element}
            rows.append(
                (
                    entity_id,
                    updated_at,
                    field_id,
                    _text(entry.get("field_name")),
                    _text(entry.get("field_code")),
                    _text(entry.get("field_type")),
                    index,
                    value_text(item.get("value")),
                    _integer(item.get("enum_id")) if isinstance(element, dict) else None,
                    _text(item.get("enum_code")) if isinstance(element, dict) else None,
                )
            )
    return rows


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        return int(value)
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def status_change(event: dict[str, Any]) -> tuple[Any, ...]:
    """A lead_status_changed event as its lead_status_changes row."""

    def stage(values: Any) -> tuple[int | None, int | None]:
        for item in values or []:
            if isinstance(item, dict) and isinstance(item.get("lead_status"), dict):
                status = item["lead_status"]
                return _integer(status.get("pipeline_id")), _integer(status.get("id"))
        return None, None

    before, after = stage(event["value_before"]), stage(event["value_after"])
    return (
        event["id"],
        event["entity_id"],
        event["created_at"],
        event["created_by"],
        *before,
        *after,
    )


def stays(
    changes: list[tuple[Any, ...]], leads: dict[int, dict[str, Any]], live: set[int]
) -> list[tuple[Any, ...]]:
    """(lead_id, pipeline_id, status_id, entered_at, left_at, seconds) of every stay.

    ``leads`` maps every stored lead id to its latest version; ``live`` are the live ones.
    """
    by_lead: dict[int, list[tuple[Any, ...]]] = {}
    for change in changes:
        by_lead.setdefault(change[1], []).append(change)
    out = []
    for lead_id, moves in by_lead.items():
        moves.sort(key=lambda c: (c[2], c[0]))
        created = leads.get(lead_id, {}).get("created_at")
        if created is not None:
            first = moves[0]
            out.append((lead_id, first[4], first[5], created, first[2]))
        for k, move in enumerate(moves):
            left = moves[k + 1][2] if k + 1 < len(moves) else None
            out.append((lead_id, move[6], move[7], move[2], left))
    for lead_id in live - set(by_lead):
        lead = leads[lead_id]
        out.append((lead_id, lead["pipeline_id"], lead["status_id"], lead["created_at"], None))
    return [(*s, None if s[4] is None or s[3] is None else s[4] - s[3]) for s in out]
