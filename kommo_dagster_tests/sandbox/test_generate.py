"""The generated account: deterministic, inside its window, and as messy as real accounts."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date

import numpy as np
import orjson
import pytest

from kommo_dagster.contract import contract_columns
from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.catalog import LOST_STATUS_ID, UNSORTED
from kommo_dagster.sandbox.config import SandboxConfig
from kommo_dagster.sandbox.events import build_event, events_bytes, status_value
from kommo_dagster.sandbox.randomness import ULID_ALPHABET, ulid, ulids
from kommo_dagster.sandbox.timeline import DAY, day_ts

START, END = date(2026, 10, 1), date(2026, 11, 1)
START_TS, END_TS = day_ts(START), day_ts(END)


def _account(seed: int = 1, leads: int = 300, **kw) -> Account:
    return Account(seed=seed, leads=leads, start=START, end=END, base_url="http://x", **kw)


@pytest.fixture(scope="module")
def account() -> Account:
    return _account()


def test_same_seed_and_scale_give_the_same_bytes_and_another_seed_does_not():
    a, b, c = _account(seed=7), _account(seed=7), _account(seed=8)
    for name, table in a.tables.items():
        assert table.bodies == b.tables[name].bodies, name
        assert table.bodies != c.tables[name].bodies, name
    assert a.catalog.users == b.catalog.users


def test_everything_is_inside_the_window(account):
    for name, table in account.tables.items():
        for col in ("created_at", "updated_at"):
            if col in table.cols:
                assert table.cols[col].min() >= START_TS and table.cols[col].max() < END_TS, name


@pytest.mark.parametrize("stream", ["leads", "contacts", "companies", "tasks"])
def test_records_at_exactly_midnight_and_one_second_before(account, stream):
    live = [r for r in account.records(stream) if not r.get("is_deleted")]
    seconds = Counter(r["updated_at"] % DAY for r in live)
    assert seconds[0] >= 2 and seconds[DAY - 1] >= 2
    stamps = {r["updated_at"] for r in live}
    assert START_TS in stamps and END_TS - 1 in stamps


def test_more_than_a_page_of_leads_share_one_updated_at_second(account):
    live = [r for r in account.records("leads") if not r["is_deleted"]]
    _, count = Counter(r["updated_at"] for r in live).most_common(1)[0]
    assert count > 250
    _, events = Counter(e["created_at"] for e in account.records("events")).most_common(1)[0]
    assert events > 250


def test_every_messy_name_is_in_a_small_account(account):
    names = {r["name"] for r in account.records("leads")}
    assert set(texts.MESSY_NAMES) <= names
    contact_names = {r["name"] for r in account.records("contacts")}
    assert {"", "Line one\nLine two\r\nLine three", "🚀 Big deal 💰"} <= contact_names
    assert any(r["first_name"] == "" for r in account.records("contacts"))


def test_custom_fields_have_kommo_shapes_of_every_type(account):
    seen: dict[str, set[type]] = {}
    nulls = 0
    for stream in ("leads", "contacts", "companies"):
        for rec in account.records(stream):
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
    tag_counts = Counter(len(r["_embedded"]["tags"]) for r in account.records("leads"))
    assert tag_counts[0] and sum(v for k, v in tag_counts.items() if k) > 10
    tag = next(t for r in account.records("leads") for t in r["_embedded"]["tags"])
    assert set(tag) == {"id", "name", "color"}


def test_nullable_lead_fields_hold_both_nulls_and_values(account):
    leads = account.records("leads")
    for key in ("closed_at", "closest_task_at", "loss_reason_id", "score", "labor_cost"):
        kinds = {type(r[key]) for r in leads}
        assert kinds == {int, type(None)}, key


def test_leads_use_every_pipeline_and_the_won_lost_and_incoming_stages(account):
    leads = account.records("leads")
    assert {r["pipeline_id"] for r in leads} == {p["id"] for p in account.catalog.pipelines}
    statuses = {r["status_id"] for r in leads}
    assert {142, 143} <= statuses
    incoming = {s[1] for s in account.catalog.stages if s[2] == UNSORTED}
    assert statuses & incoming
    assert all((r["closed_at"] is not None) == (r["status_id"] in (142, 143)) for r in leads)


def test_tasks_link_to_every_entity_type_with_plural_names_and_both_result_shapes(account):
    tasks = account.records("tasks")
    assert {t["entity_type"] for t in tasks} == {"leads", "contacts", "companies", None}
    assert all((t["entity_id"] is None) == (t["entity_type"] is None) for t in tasks)
    results = [t["result"] for t in tasks]
    assert [] in results
    texts_ = [r["text"] for r in results if isinstance(r, dict)]
    assert texts_ and "" in texts_
    assert all(r == [] or set(r) == {"text"} for r in results)


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


def test_every_contract_column_exists_in_the_records(account):
    for stream in ("leads", "contacts", "companies", "tasks", "events", "users", "statuses"):
        records = account.records(stream)
        for col in contract_columns(stream):
            name = col["name"]
            if name == "tags":
                assert all("tags" in r["_embedded"] for r in records)
            else:
                assert all(name in r for r in records), (stream, name)
    pipelines = account.records("pipelines")
    assert all({c["name"] for c in contract_columns("pipelines")} <= set(p) for p in pipelines)


def test_statuses_have_conditions_and_users_rights_objects(account):
    statuses = account.records("statuses")
    assert any(s["conditions"] for s in statuses) and any(s["conditions"] == [] for s in statuses)
    users = account.records("users")
    assert any(u["rights"]["is_admin"] for u in users)
    assert any(not u["rights"]["is_active"] for u in users)
    assert "" in {u["name"] for u in users}


def test_scale_sets_the_number_of_leads_and_users():
    acc = _account(leads=40, users=3)
    assert len(acc.tables["leads"]) == 40
    assert len(acc.catalog.users) == 3
    assert len(_account(leads=0).tables["leads"]) == 0


def test_a_one_day_window_still_holds_its_boundary_records():
    acc = Account(
        seed=1, leads=300, start=date(2026, 10, 5), end=date(2026, 10, 6), base_url="http://x"
    )
    stamps = {r["updated_at"] for r in acc.records("leads")}
    lo = day_ts(date(2026, 10, 5))
    assert lo in stamps and lo + DAY - 1 in stamps
    assert min(stamps) >= lo and max(stamps) < lo + DAY


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


def test_an_amocrm_flavoured_account_speaks_russian():
    """The "amocrm" flavour: Russian names, .ru and .рф domains, Russian-speaking users; the messy
    strings stay, and the same seed in the "kommo" flavour is the international account."""
    amocrm = _account(leads=60, flavour="amocrm")
    words = texts.WORDS["amocrm"]
    ordinary = [u["name"] for u in amocrm.records("users") if u["name"] and not u["name"].isascii()]
    assert {u["lang"] for u in amocrm.records("users")} == {"ru"}
    assert all(u["email"].endswith(words.email_domains) for u in amocrm.records("users"))
    leads = [r["name"] for r in amocrm.records("leads")]
    plain = [n for n in leads if n not in texts.MESSY_NAMES]
    assert plain and all(n.split(" #")[0] in words.lead_words for n in plain)
    assert all(
        first in words.first_names
        for first in (n.split()[0] for n in ordinary if n not in texts.MESSY_NAMES)
        if not first.isascii() and first not in {"Администратор", "Robô", "José"}
    )
    international = _account(leads=60)
    assert [r["name"] for r in international.records("leads")] != leads
    with pytest.raises(ValueError, match="flavour must be one of"):
        SandboxConfig(flavour="bitrix")


def test_lead_prices_hold_zero_both_ranges_and_the_int32_maximum(account):
    prices = [r["price"] for r in account.records("leads")]
    assert 0 in prices and 2_147_483_647 in prices
    assert any(3_750 <= p < 4_900 for p in prices), "small prices"
    assert any(125_000 <= p < 375_000 for p in prices), "large prices"
    assert all(
        p in (0, 2_147_483_647) or 3_750 <= p < 4_900 or 125_000 <= p < 375_000 for p in prices
    )


def test_only_lost_leads_give_a_loss_reason(account):
    leads = account.records("leads")
    reasons = {r["status_id"] for r in leads if r["loss_reason_id"] is not None}
    assert reasons == {LOST_STATUS_ID}
