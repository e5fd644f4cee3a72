"""Kommo's API semantics as the sandbox serves them over real HTTP."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from urllib.parse import parse_qsl, urlsplit

import pytest

from kommo_dagster.kommo.streams import STREAMS, Stream
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.sandbox.account import TRASH_KEEPS
from kommo_dagster.sandbox.links import LEAD_EMBEDS

pytestmark = pytest.mark.timeout(60)
WITH_DELETED_LIST = [n for n, s in STREAMS.items() if s.has_deleted_list]


def _ids(resp) -> list[int]:
    key = urlsplit(resp.url).path.rsplit("/", 1)[-1]
    return [r["id"] for r in resp.json()["_embedded"][key]]


def test_requests_without_the_right_bearer_token_get_401_problem_json(api):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sandbox-token"}):
        r = api.session.get(f"{api.sb.base_url}/api/v4/leads", headers=headers, timeout=10)
        assert r.status_code == 401
        assert r.headers["Content-Type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == 401 and body["title"] == "Unauthorized"


def test_list_envelope_links_and_default_limit(api):
    r = api.get("/api/v4/leads")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/hal+json"
    body = r.json()
    assert body["_page"] == 1
    assert len(body["_embedded"]["leads"]) == 50
    assert "_total_items" not in body
    nxt = urlsplit(body["_links"]["next"]["href"])
    assert nxt.netloc == urlsplit(api.sb.base_url).netloc
    assert dict(parse_qsl(nxt.query))["page"] == "2"


def test_next_link_echoes_the_whole_query_and_is_absent_on_the_last_page(api):
    params = {
        "limit": "100",
        "filter[updated_at][from]": "0",
        "filter[updated_at][to]": "9999999999",
        "order[id]": "asc",
        "with": "source_id",
    }
    pages = []
    r = api.get("/api/v4/leads", params)
    while True:
        body = r.json()
        pages.append(body)
        nxt = body["_links"].get("next")
        if nxt is None:
            break
        query = dict(parse_qsl(urlsplit(nxt["href"]).query))
        assert query == {**params, "page": str(body["_page"] + 1)}
        r = api.session.get(nxt["href"], headers={"Authorization": f"Bearer {api.sb.token}"})
    assert [p["_page"] for p in pages] == [1, 2, 3]
    assert sum(len(p["_embedded"]["leads"]) for p in pages) == len(
        [r for r in api.sb.records("leads") if not r["is_deleted"]]
    )


@pytest.mark.parametrize("path", ["/api/v4/leads", "/api/v4/users", "/api/v4/leads/unsorted"])
def test_pages_after_the_first_also_link_first_and_prev(api, path):
    """amoCRM's leads-api example of page 2 carries `first` and `prev` beside `self` and `next`:
    a client must follow `next` by name and stop when it is absent, whatever else is linked."""

    def links(page: int) -> dict[str, int]:
        body = api.get(path, {"limit": 2, "page": page}).json()
        return {
            k: int(dict(parse_qsl(urlsplit(v["href"]).query))["page"])
            for k, v in body["_links"].items()
        }

    assert links(1) == {"self": 1, "next": 2}
    assert links(2) == {"self": 2, "next": 3, "first": 1, "prev": 1}
    last = links(1)
    page = 1
    while "next" in last:
        page = last["next"]
        last = links(page)
    assert page > 2 and last == {"self": page, "first": 1, "prev": page - 1}


def test_no_rows_and_pages_past_the_end_are_204_with_an_empty_body(api):
    for params in (
        {"page": "99", "limit": "250"},
        {"filter[updated_at][from]": "100", "filter[updated_at][to]": "200"},
        {"filter[id][]": "1"},
    ):
        r = api.get("/api/v4/leads", params)
        assert r.status_code == 204
        assert r.content == b""


def test_a_scalar_updated_at_filter_returns_nothing(api):
    ts = api.sb.records("leads")[0]["updated_at"]
    assert api.get("/api/v4/leads", {"filter[updated_at]": str(ts)}).status_code == 204


def test_limit_over_the_maximum_falls_back_to_50_and_events_stop_at_100(api):
    assert len(_ids(api.get("/api/v4/leads", {"limit": "250"}))) == 250
    assert len(_ids(api.get("/api/v4/leads", {"limit": "251"}))) == 50
    assert len(api.get("/api/v4/events", {"limit": "100"}).json()["_embedded"]["events"]) == 100
    assert len(api.get("/api/v4/events", {"limit": "250"}).json()["_embedded"]["events"]) == 50


def test_updated_at_range_is_inclusive_on_both_ends(api):
    live = [r for r in api.sb.records("leads") if not r["is_deleted"]]
    ts = Counter(r["updated_at"] for r in live).most_common(1)[0][0]
    lo, hi = ts, ts + 3600
    want = sorted(r["id"] for r in live if lo <= r["updated_at"] <= hi)
    got = sorted(
        r["id"]
        for r in api.items(
            "/api/v4/leads",
            "leads",
            {"filter[updated_at][from]": lo, "filter[updated_at][to]": hi, "limit": 250},
        )
    )
    assert got == want
    assert len(want) > 250  # the bulk edit second is in this range


def test_created_at_filter_and_id_list_filter(api):
    live = [r for r in api.sb.records("contacts") if not r["is_deleted"]]
    some = [r["id"] for r in live[:5]] + [1]
    r = api.get("/api/v4/contacts", [("filter[id][]", str(i)) for i in some])
    assert sorted(_ids(r)) == sorted(some[:5])
    r = api.get("/api/v4/contacts", {"filter[id]": ",".join(map(str, some[:2]))})
    assert sorted(_ids(r)) == sorted(some[:2])
    ts = sorted(r["created_at"] for r in live)[len(live) // 2]
    got = api.items("/api/v4/contacts", "contacts", {"filter[created_at][to]": ts, "limit": 250})
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in live if r["created_at"] <= ts)


@pytest.mark.parametrize("stream", ["leads", "contacts", "companies"])
@pytest.mark.parametrize("key", ["updated_at", "created_at", "id"])
def test_one_order_key_ascending_and_descending(api, stream, key):
    live = sorted(r["id"] for r in api.sb.records(stream) if not r["is_deleted"])
    for direction in ("asc", "desc"):
        got = api.items(f"/api/v4/{stream}", stream, {f"order[{key}]": direction, "limit": 250})
        assert sorted(r["id"] for r in got) == live  # every live record, each once
        values = [(r[key], r["id"]) for r in got]
        assert values == sorted(values, reverse=direction == "desc")


def test_two_order_keys_or_an_unknown_key_are_rejected(api):
    r = api.get("/api/v4/leads", {"order[updated_at]": "asc", "order[id]": "asc"})
    assert r.status_code == 400
    r = api.get("/api/v4/leads", {"order[name]": "asc"})
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"


def test_tasks_cannot_be_ordered_by_updated_at(api):
    r = api.get("/api/v4/tasks", {"order[updated_at]": "asc"})
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    errors = r.json()["validation-errors"][0]["errors"]
    assert errors[0]["path"] == "order.updated_at"
    every = sorted(t["id"] for t in api.sb.records("tasks"))
    for key in ("created_at", "complete_till", "id"):
        got = api.items("/api/v4/tasks", "tasks", {f"order[{key}]": "asc", "limit": 250})
        assert sorted(t["id"] for t in got) == every
        values = [(t[key], t["id"]) for t in got]
        assert values == sorted(values)


def test_tasks_filter_on_updated_at(api):
    tasks = api.sb.records("tasks")
    ts = sorted(t["updated_at"] for t in tasks)[len(tasks) // 3]
    got = api.items(
        "/api/v4/tasks", "tasks", {"filter[updated_at][from]": ts, "limit": 250, "order[id]": "asc"}
    )
    assert [t["id"] for t in got] == sorted(t["id"] for t in tasks if t["updated_at"] >= ts)


def test_events_come_newest_first_and_ignore_order(api):
    got = api.items("/api/v4/events", "events", {"limit": 100, "order[created_at]": "asc"})
    assert len(got) == len(api.sb.records("events"))
    assert all(isinstance(e["id"], str) for e in got)
    keys = [(e["created_at"], e["id"]) for e in got]
    assert keys == sorted(keys, reverse=True)


def test_events_filters_on_created_at_type_and_entity(api):
    events = api.sb.records("events")
    ts = sorted(e["created_at"] for e in events)[len(events) // 2]
    params = [
        ("filter[created_at][from]", str(ts)),
        ("filter[type][]", "lead_added"),
        ("filter[type][]", "lead_deleted"),
        ("filter[entity][]", "lead"),
        ("limit", "100"),
    ]
    got = api.items("/api/v4/events", "events", params)
    want = [
        e for e in events if e["created_at"] >= ts and e["type"] in ("lead_added", "lead_deleted")
    ]
    assert sorted(e["id"] for e in got) == sorted(e["id"] for e in want)
    assert {e["type"] for e in got} == {"lead_added", "lead_deleted"}
    too_many = [("filter[entity_id][]", str(i)) for i in range(11)]
    assert api.get("/api/v4/events", too_many).status_code == 400


def test_leads_carry_source_id_and_robot_flag_only_when_asked(api):
    plain = api.get("/api/v4/leads", {"limit": 5}).json()["_embedded"]["leads"]
    assert all("source_id" not in r and "is_price_modified_by_robot" not in r for r in plain)
    one = api.get("/api/v4/leads", {"limit": 5, "with": "source_id"}).json()
    assert all(
        "source_id" in r and "is_price_modified_by_robot" not in r
        for r in one["_embedded"]["leads"]
    )
    both = api.get(
        "/api/v4/leads", {"limit": 250, "with": "source_id,is_price_modified_by_robot"}
    ).json()["_embedded"]["leads"]
    assert all(isinstance(r["is_price_modified_by_robot"], bool) for r in both)
    assert {type(r["source_id"]) for r in both} == {int, type(None)}


@pytest.mark.parametrize("stream", WITH_DELETED_LIST)
def test_deleted_records_only_with_only_deleted(api, stream):
    path, key = STREAMS[stream].path, STREAMS[stream].list_key
    normal = api.items(path, key, {"limit": 250})
    deleted = api.items(path, key, {"limit": 250, "with": "only_deleted"})
    assert normal and deleted
    assert not any(r["is_deleted"] for r in normal)
    assert all(r["is_deleted"] for r in deleted)
    assert not {r["id"] for r in normal} & {r["id"] for r in deleted}
    assert len(normal) + len(deleted) == len(api.sb.records(stream))


@pytest.mark.parametrize("stream", WITH_DELETED_LIST)
def test_deleted_records_show_only_their_id_and_last_change(api, stream):
    """amoCRM docs (leads-api.md, with=only_deleted): a deleted record shows its updated_at,
    updated_by, id and is_deleted; an answer captured in amocrm/amocrm-api-php#254 holds every
    other field as null (present, not missing). The account keeps the values for a restore."""
    path, key = STREAMS[stream].path, STREAMS[stream].list_key
    with_ = "source_id,is_price_modified_by_robot"
    live = api.get(path, {"limit": 1, "with": with_}).json()["_embedded"][key]
    deleted = api.items(path, key, {"limit": 250, "with": f"only_deleted,{with_}"})
    assert deleted
    for rec in deleted:
        assert set(rec) == set(live[0])
        assert rec["is_deleted"] is True
        assert isinstance(rec["updated_at"], int) and isinstance(rec["updated_by"], int)
        assert rec["name"] is None and rec["created_at"] is None
        assert {k for k, v in rec.items() if v is not None} <= TRASH_KEEPS
    table = api.sb.account.tables[stream]
    held = table.record(table.row_of[deleted[0]["id"]])
    assert held["name"] is not None and held["created_at"] is not None


def test_users_are_paged_with_totals(api):
    r = api.get("/api/v4/users", {"limit": 5, "page": 2})
    body = r.json()
    total = len(api.sb.records("users"))
    assert body["_total_items"] == total
    assert body["_page"] == 2
    assert body["_page_count"] == -(-total // 5)
    assert len(body["_embedded"]["users"]) == 5
    assert isinstance(body["_embedded"]["users"][0]["rights"], dict)
    with_ = api.get("/api/v4/users", {"with": "role,group,uuid,amojo_id"}).json()
    assert all("uuid" in u and "amojo_id" in u for u in with_["_embedded"]["users"])
    assert api.get("/api/v4/users", {"page": 50}).status_code == 204


def test_pipelines_embed_their_statuses_and_statuses_have_their_own_endpoint(api):
    body = api.get("/api/v4/leads/pipelines").json()
    pipelines = body["_embedded"]["pipelines"]
    assert body["_total_items"] == len(pipelines) >= 3
    assert sum(p["is_archive"] for p in pipelines) == 1
    assert sum(p["is_main"] for p in pipelines) == 1
    for p in pipelines:
        r = api.get(f"/api/v4/leads/pipelines/{p['id']}/statuses")
        statuses = r.json()["_embedded"]["statuses"]
        assert statuses == p["_embedded"]["statuses"]
        ids = {s["id"] for s in statuses}
        assert {142, 143} <= ids
        assert any(s["type"] == 1 for s in statuses)
        assert all(s["pipeline_id"] == p["id"] and "conditions" in s for s in statuses)


def test_unknown_pipeline_is_404_pipeline_not_found(api):
    for pid in ("1", "abc"):
        r = api.get(f"/api/v4/leads/pipelines/{pid}/statuses")
        assert r.status_code == 404
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["detail"] == "Pipeline not found"


def test_account_with_datetime_settings(api):
    plain = api.get("/api/v4/account").json()
    assert "_embedded" not in plain and plain["subdomain"] == "sandbox"
    body = api.get("/api/v4/account", {"with": "datetime_settings"}).json()
    assert body["_embedded"]["datetime_settings"]["timezone"]


@pytest.mark.parametrize("entity", ["leads", "contacts", "companies"])
def test_custom_field_definitions_are_paged_and_match_the_values(api, entity):
    body = api.get(f"/api/v4/{entity}/custom_fields", {"limit": 2}).json()
    assert body["_page_count"] == -(-body["_total_items"] // 2)
    fields = api.items(f"/api/v4/{entity}/custom_fields", "custom_fields", {"limit": 2})
    assert len(fields) == body["_total_items"]
    known = {f["id"]: f for f in fields}
    values = [v for rec in api.sb.records(entity) for v in rec["custom_fields_values"] or []]
    assert values, f"no {entity} record has a custom field value to compare"
    assert [known[v["field_id"]]["type"] for v in values] == [v["field_type"] for v in values]


def test_single_records_and_unknown_paths(api):
    lead = next(r for r in api.sb.records("leads") if not r["is_deleted"])
    r = api.get(f"/api/v4/leads/{lead['id']}")
    assert r.status_code == 200 and r.json()["id"] == lead["id"]
    assert api.get("/api/v4/leads/1").status_code == 204
    r = api.get("/api/v4/nothing")
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/problem+json"


def test_writes_are_not_served(api):
    r = api.session.post(
        f"{api.sb.base_url}/api/v4/leads",
        json=[{"name": "x"}],
        headers={"Authorization": f"Bearer {api.sb.token}"},
    )
    assert r.status_code == 405


def test_keep_alive_serves_many_requests_on_one_connection(open_sandbox: KommoSandbox):
    conn = http.client.HTTPConnection("127.0.0.1", open_sandbox.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {open_sandbox.token}"}
        for path in ("/api/v4/leads?limit=250", "/api/v4/leads?page=99", "/api/v4/users"):
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status in (200, 204)
            if resp.status == 200:
                assert int(resp.headers["Content-Length"]) == len(body)
            assert not resp.will_close
    finally:
        conn.close()


def _served(api, stream: Stream) -> list[dict]:
    """Every record of ``stream`` as a plain HTTP reader gets it, deleted ones included, with
    the stream's with= fields but not the link embeds (the sandbox's records carry none)."""
    with_ = [w for w in stream.with_ if w not in LEAD_EMBEDS]
    params = {"limit": 250} | ({"with": ",".join(with_)} if with_ else {})
    if stream.list_key is None:
        return [api.get(stream.path, params).json()]
    if stream.paging == "single":
        return api.get(stream.path, params).json()["_embedded"][stream.list_key]
    if stream.parent is not None:
        parents = [p["id"] for p in api.sb.records(stream.parent)]
        return [r for p in parents for r in api.items(stream.path_for(p), stream.list_key, params)]
    served = api.items(stream.path, stream.list_key, params)
    if stream.has_deleted_list:
        deleted = {"with": ",".join(["only_deleted", *with_])}
        served += api.items(stream.path, stream.list_key, params | deleted)
    return served


@pytest.mark.parametrize("stream", STREAMS)
def test_every_served_record_is_the_ground_truth_record(api, stream):
    served = _served(api, STREAMS[stream])
    held = api.sb.records(stream)
    assert held, stream
    assert sorted(map(_canonical, served)) == sorted(map(_canonical, held))


def _canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)
