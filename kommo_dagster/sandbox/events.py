"""Event records as /api/v4/events serves them, and the values their changes carry.

Churn and links build one event at a time (`build_event`); the account's start-up serialises
hundreds of thousands at once, straight to the bytes orjson would give (`events_bytes`).
"""

from __future__ import annotations

from typing import Any

import orjson

from kommo_dagster.sandbox.catalog import Catalog

ENTITY_SINGULAR = {"leads": "lead", "contacts": "contact", "companies": "company", "tasks": "task"}


def build_event(
    cat: Catalog,
    *,
    id: str,
    type: str,
    entity_type: str,
    entity_id: int,
    created_by: int,
    created_at: int,
    value_after: list[Any],
    value_before: list[Any],
) -> dict[str, Any]:
    """An event as /api/v4/events serves it (entity_type singular, values as arrays)."""
    plural = _PLURAL[entity_type]
    return {
        "id": id,
        "type": type,
        "entity_id": entity_id,
        "entity_type": entity_type,
        "created_by": created_by,
        "created_at": created_at,
        "value_after": value_after,
        "value_before": value_before,
        "account_id": cat.account_id,
        "_links": cat.href(f"/api/v4/events/{id}"),
        "_embedded": {
            "entity": {"id": entity_id, "_links": cat.href(f"/api/v4/{plural}/{entity_id}")}
        },
    }


_EVENT_TEMPLATE = (
    '{"id":"%s","type":"%s","entity_id":%d,"entity_type":"%s","created_by":%d,"created_at":%d,'
    '"value_after":%s,"value_before":%s,"account_id":%d,'
    '"_links":{"self":{"href":"%s/api/v4/events/%s"}},'
    '"_embedded":{"entity":{"id":%d,"_links":{"self":{"href":"%s/api/v4/%s/%d"}}}}}'
)
# Events also land on customers (chats), and on entity types the project does not know.
_PLURAL = {v: k for k, v in ENTITY_SINGULAR.items()} | {"customer": "customers", "talk": "talks"}


def events_bytes(cat: Catalog, ids: list[str], events: list[tuple[Any, ...]]) -> list[bytes]:
    """What orjson.dumps(build_event(...)) gives for each (created_at, type, entity_type,
    entity_id, created_by, after, before) tuple, without building the dicts: this is the
    largest table of an account.

    Only for identifiers and types the sandbox itself generates (ASCII, nothing to escape).
    """
    base, account_id, plural, dumps = cat.base_url, cat.account_id, _PLURAL, orjson.dumps
    template = _EVENT_TEMPLATE
    return [
        (
            template
            % (
                eid,
                t,
                entity_id,
                etype,
                by,
                ts,
                dumps(after).decode() if after else "[]",
                dumps(before).decode() if before else "[]",
                account_id,
                base,
                eid,
                entity_id,
                base,
                plural[etype],
                entity_id,
            )
        ).encode()
        for eid, (ts, t, etype, entity_id, by, after, before) in zip(ids, events, strict=True)
    ]


def status_value(pipeline_id: int, status_id: int) -> list[dict[str, Any]]:
    return [{"lead_status": {"id": status_id, "pipeline_id": pipeline_id}}]


def responsible_value(user_id: int) -> list[dict[str, Any]]:
    return [{"responsible_user": {"id": user_id}}]
