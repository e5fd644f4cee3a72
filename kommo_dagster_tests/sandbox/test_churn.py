"""Churn: the account changes while it is read, and offset paging feels it."""

from __future__ import annotations

import threading
import time

import pytest

from kommo_dagster.sandbox import ChurnConfig
from kommo_dagster.sandbox.events import ENTITY_SINGULAR

from .conftest import Api

pytestmark = pytest.mark.timeout(60)

START_TS = 1_790_812_800  # 2026-10-01
END_TS = 1_793_491_200  # 2026-11-01
CLOCK = END_TS + 3_600


def _churny(sandbox_factory, **churn):
    churn.setdefault("clock", lambda: CLOCK)
    sb = sandbox_factory(leads=300, requests_per_second=None, churn=ChurnConfig(**churn))
    return sb, Api(sb)


def _window_params(page: int, limit: int = 50) -> dict[str, object]:
    return {
        "filter[updated_at][from]": START_TS,
        "filter[updated_at][to]": END_TS - 1,
        "order[updated_at]": "asc",
        "limit": limit,
        "page": page,
    }


def test_a_step_updates_creates_and_deletes_and_moves_updated_at_forward(sandbox_factory):
    sb, _api = _churny(sandbox_factory, updates=4, creates=2, deletes=1)
    before = {r["id"]: r for r in sb.records("leads")}
    changes = sb.churn_step()
    assert changes["leads_updated"] == 4 and changes["leads_created"] == 2
    assert changes["leads_deleted"] == 1 and changes["tasks_deleted"] == 1
    after = {r["id"]: r for r in sb.records("leads")}
    changed = [i for i in before if after[i] != before[i]]
    assert len(changed) == 5  # 4 updates and 1 deletion
    assert all(after[i]["updated_at"] == CLOCK for i in changed)
    new = set(after) - set(before)
    assert len(new) == 2 and min(new) > max(before)
    assert all(after[i]["created_at"] == after[i]["updated_at"] == CLOCK for i in new)
    assert sum(after[i]["is_deleted"] and not before[i]["is_deleted"] for i in before) == 1
    assert sb.stats()["churn_steps"] == 1


def test_the_clock_never_goes_back_before_the_newest_record(sandbox_factory):
    sb, _api = _churny(sandbox_factory, clock=lambda: START_TS, creates=1, updates=0, deletes=0)
    sb.churn_step()
    newest = max(r["created_at"] for r in sb.records("leads") if not r["is_deleted"])
    assert newest >= END_TS - 1


def test_offset_paging_sees_rows_shift_between_pages(sandbox_factory):
    sb, api = _churny(sandbox_factory, updates=20, creates=0, deletes=0, streams=("leads",))
    page2_before = [
        r["id"] for r in api.get("/api/v4/leads", _window_params(2)).json()["_embedded"]["leads"]
    ]
    sb.churn_step()
    page2_after = [
        r["id"] for r in api.get("/api/v4/leads", _window_params(2)).json()["_embedded"]["leads"]
    ]
    assert page2_after != page2_before


def test_offset_paging_under_churn_misses_records_that_never_left_the_window(sandbox_factory):
    sb, api = _churny(
        sandbox_factory, every_requests=1, updates=3, creates=0, deletes=0, streams=("leads",)
    )
    seen: set[int] = set()
    page = 1
    while True:
        r = api.get("/api/v4/leads", _window_params(page))
        if r.status_code == 204:
            break
        seen.update(x["id"] for x in r.json()["_embedded"]["leads"])
        page += 1
    still_in_window = {
        r["id"] for r in sb.records("leads") if not r["is_deleted"] and r["updated_at"] < END_TS
    }
    # The extractor's problem in one line: these rows were in the window all along.
    assert still_in_window - seen


def test_back_dated_changes_carry_an_earlier_updated_at_and_events_stamped_now(sandbox_factory):
    sb, api = _churny(sandbox_factory, updates=20, creates=5, deletes=0, backdate=1.0)
    before = {r["id"]: r for r in sb.records("tasks")}
    assert sb.churn_step()["tasks_updated"] == 20
    after = {r["id"]: r for r in sb.records("tasks")}
    changed = [i for i in before if after[i] != before[i]]
    assert len(changed) > 10  # a task may be picked twice
    assert all(START_TS <= after[i]["updated_at"] < before[i]["updated_at"] for i in changed)
    new = set(after) - set(before)
    assert len(new) == 5 and all(START_TS <= after[i]["updated_at"] < CLOCK for i in new)
    events = api.items(
        "/api/v4/events",
        "events",
        {"filter[created_at][from]": CLOCK, "filter[entity][]": "task", "limit": 100},
    )
    assert {e["entity_id"] for e in events} >= set(changed) | new
    assert all(e["created_at"] == CLOCK for e in events)


def test_backdate_is_a_probability():
    with pytest.raises(ValueError, match="backdate"):
        ChurnConfig(backdate=1.5)


def test_changes_are_recorded_as_events(sandbox_factory):
    sb, api = _churny(sandbox_factory, updates=6, creates=1, deletes=1, restores=1)
    sb.churn_step()
    events = api.items(
        "/api/v4/events", "events", {"filter[created_at][from]": CLOCK, "limit": 100}
    )
    types = {e["type"] for e in events}
    assert {"lead_added", "lead_deleted", "lead_restored", "task_deleted", "task_added"} <= types
    assert types & {"lead_status_changed", "sale_field_changed", "entity_responsible_changed"}
    assert all(e["created_at"] == CLOCK for e in events)
    # Newest first also holds for events the churn appended.
    assert events[0]["created_at"] >= events[-1]["created_at"]


def test_deleted_and_restored_records_move_between_the_lists(sandbox_factory):
    sb, api = _churny(sandbox_factory, updates=0, creates=0, deletes=1, restores=0)
    live_before = {r["id"] for r in api.items("/api/v4/companies", "companies", {"limit": 250})}
    sb.churn_step()
    live_after = {r["id"] for r in api.items("/api/v4/companies", "companies", {"limit": 250})}
    (gone,) = live_before - live_after
    deleted = api.items("/api/v4/companies", "companies", {"with": "only_deleted", "limit": 250})
    assert gone in {r["id"] for r in deleted}
    tasks = {t["id"] for t in api.items("/api/v4/tasks", "tasks", {"limit": 250})}
    assert len(tasks) == len(sb.records("tasks"))


def test_churn_every_n_requests(sandbox_factory):
    sb, api = _churny(sandbox_factory, every_requests=2)
    for _ in range(5):
        assert api.get("/api/v4/account").status_code == 200
    assert sb.stats()["churn_steps"] == 2


def test_background_churn_against_concurrent_readers(sandbox_factory):
    sb, _ = _churny(sandbox_factory, interval_ms=20, clock=None)
    errors: list[str] = []

    pages: list[int] = []

    def read():
        # an assert in this thread would not fail the test: what goes wrong is recorded
        api = Api(sb)
        try:
            for page in range(1, 8):
                r = api.get("/api/v4/leads", _window_params(page, limit=25) | {"order[id]": None})
                if r.status_code not in (200, 204):
                    errors.append(r.text)
                elif r.status_code == 200:
                    leads = r.json()["_embedded"]["leads"]
                    pages.append(len(leads))
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            api.close()

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 20
    while sb.stats()["churn_steps"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not errors
    assert pages and all(pages), pages  # every 200 held leads
    assert sb.stats()["churn_steps"] >= 3
    # Wall-clock churn: changed records are stamped now, after the generated window.
    assert max(r["updated_at"] for r in sb.records("leads")) > END_TS


def test_churn_creates_records_the_builders_would_generate(sandbox_factory):
    sb, _api = _churny(sandbox_factory, updates=0, creates=3, deletes=0)
    before = {r["id"] for r in sb.records("tasks")}
    sb.churn_step()
    new_tasks = [t for t in sb.records("tasks") if t["id"] not in before]
    assert len(new_tasks) == 3
    assert all(t["entity_type"] == "leads" for t in new_tasks)
    lead_ids = {r["id"] for r in sb.records("leads")}
    assert all(t["entity_id"] in lead_ids for t in new_tasks)
    assert all(isinstance(t["result"], list | dict) for t in new_tasks)
    assert ENTITY_SINGULAR["tasks"] == "task"


def test_background_churn_can_be_switched_on_and_off_while_serving(sandbox_factory):
    sb = sandbox_factory(leads=100, requests_per_second=None)

    def churn_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "kommo-sandbox-churn"]

    assert not churn_threads()
    sb.update_config(churn=ChurnConfig(interval_ms=10, clock=lambda: CLOCK))
    deadline = time.monotonic() + 20
    while sb.stats()["churn_steps"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb.stats()["churn_steps"] >= 2
    sb.update_config(churn=None)
    assert not churn_threads()
