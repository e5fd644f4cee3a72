"""Event records: string ULID ids, singular entity types and array values, and the bulk path
(bytes, vectorised ULIDs) equal to building one event at a time."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import orjson

from kommo_dagster.sandbox.events import build_event, events_bytes, status_value
from kommo_dagster.sandbox.randomness import ULID_ALPHABET, ulid, ulids
from kommo_dagster_tests.sandbox.conftest import generated_account as _account


def test_events_have_string_ids_singular_entities_and_array_values(account):
    events = account.records("events")
    types = Counter(e["type"] for e in events)
    for t in (
        "lead_added",
        "lead_deleted",
        "lead_restored",
        "lead_status_changed",
        "entity_responsible_changed",
        "contact_deleted",
        "company_deleted",
        "task_deleted",
        "task_added",
    ):
        assert types[t], t
    # "talk": a chat message on an entity type the project does not know, on purpose.
    assert {e["entity_type"] for e in events} == {"lead", "contact", "company", "task", "talk"}
    assert all(isinstance(e["id"], str) and len(e["id"]) == 26 for e in events)
    assert len({e["id"] for e in events}) == len(events)
    change = next(e for e in events if e["type"] == "lead_status_changed")
    assert set(change["value_after"][0]["lead_status"]) == {"id", "pipeline_id"}
    assert all(isinstance(e["value_after"], list) for e in events)


def test_event_bytes_equal_the_serialised_event_dict():
    acc = _account(leads=30)
    eid, after = ulid(1_790_000_000_000, random.Random(0)), status_value(1, 2)
    event = (1_790_000_000, "lead_status_changed", "lead", 20_000_001, 0, after, [])
    (fast,) = events_bytes(acc.catalog, [eid], [event])
    slow = build_event(
        acc.catalog,
        id=eid,
        type="lead_status_changed",
        entity_type="lead",
        entity_id=20_000_001,
        created_by=0,
        created_at=1_790_000_000,
        value_after=after,
        value_before=[],
    )
    assert fast == orjson.dumps(slow)


def test_vectorised_ulids_match_the_scalar_ones():
    ms = np.array([1_790_000_000_123, 1_790_000_999_999])
    ids = [b.decode() for b in ulids(ms, np.random.default_rng(0)).tolist()]
    for value, u in zip(ms.tolist(), ids, strict=True):
        assert u[:10] == ulid(value, random.Random(0))[:10]
        assert all(ch in ULID_ALPHABET for ch in u)
    assert ids == sorted(ids)


def test_bulk_serialised_events_equal_the_serialised_event_dicts(account):
    table = account.tables["events"]
    for row in range(0, len(table), 37):
        rec = orjson.loads(table.bodies[row])
        fields = {k: rec[k] for k in ("id", "type", "entity_type", "entity_id", "created_by")}
        rebuilt = build_event(
            account.catalog,
            **fields,
            created_at=rec["created_at"],
            value_after=rec["value_after"],
            value_before=rec["value_before"],
        )
        assert orjson.dumps(rebuilt) == table.bodies[row]
