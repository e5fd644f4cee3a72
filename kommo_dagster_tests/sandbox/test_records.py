"""Leads, contacts, companies and tasks as messy as real accounts: odd names, custom fields of
every type, tags, nullable fields, every stage and every shape of a task."""

from __future__ import annotations

from collections import Counter

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import LOST_STATUS_ID, UNSORTED
from kommo_dagster_tests.sandbox.conftest import held


def test_every_messy_name_is_in_a_small_account(account):
    names = {r["name"] for r in held(account, "leads")}
    assert set(texts.MESSY_NAMES) <= names
    contact_names = {r["name"] for r in held(account, "contacts")}
    assert {"", "Line one\nLine two\r\nLine three", "🚀 Big deal 💰"} <= contact_names
    assert any(r["first_name"] == "" for r in held(account, "contacts"))


def test_custom_fields_have_kommo_shapes_of_every_type(account):
    seen: dict[str, set[type]] = {}
    nulls = 0
    for stream in ("leads", "contacts", "companies"):
        for rec in held(account, stream):
            cfv = rec["custom_fields_values"]
            if cfv is None:
                nulls += 1
                continue
            assert cfv != []  # Kommo sends null, never an empty list
            for f in cfv:
                assert set(f) == {"field_id", "field_name", "field_code", "field_type", "values"}
                for v in f["values"]:
                    seen.setdefault(f["field_type"], set()).add(type(v["value"]))
                    if f["field_type"] in ("select", "multiselect", "multitext"):
                        assert isinstance(v["enum_id"], int) and "enum_code" in v
    assert nulls
    assert seen["numeric"] == {str}
    assert seen["checkbox"] == {bool}
    assert seen["date"] == {int} and seen["date_time"] == {int} and seen["birthday"] == {int}
    assert {"text", "textarea", "select", "multiselect", "url", "multitext"} <= set(seen)


def test_tags_live_in_embedded_and_some_records_have_none(account):
    tag_counts = Counter(len(r["_embedded"]["tags"]) for r in held(account, "leads"))
    assert tag_counts[0] and sum(v for k, v in tag_counts.items() if k) > 10
    tag = next(t for r in held(account, "leads") for t in r["_embedded"]["tags"])
    assert set(tag) == {"id", "name", "color"}


def test_nullable_lead_fields_hold_both_nulls_and_values(account):
    leads = held(account, "leads")
    for key in ("closed_at", "closest_task_at", "loss_reason_id", "score", "labor_cost"):
        kinds = {type(r[key]) for r in leads}
        assert kinds == {int, type(None)}, key


def test_leads_use_every_pipeline_and_the_won_lost_and_incoming_stages(account):
    leads = held(account, "leads")
    assert {r["pipeline_id"] for r in leads} == {p["id"] for p in account.catalog.pipelines}
    statuses = {r["status_id"] for r in leads}
    assert {142, 143} <= statuses
    incoming = {s[1] for s in account.catalog.stages if s[2] == UNSORTED}
    assert statuses & incoming
    assert all((r["closed_at"] is not None) == (r["status_id"] in (142, 143)) for r in leads)


def test_tasks_link_to_every_entity_type_with_plural_names_and_both_result_shapes(account):
    tasks = held(account, "tasks")
    assert {t["entity_type"] for t in tasks} == {"leads", "contacts", "companies", None}
    assert all((t["entity_id"] is None) == (t["entity_type"] is None) for t in tasks)
    results = [t["result"] for t in tasks]
    assert [] in results
    texts_ = [r["text"] for r in results if isinstance(r, dict)]
    assert texts_ and "" in texts_
    assert all(r == [] or set(r) == {"text"} for r in results)


def test_lead_prices_hold_zero_both_ranges_and_the_int32_maximum(account):
    prices = [r["price"] for r in held(account, "leads")]
    assert 0 in prices and 2_147_483_647 in prices
    assert any(3_750 <= p < 4_900 for p in prices), "small prices"
    assert any(125_000 <= p < 375_000 for p in prices), "large prices"
    assert all(
        p in (0, 2_147_483_647) or 3_750 <= p < 4_900 or 125_000 <= p < 375_000 for p in prices
    )


def test_only_lost_leads_give_a_loss_reason(account):
    leads = held(account, "leads")
    reasons = {r["status_id"] for r in leads if r["loss_reason_id"] is not None}
    assert reasons == {LOST_STATUS_ID}
