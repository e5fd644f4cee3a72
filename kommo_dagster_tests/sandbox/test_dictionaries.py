"""The account's dictionaries: Kommo's paging quirks, and consistency with the records."""

from __future__ import annotations

import pytest


def test_custom_field_definitions_come_fifty_a_page_whatever_limit_says(api):
    body = api.get("/api/v4/leads/custom_fields", {"limit": 250}).json()
    assert len(body["_embedded"]["custom_fields"]) == 50
    assert body["_total_items"] > 50 and "next" in body["_links"]
    fields = api.items("/api/v4/leads/custom_fields", "custom_fields", {"limit": 250})
    assert len(fields) == body["_total_items"] == len({f["id"] for f in fields})
    # group ids are strings where set, as Kommo's are
    assert {type(f["group_id"]) for f in fields} == {str, type(None)}


@pytest.mark.parametrize("entity", ["leads", "contacts", "companies"])
def test_every_tag_on_a_record_is_in_the_tag_list(api, entity):
    tags = {t["id"]: t for t in api.items(f"/api/v4/{entity}/tags", "tags", {"limit": 250})}
    # a tag without a colour: sometimes null, sometimes no key at all
    assert any("color" not in t for t in tags.values())
    assert any("color" in t and t["color"] is None for t in tags.values())
    on_records = [t for r in api.sb.records(entity) for t in r["_embedded"]["tags"]]
    assert on_records and all(tags[t["id"]] == t for t in on_records)


def test_loss_reasons_and_task_types_resolve(api):
    reasons = {r["id"] for r in api.items("/api/v4/leads/loss_reasons", "loss_reasons")}
    used = {r["loss_reason_id"] for r in api.sb.records("leads")} - {None}
    assert used and used <= reasons
    body = api.get("/api/v4/account", {"with": "task_types"}).json()
    types = {t["id"] for t in body["_embedded"]["task_types"]}
    assert {1, 2} <= types and {t["task_type_id"] for t in api.sb.records("tasks")} <= types
    assert "datetime_settings" not in body["_embedded"]


def test_catalog_elements_per_catalog_and_404_for_an_unknown_catalog(api):
    catalogs = api.items("/api/v4/catalogs", "catalogs")
    sizes = {}
    for c in catalogs:
        elements = api.items(f"/api/v4/catalogs/{c['id']}/elements", "elements", {"limit": 250})
        assert {e["catalog_id"] for e in elements} <= {c["id"]}
        sizes[c["id"]] = len(elements)
    assert max(sizes.values()) > 250 and min(sizes.values()) == 0  # over a page; an empty one
    r = api.get("/api/v4/catalogs/1/elements")
    assert r.status_code == 404 and r.json()["detail"] == "Catalog not found"
