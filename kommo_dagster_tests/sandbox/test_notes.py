"""Notes: Kommo's filters, orders and with=is_pinned, and every note on a live record."""

from __future__ import annotations

from collections import Counter

import pytest

NOTES = {"leads": "lead_notes", "contacts": "contact_notes", "companies": "company_notes"}


@pytest.mark.parametrize("entity", list(NOTES))
def test_notes_belong_to_live_records_and_carry_is_pinned_only_when_asked(api, entity):
    live = {r["id"] for r in api.sb.records(entity) if not r["is_deleted"]}
    notes = api.items(f"/api/v4/{entity}/notes", "notes", {"limit": 250})
    assert notes and {n["entity_id"] for n in notes} <= live
    assert all("is_pinned" not in n for n in notes)
    pinned = api.items(f"/api/v4/{entity}/notes", "notes", {"limit": 250, "with": "is_pinned"})
    assert {type(n["is_pinned"]) for n in pinned} == {bool}
    assert sorted(pinned, key=lambda n: n["id"]) == sorted(
        api.sb.records(NOTES[entity]), key=lambda n: n["id"]
    )


def test_notes_filter_and_order_by_updated_at_and_hold_a_crowded_second(api):
    notes = api.sb.records("lead_notes")
    second, crowd = Counter(n["updated_at"] for n in notes).most_common(1)[0]
    assert crowd > 250  # a robot's bulk edit: more than one page in one second
    params = {
        "filter[updated_at][from]": second,
        "filter[updated_at][to]": second,
        "order[id]": "desc",
        "limit": 250,
    }
    page = api.get("/api/v4/leads/notes", params).json()["_embedded"]["notes"]
    assert len(page) == 250 and [n["id"] for n in page] == sorted(
        (n["id"] for n in page), reverse=True
    )
    ordered = api.items("/api/v4/leads/notes", "notes", {"order[updated_at]": "asc", "limit": 250})
    assert [n["updated_at"] for n in ordered] == sorted(n["updated_at"] for n in notes)


def test_every_documented_note_type_is_there(api):
    types = {n["note_type"] for n in api.sb.records("lead_notes")}
    assert {"common", "call_in", "call_out", "service_message", "sms_in", "attachment"} <= types
    calls = [n for n in api.sb.records("lead_notes") if n["note_type"] == "call_in"]
    assert all({"phone", "link", "uniq", "source"} <= set(n["params"]) for n in calls)


def test_call_params_hold_what_telephony_integrations_send(api):
    calls = [
        n["params"]
        for t in ("lead_notes", "contact_notes", "company_notes")
        for n in api.sb.records(t)
        if n["note_type"] in ("call_in", "call_out")
    ]
    durations = [p.get("duration") for p in calls]
    assert any(isinstance(d, int) for d in durations)
    assert None in durations  # absent
    assert any(isinstance(d, str) and not d.isdigit() for d in durations)  # "1:05", "65 сек"
    assert any(isinstance(d, str) and d.isdigit() for d in durations)
    statuses = {p["call_status"] for p in calls if "call_status" in p}
    assert statuses <= set(range(1, 8)) and len(statuses) > 3
    assert any("call_status" not in p for p in calls)
    assert any("call_result" in p for p in calls)
    assert any(p.get("call_responsible") == 0 for p in calls)  # a robot's call
    assert any(p.get("call_responsible") for p in calls)
    assert any("call_responsible" not in p for p in calls)


def test_notes_filter_by_note_type_and_entity_id(api):
    """filter[note_type] (one or a list) and filter[entity_id][] narrow the list, as documented."""
    notes = api.sb.records("lead_notes")
    calls = api.items(
        "/api/v4/leads/notes",
        "notes",
        [("filter[note_type][]", "call_in"), ("filter[note_type][]", "call_out"), ("limit", 250)],
    )
    assert sorted(n["id"] for n in calls) == sorted(
        n["id"] for n in notes if n["note_type"] in ("call_in", "call_out")
    )
    common = api.items("/api/v4/leads/notes", "notes", {"filter[note_type]": "common"})
    assert common and {n["note_type"] for n in common} == {"common"}
    owners = sorted({n["entity_id"] for n in notes})[:3]
    mine = api.items(
        "/api/v4/leads/notes",
        "notes",
        [*(("filter[entity_id][]", o) for o in owners), ("limit", 250)],
    )
    assert sorted(n["id"] for n in mine) == sorted(
        n["id"] for n in notes if n["entity_id"] in owners
    )
