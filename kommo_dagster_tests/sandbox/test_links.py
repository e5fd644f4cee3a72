"""The sandbox's links: with= embeds, the /links endpoints, relinks and their events."""

from __future__ import annotations

import random

import pytest

from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.sandbox.links import (
    MAX_LINK_ENTITY_IDS,
    READINGS,
    SOURCES,
    expected_link_rows,
    splice,
)
from kommo_dagster.sandbox.store import DELETED
from kommo_dagster.sandbox.unsorted import expected_incoming_rows
from kommo_dagster_tests.sandbox.conftest import Api


def test_leads_embed_contacts_products_and_source_only_when_asked(api: Api):
    plain = api.items("/api/v4/leads", "leads", {"limit": 250})
    assert all(set(lead["_embedded"]) == {"tags", "companies"} for lead in plain)
    asked = api.items(
        "/api/v4/leads", "leads", {"limit": 250, "with": "contacts,catalog_elements,source"}
    )
    assert [lead["id"] for lead in asked] == [lead["id"] for lead in plain]
    contacts = [c for lead in asked for c in lead["_embedded"]["contacts"]]
    assert contacts and all(set(c) >= {"id", "is_main"} for c in contacts)
    elements = [e for lead in asked for e in lead["_embedded"]["catalog_elements"]]
    assert any(isinstance(e["metadata"]["quantity"], float) for e in elements)
    assert any("price_id" not in e["metadata"] for e in elements)
    sources = [lead["_embedded"]["source"] for lead in asked if "source" in lead["_embedded"]]
    assert sources and all(s["name"] == SOURCES[s["id"]] for s in sources)


def test_contacts_carry_companies_without_with(api: Api):
    contacts = api.items("/api/v4/contacts", "contacts", {"limit": 250})
    assert any(c["_embedded"]["companies"] for c in contacts)


@pytest.mark.parametrize(
    ("stream", "with_"), [("contacts", ("leads",)), ("companies", ("leads", "contacts"))]
)
def test_contacts_and_companies_embed_their_links_only_when_asked(
    api: Api, stream: str, with_: tuple[str, ...]
):
    """A contact's leads and a company's leads and contacts come behind with=, as their /links
    items name them."""
    plain = api.items(f"/api/v4/{stream}", stream, {"limit": 250})
    assert not any(set(r["_embedded"]) & set(with_) for r in plain)
    asked = api.items(f"/api/v4/{stream}", stream, {"limit": 250, "with": ",".join(with_)})
    assert [r["id"] for r in asked] == [r["id"] for r in plain]
    for w in with_:
        assert any(r["_embedded"][w] for r in asked)
    for record in asked[:40]:
        r = api.get(f"/api/v4/{stream}/{record['id']}/links")
        links = [] if r.status_code == 204 else r.json()["_embedded"]["links"]
        for w in with_:
            embedded = sorted(item["id"] for item in record["_embedded"][w])
            assert embedded == sorted(i["to_entity_id"] for i in links if i["to_entity_type"] == w)


def test_batch_links_match_the_embeds(api: Api, open_sandbox: KommoSandbox):
    leads = api.items("/api/v4/leads", "leads", {"limit": 40, "with": "contacts,catalog_elements"})
    ids = [lead["id"] for lead in leads[:40]]
    r = api.get("/api/v4/leads/links", [("filter[entity_id][]", i) for i in ids])
    assert r.status_code == 200
    links = r.json()["_embedded"]["links"]
    assert r.json()["_total_items"] == len(links)
    by_type = {(link["entity_id"], link["to_entity_type"], link["to_entity_id"]) for link in links}
    embedded = {
        (lead["id"], key, item["id"])
        for lead in leads[:40]
        for key in ("contacts", "companies", "catalog_elements")
        for item in lead["_embedded"][key]
    }
    assert by_type == embedded
    one = api.get(f"/api/v4/leads/{ids[0]}/links")
    mine = [link for link in links if link["entity_id"] == ids[0]]
    assert (one.json()["_embedded"]["links"] if one.status_code == 200 else []) == mine


def test_too_many_link_ids_is_a_validation_error(api: Api):
    ids = [("filter[entity_id][]", 20_000_000 + i) for i in range(MAX_LINK_ENTITY_IDS + 1)]
    r = api.get("/api/v4/leads/links", ids)
    assert r.status_code == 400
    assert f"{MAX_LINK_ENTITY_IDS} elements or less" in r.text
    assert api.get("/api/v4/leads/links", ids[:MAX_LINK_ENTITY_IDS]).status_code in (200, 204)


def test_splice_adds_to_an_empty_or_missing_embedded():
    assert splice(b'{"id":1,"_embedded":{}}', {"a": [1]}) == b'{"id":1,"_embedded":{"a":[1]}}'
    assert splice(b'{"id":1}', {"a": 2}) == b'{"id":1,"_embedded":{"a":2}}'


@pytest.mark.parametrize("reading", READINGS)
def test_relinks_keep_updated_at_and_write_events_in_the_reading(reading):
    with KommoSandbox(SandboxConfig(seed=5, leads=200, requests_per_second=None)) as sb:
        acc = sb.account
        before = {s: acc.tables[s].cols["updated_at"].copy() for s in ("leads", "contacts")}
        truth = {t: expected_link_rows(acc, t) for t in ("lead_contacts", "lead_companies")}
        ts = acc.max_ts + 60
        changed = acc.links.relink(reading=reading, ts=ts, rng=random.Random(7))
        for s in before:
            assert (acc.tables[s].cols["updated_at"] == before[s]).all()
        assert any(expected_link_rows(acc, t) != rows for t, rows in truth.items())
        events = [e for e in acc.records("events") if e["created_at"] == ts]
        kind, side, unlink_in = reading
        assert events and all(e["type"].split("_")[-1] in ("linked", "unlinked") for e in events)
        generic = {e["type"].startswith("entity_") for e in events}
        sides = {e["entity_type"] for e in events}
        assert sides == ({"lead", "contact"} if side == "lead" else {"lead", "contact", "company"})
        assert generic == ({True} if kind == "generic" else {True, False})
        named = {e["entity_id"] for e in events} | {
            v[k]["entity"]["id"]
            for e in events
            for v in e["value_after"] + e["value_before"]
            for k in v
        }
        assert set(changed) <= named
        unlinks = [e for e in events if e["type"].endswith("unlinked")]
        where = "value_before" if unlink_in == "before" else "value_after"
        assert unlinks and all(e[where] for e in unlinks)
        if unlink_in == "after":
            assert all("unlink" in e["value_after"][0] for e in unlinks)


def test_unsorted_inbox_serves_all_categories_and_204_when_off(api: Api, open_sandbox):
    """The account says whether its inbox is on, as the inbox answers."""
    assert api.get("/api/v4/account").json()["is_unsorted_on"] is True
    entries = api.items("/api/v4/leads/unsorted", "unsorted", {"limit": 5})
    assert {e["category"] for e in entries} == {"sip", "mail", "forms", "chats"}
    assert len(entries) == len(open_sandbox.account.inbox.entries)
    chats = api.items("/api/v4/leads/unsorted", "unsorted", {"filter[category][]": "chats"})
    assert chats and {e["category"] for e in chats} == {"chats"}
    inbox = open_sandbox.account.inbox
    inbox.enabled = False
    try:
        assert api.get("/api/v4/leads/unsorted").status_code == 204
        assert api.get("/api/v4/account").json()["is_unsorted_on"] is False
    finally:
        inbox.enabled = True


def test_unsorted_entries_are_leads_waiting_in_an_incoming_stage(api: Api):
    """Each entry's lead is live, in its pipeline's status of type 1 (the entry's pipeline), and
    the entry's contact is one of the lead's: Kommo's inbox is the incoming stage's leads."""
    pipelines = api.get("/api/v4/leads/pipelines").json()["_embedded"]["pipelines"]
    incoming = {
        (p["id"], s["id"]) for p in pipelines for s in p["_embedded"]["statuses"] if s["type"] == 1
    }
    entries = api.items("/api/v4/leads/unsorted", "unsorted", {"limit": 250})
    assert entries
    for e in entries:
        (lead_ref,) = e["_embedded"]["leads"]
        lead = api.get(f"/api/v4/leads/{lead_ref['id']}", {"with": "contacts"}).json()
        assert (lead["pipeline_id"], lead["status_id"]) in incoming
        assert e["pipeline_id"] == lead["pipeline_id"]
        contacts = {c["id"] for c in lead["_embedded"]["contacts"]}
        assert {c["id"] for c in e["_embedded"]["contacts"]} <= contacts


@pytest.mark.parametrize("seed", [1, 4])
def test_unsorted_entries_are_served_oldest_first(seed: int):
    with KommoSandbox(SandboxConfig(seed=seed, leads=300, requests_per_second=None)) as sb:
        api = Api(sb)
        try:
            entries = api.items("/api/v4/leads/unsorted", "unsorted", {"limit": 250})
        finally:
            api.close()
    created = [e["created_at"] for e in entries]
    assert len(set(created)) > 1 and created == sorted(created)


def test_an_accepted_or_declined_lead_leaves_the_unsorted_list():
    """Accepting moves the lead out of the incoming stage, declining deletes it: the list is the
    current inbox, so neither entry is served any more, nor kept in the ground truth."""
    with KommoSandbox(SandboxConfig(seed=3, leads=300, requests_per_second=None)) as sb:
        inbox, leads = sb.account.inbox, sb.account.tables["leads"]
        accepted, declined, *rest = inbox.current()
        row = leads.row_of[accepted["_embedded"]["leads"][0]["id"]]
        record = leads.record(row)
        leads.replace(row, record | {"status_id": 142})
        leads.set_state(leads.row_of[declined["_embedded"]["leads"][0]["id"]], DELETED)
        api = Api(sb)
        try:
            served = api.items("/api/v4/leads/unsorted", "unsorted", {"limit": 250})
        finally:
            api.close()
        assert [e["uid"] for e in served] == [e["uid"] for e in rest]
        assert [r["uid"] for r in expected_incoming_rows(sb.account)] == sorted(
            e["uid"] for e in rest
        )


def test_leads_embed_their_loss_reason_only_when_asked(api: Api):
    """with=loss_reason adds the lead's loss reason as a one-item array of the dictionary's
    item; a lead without one gets none."""
    reasons = {
        r["id"]: r for r in api.items("/api/v4/leads/loss_reasons", "loss_reasons", {"limit": 250})
    }
    plain = api.items("/api/v4/leads", "leads", {"limit": 250})
    assert all("loss_reason" not in lead["_embedded"] for lead in plain)
    asked = api.items("/api/v4/leads", "leads", {"limit": 250, "with": "loss_reason"})
    lost = [lead for lead in asked if lead["loss_reason_id"] is not None]
    assert lost and all(
        lead["_embedded"]["loss_reason"] == [reasons[lead["loss_reason_id"]]] for lead in lost
    )
    assert all("loss_reason" not in lead["_embedded"] for lead in asked if lead not in lost)
